//! A tiny signed Debian archive and a private apt/dpkg tree, built by the real tools
//! (`dpkg-deb`, `apt-ftparchive`, `gpg`), so the apt source is tested against the
//! system's own apt, offline.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The tools the fixture needs; `None` when all are there, else the missing one.
pub fn missing_tool() -> Option<&'static str> {
    ["apt-get", "apt-ftparchive", "dpkg-deb", "gpg", "gzip"]
        .into_iter()
        .find(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// One changelog entry: version, urgency, text (may name CVEs).
pub struct Entry(pub &'static str, pub &'static str, pub &'static str);

/// How an archive's Release file is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    Good,
    /// No InRelease and no Release.gpg.
    Unsigned,
    /// Signed, then the Release text changed after signing.
    Tampered,
    /// Unsigned, and the source line says `[trusted=yes]`.
    TrustedYes,
}

/// One origin (a flat archive in its own directory).
pub struct Archive {
    pub dir: &'static str,
    pub origin: &'static str,
    pub label: &'static str,
    pub suite: &'static str,
    pub signing: Signing,
    /// Packages: name and changelog entries (newest first; the first is the version).
    pub packages: Vec<(&'static str, Vec<Entry>)>,
}

pub struct World {
    pub top: PathBuf,
    /// The apt/dpkg tree (`-o Dir=`).
    pub root: PathBuf,
    pub key: PathBuf,
    gnupg: PathBuf,
    /// More files of a package version: (name, version, path in the package, content);
    /// `DEBIAN/…` are maintainer scripts, `etc/…` conffiles.
    extras: std::cell::RefCell<Vec<(String, String, String, String)>>,
}

impl World {
    /// A signing key and an empty apt tree under `top`.
    pub fn new(top: &Path, root: &Path) -> World {
        let gnupg = top.join("gnupg");
        std::fs::create_dir_all(&gnupg).unwrap();
        std::fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let w = World {
            top: top.to_path_buf(),
            root: root.to_path_buf(),
            key: top.join("archive-key.gpg"),
            gnupg,
            extras: Default::default(),
        };
        run(w.gpg().args([
            "--passphrase",
            "",
            "--quick-gen-key",
            "Test Archive <archive@example.org>",
            "ed25519",
            "sign",
            "never",
        ]));
        let key = run(w.gpg().arg("--export"));
        std::fs::write(&w.key, key).unwrap();
        for d in [
            "etc/apt/sources.list.d",
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/trusted.gpg.d",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/lib/dpkg",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("var/lib/dpkg/available"), "").unwrap();
        w
    }

    /// Ship `content` at `path` in package `name` version `version` (built later by
    /// [`World::archive`]): `DEBIAN/postinst` and the like are maintainer scripts, files
    /// under `etc/` are conffiles.
    pub fn add_file(&self, name: &str, version: &str, path: &str, content: &str) {
        self.extras
            .borrow_mut()
            .push((name.into(), version.into(), path.into(), content.into()));
    }

    fn gpg(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", &self.gnupg)
            .args(["--batch", "--quiet", "--pinentry-mode", "loopback"]);
        c
    }

    /// Build the archive's packages, indexes and Release under `top/repo/<dir>`, and add
    /// it to the tree's sources with `Signed-By` the test key.
    pub fn archive(&self, a: &Archive) -> PathBuf {
        let dir = self.top.join("repo").join(a.dir);
        let pool = dir.join("pool");
        std::fs::create_dir_all(&pool).unwrap();
        for (name, entries) in &a.packages {
            self.deb(name, entries, &pool);
        }
        let packages = run(Command::new("apt-ftparchive")
            .current_dir(&dir)
            .args(["packages", "pool"]));
        std::fs::write(dir.join("Packages"), packages).unwrap();
        let o = |k: &str, v: &str| format!("APT::FTPArchive::Release::{k}={v}");
        let release = run(Command::new("apt-ftparchive").current_dir(&dir).args([
            "-o",
            &o("Origin", a.origin),
            "-o",
            &o("Label", a.label),
            "-o",
            &o("Suite", a.suite),
            "-o",
            &o("Codename", a.dir),
            "release",
            ".",
        ]));
        std::fs::write(dir.join("Release"), release).unwrap();
        if !matches!(a.signing, Signing::Unsigned | Signing::TrustedYes) {
            run(self
                .gpg()
                .arg("--yes")
                .arg("--clearsign")
                .arg("-o")
                .arg(dir.join("InRelease"))
                .arg(dir.join("Release")));
        }
        if a.signing == Signing::Tampered {
            let p = dir.join("InRelease");
            let text = std::fs::read_to_string(&p).unwrap();
            let changed = text.replacen(&format!("Origin: {}", a.origin), "Origin: Mallory", 1);
            assert_ne!(text, changed);
            std::fs::write(&p, changed).unwrap();
        }
        let options = match a.signing {
            Signing::TrustedYes => "trusted=yes".to_string(),
            _ => format!("signed-by={}", self.key.display()),
        };
        let line = format!("deb [{options}] file:{} ./\n", dir.display());
        let list = self.root.join("etc/apt/sources.list");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(list)
            .unwrap();
        f.write_all(line.as_bytes()).unwrap();
        dir
    }

    fn deb(&self, name: &str, entries: &[Entry], pool: &Path) {
        let version = entries[0].0;
        let build = self.top.join("build").join(format!("{name}_{version}"));
        let doc = build.join("usr/share/doc").join(name);
        std::fs::create_dir_all(build.join("DEBIAN")).unwrap();
        std::fs::create_dir_all(&doc).unwrap();
        std::fs::write(
            build.join("DEBIAN/control"),
            format!(
                "Package: {name}\nVersion: {version}\nArchitecture: all\n\
                 Maintainer: Test <test@example.org>\nDescription: test package {name}\n"
            ),
        )
        .unwrap();
        let mut conffiles = String::new();
        for (_, _, path, content) in self
            .extras
            .borrow()
            .iter()
            .filter(|(n, v, _, _)| n == name && v == version)
        {
            let p = build.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, content).unwrap();
            if path.starts_with("DEBIAN/") || path.starts_with("etc/init.d/") {
                std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                    .unwrap();
            }
            if path.starts_with("etc/") {
                conffiles.push_str(&format!("/{path}\n"));
            }
        }
        if !conffiles.is_empty() {
            std::fs::write(build.join("DEBIAN/conffiles"), conffiles).unwrap();
        }
        let mut log = String::new();
        for (i, Entry(v, urgency, text)) in entries.iter().enumerate() {
            // Newest first, one day apart, ending 2026-11-28.
            let day: jiff::Zoned = format!("2026-11-{:02}T10:00:00+00:00[UTC]", 28 - i)
                .parse()
                .unwrap();
            let date = jiff::fmt::rfc2822::to_string(&day).unwrap();
            log.push_str(&format!(
                "{name} ({v}) stable; urgency={urgency}\n\n  * {text}\n\n \
                 -- Test <test@example.org>  {date}\n\n"
            ));
        }
        let mut gz = Command::new("gzip")
            .arg("-9n")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        gz.stdin.take().unwrap().write_all(log.as_bytes()).unwrap();
        let out = gz.wait_with_output().unwrap();
        std::fs::write(doc.join("changelog.Debian.gz"), out.stdout).unwrap();
        run(Command::new("dpkg-deb")
            .args(["-Zgzip", "--root-owner-group", "--build"])
            .arg(&build)
            .arg(pool));
    }

    /// The dpkg status file: these packages installed (`hold`: `apt-mark hold`ed).
    pub fn installed(&self, pkgs: &[(&str, &str, bool)]) {
        let mut s = String::new();
        for (name, version, hold) in pkgs {
            let want = if *hold { "hold" } else { "install" };
            s.push_str(&format!(
                "Package: {name}\nStatus: {want} ok installed\nPriority: optional\n\
                 Maintainer: Test <test@example.org>\nArchitecture: all\nVersion: {version}\n\
                 Description: test package {name}\n\n"
            ));
        }
        std::fs::write(self.root.join("var/lib/dpkg/status"), s).unwrap();
    }
}
