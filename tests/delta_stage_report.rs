//! The staging report (method, bytes fetched, bytes reused) reaches the engine's
//! `staged` audit record and its status snapshot.

use std::time::Duration;

use patchd::audit::Filter;
use patchd::engine::{Actor, StageMethod, StateKind};
use patchd::policy::{Kind, Schedule, Severity};
use patchd::testkit::engine::{release, Harness};

#[tokio::test]
async fn staged_audit_record_and_status_carry_the_stage_report() {
    let dir = tempfile::tempdir().unwrap();
    let mut hx = Harness::new(dir.path(), "1.0.0", "2026-11-25T12:00:00Z".parse().unwrap());
    // A Wednesday noon outside the window: staged, then waiting (not rebooting).
    hx.policy.schedule = Schedule::parse("UTC", &["Sat,Sun 02:00-05:00"]).unwrap();
    hx.dev
        .publish(release("2.0.0", 2, Kind::Security, Severity::High));
    let (h, _task) = hx.start().await.unwrap();
    h.check(Actor::Policy).await.unwrap();
    let st = tokio::time::timeout(
        Duration::from_secs(10),
        h.wait_for(|s| s.state == StateKind::Staged && s.busy.is_none()),
    )
    .await
    .expect("staged in time")
    .expect("engine running");
    let report = st.last_stage.expect("status shows the last staging");
    assert_eq!(report.method, StageMethod::Full);
    assert!(report.bytes_fetched > 0);

    let recs = h.history(Filter::default()).await.unwrap();
    let staged = recs
        .iter()
        .find(|r| r.event == "staged")
        .expect("a staged record");
    assert_eq!(staged.extra["method"], "full");
    assert_eq!(staged.extra["bytes_fetched"], report.bytes_fetched);
    assert_eq!(staged.extra["bytes_reused"], 0);
}
