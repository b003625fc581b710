#!/usr/bin/env python3
"""Interop peer: python-tuf's ngclient refreshes from a patchpub repository and downloads
targets.

usage: patchpub_ngclient.py METADATA_DIR METADATA_URL TARGETS_URL TARGET_DIR TARGET...

METADATA_DIR must already hold the trusted root.json (kept between runs, so a second run
exercises root rotation and rollback checks from python-tuf's side). Prints one JSON
object: {"root_version": N, "targets": {TARGET: sha256 of the downloaded file}}.
"""
import hashlib
import json
import sys

from tuf.ngclient import Updater


def main() -> int:
    metadata_dir, metadata_url, targets_url, target_dir, *names = sys.argv[1:]
    updater = Updater(
        metadata_dir=metadata_dir,
        metadata_base_url=metadata_url,
        target_dir=target_dir,
        target_base_url=targets_url,
        # None: start from the trusted root.json already in METADATA_DIR.
        bootstrap=None,
    )
    updater.refresh()
    out = {}
    for name in names:
        info = updater.get_targetinfo(name)
        if info is None:
            print(f"target {name} not found", file=sys.stderr)
            return 1
        path = updater.find_cached_target(info) or updater.download_target(info)
        with open(path, "rb") as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    with open(f"{metadata_dir}/root.json", "rb") as f:
        root_version = json.load(f)["signed"]["version"]
    print(json.dumps({"root_version": root_version, "targets": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
