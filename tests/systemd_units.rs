//! The shipped systemd files are valid as systemd itself reads them: `systemd-analyze
//! verify` on every unit (with ExecStart pointing at the built binaries), and the
//! tmpfiles.d snippet creates patchd's directories with the intended modes.

#[path = "support/mod.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use support::*;

const UNITS: &[&str] = &["patchd.service", "patchd-boot-check.service"];

#[test]
fn units_pass_systemd_analyze_verify() {
    if !have("systemd-analyze") {
        println!("skipped: systemd-analyze not installed (apt-get install systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bindir = std::path::Path::new(env!("CARGO_BIN_EXE_patchctl"))
        .parent()
        .unwrap()
        .to_owned();
    let mut paths = Vec::new();
    for u in UNITS {
        let text = std::fs::read_to_string(repo_root().join("systemd").join(u)).unwrap();
        // systemd-analyze checks that ExecStart binaries exist and are executable.
        let text = text.replace("/usr/bin/", &format!("{}/", bindir.display()));
        let p = dir.path().join(u);
        std::fs::write(&p, text).unwrap();
        paths.push(p);
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&paths)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            UNITS.iter().any(|u| l.contains(u)) || l.contains(&dir.path().display().to_string())
        })
        .collect();
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        ours.is_empty(),
        "systemd-analyze complains about our units:\n{}",
        ours.join("\n")
    );
}

#[test]
fn tmpfiles_create_private_directories() {
    if !have("systemd-tmpfiles") {
        println!("skipped: systemd-tmpfiles not installed (apt-get install systemd)");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let out = Command::new("systemd-tmpfiles")
        .arg("--create")
        .arg(format!("--root={}", root.path().display()))
        .arg(repo_root().join("systemd/patchd.tmpfiles"))
        .output()
        .expect("run systemd-tmpfiles");
    assert!(out.status.success(), "{out:?}");
    for (d, mode) in [
        ("var/lib/patchd", 0o700),
        ("var/cache/patchd", 0o700),
        ("run/patchd", 0o755),
        ("etc/patchd/health.d", 0o755),
    ] {
        let m = std::fs::metadata(root.path().join(d)).unwrap_or_else(|e| panic!("{d}: {e}"));
        assert!(m.is_dir(), "{d}");
        assert_eq!(m.permissions().mode() & 0o7777, mode, "{d}");
    }
}

#[test]
fn polkit_policy_declares_every_action() {
    let text =
        std::fs::read_to_string(repo_root().join("systemd/org.patchd.patchd1.policy")).unwrap();
    // The actions the methods ask for (dbus::methods::METHODS) are exactly the ones the
    // policy declares.
    let wanted: std::collections::BTreeSet<&str> = patchd::dbus::methods::actions()
        .into_iter()
        .map(|a| a.id())
        .collect();
    let declared: std::collections::BTreeSet<&str> = text
        .split("<action id=\"")
        .skip(1)
        .filter_map(|c| c.split('"').next())
        .collect();
    assert_eq!(
        declared, wanted,
        "systemd/org.patchd.patchd1.policy differs from the actions in dbus::methods::METHODS"
    );
    // Kept briefly for all but `repair` and `retry`, which ask every time.
    assert_eq!(
        text.matches("<allow_active>auth_admin_keep</allow_active>")
            .count(),
        7
    );
    assert!(
        !text.contains("<allow_any>yes"),
        "no action may be open to anyone"
    );
}
