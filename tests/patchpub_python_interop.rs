//! Interop: python-tuf's ngclient `Updater` refreshes from and downloads out of a
//! repository made by patchpub, served over HTTP from 127.0.0.1; after root and
//! targets key rotation it follows the new root chain from its stored trusted root.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use patchd::publish::{AddRelease, InitOptions, Repo};
use patchd::trust::KeyScheme;
use sha2::{Digest, Sha256};

fn python() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("PATCHD_TEST_PYTHON").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/.venv/bin/python")),
    ];
    candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .args(["-c", "import tuf.ngclient"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

/// `python -m http.server` on a free port of 127.0.0.1; killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(py: &Path, dir: &Path) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(py)
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = child.try_wait() {
                let mut err = String::new();
                if let Some(e) = child.stderr.take() {
                    for l in BufReader::new(e).lines().map_while(Result::ok) {
                        err.push_str(&l);
                    }
                }
                panic!("http.server exited with {st}: {err}");
            }
            assert!(Instant::now() < deadline, "http.server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ngclient(py: &Path, md: &Path, port: u16, tdir: &Path, names: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/patchpub_ngclient.py");
    let out = Command::new(py)
        .arg(script)
        .arg(md)
        .arg(format!("http://127.0.0.1:{port}/metadata/"))
        .arg(format!("http://127.0.0.1:{port}/targets/"))
        .arg(tdir)
        .args(names)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python-tuf ngclient failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sha256_file(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

fn stored_file(repo: &Repo, dir: &str, suffix: &str) -> PathBuf {
    std::fs::read_dir(repo.targets_dir().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(suffix))
        .unwrap()
}

#[test]
fn python_tuf_ngclient_downloads_from_patchpub_repository() {
    let Some(py) = python() else {
        println!(
            "skipped: no python with python-tuf (set PATCHD_TEST_PYTHON or create tests/.venv)"
        );
        return;
    };
    for scheme in [KeyScheme::Ed25519, KeyScheme::EcdsaP256] {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = InitOptions::new(tmp.path().join("keys"));
        opts.scheme = scheme;
        let repo = Repo::init(tmp.path().join("repo"), &opts).unwrap();
        let img = tmp.path().join("rootfs.img");
        std::fs::write(&img, vec![7u8; 100_000]).unwrap();
        repo.add_release(&AddRelease::new("acme", "1.0.0".parse().unwrap(), &img))
            .unwrap();

        let server = Server::start(&py, repo.dir());
        let md = tmp.path().join("py-metadata");
        let tdir = tmp.path().join("py-targets");
        std::fs::create_dir_all(&md).unwrap();
        std::fs::create_dir_all(&tdir).unwrap();
        std::fs::copy(
            repo.metadata_dir().join("1.root.json"),
            md.join("root.json"),
        )
        .unwrap();

        let names = [
            "releases/acme/1.0.0/manifest.json",
            "releases/acme/1.0.0/os.rootfs.img.zst",
        ];
        let got = ngclient(&py, &md, server.port, &tdir, &names);
        assert_eq!(got["root_version"], 1);
        let want_img = sha256_file(&stored_file(
            &repo,
            "releases/acme/1.0.0",
            ".os.rootfs.img.zst",
        ));
        assert_eq!(got["targets"][names[1]], want_img.as_str(), "{scheme:?}");
        let want_manifest =
            sha256_file(&stored_file(&repo, "releases/acme/1.0.0", ".manifest.json"));
        assert_eq!(got["targets"][names[0]], want_manifest.as_str());

        // Rotate keys and publish more: python-tuf follows root 1 → 2 → 3 from its store.
        repo.rotate(patchd::trust::metadata::RoleType::Root, scheme)
            .unwrap();
        repo.rotate(patchd::trust::metadata::RoleType::Targets, scheme)
            .unwrap();
        repo.withdraw("acme", &"1.0.0".parse().unwrap()).unwrap();
        repo.add_release(&AddRelease::new("acme", "1.1.0".parse().unwrap(), &img))
            .unwrap();
        repo.refresh().unwrap();
        let got = ngclient(
            &py,
            &md,
            server.port,
            &tdir,
            &["releases/acme/1.1.0/manifest.json"],
        );
        assert_eq!(got["root_version"], 3);
        let want = sha256_file(&stored_file(&repo, "releases/acme/1.1.0", ".manifest.json"));
        assert_eq!(
            got["targets"]["releases/acme/1.1.0/manifest.json"],
            want.as_str()
        );
    }
}
