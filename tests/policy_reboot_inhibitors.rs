//! Reboot inhibitors: logged-in sessions and shutdown inhibitor locks from logind over
//! D-Bus (a fake `org.freedesktop.login1` on a private `dbus-daemon --session`,
//! `support::SessionBus`), and an
//! admin command; each reason is reported.

#[path = "support/mod.rs"]
mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use patchd::config::InhibitorConfig;
use patchd::paths::Paths;
use patchd::policy::inhibit::{
    may_reboot, reboot_blockers, FixedLogin, InhibitorLock, Logind, SessionInfo,
};
use patchd::policy::Decision;
use support::SessionBus;
use zbus::zvariant::OwnedObjectPath;

type SessionRow = (String, u32, String, String, OwnedObjectPath);
type LockRow = (String, String, String, String, u32, u32);

struct Manager {
    sessions: Vec<SessionRow>,
    locks: Vec<LockRow>,
}

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl Manager {
    fn list_sessions(&self) -> Vec<SessionRow> {
        self.sessions.clone()
    }
    fn list_inhibitors(&self) -> Vec<LockRow> {
        self.locks.clone()
    }
}

struct Session {
    class: String,
}

#[zbus::interface(name = "org.freedesktop.login1.Session")]
impl Session {
    #[zbus(property)]
    fn class(&self) -> String {
        self.class.clone()
    }
}

fn cfg() -> InhibitorConfig {
    InhibitorConfig::default()
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_and_locks_from_logind_over_dbus() {
    let Some(bus) = SessionBus::start() else {
        return;
    };
    let sessions = [
        ("3", 1000, "alice", "user"),
        ("c1", 0, "gdm", "greeter"),
        ("5", 0, "root", "user"),
    ];
    let mut b = bus.service("org.freedesktop.login1");
    let mut rows = Vec::new();
    for (id, uid, user, class) in sessions {
        let path = format!("/org/freedesktop/login1/session/_{id}");
        rows.push((
            id.to_string(),
            uid,
            user.to_string(),
            "seat0".to_string(),
            OwnedObjectPath::try_from(path.as_str()).unwrap(),
        ));
        b = b
            .serve_at(
                path,
                Session {
                    class: class.into(),
                },
            )
            .unwrap();
    }
    let locks = vec![
        (
            "shutdown:sleep".to_string(),
            "backup".to_string(),
            "nightly backup running".to_string(),
            "block".to_string(),
            0,
            4242,
        ),
        (
            "sleep".to_string(),
            "NetworkManager".to_string(),
            "x".to_string(),
            "delay".to_string(),
            0,
            1,
        ),
        (
            "shutdown".to_string(),
            "ModemManager".to_string(),
            "y".to_string(),
            "delay".to_string(),
            0,
            2,
        ),
    ];
    let _server = b
        .serve_at(
            "/org/freedesktop/login1",
            Manager {
                sessions: rows,
                locks,
            },
        )
        .unwrap()
        .build()
        .await
        .unwrap();
    let logind = Logind::new(bus.client().await);
    let d = tempfile::tempdir().unwrap();
    let paths = Paths::new(d.path());

    let reasons = reboot_blockers(&cfg(), Some(&logind), &paths).await;
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].starts_with("2 user session(s) logged in: alice (uid 1000, session 3), root"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("backup")
            && reasons[1].contains("nightly backup running")
            && reasons[1].contains("4242"),
        "{reasons:?}"
    );

    let off = InhibitorConfig {
        sessions: false,
        inhibitor_locks: false,
        ..cfg()
    };
    assert!(reboot_blockers(&off, Some(&logind), &paths)
        .await
        .is_empty());

    let now: jiff::Timestamp = "2026-11-28T03:00:00Z".parse().unwrap();
    match may_reboot(&cfg(), Some(&logind), &paths, now).await {
        Decision::Wait { reason, until } => {
            assert!(
                reason.starts_with("reboot waits: 2 user session(s)"),
                "{reason}"
            );
            assert_eq!(until, Some("2026-11-28T03:05:00Z".parse().unwrap()));
        }
        d => panic!("{d}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_logind_does_not_block() {
    let Some(bus) = SessionBus::start() else {
        return;
    };
    let logind = Logind::new(bus.client().await);
    let d = tempfile::tempdir().unwrap();
    let now: jiff::Timestamp = "2026-11-28T03:00:00Z".parse().unwrap();
    let r = may_reboot(&cfg(), Some(&logind), &Paths::new(d.path()), now).await;
    assert!(r.is_allowed(), "{r}");
}

fn script(root: &Path, p: &str, body: &str) {
    let f = root.join(p.trim_start_matches('/'));
    fs::create_dir_all(f.parent().unwrap()).unwrap();
    fs::write(&f, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn command_inhibitor_reports_its_output() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: inhibitor commands must be root-owned; run as root");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let paths = Paths::new(d.path());
    script(
        d.path(),
        "/usr/local/bin/ok-to-reboot",
        "echo \"batch job 17 still running\"; exit 1",
    );
    script(d.path(), "/usr/local/bin/yes", "exit 0");
    script(d.path(), "/usr/local/bin/hang", "sleep 30");
    let with = |cmd: &str| InhibitorConfig {
        command: Some(vec![cmd.to_string()]),
        command_timeout: Duration::from_millis(300),
        ..cfg()
    };
    let login = FixedLogin::default();
    let r = reboot_blockers(&with("/usr/local/bin/ok-to-reboot"), Some(&login), &paths).await;
    assert_eq!(r.len(), 1);
    assert!(
        r[0].contains("exit status: 1") && r[0].contains("batch job 17"),
        "{r:?}"
    );
    assert!(
        reboot_blockers(&with("/usr/local/bin/yes"), Some(&login), &paths)
            .await
            .is_empty()
    );
    let r = reboot_blockers(&with("/usr/local/bin/hang"), None, &paths).await;
    assert!(r[0].contains("timed out"), "{r:?}");
    let r = reboot_blockers(&with("/usr/local/bin/missing"), None, &paths).await;
    assert_eq!(
        r.len(),
        1,
        "a command that cannot run makes the reboot wait"
    );
}

#[tokio::test]
async fn fixed_login_for_the_simulation() {
    let login = FixedLogin {
        sessions: vec![SessionInfo {
            id: "1".into(),
            uid: 1000,
            user: "bob".into(),
            class: "user".into(),
        }],
        inhibitors: vec![InhibitorLock {
            what: "shutdown".into(),
            who: "dpkg".into(),
            why: "upgrade".into(),
            mode: "block".into(),
            uid: 0,
            pid: 9,
        }],
    };
    let d = tempfile::tempdir().unwrap();
    let r = reboot_blockers(&cfg(), Some(&login), &Paths::new(d.path())).await;
    assert_eq!(r.len(), 2, "{r:?}");
}
