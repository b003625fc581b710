//! Nobody but an authorized admin changes anything: every mutating call is checked
//! (test uid mode, a fake polkit that records the exact CheckAuthorization call, and the
//! real polkitd on the private bus), an unprivileged caller is denied every one of them,
//! each denial is audited, and read-only calls stay open.

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use patchd::dbus::AuthMode;
use patchd::testkit::fake::FakeBackend;
use support::*;
use zbus::zvariant::OwnedValue;

/// Every mutating patchctl command and the polkit action it needs.
const MUTATING: &[(&[&str], &str)] = &[
    (&["check"], "org.patchd.patchd1.check"),
    (&["install"], "org.patchd.patchd1.install"),
    (&["install", "1.1.0", "--now"], "org.patchd.patchd1.install"),
    (&["switch"], "org.patchd.patchd1.switch"),
    (&["cancel"], "org.patchd.patchd1.install"),
    (
        &["rollback", "--reason", "x"],
        "org.patchd.patchd1.rollback",
    ),
    (&["mark-good"], "org.patchd.patchd1.mark"),
    (&["mark-bad", "--reason", "x"], "org.patchd.patchd1.mark"),
    (&["hold", "--reason", "freeze"], "org.patchd.patchd1.hold"),
    (&["release-hold"], "org.patchd.patchd1.hold"),
    (&["approve", "1.1.0"], "org.patchd.patchd1.approve"),
    (
        &["retry", "1.1.0", "--reason", "fixed"],
        "org.patchd.patchd1.retry",
    ),
    (
        &["fleet", "release", "--reason", "looked"],
        "org.patchd.patchd1.fleet",
    ),
];

const READ_ONLY: &[&[&str]] = &[
    &["status"],
    &["status", "--json"],
    &["list"],
    &["history"],
    &["inventory", "--json"],
    &["audit", "verify"],
];

/// Run every mutating command as `nobody`: all refused with exit 3, all audited, nothing
/// changed; read-only commands work.
async fn assert_unprivileged_denied(bus: &TestBus, backend: &FakeBackend) {
    let before = backend.current();
    for (args, action) in MUTATING {
        let r = patchctl_as(bus, Some(NOBODY), args).await;
        assert_eq!(r.code, 3, "{args:?} as nobody must be NotAuthorized: {r:?}");
        assert!(r.stderr.contains("not authorized"), "{args:?}: {r:?}");
        let d = backend.denials();
        let last = d
            .last()
            .unwrap_or_else(|| panic!("{args:?}: denial not audited"));
        assert_eq!(last.caller.uid, NOBODY, "{args:?}");
        assert_eq!(last.action, *action, "{args:?}");
        // The D-Bus member: `mark-good` → MarkGood; `hold` calls PlaceHold (it answers
        // what it replaced).
        let method: String = match args[0] {
            "hold" => "PlaceHold".into(),
            "fleet" => "FleetRelease".into(),
            verb => verb
                .split('-')
                .map(|w| w[..1].to_uppercase() + &w[1..])
                .collect(),
        };
        assert_eq!(last.method, method, "{args:?}");
        assert!(last.caller.bus_name.starts_with(':'), "{last:?}");
    }
    assert_eq!(backend.denials().len(), MUTATING.len());
    assert_eq!(backend.current(), before, "a denied call changed the state");
    let audited = backend
        .records()
        .iter()
        .filter(|r| r["event"] == "dbus.denied" && r["actor"] == format!("uid:{NOBODY}"))
        .count();
    assert_eq!(audited, MUTATING.len());
    for args in READ_ONLY {
        let r = patchctl_as(bus, Some(NOBODY), args).await;
        assert_eq!(r.code, 0, "read-only {args:?} must be open: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprivileged_user_denied_in_uid_mode() {
    if !need_root("running patchctl as another user") {
        return;
    }
    let Some(bus) = TestBus::start() else { return };
    let backend = FakeBackend::new(Duration::from_millis(1)).into_arc();
    let _svc = start_service(&bus, backend.clone(), root_only()).await;
    assert_unprivileged_denied(&bus, &backend).await;
    // Root is allowed.
    let r = patchctl(&bus, &["check"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_permissions(&bus, None, "yes", "").await;
    assert_permissions(&bus, Some(NOBODY), "no", "test authorization mode").await;
}

/// `patchctl permissions` (GetAuthorizations): every polkit action of the policy file
/// listed for the caller with `result` and, unless allowed, a `text` containing `why`.
async fn assert_permissions(bus: &TestBus, uid: Option<u32>, result: &str, why: &str) {
    let r = patchctl_as(bus, uid, &["--json", "permissions"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let mut listed: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    listed.sort_unstable();
    let mut expected: Vec<&str> = MUTATING.iter().map(|m| m.1).collect();
    expected.push("org.patchd.patchd1.repair");
    expected.sort_unstable();
    expected.dedup();
    assert_eq!(listed, expected, "{r:?}");
    for (action, answer) in v.as_object().unwrap() {
        assert_eq!(answer["result"], result, "{action} for {uid:?}: {r:?}");
        let text = answer["text"].as_str().unwrap();
        assert!(text.contains(why), "{action} for {uid:?}: {text}");
        assert_eq!(text.is_empty(), result == "yes", "{action}: {text}");
    }
    let human = patchctl_as(bus, uid, &["permissions"]).await;
    assert_eq!(human.code, 0, "{human:?}");
    assert!(
        human.stdout.lines().any(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some("install") && w.next() == Some(result)
        }),
        "{human:?}"
    );
}

type Seen = Arc<Mutex<Vec<(String, HashMap<String, OwnedValue>, String, u32)>>>;

/// Stand-in for org.freedesktop.PolicyKit1: authorizes uid 0 only, like polkit with no
/// agent, and records every call.
struct FakeAuthority {
    seen: Seen,
}

#[zbus::interface(name = "org.freedesktop.PolicyKit1.Authority")]
impl FakeAuthority {
    async fn check_authorization(
        &self,
        subject: (String, HashMap<String, OwnedValue>),
        action_id: String,
        _details: HashMap<String, String>,
        flags: u32,
        _cancellation_id: String,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> zbus::fdo::Result<(bool, bool, HashMap<String, String>)> {
        let name = subject
            .1
            .get("name")
            .and_then(|v| <&str>::try_from(v).ok())
            .map(str::to_owned)
            .ok_or_else(|| zbus::fdo::Error::InvalidArgs("subject without name".into()))?;
        self.seen
            .lock()
            .unwrap()
            .push((subject.0.clone(), subject.1, action_id, flags));
        let dbus = zbus::fdo::DBusProxy::new(conn).await?;
        let bus_name = zbus::names::BusName::try_from(name.as_str())
            .map_err(|e| zbus::fdo::Error::InvalidArgs(e.to_string()))?;
        let uid = dbus.get_connection_unix_user(bus_name).await?;
        Ok((uid == 0, uid != 0, HashMap::new()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polkit_is_asked_with_system_bus_name_subject() {
    if !need_root("running patchctl as another user") {
        return;
    }
    let Some(bus) = TestBus::start() else { return };
    let seen: Seen = Arc::default();
    let _polkit = zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .serve_at(
            "/org/freedesktop/PolicyKit1/Authority",
            FakeAuthority { seen: seen.clone() },
        )
        .unwrap()
        .name("org.freedesktop.PolicyKit1")
        .unwrap()
        .build()
        .await
        .expect("fake polkit on the test bus");
    let backend = FakeBackend::new(Duration::from_millis(1)).into_arc();
    let _svc = start_service(&bus, backend.clone(), AuthMode::Polkit).await;

    let r = patchctl(&bus, &["check"]).await;
    assert_eq!(r.code, 0, "root allowed by polkit: {r:?}");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let (kind, details, action, flags) = &seen[0];
        assert_eq!(kind, "system-bus-name");
        assert_eq!(action, "org.patchd.patchd1.check");
        assert_eq!(*flags, 0, "no interaction unless the caller allowed it");
        let keys: Vec<&String> = details.keys().collect();
        assert_eq!(
            keys,
            vec!["name"],
            "subject must be the bus name only, never a PID"
        );
        let name = <&str>::try_from(&details["name"]).unwrap();
        assert!(name.starts_with(':'), "unique name expected: {name}");
    }
    // Read-only calls do not ask polkit.
    assert_eq!(patchctl_as(&bus, Some(NOBODY), &["status"]).await.code, 0);
    assert_eq!(seen.lock().unwrap().len(), 1);

    seen.lock().unwrap().clear();
    assert_unprivileged_denied(&bus, &backend).await;
    let seen = seen.lock().unwrap();
    let actions: Vec<&str> = seen.iter().map(|s| s.2.as_str()).collect();
    let expected: Vec<&str> = MUTATING.iter().map(|m| m.1).collect();
    assert_eq!(actions, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_polkit_means_denied() {
    let Some(bus) = TestBus::start() else { return };
    let backend = FakeBackend::new(Duration::from_millis(1)).into_arc();
    let _svc = start_service(&bus, backend.clone(), AuthMode::Polkit).await;
    let r = patchctl(&bus, &["check"]).await;
    assert_eq!(r.code, 3, "fail closed without polkit: {r:?}");
    assert!(r.stderr.contains("polkit"), "{r:?}");
    assert_eq!(backend.denials().len(), 1);
    assert_eq!(backend.current().state, "idle");
}

const POLKITD: &str = "/usr/lib/polkit-1/polkitd";
const ACTIONS_DIR: &str = "/usr/share/polkit-1/actions";

/// Removes the policy file the test installed (unless it was there before).
struct InstalledPolicy(Option<std::path::PathBuf>);

impl Drop for InstalledPolicy {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_polkitd_denies_unprivileged_user() {
    if !need_root("starting polkitd and running patchctl as another user") {
        return;
    }
    if !std::path::Path::new(POLKITD).exists() {
        println!("skipped: {POLKITD} missing (apt-get install polkitd)");
        return;
    }
    let Some(bus) = TestBus::start() else { return };
    // polkitd only knows actions from its system directory.
    let src = repo_root().join("systemd/org.patchd.patchd1.policy");
    let dst = std::path::Path::new(ACTIONS_DIR).join("org.patchd.patchd1.policy");
    let _installed = if dst.exists() {
        InstalledPolicy(None)
    } else {
        std::fs::create_dir_all(ACTIONS_DIR).expect("actions dir");
        std::fs::copy(&src, &dst).expect("install policy file");
        InstalledPolicy(Some(dst.clone()))
    };
    let log = bus.dir.path().join("polkitd.log");
    let mut polkitd = tokio::process::Command::new(POLKITD)
        .arg("--no-debug")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(bus.dir.path().join("polkitd.err")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn polkitd");
    let conn = bus.connect().await;
    let dbus = zbus::fdo::DBusProxy::new(&conn).await.unwrap();
    let mut up = false;
    for _ in 0..100 {
        let name = zbus::names::BusName::try_from("org.freedesktop.PolicyKit1").unwrap();
        if dbus.name_has_owner(name).await.unwrap_or(false) {
            up = true;
            break;
        }
        if let Ok(Some(_)) = polkitd.try_wait() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !up {
        let err = std::fs::read_to_string(bus.dir.path().join("polkitd.err")).unwrap_or_default();
        println!("skipped: polkitd did not come up on the private bus: {err}");
        return;
    }
    let backend = FakeBackend::new(Duration::from_millis(1)).into_arc();
    let _svc = start_service(&bus, backend.clone(), AuthMode::Polkit).await;

    let r = patchctl(&bus, &["check"]).await;
    assert_eq!(r.code, 0, "polkitd authorizes root: {r:?}");
    // Approve and Retry: authorized by polkitd for root and recorded by the backend.
    let r = patchctl(&bus, &["approve", "1.1.0"]).await;
    assert_eq!(r.code, 0, "polkitd authorizes root to approve: {r:?}");
    let r = patchctl(&bus, &["retry", "1.1.0", "--reason", "fixed the config"]).await;
    assert_eq!(r.code, 0, "polkitd authorizes root to retry: {r:?}");
    let recs = backend.records();
    assert!(
        recs.iter()
            .any(|r| r["event"] == "approved" && r["actor"] == "uid:0" && r["version"] == "1.1.0"),
        "{recs:?}"
    );
    assert!(
        recs.iter().any(|r| r["event"] == "retry_allowed"
            && r["actor"] == "uid:0"
            && r["reason"] == "fixed the config"),
        "{recs:?}"
    );
    // What a page disables: polkitd's answer without a prompt, per caller.
    assert_permissions(&bus, None, "yes", "").await;
    assert_permissions(&bus, Some(NOBODY), "auth", "requires authentication").await;
    let before = backend.records().len();
    assert_unprivileged_denied(&bus, &backend).await;
    assert!(
        !backend.records()[before..]
            .iter()
            .any(|r| r["event"] == "approved" || r["event"] == "retry_allowed"),
        "a denied approve or retry reached the backend"
    );
    let _ = polkitd.kill().await;
}
