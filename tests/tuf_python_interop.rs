//! Interop: our client refreshes and downloads from repositories made by python-tuf's
//! Metadata API (ed25519 and ECDSA keys, root rotation, delegations, succinct hash bins,
//! consistent snapshots or not); our canonical JSON matches securesystemslib's bytes.
mod tuf_support;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use patchd::clock::SystemClock;
use patchd::fetch::FileSource;
use patchd::trust::{Limits, TufClient};

/// The venv python with python-tuf, or None (the caller prints `skipped: …`).
pub fn python() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("PATCHD_TEST_PYTHON").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/.venv/bin/python")),
    ];
    candidates.into_iter().flatten().find(|p| {
        std::process::Command::new(p)
            .args(["-c", "import tuf.api.metadata, securesystemslib.signer"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

fn make_repo(py: &Path, consistent: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/make_python_tuf_repo.py");
    let out = std::process::Command::new(py)
        .arg(&script)
        .arg(dir.path())
        .arg(if consistent { "consistent" } else { "plain" })
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "generator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

#[tokio::test]
async fn our_client_reads_python_tuf_repositories() {
    let Some(py) = python() else {
        println!(
            "skipped: no python with python-tuf (set PATCHD_TEST_PYTHON or create tests/.venv)"
        );
        return;
    };
    for consistent in [true, false] {
        let repo = make_repo(&py, consistent);
        let expected: std::collections::BTreeMap<String, String> =
            serde_json::from_slice(&std::fs::read(repo.path().join("expected.json")).unwrap())
                .unwrap();
        let device = tempfile::tempdir().unwrap();
        let root = std::fs::read(repo.path().join("metadata/1.root.json")).unwrap();
        TufClient::init(device.path(), &root, &Limits::default()).unwrap();
        let mut c =
            TufClient::load(device.path(), Arc::new(SystemClock), Limits::default()).unwrap();
        let meta = FileSource::new(repo.path().join("metadata"));
        let targets = FileSource::new(repo.path().join("targets"));
        c.refresh(&meta).await.unwrap();
        assert_eq!(c.root().common.version, 2, "root rotation followed");
        let out = tempfile::tempdir().unwrap();
        for (path, content) in &expected {
            let t = c.target(&meta, path).await.unwrap();
            let dest = out.path().join(t.local_file_name());
            assert!(c.download_target_file(&targets, &t, &dest).await.unwrap());
            assert_eq!(std::fs::read(&dest).unwrap(), content.as_bytes(), "{path}");
            // Second time: already there, nothing fetched.
            assert!(!c.download_target_file(&targets, &t, &dest).await.unwrap());
        }
        // A restart re-verifies what was stored, and refreshes without change.
        let mut c2 =
            TufClient::load(device.path(), Arc::new(SystemClock), Limits::default()).unwrap();
        c2.refresh(&meta).await.unwrap();
        assert_eq!(c2.snapshot_version(), Some(1));
        let stored: Vec<String> = tuf_support::files_in(device.path()).into_keys().collect();
        for f in [
            "root.json",
            "timestamp.json",
            "snapshot.json",
            "targets.json",
            "delegated.json",
            "hashed.json",
        ] {
            assert!(
                stored.contains(&f.to_string()),
                "{f} missing from {stored:?}"
            );
        }
        assert!(stored.iter().any(|f| f.starts_with("bin-")));
    }
}

#[test]
fn canonical_json_matches_securesystemslib() {
    let Some(py) = python() else {
        println!(
            "skipped: no python with python-tuf (set PATCHD_TEST_PYTHON or create tests/.venv)"
        );
        return;
    };
    let repo = make_repo(&py, true);
    let dir = repo.path().join("canonical");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let v = patchd::trust::canonical::parse_strict(&std::fs::read(&p).unwrap(), 64).unwrap();
        let want = std::fs::read(p.with_extension("canonical")).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&patchd::trust::canonical::encode(&v).unwrap()),
            String::from_utf8_lossy(&want),
            "{}",
            p.display()
        );
        n += 1;
    }
    assert_eq!(n, 4);
}

#[test]
fn tuf_client_example_over_http_reads_python_tuf_repository() {
    let Some(py) = python() else {
        println!(
            "skipped: no python with python-tuf (set PATCHD_TEST_PYTHON or create tests/.venv)"
        );
        return;
    };
    let Some(bin) = tuf_support::tuf_client() else {
        println!("skipped: examples/tuf-client not built (cargo build --example tuf-client)");
        return;
    };
    let repo = make_repo(&py, true);
    let logs = tempfile::tempdir().unwrap();
    let Some(server) = tuf_support::Server::start(repo.path(), logs.path().join("log")) else {
        println!("skipped: cannot start python3 -m http.server");
        return;
    };
    let dev = tempfile::tempdir().unwrap();
    let md = dev.path().join("metadata");
    let td = dev.path().join("targets");
    let root = repo.path().join("metadata/1.root.json");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(&bin)
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(&[
        "--metadata-dir",
        md.to_str().unwrap(),
        "init",
        root.to_str().unwrap(),
    ]);
    let (mu, tu) = (server.url("metadata/"), server.url("targets/"));
    run(&[
        "--metadata-dir",
        md.to_str().unwrap(),
        "--metadata-url",
        &mu,
        "--target-base-url",
        &tu,
        "--target-dir",
        td.to_str().unwrap(),
        "--target-name",
        "bins/x.txt",
        "--target-name",
        "delegated/a.txt",
        "--target-name",
        "files/hello.txt",
        "download",
    ]);
    assert_eq!(
        std::fs::read(td.join("bins%2Fx.txt")).unwrap(),
        b"hash-binned content\n"
    );
    assert_eq!(
        std::fs::read(td.join("delegated%2Fa.txt")).unwrap(),
        b"delegated content\n"
    );
    assert_eq!(
        std::fs::read(td.join("files%2Fhello.txt")).unwrap(),
        b"hello from python-tuf\n"
    );
    assert_eq!(server.requests_for("hello.txt"), 1);
}
