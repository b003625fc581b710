//! The lifecycle engine end to end against the in-memory device: every path of the
//! state machine in shared/DESIGN.md, driven only through `EngineHandle`.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use patchd::audit::Filter;
use patchd::engine::ports::WhyNot;
use patchd::engine::{Actor, EngineError, EngineHandle, RunExit, StateKind, StatusSnapshot};
use patchd::policy::{Kind, Schedule, Severity};
use patchd::slot::SlotState;
use patchd::testkit::engine::{release, Harness};
use tokio::task::JoinHandle;

const WED_NOON: &str = "2026-11-25T12:00:00Z";
const ADMIN: Actor = Actor::Uid(1000);

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

/// Check, let the engine stage and switch, and return once it asked for the reboot.
async fn check_until_reboot(h: &EngineHandle, task: JoinHandle<RunExit>) {
    h.check(Actor::Policy).await.expect("check");
    match exit(task).await {
        RunExit::Rebooting { .. } => {}
        other => panic!("expected a reboot, got {other:?}"),
    }
}

async fn events(h: &EngineHandle) -> Vec<String> {
    h.history(Filter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect()
}

#[tokio::test]
async fn stages_outside_window_switches_inside_and_commits_after_health() {
    let dir = tempfile::tempdir().unwrap();
    let mut hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    hx.policy.schedule = Schedule::parse("UTC", &["Sat,Sun 02:00-05:00"]).unwrap();
    hx.dev
        .publish(release("2.0.0", 2, Kind::Security, Severity::High));

    let (h, task) = hx.start().await.unwrap();
    let avail = h.check(Actor::Policy).await.unwrap();
    assert_eq!(avail.len(), 1);
    assert_eq!(avail[0].kind, Kind::Security);
    assert_eq!(avail[0].severity, Severity::High);
    assert!(!avail[0].install_now && avail[0].may_stage);
    assert!(
        avail[0].why_not[0]
            .to_string()
            .contains("maintenance window"),
        "{:?}",
        avail[0].why_not
    );

    let st = wait_state(&h, StateKind::Staged).await;
    assert_eq!(st.staged_version.as_deref(), Some("2.0.0"));
    assert_eq!(hx.dev.slot_status("b").state, SlotState::Verified);
    assert!(st.next_window.is_some());
    assert!(
        hx.dev.reboot_requests().is_empty(),
        "switched outside the window"
    );

    // Saturday 02:30: the window is open.
    hx.clock.set(ts("2026-11-28T02:30:00Z"));
    check_until_reboot(&h, task).await;
    assert_eq!(hx.dev.tries_left("b"), Some(1));

    hx.dev.power_cycle();
    assert_eq!(hx.dev.booted().as_str(), "b");
    let (h, _task) = hx.start().await.unwrap();
    let st = wait_state(&h, StateKind::Committed).await;
    assert_eq!(st.current_version.as_deref(), Some("2.0.0"));
    assert_eq!(st.security_floor, 2);
    assert_eq!(hx.dev.primary().as_str(), "b");
    assert_eq!(hx.dev.slot_status("b").state, SlotState::Good);

    let ev = events(&h).await;
    for e in [
        "update_available",
        "staging",
        "staged",
        "switching",
        "reboot",
        "booted_new_slot",
        "committed",
    ] {
        assert!(ev.iter().any(|x| x == e), "no {e} record in {ev:?}");
    }
    let report = h.verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report}");
}

#[tokio::test]
async fn failed_health_check_rolls_back_and_is_never_retried() {
    let dir = tempfile::tempdir().unwrap();
    let hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    hx.dev
        .publish(release("2.0.0", 2, Kind::Security, Severity::High));
    hx.dev.set_unhealthy("2.0.0");

    let (h, task) = hx.start().await.unwrap();
    check_until_reboot(&h, task).await;
    hx.dev.power_cycle();
    let (_h, task) = hx.start().await.unwrap();
    // Health fails → mark bad, switch back, reboot.
    match exit(task).await {
        RunExit::Rebooting { reason } => assert!(reason.contains("roll back"), "{reason}"),
        other => panic!("expected the rollback reboot, got {other:?}"),
    }
    assert!(hx.dev.is_bad("b"));
    hx.dev.power_cycle();
    assert_eq!(hx.dev.booted().as_str(), "a");

    let (h, _task) = hx.start().await.unwrap();
    let st = wait_state(&h, StateKind::RolledBack).await;
    assert_eq!(st.current_version.as_deref(), Some("1.0.0"));
    assert!(st.blocked.iter().any(|b| b.version == "2.0.0"));
    assert_eq!(
        st.security_floor, 0,
        "a failed release must not raise the floor"
    );

    // A later check shows why it is not retried, and nothing is staged.
    let avail = h.check(Actor::Policy).await.unwrap();
    assert!(avail[0]
        .why_not
        .iter()
        .any(|w| matches!(w, WhyNot::FailedHere { .. })));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(h.status().state, StateKind::RolledBack);
    assert!(matches!(
        h.install(ADMIN, Some("2.0.0".into()), false).await,
        Err(EngineError::Refused { .. })
    ));
    assert!(h.verify_audit().await.unwrap().is_intact());
}

#[tokio::test]
async fn new_slot_that_does_not_boot_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    hx.dev
        .publish(release("2.0.0", 2, Kind::Bugfix, Severity::Medium));
    hx.dev.set_unbootable("2.0.0");

    let (h, task) = hx.start().await.unwrap();
    check_until_reboot(&h, task).await;
    hx.dev.power_cycle();
    assert_eq!(hx.dev.booted().as_str(), "a", "bootloader fell back");
    let (h, _task) = hx.start().await.unwrap();
    let st = wait_state(&h, StateKind::RolledBack).await;
    match &st.lifecycle {
        patchd::engine::Lifecycle::RolledBack { reason, .. } => {
            assert_eq!(reason, "new slot did not boot")
        }
        other => panic!("{other:?}"),
    }
    assert!(hx.dev.is_bad("b"));
    assert!(st.blocked.iter().any(|b| b.version == "2.0.0"));
}

#[tokio::test]
async fn hold_with_expiry_blocks_then_releases_itself() {
    let dir = tempfile::tempdir().unwrap();
    let hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    hx.dev
        .publish(release("2.0.0", 2, Kind::Security, Severity::High));
    let (h, task) = hx.start().await.unwrap();
    let until = ts(WED_NOON)
        .checked_add(SignedDuration::from_hours(1))
        .unwrap();
    h.hold(ADMIN, "quarter-end freeze".into(), Some(until), None)
        .await
        .unwrap();
    let avail = h.check(Actor::Policy).await.unwrap();
    assert!(
        avail[0]
            .why_not
            .iter()
            .any(|w| w.to_string().contains("quarter-end freeze")),
        "{:?}",
        avail[0].why_not
    );
    assert_eq!(h.status().holds.len(), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(hx.dev.reboot_requests().is_empty());

    hx.clock.advance(SignedDuration::from_hours(2));
    check_until_reboot(&h, task).await;
    hx.dev.power_cycle();
    let (h, _t) = hx.start().await.unwrap();
    let ev = events(&h).await;
    assert!(ev.iter().any(|e| e == "hold"), "{ev:?}");
    assert!(ev.iter().any(|e| e == "hold_expired"), "{ev:?}");
}

#[tokio::test]
async fn commands_during_staging_are_busy_and_cancel_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    hx.dev
        .publish(release("2.0.0", 2, Kind::Security, Severity::High));
    hx.dev.set_stage_gate(true);
    let (h, _task) = hx.start().await.unwrap();
    h.check(Actor::Policy).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        h.wait_for(|s| s.busy.as_deref() == Some("staging")),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(matches!(
        h.switch(ADMIN, true).await,
        Err(EngineError::Busy { .. })
    ));
    assert!(matches!(
        h.install(ADMIN, None, false).await,
        Err(EngineError::Busy { .. })
    ));
    // Read-only calls still answer.
    assert!(h.verify_audit().await.unwrap().is_intact());
    h.cancel(ADMIN).await.unwrap();
    let st = h.status();
    assert_eq!(st.state, StateKind::Idle);
    assert!(!hx.dev.slot_status("b").state.is_bootable());
    hx.dev.set_stage_gate(false);
}

#[tokio::test]
async fn security_floor_refuses_older_releases_unless_an_admin_allows() {
    let dir = tempfile::tempdir().unwrap();
    let hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    hx.dev
        .publish(release("2.0.0", 5, Kind::Security, Severity::Critical));
    let (h, task) = hx.start().await.unwrap();
    check_until_reboot(&h, task).await;
    hx.dev.power_cycle();
    let (h, _t) = hx.start().await.unwrap();
    assert_eq!(wait_state(&h, StateKind::Committed).await.security_floor, 5);

    hx.dev
        .publish(release("2.1.0", 4, Kind::Feature, Severity::Low));
    let avail = h.check(Actor::Policy).await.unwrap();
    let r = avail.iter().find(|a| a.version == "2.1.0").unwrap();
    assert!(r
        .why_not
        .iter()
        .any(|w| matches!(w, WhyNot::BelowSecurityFloor { floor: 5, .. })));
    assert!(!r.may_stage);
    match h.install(ADMIN, Some("2.1.0".into()), false).await {
        Err(EngineError::Refused { why, .. }) => {
            assert!(matches!(why, WhyNot::BelowSecurityFloor { .. }))
        }
        other => panic!("{other:?}"),
    }
    h.allow_below_floor(ADMIN, "2.1.0".into()).await.unwrap();
    let ev = events(&h).await;
    assert!(ev.iter().any(|e| e == "floor_override"));
    let started = h.install(ADMIN, Some("2.1.0".into()), false).await.unwrap();
    assert_eq!(
        started.slot.as_str(),
        "a",
        "must stage into the inactive slot"
    );
}

#[tokio::test]
async fn manual_rollback_during_probation_restores_previous_release() {
    let dir = tempfile::tempdir().unwrap();
    let mut hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    hx.settings.probation = Some(Duration::from_secs(86_400));
    hx.dev
        .publish(release("2.0.0", 3, Kind::Bugfix, Severity::High));
    let (h, task) = hx.start().await.unwrap();
    check_until_reboot(&h, task).await;
    hx.dev.power_cycle();
    let (h, task) = hx.start().await.unwrap();
    let st = wait_state(&h, StateKind::Committed).await;
    assert_eq!(st.security_floor, 0, "floor waits for the end of probation");
    h.rollback(ADMIN, "app team reports errors".into())
        .await
        .unwrap();
    assert!(matches!(exit(task).await, RunExit::Rebooting { .. }));
    hx.dev.power_cycle();
    assert_eq!(hx.dev.booted().as_str(), "a");
    let (h, _t) = hx.start().await.unwrap();
    let st = wait_state(&h, StateKind::RolledBack).await;
    assert_eq!(st.current_version.as_deref(), Some("1.0.0"));
    assert_eq!(hx.dev.primary().as_str(), "a");
    let hist = h
        .history(Filter {
            event: Some("rolled_back".into()),
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!(hist.len(), 1);
    assert_eq!(hist[0].actor, ADMIN);
}

#[tokio::test]
async fn probation_ends_and_raises_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let mut hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    hx.settings.probation = Some(Duration::from_secs(3600));
    hx.dev
        .publish(release("2.0.0", 3, Kind::Bugfix, Severity::High));
    let (h, task) = hx.start().await.unwrap();
    check_until_reboot(&h, task).await;
    hx.dev.power_cycle();
    let (h, _t) = hx.start().await.unwrap();
    wait_state(&h, StateKind::Committed).await;
    hx.clock.advance(SignedDuration::from_hours(2));
    h.check(Actor::Policy).await.unwrap();
    let st = tokio::time::timeout(
        Duration::from_secs(10),
        h.wait_for(|s| s.security_floor == 3),
    )
    .await
    .expect("floor not raised after probation")
    .unwrap();
    assert!(matches!(
        st.lifecycle,
        patchd::engine::Lifecycle::Committed { previous: None, .. }
    ));
}

#[tokio::test]
async fn failed_staging_leaves_slot_unbootable_and_retries_later() {
    let dir = tempfile::tempdir().unwrap();
    let hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    hx.dev
        .publish(release("2.0.0", 2, Kind::Security, Severity::High));
    hx.dev.set_stage_fails(true);
    let (h, _t) = hx.start().await.unwrap();
    h.check(Actor::Policy).await.unwrap();
    let st = tokio::time::timeout(
        Duration::from_secs(10),
        h.wait_for(|s| s.last_error.is_some() && s.busy.is_none()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(st.state, StateKind::UpdateAvailable);
    assert!(st.last_error.unwrap().contains("sha256 mismatch"));
    assert_eq!(hx.dev.slot_status("b").state, SlotState::Incomplete);
    assert!(hx.dev.reboot_requests().is_empty());
}

#[tokio::test]
async fn reboot_inhibitor_makes_the_switch_wait() {
    let dir = tempfile::tempdir().unwrap();
    let hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    hx.dev
        .publish(release("2.0.0", 2, Kind::Security, Severity::High));
    hx.dev
        .set_inhibitors(vec!["2 users logged in (logind)".into()]);
    let (h, task) = hx.start().await.unwrap();
    h.check(Actor::Policy).await.unwrap();
    let st = wait_state(&h, StateKind::Staged).await;
    assert_eq!(
        st.reboot_waiting,
        vec!["2 users logged in (logind)".to_string()]
    );
    match h.switch(ADMIN, false).await {
        Err(EngineError::SwitchRefused { why }) => {
            assert!(why
                .iter()
                .any(|w| matches!(w, WhyNot::RebootInhibited { .. })))
        }
        other => panic!("{other:?}"),
    }
    hx.dev.set_inhibitors(vec![]);
    check_until_reboot(&h, task).await;
}

#[tokio::test]
async fn bad_state_files_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    let state = hx.paths.state_dir().join("state.json");
    std::fs::create_dir_all(hx.paths.state_dir()).unwrap();

    std::fs::write(&state, b"{\"version\":2,\"lifecycle\":{\"sta").unwrap();
    let e = hx.start().await.unwrap_err().to_string();
    assert!(
        e.contains("state.json") && e.contains("not valid JSON"),
        "{e}"
    );

    std::fs::write(&state, b"{\"version\":7}").unwrap();
    let e = hx.start().await.unwrap_err().to_string();
    assert!(e.contains("version 7"), "{e}");
    // Nothing was overwritten: the admin can still inspect the file.
    assert_eq!(std::fs::read(&state).unwrap(), b"{\"version\":7}");
}

#[tokio::test]
async fn illegal_commands_return_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    let (h, _t) = hx.start().await.unwrap();
    for r in [
        h.switch(ADMIN, false).await,
        h.rollback(ADMIN, "x".into()).await,
        h.mark_good(ADMIN).await,
        h.mark_bad(ADMIN, "x".into()).await,
    ] {
        match r {
            Err(EngineError::Illegal(e)) => assert_eq!(e.from, StateKind::Idle),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        h.install(ADMIN, None, false).await,
        Err(EngineError::NothingToInstall { .. })
    ));
    assert!(matches!(
        h.hold(ADMIN, "x".into(), None, Some("not-a-version".into()))
            .await,
        Err(EngineError::BadVersion { .. })
    ));
}
