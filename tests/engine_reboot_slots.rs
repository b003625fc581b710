//! The fleet reboot slot in the engine, against the in-memory lock twin (`fleet::sim`):
//! asked only once everything else allows the switch (so never outside the window),
//! refused while the group's slots are taken (status and Next say so) and asked again
//! with backoff, held through the reboot and probation and given back at steady state,
//! overridden by `switch --force`, skipped when the service is down and
//! `when_unreachable = "reboot"`.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use patchd::audit::Filter;
use patchd::engine::ports::RebootSlots;
use patchd::engine::{Actor, EngineHandle, RunExit, StateKind, StatusSnapshot};
use patchd::fleet::config::{FleetConfig, WhenUnreachable};
use patchd::fleet::sim::{SimFleet, SimLock};
use patchd::fleet::RebootLock;
use patchd::policy::{Kind, Schedule, Severity};
use patchd::testkit::engine::{release, Harness};
use tokio::task::JoinHandle;

const WED_NOON: &str = "2026-11-25T12:00:00Z";

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn lock(fleet: &Arc<SimFleet>, id: &str) -> SimLock {
    SimLock {
        fleet: fleet.clone(),
        id: id.into(),
        group: "rack-7".into(),
    }
}

fn harness(dir: &std::path::Path, fleet: &Arc<SimFleet>, when: WhenUnreachable) -> Harness {
    let mut hx = Harness::new(dir, "1.0.0", ts(WED_NOON));
    hx.dev
        .publish(release("2.0.0", 2, Kind::Security, Severity::High));
    hx.fleet = Some(RebootSlots {
        lock: Arc::new(lock(fleet, "me")),
        backend: "sim".into(),
        config: FleetConfig {
            group: "rack-7".into(),
            when_unreachable: when,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(1),
            ..FleetConfig::default()
        },
    });
    hx
}

async fn wait(h: &EngineHandle, what: &str, f: impl Fn(&StatusSnapshot) -> bool) -> StatusSnapshot {
    tokio::time::timeout(
        Duration::from_secs(10),
        h.wait_for(|s| s.busy.is_none() && f(s)),
    )
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}; status: {:#?}", h.status()))
    .expect("engine stopped")
}

async fn exit(task: JoinHandle<RunExit>) -> RunExit {
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("engine did not stop")
        .expect("engine task panicked")
}

async fn events(h: &EngineHandle) -> Vec<String> {
    let all = h.history(Filter::default()).await.unwrap();
    all.into_iter().map(|r| r.event).collect()
}

#[tokio::test]
async fn the_slot_is_asked_for_only_inside_the_window_and_kept_until_steady() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = SimFleet::new(1);
    let mut hx = harness(dir.path(), &fleet, WhenUnreachable::Wait);
    hx.policy.schedule = Schedule::parse("UTC", &["Sat,Sun 02:00-05:00"]).unwrap();
    hx.settings.probation = Some(Duration::from_secs(3600));

    let (h, task) = hx.start().await.unwrap();
    h.check(Actor::Policy).await.unwrap();
    wait(&h, "staged", |s| s.state == StateKind::Staged).await;
    assert!(
        fleet.holders("rack-7").is_empty(),
        "a slot taken outside the window"
    );

    hx.clock.set(ts("2026-11-28T02:30:00Z"));
    h.check(Actor::Policy).await.unwrap();
    assert!(matches!(exit(task).await, RunExit::Rebooting { .. }));
    assert_eq!(fleet.holders("rack-7"), ["me"]);

    // Through the reboot and the health checks, and during probation.
    hx.dev.power_cycle();
    let (h, _task) = hx.start().await.unwrap();
    let st = wait(&h, "committed", |s| s.state == StateKind::Committed).await;
    assert_eq!(
        fleet.holders("rack-7"),
        ["me"],
        "given back during probation"
    );
    assert_eq!(st.fleet.as_ref().map(|f| f.state.as_str()), Some("held"));

    hx.clock.set(ts("2026-11-28T04:00:00Z"));
    h.check(Actor::Policy).await.unwrap();
    wait(&h, "slot given back", |s| {
        s.fleet.as_ref().is_some_and(|f| f.state == "free")
    })
    .await;
    assert!(fleet.holders("rack-7").is_empty());
    let ev = events(&h).await;
    for e in [
        "reboot_slot_acquired",
        "probation_over",
        "reboot_slot_released",
    ] {
        assert!(ev.iter().any(|x| x == e), "no {e} in {ev:?}");
    }
}

#[tokio::test]
async fn a_full_group_holds_the_switch_says_who_and_asks_again() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = SimFleet::new(1);
    let other = lock(&fleet, "other");
    other.acquire().await.unwrap();
    let hx = harness(dir.path(), &fleet, WhenUnreachable::Wait);

    let (h, task) = hx.start().await.unwrap();
    h.check(Actor::Policy).await.unwrap();
    let st = wait(&h, "waiting for the slot", |s| {
        s.fleet.as_ref().is_some_and(|f| f.state == "waiting")
    })
    .await;
    let text = st.next.as_ref().unwrap().text.clone();
    assert!(
        text.contains("waiting for a reboot slot in group rack-7 (1 of 1 taken by other)")
            && text.contains("asks again")
            && text.ends_with("then switches and reboots"),
        "{text}"
    );
    let a = &st.available[0];
    assert!(!a.install_now, "{a:?}");
    assert!(
        a.why_not
            .iter()
            .any(|w| w.to_string().contains("reboot slot")),
        "{:?}",
        a.why_not
    );
    assert_eq!(st.next.as_ref().unwrap().kind, "reboot_slot");
    assert!(hx.dev.reboot_requests().is_empty());

    other.release().await.unwrap();
    // The backoff (1 s here) wakes the engine by itself: no check needed.
    assert!(matches!(exit(task).await, RunExit::Rebooting { .. }));
    assert_eq!(fleet.holders("rack-7"), ["me"]);
    let ev = events_of(&hx);
    assert_eq!(
        ev.iter().filter(|e| *e == "reboot_slot_waiting").count(),
        1,
        "{ev:?}"
    );
}

/// The audit log after the engine stopped.
fn events_of(hx: &Harness) -> Vec<String> {
    let log = patchd::audit::AuditLog::open(hx.audit_path(), Default::default()).unwrap();
    log.query(&Filter::default())
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect()
}

#[tokio::test]
async fn force_goes_past_the_lock_and_reboot_mode_past_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = SimFleet::new(1);
    lock(&fleet, "other").acquire().await.unwrap();
    let hx = harness(dir.path(), &fleet, WhenUnreachable::Wait);
    let (h, task) = hx.start().await.unwrap();
    h.check(Actor::Policy).await.unwrap();
    wait(&h, "waiting", |s| {
        s.fleet.as_ref().is_some_and(|f| f.state == "waiting")
    })
    .await;
    h.switch(Actor::Uid(0), true).await.unwrap();
    assert!(matches!(exit(task).await, RunExit::Rebooting { .. }));
    assert_eq!(fleet.holders("rack-7"), ["other"], "forced: no slot taken");

    let dir = tempfile::tempdir().unwrap();
    let down = SimFleet::new(1);
    down.set_down(true);
    let hx = harness(dir.path(), &down, WhenUnreachable::Reboot);
    let (h, task) = hx.start().await.unwrap();
    h.check(Actor::Policy).await.unwrap();
    assert!(matches!(exit(task).await, RunExit::Rebooting { .. }));
    let ev = events_of(&hx);
    assert!(ev.iter().any(|e| e == "reboot_lock_unreachable"), "{ev:?}");
    assert!(!ev.iter().any(|e| e == "reboot_slot_acquired"), "{ev:?}");
}
