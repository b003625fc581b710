//! A release's components in the engine's lifecycle, against the in-memory device and
//! simulated installers: installed after the switch decision and before the OS slot is
//! armed, one audit record per step, a failure stopping the release before the OS
//! switch, a components-only release judged by the health checks without a reboot.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use patchd::audit::{Filter, Record};
use patchd::component::{Installer, Installers, Journal, SimInstaller};
use patchd::engine::{Actor, EngineHandle, RunExit, StateKind, StatusSnapshot};
use patchd::manifest::{Component, ComponentMethod};
use patchd::policy::{Kind, Severity};
use patchd::testkit::engine::{release, Harness};
use sha2::Digest;
use tokio::task::JoinHandle;

const WED_NOON: &str = "2026-11-25T12:00:00Z";

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

async fn wait_state(h: &EngineHandle, k: StateKind) -> StatusSnapshot {
    tokio::time::timeout(
        Duration::from_secs(10),
        h.wait_for(|s| s.state == k && s.busy.is_none()),
    )
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {k}; status: {:#?}", h.status()))
    .expect("engine stopped")
}

async fn exit(task: JoinHandle<RunExit>) -> RunExit {
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("engine did not stop")
        .expect("engine task panicked")
}

async fn records(h: &EngineHandle) -> Vec<Record> {
    h.history(Filter::default()).await.unwrap()
}

fn events(rs: &[Record]) -> Vec<String> {
    rs.iter()
        .map(|r| match r.extra.get("component") {
            Some(c) => format!("{}:{}", r.event, c.as_str().unwrap_or("")),
            None => r.event.clone(),
        })
        .collect()
}

fn pos(ev: &[String], e: &str) -> usize {
    ev.iter()
        .position(|x| x == e)
        .unwrap_or_else(|| panic!("no {e} record in {ev:?}"))
}

/// A component of release `release` whose payload is staged as staging would leave it.
fn component(hx: &Harness, release: &str, name: &str, method: &str, reboot: bool) -> Component {
    let payload = format!("{name} payload of {release}").into_bytes();
    let sha: String = sha2::Sha256::digest(&payload)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let order = if method == "app-bundle" { 1 } else { 2 };
    let c: Component = serde_json::from_value(serde_json::json!({
        "name": name, "version": format!("{release}-{name}"), "method": method,
        "target": format!("components/{name}"), "sha256": sha, "size": payload.len(),
        "needs_reboot": reboot, "order": order,
        "rollback": if method == "app-bundle" { "ab" } else { "reinstall_previous" },
    }))
    .unwrap();
    let dir = patchd::component::staged_dir(&hx.paths);
    patchd::component::store_payload(&dir, release, &c, &payload).unwrap();
    c
}

struct Sims {
    apps: Arc<SimInstaller>,
    handlers: Arc<SimInstaller>,
}

fn sims(hx: &mut Harness) -> Sims {
    let s = Sims {
        apps: Arc::new(SimInstaller::new()),
        handlers: Arc::new(SimInstaller::new()),
    };
    s.apps.preinstall("web", "1.0.0-web", "00");
    hx.installers = Installers::new()
        .with(ComponentMethod::AppBundle, s.apps.clone())
        .with(ComponentMethod::Handler, s.handlers.clone());
    s
}

fn version_of(i: &SimInstaller, name: &str) -> Option<String> {
    i.installed(name).unwrap().map(|x| x.version)
}

#[tokio::test]
async fn components_install_before_the_os_switch_and_commit_with_the_release() {
    let dir = tempfile::tempdir().unwrap();
    let mut hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    let s = sims(&mut hx);
    let mut r = release("2.0.0", 2, Kind::Security, Severity::High);
    r.components = vec![
        component(&hx, "2.0.0", "mcu", "handler", true),
        component(&hx, "2.0.0", "web", "app-bundle", false),
    ];
    hx.dev.publish(r);

    let (h, task) = hx.start().await.unwrap();
    h.check(Actor::Policy).await.unwrap();
    assert!(matches!(exit(task).await, RunExit::Rebooting { .. }));
    // In install order (web first), all staged before any switches.
    assert_eq!(s.apps.log(), ["stage:web", "switch:web"]);
    assert_eq!(s.handlers.log(), ["stage:mcu", "switch:mcu"]);
    assert_eq!(version_of(&s.apps, "web").as_deref(), Some("2.0.0-web"));
    assert_eq!(hx.dev.tries_left("b"), Some(1), "the OS slot is armed once");

    hx.dev.power_cycle();
    let (h, _task) = hx.start().await.unwrap();
    wait_state(&h, StateKind::Committed).await;
    let rs = records(&h).await;
    let staged = rs.iter().find(|r| r.event == "staged").unwrap();
    assert_eq!(
        staged.extra.get("components"),
        Some(&serde_json::json!(["mcu 2.0.0-mcu", "web 2.0.0-web"])),
        "{staged:?}"
    );
    let ev = events(&rs);
    let staged_web = pos(&ev, "component_staged:web");
    let staged_mcu = pos(&ev, "component_staged:mcu");
    let switched_web = pos(&ev, "component_switched:web");
    let switched_mcu = pos(&ev, "component_switched:mcu");
    let switching = pos(&ev, "switching");
    assert!(staged_web < staged_mcu && staged_mcu < switched_web && switched_web < switched_mcu);
    assert!(
        switched_mcu < switching,
        "components switch before the OS: {ev:?}"
    );
    let committed = pos(&ev, "committed");
    assert!(pos(&ev, "component_committed:web") < committed);
    assert!(pos(&ev, "component_committed:mcu") < committed);
    assert!(
        !Journal::path(&hx.paths).exists(),
        "journal left after commit"
    );
    assert!(h.verify_audit().await.unwrap().is_intact());
}

#[tokio::test]
async fn a_failing_component_stops_the_release_before_the_os_switch() {
    let dir = tempfile::tempdir().unwrap();
    let mut hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    let s = sims(&mut hx);
    s.handlers.fail("switch", "mcu");
    let mut r = release("2.0.0", 2, Kind::Security, Severity::High);
    r.components = vec![
        component(&hx, "2.0.0", "web", "app-bundle", false),
        component(&hx, "2.0.0", "mcu", "handler", true),
    ];
    hx.dev.publish(r);

    let (h, _task) = hx.start().await.unwrap();
    h.check(Actor::Policy).await.unwrap();
    let st = wait_state(&h, StateKind::Failed).await;
    let err = st.last_error.unwrap_or_default();
    assert!(
        err.contains("mcu") && err.contains("simulated switch failure"),
        "{err}"
    );
    assert!(
        hx.dev.reboot_requests().is_empty(),
        "rebooted after a failure"
    );
    assert_eq!(hx.dev.primary().as_str(), "a", "the OS slot switched");
    assert_eq!(hx.dev.tries_left("b"), None);
    // The app switched first, then was rolled back to what it was.
    assert_eq!(s.apps.log(), ["stage:web", "switch:web", "roll_back:web"]);
    assert_eq!(version_of(&s.apps, "web").as_deref(), Some("1.0.0-web"));
    let rs = records(&h).await;
    let ev = events(&rs);
    assert!(pos(&ev, "component_failed:mcu") < pos(&ev, "component_rolled_back:web"));
    assert!(!ev.iter().any(|e| e == "switching"), "{ev:?}");
    let failed = rs.iter().find(|r| r.event == "switch_failed").unwrap();
    assert_eq!(failed.release.as_deref(), Some("2.0.0"));
    assert_eq!(failed.extra.get("cause"), Some(&"component".into()));
    assert!(st.blocked.iter().any(|b| b.version == "2.0.0"));
}

#[tokio::test]
async fn a_components_only_release_commits_after_health_without_a_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let mut hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    let s = sims(&mut hx);
    hx.dev.set_same_image();
    let mut r = release("1.1.0", 1, Kind::Security, Severity::High);
    r.components = vec![component(&hx, "1.1.0", "web", "app-bundle", false)];
    hx.dev.publish(r);

    let (h, _task) = hx.start().await.unwrap();
    h.check(Actor::Policy).await.unwrap();
    let st = wait_state(&h, StateKind::Committed).await;
    assert!(hx.dev.reboot_requests().is_empty(), "rebooted");
    assert_eq!(hx.dev.primary().as_str(), "a");
    assert_eq!(st.current_version.as_deref(), Some("1.1.0"));
    assert_eq!(version_of(&s.apps, "web").as_deref(), Some("1.1.0-web"));
    let ev = events(&records(&h).await);
    assert!(pos(&ev, "component_switched:web") < pos(&ev, "component_committed:web"));
    assert!(pos(&ev, "component_committed:web") < pos(&ev, "committed"));
    assert!(
        !ev.iter().any(|e| e == "switching" || e == "reboot"),
        "{ev:?}"
    );
    assert!(!Journal::path(&hx.paths).exists());
}

#[tokio::test]
async fn a_components_only_release_failing_health_is_rolled_back_without_a_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let mut hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    let s = sims(&mut hx);
    hx.dev.set_same_image();
    // The device keeps running its 1.0.0 OS: the checks fail there after the app switch.
    hx.dev.set_unhealthy("1.0.0");
    let mut r = release("1.1.0", 1, Kind::Security, Severity::High);
    r.components = vec![component(&hx, "1.1.0", "web", "app-bundle", false)];
    hx.dev.publish(r);

    let (h, _task) = hx.start().await.unwrap();
    h.check(Actor::Policy).await.unwrap();
    // Recorded as the rollback it is, not as a failure waiting for an admin.
    let st = wait_state(&h, StateKind::RolledBack).await;
    let reason = match &st.lifecycle {
        patchd::engine::Lifecycle::RolledBack {
            release,
            bad_slot,
            back_to,
            reason,
        } => {
            assert_eq!(release.version, "1.1.0");
            assert_eq!((bad_slot.as_str(), back_to.as_str()), ("b", "a"));
            reason.clone()
        }
        other => panic!("not rolled back: {other:?}"),
    };
    assert!(
        reason.contains("health checks failed") && reason.contains("web"),
        "{reason}"
    );
    assert!(st.blocked.iter().any(|b| b.version == "1.1.0"));
    assert_eq!(st.current_version.as_deref(), Some("1.0.0"));
    assert!(hx.dev.reboot_requests().is_empty());
    assert_eq!(hx.dev.primary().as_str(), "a", "the OS slot switched");
    assert_eq!(s.apps.log(), ["stage:web", "switch:web", "roll_back:web"]);
    assert_eq!(version_of(&s.apps, "web").as_deref(), Some("1.0.0-web"));
    let rs = records(&h).await;
    let ev = events(&rs);
    assert!(pos(&ev, "component_rolled_back:web") < pos(&ev, "rolled_back"));
    assert!(
        !ev.iter().any(|e| e == "switch_failed" || e == "reboot"),
        "{ev:?}"
    );
    let rb = rs.iter().find(|r| r.event == "rolled_back").unwrap();
    assert_eq!(rb.release.as_deref(), Some("1.1.0"));
    assert_eq!(rb.extra.get("cause"), Some(&"health".into()));
    assert!(!Journal::path(&hx.paths).exists());
    // Nothing waits for an admin: the next check goes on by itself.
    assert!(
        !st.next.as_ref().is_some_and(|n| n.text.contains("admin")),
        "{:?}",
        st.next
    );
}

#[tokio::test]
async fn a_release_whose_components_this_device_cannot_install_fails_staging() {
    let dir = tempfile::tempdir().unwrap();
    let hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    // No installers at all: nothing offers `handler` here.
    let mut r = release("2.0.0", 2, Kind::Security, Severity::High);
    r.components = vec![component(&hx, "2.0.0", "mcu", "handler", true)];
    hx.dev.publish(r);

    let (h, _task) = hx.start().await.unwrap();
    h.check(Actor::Policy).await.unwrap();
    let rs = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let rs = records(&h).await;
            if rs.iter().any(|r| r.event == "staging_failed") {
                break rs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("no staging_failed record");
    let failed = rs.iter().find(|r| r.event == "staging_failed").unwrap();
    assert!(
        failed.reason.contains("not configured"),
        "{}",
        failed.reason
    );
    assert_eq!(failed.extra.get("cause"), Some(&"component".into()));
    let st = h.status();
    assert!(
        st.last_error.unwrap_or_default().contains("mcu"),
        "status does not say why"
    );
    assert!(hx.dev.reboot_requests().is_empty());
    // Refused before anything downloaded: the image was never staged.
    assert_eq!(hx.dev.stage_calls(), 0, "the image was staged first");
}

#[cfg(feature = "failpoints")]
#[tokio::test]
async fn a_power_cut_between_component_switches_is_rolled_back_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    let s = sims(&mut hx);
    let mut r = release("2.0.0", 2, Kind::Security, Severity::High);
    r.components = vec![
        component(&hx, "2.0.0", "web", "app-bundle", false),
        component(&hx, "2.0.0", "mcu", "handler", true),
    ];
    hx.dev.publish(r);
    // Power goes as the second component (mcu) starts to switch: web is switched.
    hx.failpoints.arm("component_switching", 1);
    let (h, task) = hx.start().await.unwrap();
    h.check(Actor::Policy).await.unwrap();
    assert!(matches!(exit(task).await, RunExit::PowerCut { .. }));
    assert_eq!(version_of(&s.apps, "web").as_deref(), Some("2.0.0-web"));
    assert!(Journal::path(&hx.paths).exists());

    hx.failpoints.disarm();
    let (h, _task) = hx.start().await.unwrap();
    assert_eq!(version_of(&s.apps, "web").as_deref(), Some("1.0.0-web"));
    assert_eq!(version_of(&s.handlers, "mcu"), None);
    assert!(!Journal::path(&hx.paths).exists(), "journal left");
    let rs = records(&h).await;
    let ev = events(&rs);
    let rec = pos(&ev, "components_reconciled");
    assert!(pos(&ev, "component_reconciled:web") < rec, "{ev:?}");
    assert!(rs[rec].reason.contains("web"), "{}", rs[rec].reason);
    assert_eq!(hx.dev.tries_left("b"), None, "the OS slot was armed");
}

#[tokio::test]
async fn failed_health_after_the_reboot_rolls_the_components_back_with_the_os() {
    let dir = tempfile::tempdir().unwrap();
    let mut hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    let s = sims(&mut hx);
    let mut r = release("2.0.0", 2, Kind::Security, Severity::High);
    r.components = vec![
        component(&hx, "2.0.0", "web", "app-bundle", false),
        component(&hx, "2.0.0", "mcu", "handler", true),
    ];
    hx.dev.publish(r);
    hx.dev.set_unhealthy("2.0.0");

    let (h, task) = hx.start().await.unwrap();
    h.check(Actor::Policy).await.unwrap();
    assert!(matches!(exit(task).await, RunExit::Rebooting { .. }));
    assert_eq!(version_of(&s.apps, "web").as_deref(), Some("2.0.0-web"));
    hx.dev.power_cycle();
    let (h, task) = hx.start().await.unwrap();
    match exit(task).await {
        RunExit::Rebooting { reason } => assert!(reason.contains("roll back"), "{reason}"),
        other => panic!("expected the rollback reboot, got {other:?}"),
    }
    // Reverse order: mcu (switched last) first, then web.
    assert_eq!(
        s.handlers.log(),
        ["stage:mcu", "switch:mcu", "roll_back:mcu"]
    );
    assert_eq!(version_of(&s.apps, "web").as_deref(), Some("1.0.0-web"));
    assert_eq!(version_of(&s.handlers, "mcu"), None);
    drop(h);
    let log = patchd::audit::AuditLog::open(hx.audit_path(), Default::default()).unwrap();
    let ev = events(&log.query(&Filter::default()).unwrap());
    let rolled_back = pos(&ev, "rolled_back");
    assert!(rolled_back < pos(&ev, "component_rolled_back:mcu"));
    assert!(pos(&ev, "component_rolled_back:mcu") < pos(&ev, "component_rolled_back:web"));
    assert!(!Journal::path(&hx.paths).exists());
}

/// Release 2.0.0 with an app bundle and a handler component, committed after its reboot
/// with probation on.
async fn committed_on_probation(hx: &mut Harness, s: &Sims) -> (EngineHandle, JoinHandle<RunExit>) {
    hx.settings.probation = Some(Duration::from_secs(86_400));
    let mut r = release("2.0.0", 2, Kind::Security, Severity::High);
    r.components = vec![
        component(hx, "2.0.0", "web", "app-bundle", false),
        component(hx, "2.0.0", "mcu", "handler", true),
    ];
    hx.dev.publish(r);
    let (h, task) = hx.start().await.unwrap();
    h.check(Actor::Policy).await.unwrap();
    assert!(matches!(exit(task).await, RunExit::Rebooting { .. }));
    hx.dev.power_cycle();
    let (h, task) = hx.start().await.unwrap();
    wait_state(&h, StateKind::Committed).await;
    assert_eq!(version_of(&s.apps, "web").as_deref(), Some("2.0.0-web"));
    let ev = events(&records(&h).await);
    assert!(pos(&ev, "component_committed:web") < pos(&ev, "committed"));
    assert!(
        Journal::path(&hx.paths).exists(),
        "the journal must stay through probation"
    );
    (h, task)
}

#[tokio::test]
async fn a_rollback_during_probation_takes_the_components_back_with_the_os() {
    let dir = tempfile::tempdir().unwrap();
    let mut hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    let s = sims(&mut hx);
    let (h, task) = committed_on_probation(&mut hx, &s).await;
    // A restart during probation keeps the committed journal (not an interrupted install).
    drop(h);
    task.abort();
    let (h, task) = hx.start().await.unwrap();
    wait_state(&h, StateKind::Committed).await;
    assert_eq!(version_of(&s.apps, "web").as_deref(), Some("2.0.0-web"));
    assert!(Journal::path(&hx.paths).exists());

    h.rollback(Actor::Uid(1000), "app team reports errors".into())
        .await
        .unwrap();
    match exit(task).await {
        RunExit::Rebooting { reason } => assert!(reason.contains("roll back"), "{reason}"),
        other => panic!("expected the rollback reboot, got {other:?}"),
    }
    assert_eq!(version_of(&s.apps, "web").as_deref(), Some("1.0.0-web"));
    assert_eq!(version_of(&s.handlers, "mcu"), None);
    assert_eq!(
        s.handlers.log(),
        ["stage:mcu", "switch:mcu", "roll_back:mcu"]
    );
    let log = patchd::audit::AuditLog::open(hx.audit_path(), Default::default()).unwrap();
    let ev = events(&log.query(&Filter::default()).unwrap());
    assert!(pos(&ev, "rolled_back") < pos(&ev, "component_rolled_back:mcu"));
    assert!(pos(&ev, "component_rolled_back:mcu") < pos(&ev, "component_rolled_back:web"));
    assert_eq!(
        ev.iter()
            .filter(|e| *e == "component_committed:web")
            .count(),
        1,
        "committed twice: {ev:?}"
    );
    assert!(!Journal::path(&hx.paths).exists());
}

#[tokio::test]
async fn once_probation_ends_the_components_stay_with_the_release() {
    let dir = tempfile::tempdir().unwrap();
    let mut hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    let s = sims(&mut hx);
    let (h, _task) = committed_on_probation(&mut hx, &s).await;
    hx.clock.advance(jiff::SignedDuration::from_hours(25));
    h.check(Actor::Policy).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while Journal::path(&hx.paths).exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the journal outlived probation");
    let ev = events(&records(&h).await);
    assert!(pos(&ev, "probation_over") > pos(&ev, "committed"));
    assert_eq!(version_of(&s.apps, "web").as_deref(), Some("2.0.0-web"));
}

#[tokio::test]
async fn a_component_the_new_boot_did_not_take_up_fails_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let mut hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    let s = sims(&mut hx);
    let mut r = release("2.0.0", 2, Kind::Security, Severity::High);
    r.components = vec![component(&hx, "2.0.0", "web", "app-bundle", false)];
    hx.dev.publish(r);
    let (h, task) = hx.start().await.unwrap();
    h.check(Actor::Policy).await.unwrap();
    assert!(matches!(exit(task).await, RunExit::Rebooting { .. }));
    // The health checks pass, but after the reboot the system shows the old version
    // (as an extension the new OS did not merge would).
    s.apps.preinstall("web", "1.0.0-web", "00");
    hx.dev.power_cycle();
    let (h, task) = hx.start().await.unwrap();
    match exit(task).await {
        RunExit::Rebooting { reason } => assert!(reason.contains("roll back"), "{reason}"),
        other => panic!("expected the rollback reboot, got {other:?}"),
    }
    drop(h);
    let log = patchd::audit::AuditLog::open(hx.audit_path(), Default::default()).unwrap();
    let rs = log.query(&Filter::default()).unwrap();
    let rb = rs
        .iter()
        .find(|r| r.event == "rolled_back")
        .expect("no rolled_back");
    assert!(
        rb.reason
            .contains("component web 2.0.0-web is not in effect")
            && rb.reason.contains("version 1.0.0-web"),
        "{}",
        rb.reason
    );
    assert!(!events(&rs).contains(&"committed".to_string()));
}
