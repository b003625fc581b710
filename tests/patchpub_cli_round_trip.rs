//! patchpub end to end through its command line: init → add → promote → verify, then a
//! device client finds and downloads the release; key rotation (online and through the
//! offline root flow) keeps the repository verifiable from root version 1; bundles are
//! self-contained.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use patchd::clock::SystemClock;
use patchd::fetch::FileSource;
use patchd::manifest::{discover, DeviceProfile, Kind, Severity};
use patchd::trust::source::Subdir;
use patchd::trust::{Limits, TufClient};

struct Pub {
    dir: tempfile::TempDir,
}

impl Pub {
    fn new() -> Self {
        Pub {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    fn keys(&self) -> PathBuf {
        self.dir.path().join("keys")
    }
    fn run(&self, args: &[&str]) -> String {
        let out = self.try_run(args);
        assert!(
            out.status.success(),
            "patchpub {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn try_run(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_patchpub"))
            .arg("--repo")
            .arg(self.repo())
            .arg("--keys")
            .arg(self.keys())
            .args(args)
            .output()
            .unwrap()
    }
    fn image(&self, name: &str, len: usize) -> PathBuf {
        let p = self.dir.path().join(name);
        let data: Vec<u8> = (0..len).map(|i| (i % 7 + i / 4096) as u8).collect();
        std::fs::write(&p, data).unwrap();
        p
    }
}

async fn device_finds(
    repo: &Path,
    root1: &Path,
    product: &str,
    channel: &str,
) -> Option<(String, Vec<u8>)> {
    let md = tempfile::tempdir().unwrap();
    TufClient::init(
        md.path(),
        &std::fs::read(root1).unwrap(),
        &Limits::default(),
    )
    .unwrap();
    let mut c = TufClient::load(md.path(), Arc::new(SystemClock), Limits::default()).unwrap();
    let src = FileSource::new(repo);
    let (m, t) = (Subdir::new(&src, "metadata"), Subdir::new(&src, "targets"));
    c.refresh(&m).await.unwrap();
    let dev = DeviceProfile {
        product: product.into(),
        hardware: Some("rev2".into()),
        channel: channel.into(),
        running_version: Some("1.0.0".parse().unwrap()),
        security_floor: 1,
    };
    let d = discover(&mut c, &m, &t, &dev).await.unwrap();
    let newest = d.newest?;
    let img = &newest.images[0];
    let target = c.target(&m, &img.target).await.unwrap();
    let stored = c.fetch_target_bytes(&t, &target).await.unwrap();
    let raw = zstd::decode_all(&stored[..]).unwrap();
    assert_eq!(raw.len() as u64, img.size);
    assert_eq!(newest.kind, Kind::Security);
    assert_eq!(newest.severity, Severity::High);
    assert_eq!(newest.cves, vec!["CVE-2026-1111"]);
    Some((newest.version.to_string(), raw))
}

fn add_args<'a>(img: &'a str, version: &'a str) -> Vec<&'a str> {
    vec![
        "add",
        "--product",
        "acme",
        "--version",
        version,
        "--image",
        img,
        "--kind",
        "security",
        "--severity",
        "high",
        "--cve",
        "CVE-2026-1111",
        "--summary",
        "security fixes",
        "--security-version",
        "2",
        "--hardware",
        "rev2",
        "--channel",
        "staging",
        "--stage",
        "tags=canary",
        "--stage",
        "percent=50,after=1d",
    ]
}

#[tokio::test]
async fn init_add_promote_verify_download() {
    let p = Pub::new();
    p.run(&["init"]);
    // Private keys are 0600 and live outside the served directory.
    for e in std::fs::read_dir(p.keys()).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "pem") {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
    }
    let img = p.image("rootfs.img", 200_000);
    p.run(&add_args(img.to_str().unwrap(), "1.1.0"));
    let root1 = p.repo().join("metadata/1.root.json");
    assert!(
        device_finds(&p.repo(), &root1, "acme", "stable")
            .await
            .is_none(),
        "not on stable yet"
    );
    let (v, raw) = device_finds(&p.repo(), &root1, "acme", "staging")
        .await
        .unwrap();
    assert_eq!(v, "1.1.0");
    assert_eq!(raw, std::fs::read(&img).unwrap());

    p.run(&["promote", "acme/1.1.0", "--channel", "stable"]);
    assert!(device_finds(&p.repo(), &root1, "acme", "stable")
        .await
        .is_some());
    p.run(&["pause", "acme/1.1.0"]);
    assert!(p.run(&["list"]).contains("paused"));
    p.run(&["resume", "acme/1.1.0"]);
    p.run(&["withdraw", "acme/1.1.0"]);
    assert!(p.run(&["list"]).contains("withdrawn"));
    assert!(device_finds(&p.repo(), &root1, "acme", "stable")
        .await
        .is_none());
    p.run(&["refresh"]);
    let out = p.run(&["verify"]);
    assert!(out.contains("acme/1.1.0"), "{out}");

    // Adding the same version twice is refused.
    let again = p.try_run(&add_args(img.to_str().unwrap(), "1.1.0"));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

#[tokio::test]
async fn rotation_online_and_offline_keeps_clients_working() {
    let p = Pub::new();
    p.run(&["init", "--scheme", "ecdsa-sha2-nistp256"]);
    let img = p.image("rootfs.img", 50_000);
    p.run(&add_args(img.to_str().unwrap(), "1.2.0"));
    p.run(&["rotate", "targets"]);
    p.run(&["rotate", "timestamp"]);
    p.run(&["rotate", "root"]);

    // Offline flow: a new root key made on another machine replaces the current one.
    let offline = p.dir.path().join("offline");
    let current_root_key = std::fs::read_dir(p.keys())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|x| {
            x.to_string_lossy().contains("root-") && x.extension().is_some_and(|e| e == "pem")
        })
        .collect::<Vec<_>>();
    let new_key = offline.join("root-offline");
    p.run(&["keygen", new_key.to_str().unwrap()]);
    let mode = std::fs::metadata(offline.join("root-offline.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let root: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.repo().join("metadata/root.json")).unwrap())
            .unwrap();
    let old_root_id = root["signed"]["roles"]["root"]["keyids"][0]
        .as_str()
        .unwrap()
        .to_string();
    let export = p.dir.path().join("new-root.json");
    p.run(&[
        "root",
        "export",
        "--out",
        export.to_str().unwrap(),
        "--add-key",
        &format!("root={}", offline.join("root-offline.pub.json").display()),
        "--remove-key",
        &format!("root={old_root_id}"),
    ]);
    // Unsigned, and signed by only the new key: both refused.
    let r = p.try_run(&["root", "import", export.to_str().unwrap()]);
    assert!(!r.status.success());
    p.run(&[
        "root",
        "sign",
        export.to_str().unwrap(),
        "--key",
        offline.join("root-offline.pem").to_str().unwrap(),
    ]);
    let r = p.try_run(&["root", "import", export.to_str().unwrap()]);
    assert!(!r.status.success());
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("old root keys"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    // Now with the old root key as well.
    let old = current_root_key
        .iter()
        .find(|k| {
            let key = patchd::trust::SigningKey::load(k).unwrap();
            key.keyid() == old_root_id
        })
        .unwrap();
    p.run(&[
        "root",
        "sign",
        export.to_str().unwrap(),
        "--key",
        old.to_str().unwrap(),
    ]);
    p.run(&["root", "import", export.to_str().unwrap()]);
    let out = p.run(&["verify"]);
    assert!(out.contains("root version 5"), "{out}");

    let root1 = p.repo().join("metadata/1.root.json");
    let (v, _) = device_finds(&p.repo(), &root1, "acme", "staging")
        .await
        .unwrap();
    assert_eq!(v, "1.2.0");

    // The root key is offline now: online rotation of root must fail, clearly.
    let r = p.try_run(&["rotate", "root"]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("root: 0 signing key(s)"));
}

#[tokio::test]
async fn bundle_is_self_contained() {
    let p = Pub::new();
    p.run(&["init"]);
    let img = p.image("rootfs.img", 30_000);
    p.run(&add_args(img.to_str().unwrap(), "1.3.0"));
    p.run(&["rotate", "root"]);
    let other = p.image("other.img", 1000);
    p.run(&add_args(other.to_str().unwrap(), "1.4.0"));
    let out = p.dir.path().join("bundle");
    p.run(&["bundle", "acme/1.3.0", "--out", out.to_str().unwrap()]);
    // A device holding root v1 follows the chain inside the bundle and finds 1.4.0 listed
    // but only 1.3.0's files present; 1.3.0's image downloads from the bundle.
    let md = tempfile::tempdir().unwrap();
    TufClient::init(
        md.path(),
        &std::fs::read(p.repo().join("metadata/1.root.json")).unwrap(),
        &Limits::default(),
    )
    .unwrap();
    let mut c = TufClient::load(md.path(), Arc::new(SystemClock), Limits::default()).unwrap();
    let src = FileSource::new(&out);
    let (m, t) = (Subdir::new(&src, "metadata"), Subdir::new(&src, "targets"));
    c.refresh(&m).await.unwrap();
    let target = c
        .target(&m, "releases/acme/1.3.0/os.rootfs.img.zst")
        .await
        .unwrap();
    let stored = c.fetch_target_bytes(&t, &target).await.unwrap();
    assert_eq!(
        zstd::decode_all(&stored[..]).unwrap(),
        std::fs::read(&img).unwrap()
    );
    let missing = c
        .target(&m, "releases/acme/1.4.0/os.rootfs.img.zst")
        .await
        .unwrap();
    assert!(c.fetch_target_bytes(&t, &missing).await.is_err());

    let tar = p.dir.path().join("bundle.tar");
    p.run(&["bundle", "acme/1.3.0", "--out", tar.to_str().unwrap()]);
    let mut names: Vec<String> = tar::Archive::new(std::fs::File::open(&tar).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.contains(&"metadata/1.root.json".to_string()));
    assert!(names.contains(&"metadata/2.root.json".to_string()));
    assert!(names.contains(&"metadata/timestamp.json".to_string()));
    assert!(names
        .iter()
        .any(|n| n.ends_with(".os.rootfs.img.zst") && n.contains("1.3.0")));
    assert!(!names.iter().any(|n| n.contains("1.4.0")));
}

/// The metadata files, by name, with their bytes.
fn metadata(p: &Pub) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(p.repo().join("metadata"))
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// The role files `before` and `after` differ in (new or changed), by role name.
fn changed_roles(
    before: &std::collections::BTreeMap<String, Vec<u8>>,
    after: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Vec<String> {
    let mut roles: Vec<String> = after
        .iter()
        .filter(|(n, b)| before.get(*n) != Some(*b))
        .map(|(n, _)| {
            n.trim_end_matches(".json")
                .rsplit('.')
                .next()
                .unwrap_or(n)
                .to_owned()
        })
        .collect();
    roles.sort();
    roles.dedup();
    roles
}

#[test]
fn refresh_if_expiring_within_resigns_only_what_expires() {
    let p = Pub::new();
    p.run(&["init"]);
    // Defaults: timestamp 24 h, snapshot 7 d, targets 90 d, root 365 d.
    let m0 = metadata(&p);
    let out = p.run(&["refresh", "--if-expiring-within", "1h"]);
    assert!(out.contains("nothing to re-sign"), "{out}");
    assert!(out.contains("timestamp expires"), "{out}");
    assert_eq!(metadata(&p), m0, "nothing may change");

    let out = p.run(&["refresh", "--if-expiring-within", "2d"]);
    assert!(out.contains("re-signed timestamp"), "{out}");
    let m1 = metadata(&p);
    assert_eq!(changed_roles(&m0, &m1), ["timestamp"], "{out}");

    let out = p.run(&["refresh", "--timestamp-only", "--if-expiring-within", "8d"]);
    assert!(out.contains("re-signed timestamp"), "{out}");
    let m2 = metadata(&p);
    assert_eq!(changed_roles(&m1, &m2), ["timestamp"], "{out}");

    let out = p.run(&["refresh", "--if-expiring-within", "8d"]);
    assert!(out.contains("re-signed snapshot and timestamp"), "{out}");
    let m3 = metadata(&p);
    assert_eq!(changed_roles(&m2, &m3), ["snapshot", "timestamp"], "{out}");
    assert!(!out.contains("WARNING"), "{out}");

    let out = p.run(&["refresh", "--if-expiring-within", "100d"]);
    assert!(
        out.contains("WARNING: targets expires") && !out.contains("WARNING: root"),
        "{out}"
    );
    let bad = p.try_run(&["refresh", "--if-expiring-within", "soon"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--if-expiring-within"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn help_documents_every_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_patchpub"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "keygen", "init", "add", "promote", "pause", "resume", "withdraw", "refresh", "rotate",
        "root", "verify", "bundle",
    ] {
        assert!(text.contains(cmd), "--help lacks {cmd}");
    }
}

#[test]
fn role_thresholds_are_enforced_when_signing() {
    let p = Pub::new();
    p.run(&["init", "--targets-keys", "3", "--targets-threshold", "2"]);
    let img = p.image("rootfs.img", 1000);
    p.run(&add_args(img.to_str().unwrap(), "1.0.0"));
    let root: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.repo().join("metadata/root.json")).unwrap())
            .unwrap();
    assert_eq!(root["signed"]["roles"]["targets"]["threshold"], 2);
    assert_eq!(
        root["signed"]["roles"]["targets"]["keyids"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let targets: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.repo().join("metadata/targets.json")).unwrap())
            .unwrap();
    assert_eq!(targets["signatures"].as_array().unwrap().len(), 3);
    let mut keys: Vec<_> = std::fs::read_dir(p.keys())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|x| {
            x.to_string_lossy().contains("targets-") && x.extension().is_some_and(|e| e == "pem")
        })
        .collect();
    keys.sort();
    std::fs::remove_file(&keys[0]).unwrap();
    p.run(&add_args(img.to_str().unwrap(), "1.1.0"));
    std::fs::remove_file(&keys[1]).unwrap();
    let r = p.try_run(&add_args(img.to_str().unwrap(), "1.2.0"));
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("targets: 1 signing key(s)") && err.contains("threshold is 2"),
        "{err}"
    );
    assert!(p.run(&["verify"]).contains("acme/1.1.0"));
    // A threshold above the number of keys is refused at init.
    let q = Pub::new();
    let r = q.try_run(&["init", "--root-keys", "1", "--root-threshold", "2"]);
    assert!(!r.status.success());
    let r = q.try_run(&["init", "--targets-threshold", "0"]);
    assert!(!r.status.success());
    assert!(
        !q.keys().exists(),
        "a refused init must not leave keys behind"
    );
}

#[test]
fn man_page_and_completions_render() {
    let out = Command::new(env!("CARGO_BIN_EXE_patchpub"))
        .arg("man")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH patchpub"));
    let out = Command::new(env!("CARGO_BIN_EXE_patchpub"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("patchpub"));
}
