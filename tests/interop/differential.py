#!/usr/bin/env python3
"""Differential test driver: python-tuf's ngclient and patchd's `tuf-client` on the same
served repository, step by step.

usage: differential.py TUF_CLIENT_BIN WORK_DIR [SCENARIO...]

Each scenario builds a repository with python-tuf's Metadata API (corruptions that the
API refuses to write are made on the JSON and re-signed with securesystemslib), serves it
from one local HTTP server that logs every request path, and after every step runs both
clients from their own trusted-metadata directories. Prints one JSON object per step:
{"scenario", "step", "action", "python": R, "ours": R} with R = {"ok", "roles" (trusted
file -> version on disk), "requests" (paths in order), "error"}. Comparing is the
caller's job (tests/tuf_differential.rs).
"""
import copy
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from urllib import parse

from securesystemslib.formats import encode_canonical
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    MetaFile,
    Metadata,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer
from tuf.ngclient import Updater

NOW = datetime.now(timezone.utc).replace(microsecond=0)
FAR = NOW + timedelta(days=3650)
PAST = NOW - timedelta(days=1)
TOP = ("root", "timestamp", "snapshot", "targets")
SER = JSONSerializer(compact=False)


# --- the served repository ------------------------------------------------------------


class Log:
    def __init__(self):
        self.lock = threading.Lock()
        self.paths = []

    def take(self):
        with self.lock:
            out, self.paths = self.paths, []
        return out


def serve(root_dir, log):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            raw = self.path.split("?", 1)[0]
            with log.lock:
                log.paths.append(raw.lstrip("/"))
            rel = raw.lstrip("/")
            # Files are stored under their encoded (request) names, so no decoding: what
            # the client asks for is what it gets, and `..` segments are refused.
            if any(seg in ("..", ".") for seg in rel.split("/")):
                self.send_error(404)
                return
            full = os.path.join(root_dir, rel)
            if not os.path.isfile(full):
                self.send_error(404)
                return
            with open(full, "rb") as f:
                data = f.read()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def fname(role):
    return parse.quote(role, "")


def sign_dict(signed, signers, dup=False):
    """Envelope bytes for a `signed` dict; `dup` repeats the first signature."""
    data = encode_canonical(signed).encode()
    sigs = [s.sign(data).to_dict() for s in signers]
    if dup and sigs:
        sigs.append(dict(sigs[0]))
    return json.dumps({"signatures": sigs, "signed": signed}, indent=1).encode()


class Repo:
    """A repository under construction; `publish()` writes what changed."""

    def __init__(self, d):
        self.dir = d
        self.md = os.path.join(d, "metadata")
        self.tg = os.path.join(d, "targets")
        os.makedirs(self.md)
        os.makedirs(self.tg)
        self.keys = {r: [CryptoSigner.generate_ed25519()] for r in TOP}
        self.root = Root(expires=FAR, consistent_snapshot=True)
        for r in TOP:
            self.root.add_key(self.keys[r][0].public_key, r)
        self.targets = Targets(expires=FAR)
        self.roles = {}  # delegated name -> [Targets, signers]
        self.snapshot = Snapshot(expires=FAR)
        self.timestamp = Timestamp(expires=FAR, snapshot_meta=MetaFile(version=1))
        self.hashes = True
        self.write_root()
        self.publish()

    def write_root(self, extra_signers=()):
        md = Metadata(self.root)
        for s in list(self.keys["root"]) + list(extra_signers):
            md.sign(s, append=True)
        data = md.to_bytes(SER)
        v = self.root.version
        for name in (f"{v}.root.json", "root.json"):
            with open(os.path.join(self.md, name), "wb") as f:
                f.write(data)

    def rotate(self, role):
        """New key for `role` in root N+1 (signed by old and new root keys for root)."""
        old = self.keys[role][0]
        new = CryptoSigner.generate_ed25519()
        self.root.revoke_key(old.public_key.keyid, role)
        self.root.add_key(new.public_key, role)
        self.root.version += 1
        self.keys[role] = [new]
        self.write_root(extra_signers=[old] if role == "root" else [])

    def add_target(self, role, path, content):
        tf = TargetFile.from_data(path, content, ["sha256"])
        d, _, base = path.rpartition("/")
        name = f"{tf.hashes['sha256']}.{base}"
        full = os.path.join(self.tg, d, name)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(content)
        t = self.targets if role == "targets" else self.roles[role][0]
        t.targets[path] = tf

    def delegate(self, parent, name, paths, terminating=False):
        key = CryptoSigner.generate_ed25519()
        t = self.targets if parent == "targets" else self.roles[parent][0]
        if t.delegations is None:
            t.delegations = Delegations(keys={}, roles={})
        t.delegations.keys[key.public_key.keyid] = key.public_key
        t.delegations.roles[name] = DelegatedRole(
            name=name,
            keyids=[key.public_key.keyid],
            threshold=1,
            terminating=terminating,
            paths=paths,
        )
        self.roles[name] = [Targets(expires=FAR), [key]]

    def write(self, name, data):
        with open(os.path.join(self.md, name), "wb") as f:
            f.write(data)

    def meta(self, version, data):
        if not self.hashes:
            return MetaFile(version=version)
        return MetaFile(
            version=version,
            length=len(data),
            hashes={"sha256": hashlib.sha256(data).hexdigest()},
        )

    def sign_role(self, obj, signers, edit=None, dup=False):
        if edit is None and not dup:
            md = Metadata(obj)
            for s in signers:
                md.sign(s, append=True)
            return md.to_bytes(SER)
        signed = obj.to_dict()
        if edit:
            edit(signed)
        return sign_dict(signed, signers, dup=dup)

    def publish(self, roles=None, edit=None, dup=(), signers=None):
        """Write targets roles `roles` (default: all), then snapshot and timestamp.
        `edit`: role -> f(signed dict) applied before signing; `dup`: roles signed with
        a repeated signature; `signers`: role -> signer list instead of its keys."""
        edit = edit or {}
        signers = signers or {}
        names = list(self.roles) + ["targets"] if roles is None else roles
        for name in names:
            if name == "targets":
                obj, keys = self.targets, self.keys["targets"]
            else:
                obj, keys = self.roles[name]
            data = self.sign_role(
                obj, signers.get(name, keys), edit.get(name), name in dup
            )
            self.write(f"{obj.version}.{fname(name)}.json", data)
            self.snapshot.meta[f"{name}.json"] = self.meta(obj.version, data)
        data = self.sign_role(
            self.snapshot,
            signers.get("snapshot", self.keys["snapshot"]),
            edit.get("snapshot"),
            "snapshot" in dup,
        )
        self.write(f"{self.snapshot.version}.snapshot.json", data)
        self.timestamp.snapshot_meta = self.meta(self.snapshot.version, data)
        data = self.sign_role(
            self.timestamp,
            signers.get("timestamp", self.keys["timestamp"]),
            edit.get("timestamp"),
            "timestamp" in dup,
        )
        self.write("timestamp.json", data)

    def bump(self, *roles):
        for r in roles:
            obj = {"targets": self.targets, "snapshot": self.snapshot,
                   "timestamp": self.timestamp}.get(r) or self.roles[r][0]
            obj.version += 1


# --- the two clients ---------------------------------------------------------------------


def roles_on_disk(d):
    out = {}
    for n in sorted(os.listdir(d)):
        # python-tuf 7 keeps every root it trusted in root_history/ (a cache for
        # rebuilding the chain, not a trusted role file): files only are compared.
        if os.path.isdir(os.path.join(d, n)):
            continue
        if not n.endswith(".json"):
            out[n] = None
            continue
        try:
            with open(os.path.join(d, n), "rb") as f:
                out[n] = json.load(f)["signed"]["version"]
        except Exception as e:  # noqa: BLE001 - reported, compared
            out[n] = f"unreadable: {e}"
    return out


def run_python(state, base, action, names, tdir):
    try:
        u = Updater(
            metadata_dir=state,
            metadata_base_url=f"{base}/metadata/",
            target_dir=tdir,
            target_base_url=f"{base}/targets/",
            # None: start from the trusted root.json already in the directory.
            bootstrap=None,
        )
        u.refresh()
        for n in names:
            info = u.get_targetinfo(n)
            if info is None:
                raise RuntimeError(f"target {n} not found")
            u.download_target(info)
        return True, ""
    except Exception as e:  # noqa: BLE001 - any failure is a failure
        return False, f"{type(e).__name__}: {e}"


def run_ours(binary, state, base, action, names, tdir):
    args = [binary, "--metadata-dir", state, "--metadata-url", f"{base}/metadata/"]
    if action == "download":
        args += ["--target-base-url", f"{base}/targets/", "--target-dir", tdir]
        for n in names:
            args += ["--target-name", n]
        args.append("download")
    else:
        args.append("refresh")
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return p.returncode == 0, p.stderr.strip()[-400:]


# --- scenarios ---------------------------------------------------------------------------
# Each: f(repo) -> list of (step name, mutate(repo) or None, action, target names).


def step(name, f=None, action="refresh", names=()):
    return (name, f, action, list(names))


def sc_baseline(r):
    def targets_v2(r):
        r.add_target("targets", "files/a.txt", b"a\n")
        r.bump("targets", "snapshot", "timestamp")
        r.publish(["targets"])
    return [step("initial"), step("new targets", targets_v2),
            step("download", None, "download", ["files/a.txt"]),
            step("unchanged")]


def rotation(role):
    def sc(r):
        def rot(r):
            r.rotate(role)
            r.bump("targets", "snapshot", "timestamp")
            r.publish(["targets"])
        return [step("initial"), step(f"rotate {role} key", rot), step("again")]
    return sc


def expiry(role):
    def sc(r):
        def expire(r):
            if role == "root":
                r.root.expires = PAST
                r.root.version += 1
                r.write_root()
            else:
                obj = {"targets": r.targets, "snapshot": r.snapshot,
                       "timestamp": r.timestamp}[role]
                obj.expires = PAST
            r.bump("targets", "snapshot", "timestamp")
            r.publish(["targets"])

        def renew(r):
            for obj in (r.targets, r.snapshot, r.timestamp):
                obj.expires = FAR
            if role == "root":
                r.root.expires = FAR
                r.root.version += 1
                r.write_root()
            r.bump("targets", "snapshot", "timestamp")
            r.publish(["targets"])
        return [step("initial"), step(f"{role} expired", expire),
                step("still expired"), step("renewed", renew)]
    return sc


def rollback(role):
    def sc(r):
        saved = {}

        def advance(r):
            r.bump("targets", "snapshot", "timestamp")
            r.publish(["targets"])
            r.bump("targets", "snapshot", "timestamp")
            r.publish(["targets"])
            saved["ts"] = open(os.path.join(r.md, "timestamp.json"), "rb").read()
            r.bump("targets", "snapshot", "timestamp")
            r.publish(["targets"])

        def back(r):
            if role == "timestamp":
                r.write("timestamp.json", saved["ts"])
            elif role == "snapshot":
                r.snapshot.version -= 2
                r.bump("timestamp")
                r.publish([])
            elif role == "targets":
                r.targets.version -= 2
                r.bump("snapshot", "timestamp")
                r.publish(["targets"])
            elif role == "delegated":
                r.roles["team"][0].version -= 1
                r.bump("snapshot", "timestamp")
                r.publish(["team"])
        steps = [step("initial"), step("advance", advance)]
        if role == "delegated":
            def setup(r):
                r.delegate("targets", "team", ["team/*"])
                r.add_target("team", "team/x.txt", b"x\n")
                r.bump("targets", "snapshot", "timestamp")
                r.publish()

            def team_v2(r):
                r.add_target("team", "team/y.txt", b"y\n")
                r.bump("team", "snapshot", "timestamp")
                r.publish(["team"])
            steps = [step("initial"), step("delegate", setup, "download", ["team/x.txt"]),
                     step("team v2", team_v2, "download", ["team/y.txt"]),
                     step("team rolled back", back, "download", ["team/x.txt"])]
            return steps
        return steps + [step(f"{role} rolled back", back)]
    return sc


def sc_below_threshold(r):
    def two_of_two(r):
        k2 = CryptoSigner.generate_ed25519()
        r.root.add_key(k2.public_key, "targets")
        r.root.roles["targets"].threshold = 2
        r.root.version += 1
        r.write_root()
        r.keys["targets"].append(k2)
        r.bump("targets", "snapshot", "timestamp")
        r.publish(["targets"], signers={"targets": r.keys["targets"][:1]})

    def fixed(r):
        r.bump("targets", "snapshot", "timestamp")
        r.publish(["targets"])
    return [step("initial"), step("targets below threshold", two_of_two),
            step("threshold met", fixed)]


def sc_unsigned(role):
    def sc(r):
        def unsigned(r):
            r.bump("targets", "snapshot", "timestamp")
            r.publish(["targets"], signers={role: []})
        return [step("initial"), step(f"{role} unsigned", unsigned)]
    return sc


def sc_version_mismatch(role):
    def sc(r):
        def mismatch(r):
            r.hashes = False
            r.bump("targets", "snapshot", "timestamp")
            # The file is named for the listed version; inside it claims one more.
            r.publish(["targets"], edit={role: lambda s: s.update(version=s["version"] + 1)})
        return [step("initial"), step(f"{role} file version differs from its name", mismatch)]
    return sc


def sc_hash_differs(role):
    def sc(r):
        def differ(r):
            r.bump("targets", "snapshot", "timestamp")
            r.publish(["targets"])
            obj = r.targets if role == "targets" else r.snapshot
            # Same version and length, validly signed, other bytes: expiry one second
            # later than what the parent's hash covers.
            data = r.sign_role(obj, r.keys[role], edit=lambda s: s.update(
                expires=(FAR + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")))
            r.write(f"{obj.version}.{role}.json", data)
        return [step("initial"), step(f"{role} hash differs from the parent's", differ)]
    return sc


def sc_missing(role):
    def sc(r):
        def missing(r):
            r.bump("targets", "snapshot", "timestamp")
            r.publish(["targets"])
            obj = r.targets if role == "targets" else r.snapshot
            os.remove(os.path.join(r.md, f"{obj.version}.{role}.json"))
        return [step("initial"), step(f"{role} missing (404)", missing)]
    return sc


def sc_wrong_type(role):
    def sc(r):
        def wrong(r):
            other = {"targets": "snapshot", "snapshot": "targets",
                     "timestamp": "snapshot"}[role]
            r.bump("targets", "snapshot", "timestamp")
            r.publish(["targets"], edit={role: lambda s: s.update(_type=other)})
        return [step("initial"), step(f"{role} with wrong _type", wrong)]
    return sc


def sc_final_root_expired(r):
    def expired(r):
        r.root.version += 1
        r.root.expires = PAST
        r.write_root()
    return [step("initial"), step("root v2 expired", expired), step("again")]


def sc_duplicate_sigs(role):
    def sc(r):
        def dup(r):
            r.bump("targets", "snapshot", "timestamp")
            r.publish(["targets"], dup={role})
        return [step("initial"), step(f"{role} with a repeated signature key id", dup)]
    return sc


def sc_role_names(r):
    names = ["?", "#", "/delegatedrole", "../delegatedrole"]

    def setup(r):
        for i, n in enumerate(names):
            r.delegate("targets", n, [f"d{i}/*"])
            r.add_target(n, f"d{i}/f.txt", f"file {i}\n".encode())
        r.bump("targets", "snapshot", "timestamp")
        r.publish()
    return [step("initial"),
            step("delegated role names", setup, "download",
                 [f"d{i}/f.txt" for i in range(len(names))])]


def sc_fast_forward(r):
    def ahead(r):
        r.targets.version = 99
        r.bump("snapshot", "timestamp")
        r.publish(["targets"])

    def recover(r):
        r.targets.version = 3
        r.rotate("snapshot")
        r.bump("snapshot", "timestamp")
        r.publish(["targets"])

    def recover_targets(r):
        r.rotate("targets")
        r.bump("snapshot", "timestamp")
        r.publish(["targets"])
    return [step("initial"), step("targets fast-forwarded to 99", ahead),
            step("targets back to 3, snapshot key rotated", recover),
            step("targets key rotated too", recover_targets)]


def sc_delegation_graph(r):
    def setup(r):
        r.add_target("targets", "top.txt", b"top\n")
        r.delegate("targets", "a", ["shared/*", "a/*"], terminating=True)
        r.delegate("targets", "b", ["shared/*", "b/*"])
        r.delegate("a", "a-child", ["a/deep*"])
        r.delegate("targets", "c", ["*/c.txt"])
        r.add_target("a", "a/one.txt", b"a1\n")
        r.add_target("a-child", "a/deep.txt", b"deep\n")
        r.add_target("b", "shared/s.txt", b"from b\n")
        r.add_target("b", "b/two.txt", b"b2\n")
        r.add_target("c", "b/c.txt", b"c\n")
        r.bump("targets", "snapshot", "timestamp")
        r.publish()
    ok = ["top.txt", "a/one.txt", "a/deep.txt", "b/two.txt", "b/c.txt"]
    return [step("initial"), step("graph", setup, "download", ok),
            # `a` is terminating for shared/*, so b's shared/s.txt is never reached.
            step("shadowed by a terminating role", None, "download", ["shared/s.txt"]),
            step("outside every path", None, "download", ["nowhere/x.txt"])]


def sc_delegated(kind):
    """Key rotation, expiry, or a below-threshold signature of a delegated role."""
    def sc(r):
        def setup(r):
            r.delegate("targets", "team", ["team/*"])
            r.add_target("team", "team/x.txt", b"x\n")
            r.bump("targets", "snapshot", "timestamp")
            r.publish()

        def change(r):
            team = r.roles["team"]
            if kind == "rotate":
                new = CryptoSigner.generate_ed25519()
                old = team[1][0]
                d = r.targets.delegations
                del d.keys[old.public_key.keyid]
                d.keys[new.public_key.keyid] = new.public_key
                d.roles["team"].keyids = [new.public_key.keyid]
                team[1] = [new]
                r.bump("targets", "team", "snapshot", "timestamp")
                r.publish()
            elif kind == "expire":
                team[0].expires = PAST
                r.bump("team", "snapshot", "timestamp")
                r.publish(["team"])
            elif kind == "below-threshold":
                k2 = CryptoSigner.generate_ed25519()
                d = r.targets.delegations
                d.keys[k2.public_key.keyid] = k2.public_key
                d.roles["team"].keyids.append(k2.public_key.keyid)
                d.roles["team"].threshold = 2
                r.bump("targets", "team", "snapshot", "timestamp")
                r.publish()
            elif kind == "stale-key":
                # Signed by the key the delegation no longer names.
                new = CryptoSigner.generate_ed25519()
                old = team[1][0]
                d = r.targets.delegations
                del d.keys[old.public_key.keyid]
                d.keys[new.public_key.keyid] = new.public_key
                d.roles["team"].keyids = [new.public_key.keyid]
                r.bump("targets", "team", "snapshot", "timestamp")
                r.publish()
        return [step("initial"), step("delegate", setup, "download", ["team/x.txt"]),
                step(f"team {kind}", change, "download", ["team/x.txt"]),
                step("again", None, "download", ["team/x.txt"])]
    return sc


SCENARIOS = {
    "baseline": sc_baseline,
    **{f"rotate-{r}": rotation(r) for r in TOP},
    **{f"expire-{r}": expiry(r) for r in TOP},
    **{f"rollback-{r}": rollback(r) for r in ("timestamp", "snapshot", "targets", "delegated")},
    "below-threshold": sc_below_threshold,
    **{f"unsigned-{r}": sc_unsigned(r) for r in ("targets", "snapshot", "timestamp")},
    **{f"version-mismatch-{r}": sc_version_mismatch(r) for r in ("targets", "snapshot")},
    **{f"hash-differs-{r}": sc_hash_differs(r) for r in ("targets", "snapshot")},
    **{f"missing-{r}": sc_missing(r) for r in ("targets", "snapshot")},
    **{f"wrong-type-{r}": sc_wrong_type(r) for r in ("targets", "snapshot", "timestamp")},
    "final-root-expired": sc_final_root_expired,
    **{f"duplicate-sigs-{r}": sc_duplicate_sigs(r) for r in ("targets", "snapshot", "timestamp")},
    "role-names": sc_role_names,
    "fast-forward-recovery": sc_fast_forward,
    "delegation-graph": sc_delegation_graph,
    **{f"delegated-{k}": sc_delegated(k)
       for k in ("rotate", "expire", "below-threshold", "stale-key")},
}


def main():
    binary, work, *only = sys.argv[1:]
    log = Log()
    for name, build in SCENARIOS.items():
        if only and name not in only:
            continue
        top = os.path.join(work, name)
        repo = Repo(os.path.join(top, "repo"))
        srv = serve(repo.dir, log)
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        states = {}
        for who in ("python", "ours"):
            states[who] = os.path.join(top, who)
            os.makedirs(states[who])
            shutil.copy(os.path.join(repo.md, "1.root.json"),
                        os.path.join(states[who], "root.json"))
        for i, (sname, mutate, action, names) in enumerate(build(repo)):
            if mutate:
                mutate(repo)
            res = {}
            for who in ("python", "ours"):
                tdir = os.path.join(top, f"{who}-targets-{i}")
                os.makedirs(tdir)
                log.take()
                if who == "python":
                    ok, err = run_python(states[who], base, action, names, tdir)
                else:
                    ok, err = run_ours(binary, states[who], base, action, names, tdir)
                res[who] = {"ok": ok, "roles": roles_on_disk(states[who]),
                            "requests": log.take(), "error": err}
            print(json.dumps({"scenario": name, "step": sname, "action": action,
                              "targets": names, **res}), flush=True)
        srv.shutdown()
        srv.server_close()


if __name__ == "__main__":
    main()
