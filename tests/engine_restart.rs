//! What a daemon restart (crash, SIGKILL, `systemctl restart`) in the middle of a step
//! does, against the in-memory device: staging re-enters the same release and slot
//! (the pipeline resumes from its checkpoint), or is abandoned when the release may no
//! longer be installed; health checks during probation run again after a restart.
//! The same with a real `patchd` process and real byte counts: tests/daemon_resume.rs.

use std::time::Duration;

use jiff::Timestamp;
use patchd::audit::{Filter, Record};
use patchd::engine::{Actor, EngineHandle, Lifecycle, RunExit, StateKind, StatusSnapshot};
use patchd::policy::{Kind, Schedule, Severity};
use patchd::slot::SlotState;
use patchd::testkit::engine::{release, Harness};
use tokio::task::JoinHandle;

const WED_NOON: &str = "2026-11-25T12:00:00Z";

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

async fn wait_for(
    h: &EngineHandle,
    what: &str,
    f: impl Fn(&StatusSnapshot) -> bool,
) -> StatusSnapshot {
    tokio::time::timeout(Duration::from_secs(10), h.wait_for(f))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}; status: {:#?}", h.status()))
        .expect("engine stopped")
}

/// A crash: the task dies where it is, nothing more is written.
async fn crash(task: JoinHandle<RunExit>) {
    task.abort();
    let _ = task.await;
}

async fn events(h: &EngineHandle) -> Vec<Record> {
    h.history(Filter::default()).await.unwrap()
}

fn names(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| r.event.clone()).collect()
}

/// Start staging 2.0.0 into slot b and crash while the write is in flight.
async fn crash_while_staging(hx: &Harness) {
    hx.dev
        .publish(release("2.0.0", 2, Kind::Security, Severity::High));
    hx.dev.set_stage_gate(true);
    hx.dev
        .set_inhibitors(vec!["test keeps the machine up".into()]);
    let (h, task) = hx.start().await.unwrap();
    h.check(Actor::Policy).await.unwrap();
    let st = wait_for(&h, "staging", |s| {
        s.state == StateKind::Staging && s.busy.is_some()
    })
    .await;
    assert!(matches!(&st.lifecycle, Lifecycle::Staging { slot, .. } if slot.as_str() == "b"));
    crash(task).await;
}

#[tokio::test]
async fn restart_during_staging_resumes_the_same_release_into_the_same_slot() {
    let dir = tempfile::tempdir().unwrap();
    let hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    crash_while_staging(&hx).await;
    assert_eq!(hx.dev.slot_status("b").state, SlotState::Incomplete);

    hx.dev.set_stage_gate(false);
    let (h, _task) = hx.start().await.unwrap();
    // Nobody asks for a check or an install: reconciliation alone resumes.
    let st = wait_for(&h, "staged", |s| s.state == StateKind::Staged).await;
    assert!(matches!(&st.lifecycle, Lifecycle::Staged { release, slot }
        if release.version == "2.0.0" && slot.as_str() == "b"));
    let b = hx.dev.slot_status("b");
    assert_eq!(b.state, SlotState::Verified);
    assert_eq!(b.version.as_deref(), Some("2.0.0"));
    let ev = names(&events(&h).await);
    let resumed = ev
        .iter()
        .position(|e| e == "reconcile_staging_resumed")
        .unwrap_or_else(|| panic!("no reconcile_staging_resumed in {ev:?}"));
    assert!(
        ev[resumed..].iter().any(|e| e == "staged"),
        "staged after resuming: {ev:?}"
    );
    assert!(
        !ev.iter()
            .any(|e| e == "reconcile_staging_interrupted" || e == "staging_failed"),
        "staging was discarded instead of resumed: {ev:?}"
    );
    // Staging again went through the normal path: no second `staging` record with
    // another slot, and the state file no longer records the write intent.
    assert_eq!(ev.iter().filter(|e| *e == "staging").count(), 1, "{ev:?}");
    assert!(hx.verify_audit().unwrap().is_intact());
}

#[tokio::test]
async fn restart_during_staging_abandons_a_release_the_repository_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    crash_while_staging(&hx).await;
    // The publisher removed it while the daemon was down.
    hx.dev.set_releases(vec![]);
    hx.dev.set_stage_gate(false);
    let (h, _task) = hx.start().await.unwrap();
    let st = wait_for(&h, "staging abandoned", |s| {
        s.state != StateKind::Staging && s.busy.is_none()
    })
    .await;
    assert_eq!(st.state, StateKind::UpdateAvailable, "{st:#?}");
    assert_eq!(hx.dev.slot_status("b").state, SlotState::Incomplete);
    let ev = events(&h).await;
    let failed = ev
        .iter()
        .find(|r| r.event == "staging_failed")
        .unwrap_or_else(|| panic!("no staging_failed: {:?}", names(&ev)));
    assert!(
        failed.reason.contains("no longer offers"),
        "{}",
        failed.reason
    );
    assert!(st.last_error.unwrap_or_default().contains("not resumed"));
}

#[tokio::test]
async fn restart_after_staging_finished_but_before_it_was_recorded_keeps_the_slot() {
    let dir = tempfile::tempdir().unwrap();
    let hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    crash_while_staging(&hx).await;
    // The pipeline finished and recorded the slot verified; the engine died before
    // writing `staged`. Let the in-memory stage complete with the engine gone.
    hx.dev.set_stage_gate(false);
    let updates = hx.dev.updates();
    let (tx, _rx) = tokio::sync::watch::channel(None);
    updates
        .stage(
            &semver::Version::new(2, 0, 0),
            &patchd::testkit::engine::slot_name("b"),
            tx,
        )
        .await
        .unwrap();
    hx.dev.set_releases(vec![]); // no second staging could succeed
    let (h, _task) = hx.start().await.unwrap();
    let st = wait_for(&h, "staged", |s| s.state == StateKind::Staged).await;
    assert!(
        matches!(&st.lifecycle, Lifecycle::Staged { release, .. } if release.version == "2.0.0")
    );
    let ev = events(&h).await;
    let staged = ev.iter().rfind(|r| r.event == "staged").unwrap();
    assert!(
        staged.reason.contains("before the restart"),
        "{}",
        staged.reason
    );
}

#[tokio::test]
async fn probation_checks_run_again_after_a_restart_and_roll_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    hx.settings.probation = Some(Duration::from_secs(86_400));
    // Only the re-run after the restart may find the failure: no periodic re-run
    // within the test.
    hx.settings.probation_check_every = Duration::from_secs(86_400);
    hx.dev
        .publish(release("2.0.0", 3, Kind::Bugfix, Severity::High));
    let (h, task, st) = hx.settle().await.unwrap();
    assert!(
        matches!(
            st.lifecycle,
            Lifecycle::Committed {
                probation_until: Some(_),
                ..
            }
        ),
        "{st:#?}"
    );
    assert_eq!(st.current_version.as_deref(), Some("2.0.0"));
    // Let the first probation run (started at boot) finish healthy.
    wait_for(&h, "idle engine", |s| s.busy.is_none()).await;
    assert!(!names(&events(&h).await).contains(&"rolled_back".to_string()));

    // The service breaks; the daemon crashes and is restarted (no reboot).
    hx.dev.set_unhealthy("2.0.0");
    crash(task).await;
    let (h, task) = hx.start().await.unwrap();
    let st = wait_for(&h, "rollback", |s| s.state == StateKind::RolledBack).await;
    assert!(
        matches!(&st.lifecycle, Lifecycle::RolledBack { release, .. } if release.version == "2.0.0")
    );
    let exit = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("engine did not reboot")
        .unwrap();
    assert!(matches!(exit, RunExit::Rebooting { .. }), "{exit:?}");
    hx.dev.power_cycle();
    assert_eq!(hx.dev.booted().as_str(), "a");
    assert_eq!(hx.dev.running_version().as_deref(), Some("1.0.0"));
    let (h, _task) = hx.start().await.unwrap();
    let st = wait_for(&h, "back on 1.0.0", |s| {
        s.state == StateKind::RolledBack && s.busy.is_none()
    })
    .await;
    assert!(st.blocked.iter().any(|b| b.version == "2.0.0"), "{st:#?}");
    let ev = events(&h).await;
    let rb = ev.iter().find(|r| r.event == "rolled_back").unwrap();
    assert!(rb.reason.contains("during probation"), "{}", rb.reason);
    assert!(hx.verify_audit().unwrap().is_intact());
}

#[tokio::test]
async fn restart_during_staging_waits_for_the_window_when_staging_outside_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut hx = Harness::new(dir.path(), "1.0.0", ts(WED_NOON));
    crash_while_staging(&hx).await;
    // The restart comes with a configuration that stages only inside windows, and the
    // only window is at the weekend.
    hx.policy.schedule = Schedule::parse("UTC", &["Sat,Sun 02:00-05:00"]).unwrap();
    hx.policy.stage_outside_windows = false;
    hx.dev.set_stage_gate(false);
    let (h, _task) = hx.start().await.unwrap();
    let st = wait_for(&h, "staging deferred", |s| {
        s.state != StateKind::Staging && s.busy.is_none()
    })
    .await;
    assert_eq!(st.state, StateKind::UpdateAvailable, "{st:#?}");
    assert_eq!(hx.dev.slot_status("b").state, SlotState::Incomplete);
    let ev = names(&events(&h).await);
    assert!(ev.contains(&"staging_deferred".to_string()), "{ev:?}");
    assert!(!ev.contains(&"staging_failed".to_string()), "{ev:?}");
    assert_eq!(ev.iter().filter(|e| *e == "staging").count(), 1, "{ev:?}");
    assert!(st.last_error.is_none(), "{:?}", st.last_error);
    let next = st.next.map(|n| n.text).unwrap_or_default();
    assert!(
        next.contains("staging waits (staging only inside maintenance windows"),
        "{next}"
    );
}
