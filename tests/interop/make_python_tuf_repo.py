#!/usr/bin/env python3
"""Build a TUF repository with python-tuf's Metadata API, for patchd's interop test.

usage: make_python_tuf_repo.py OUT_DIR (consistent|plain)

OUT_DIR/metadata  — 1.root.json, 2.root.json (rotation, signed by old and new keys),
                    timestamp.json, snapshot, targets, delegated roles ("delegated" by
                    path pattern, "hashed" delegating to succinct hash bins "bin-*")
OUT_DIR/targets   — target files (HASH.name when consistent)
OUT_DIR/canonical — pairs NAME.json (input) / NAME.canonical (securesystemslib bytes)
OUT_DIR/expected.json — target path -> content, for the test to compare
Keys: root ECDSA P-256 then ed25519, timestamp ed25519, snapshot ECDSA, targets
ed25519, delegated ECDSA, bins ed25519.
"""
import hashlib
import json
import os
import sys
from datetime import datetime, timedelta, timezone

from securesystemslib.formats import encode_canonical
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    MetaFile,
    Metadata,
    Root,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

out = sys.argv[1]
consistent = sys.argv[2] == "consistent"
meta_dir = os.path.join(out, "metadata")
targets_dir = os.path.join(out, "targets")
os.makedirs(meta_dir, exist_ok=True)
os.makedirs(targets_dir, exist_ok=True)
expires = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=3650)

root_v1_key = CryptoSigner.generate_ecdsa()
root_v2_key = CryptoSigner.generate_ed25519()
ts_key = CryptoSigner.generate_ed25519()
snap_key = CryptoSigner.generate_ecdsa()
targets_key = CryptoSigner.generate_ed25519()
deleg_key = CryptoSigner.generate_ecdsa()
bins_key = CryptoSigner.generate_ed25519()

contents = {
    "files/hello.txt": b"hello from python-tuf\n",
    "delegated/a.txt": b"delegated content\n",
    "bins/x.txt": b"hash-binned content\n",
    "bins/y.txt": b"another binned file\n",
}


def write_target(path):
    data = contents[path]
    tf = TargetFile.from_data(path, data, ["sha256"])
    if consistent:
        d, _, base = path.rpartition("/")
        name = f"{d}/{tf.hashes['sha256']}.{base}" if d else f"{tf.hashes['sha256']}.{base}"
    else:
        name = path
    full = os.path.join(targets_dir, name)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data)
    return tf


ser = JSONSerializer(compact=False)


def meta_path(role, version):
    if consistent and role != "timestamp":
        return os.path.join(meta_dir, f"{version}.{role}.json")
    return os.path.join(meta_dir, f"{role}.json")


def write_meta(md, role, signers):
    for s in signers:
        md.sign(s, append=True)
    data = md.to_bytes(ser)
    with open(meta_path(role, md.signed.version), "wb") as f:
        f.write(data)
    return data


def meta_file(version, data):
    return MetaFile(
        version=version,
        length=len(data),
        hashes={"sha256": hashlib.sha256(data).hexdigest()},
    )


# --- root v1 and v2 (rotation of the root key) ---------------------------------------
root = Root(expires=expires, consistent_snapshot=consistent)
root.add_key(root_v1_key.public_key, "root")
root.add_key(ts_key.public_key, "timestamp")
root.add_key(snap_key.public_key, "snapshot")
root.add_key(targets_key.public_key, "targets")
root_md = Metadata(root)
root_md.sign(root_v1_key)
with open(os.path.join(meta_dir, "1.root.json"), "wb") as f:
    f.write(root_md.to_bytes(ser))

root.version = 2
root.revoke_key(root_v1_key.public_key.keyid, "root")
root.add_key(root_v2_key.public_key, "root")
root_md = Metadata(root)
root_md.sign(root_v1_key, append=True)
root_md.sign(root_v2_key, append=True)
with open(os.path.join(meta_dir, "2.root.json"), "wb") as f:
    f.write(root_md.to_bytes(ser))
with open(os.path.join(meta_dir, "root.json"), "wb") as f:
    f.write(root_md.to_bytes(ser))

# --- delegated roles --------------------------------------------------------------------
succinct = SuccinctRoles(
    keyids=[bins_key.public_key.keyid], threshold=1, bit_length=2, name_prefix="bin"
)
bins = {name: Targets(expires=expires) for name in succinct.get_roles()}
for path in ("bins/x.txt", "bins/y.txt"):
    bins[succinct.get_role_for_target(path)].targets[path] = write_target(path)

hashed = Targets(expires=expires)
hashed.delegations = Delegations(
    keys={bins_key.public_key.keyid: bins_key.public_key}, succinct_roles=succinct
)

delegated = Targets(expires=expires)
delegated.targets["delegated/a.txt"] = write_target("delegated/a.txt")

targets = Targets(expires=expires)
targets.targets["files/hello.txt"] = write_target("files/hello.txt")
targets.delegations = Delegations(
    keys={
        deleg_key.public_key.keyid: deleg_key.public_key,
        targets_key.public_key.keyid: targets_key.public_key,
    },
    roles={
        "delegated": DelegatedRole(
            name="delegated",
            keyids=[deleg_key.public_key.keyid],
            threshold=1,
            terminating=True,
            paths=["delegated/*"],
        ),
        "hashed": DelegatedRole(
            name="hashed",
            keyids=[targets_key.public_key.keyid],
            threshold=1,
            terminating=False,
            paths=["bins/*"],
        ),
    },
)

snapshot = Snapshot(expires=expires)
snapshot.meta = {}
for name, t in bins.items():
    data = write_meta(Metadata(t), name, [bins_key])
    snapshot.meta[f"{name}.json"] = MetaFile(version=t.version)
data = write_meta(Metadata(hashed), "hashed", [targets_key])
snapshot.meta["hashed.json"] = meta_file(1, data)
data = write_meta(Metadata(delegated), "delegated", [deleg_key])
snapshot.meta["delegated.json"] = MetaFile(version=1)
data = write_meta(Metadata(targets), "targets", [targets_key])
snapshot.meta["targets.json"] = meta_file(1, data)
data = write_meta(Metadata(snapshot), "snapshot", [snap_key])

timestamp = Timestamp(expires=expires, snapshot_meta=meta_file(1, data))
write_meta(Metadata(timestamp), "timestamp", [ts_key])

# --- canonical JSON reference bytes -------------------------------------------------------
canon_dir = os.path.join(out, "canonical")
os.makedirs(canon_dir, exist_ok=True)
samples = {
    "escapes": {"q": 'say "hi" \\ back', "ctl": "tab\tnl\ncr\r\x01", "uni": "é€😀\u2028"},
    "order": {"b": 1, "a": [3, 2, 1], "B": {"z": None, "y": True, "x": False}, "": -5},
    "ints": [0, -1, 2**53, 2**63 - 1, -(2**63)],
    "root": json.loads(root_md.to_bytes(ser))["signed"],
}
for name, v in samples.items():
    with open(os.path.join(canon_dir, f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump(v, f, ensure_ascii=False)
    with open(os.path.join(canon_dir, f"{name}.canonical"), "wb") as f:
        f.write(encode_canonical(v).encode("utf-8"))

with open(os.path.join(out, "expected.json"), "w") as f:
    json.dump({k: v.decode() for k, v in contents.items()}, f)
