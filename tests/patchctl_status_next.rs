//! `patchctl status` says what happens next and when: the `Next:` line for a staged
//! release waiting for its window (in the window's zone and UTC), a window that is open,
//! a rollout stage, a hold, an approval (and `patchctl approve`), a trial and a rollback
//! whose reboot is pending (the truly running version shown), a failed check with its
//! time and error, and the error gone after a good check. The real engine on a simulated
//! clock, served on a private bus, asked by the real patchctl binary.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use patchd::dbus::Service;
use patchd::engine::{Actor, EngineHandle, RunExit, StatusSnapshot};
use patchd::policy::{Kind, RolloutPlan, RolloutStage, RolloutState, Schedule, Severity};
use patchd::testkit::engine::{release, Harness};
use support::*;

/// Wednesday noon UTC.
const WEDNESDAY: &str = "2026-11-25T12:00:00Z";

struct Running {
    hx: Harness,
    h: EngineHandle,
    task: tokio::task::JoinHandle<RunExit>,
    svc: Option<Service>,
}

async fn start(bus: &TestBus, hx: Harness) -> Running {
    let (h, task) = hx.start().await.expect("engine");
    let svc = serve_backend(bus, Arc::new(h.clone())).await;
    Running {
        hx,
        h,
        task,
        svc: Some(svc),
    }
}

async fn wait(h: &EngineHandle, what: &str, pred: impl FnMut(&StatusSnapshot) -> bool) {
    tokio::time::timeout(Duration::from_secs(20), h.wait_for(pred))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", h.status().next))
        .expect("engine running");
}

/// `patchctl status`, and its `Next:` line (which must be the daemon's `next.text`).
async fn status(bus: &TestBus) -> (String, String) {
    let r = patchctl(bus, &["status"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let next = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Next:"))
        .unwrap_or_else(|| panic!("no Next: line\n{}", r.stdout))
        .trim()
        .to_string();
    let j = patchctl(bus, &["--json", "status"]).await;
    let v: serde_json::Value = serde_json::from_str(&j.stdout).expect("status JSON");
    assert_eq!(
        v["next"]["text"],
        next.as_str(),
        "the sentence is the daemon's"
    );
    (r.stdout, next)
}

async fn json_status(bus: &TestBus) -> serde_json::Value {
    let j = patchctl(bus, &["--json", "status"]).await;
    assert_eq!(j.code, 0, "{j:?}");
    serde_json::from_str(&j.stdout).expect("status JSON")
}

fn harness(dir: &std::path::Path) -> Harness {
    Harness::new(dir, "1.0.0", WEDNESDAY.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_release_waits_for_its_window_in_the_zone_and_utc() {
    let Some(bus) = TestBus::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut hx = harness(dir.path());
    // 03:00–06:00 in Berlin is 02:00–05:00 UTC in November.
    hx.policy.schedule = Schedule::parse("Europe/Berlin", &["Sat,Sun 03:00-06:00"]).unwrap();
    hx.dev
        .publish(release("2.0.0", 2, Kind::Bugfix, Severity::Medium));
    let r = start(&bus, hx).await;
    r.h.check(Actor::Policy).await.expect("check");
    wait(&r.h, "staged", |s| {
        s.state.as_str() == "staged" && s.busy.is_none()
    })
    .await;
    let (out, next) = status(&bus).await;
    assert_eq!(
        next,
        "2.0.0 staged; switches and reboots in the window Sat 03:00–06:00 Europe/Berlin \
         (Sat 02:00–05:00 UTC), in 2 d 14 h",
        "{out}"
    );
    assert!(
        out.contains("Next window:    2026-11-28 03:00:00 CET (02:00:00 UTC), in 2 d 14 h"),
        "{out}"
    );
    assert!(
        out.contains(
            "Last check:     2026-11-25 13:00:00 CET (12:00:00 UTC), just now: 1 release found"
        ),
        "{out}"
    );
    let v = json_status(&bus).await;
    assert_eq!(v["next"]["kind"], "window");
    assert_eq!(v["next"]["at"], "2026-11-28T02:00:00Z");
    assert_eq!(v["time_zone"], "Europe/Berlin");
    // The same sentence as a property, for a page that follows PropertiesChanged.
    let conn = bus.connect().await;
    let p = patchd::dbus::proxy::ManagerProxy::new(&conn).await.unwrap();
    let (kind, text, at) = p.next().await.expect("Next property");
    assert_eq!(
        (kind.as_str(), text.as_str(), at.as_str()),
        ("window", next.as_str(), "2026-11-28T02:00:00Z")
    );
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_window_says_until_when() {
    let Some(bus) = TestBus::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut hx = harness(dir.path());
    hx.clock.set("2026-11-28T03:00:00Z".parse().unwrap());
    hx.policy.schedule = Schedule::parse("UTC", &["Sat,Sun 02:00-05:00"]).unwrap();
    hx.dev
        .publish(release("2.0.0", 2, Kind::Bugfix, Severity::Medium));
    // Staging stays in progress, so the window is still open when status is asked.
    hx.dev.set_stage_gate(true);
    let r = start(&bus, hx).await;
    r.h.check(Actor::Policy).await.expect("check");
    wait(&r.h, "staging", |s| s.state.as_str() == "staging").await;
    let (out, next) = status(&bus).await;
    assert_eq!(
        next, "staging 2.0.0 into slot b; then window open until 05:00 UTC: switches now",
        "{out}"
    );
    r.hx.dev.set_stage_gate(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_the_rollout_stage_and_for_a_hold() {
    let Some(bus) = TestBus::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut hx = harness(dir.path());
    hx.tags = vec!["canary".into()];
    let mut rel = release("2.0.0", 2, Kind::Security, Severity::High);
    rel.facts.rollout = Some(RolloutPlan {
        published: WEDNESDAY.parse().unwrap(),
        stages: vec![
            RolloutStage {
                tags: vec!["canary".into()],
                percent: 0,
                after_secs: 3 * 3600,
            },
            RolloutStage {
                tags: vec![],
                percent: 100,
                after_secs: 7 * 86400,
            },
        ],
        state: RolloutState::Active,
        guarded: false,
        gate: None,
    });
    hx.dev.publish(rel);
    let r = start(&bus, hx).await;
    r.h.check(Actor::Policy).await.expect("check");
    let (out, next) = status(&bus).await;
    assert_eq!(
        next, "2.0.0 available (not staged yet); waiting for the canary stage, in 3 h",
        "{out}"
    );
    assert_eq!(json_status(&bus).await["next"]["kind"], "rollout");

    // A hold on top: the hold is what stops it now, with its end and reason.
    let h = patchctl(
        &bus,
        &[
            "hold",
            "--reason",
            "quarter-end freeze",
            "--until",
            "2026-12-31T00:00:00Z",
        ],
    )
    .await;
    assert_eq!(h.code, 0, "{h:?}");
    let (out, next) = status(&bus).await;
    assert_eq!(
        next,
        "2.0.0 available (not staged yet); held until 2026-12-31 00:00:00 UTC (in 35 d 12 h): \
         quarter-end freeze",
        "{out}"
    );
    assert!(
        out.contains("\"quarter-end freeze\" by uid:0 until 2026-12-31 00:00:00 UTC, in 35 d 12 h"),
        "{out}"
    );
    let l = patchctl(&bus, &["list"]).await;
    assert!(l.stdout.contains("Waiting:"), "{l:?}");
    assert!(
        l.stdout
            .contains("held until 2026-12-31 00:00:00 UTC (in 35 d 12 h): quarter-end freeze"),
        "{l:?}"
    );
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_waits_for_patchctl_approve_which_is_audited() {
    let Some(bus) = TestBus::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let hx = harness(dir.path());
    hx.dev
        .publish(release("2.0.0", 2, Kind::Security, Severity::High));
    hx.dev
        .publish(release("3.0.0", 2, Kind::Feature, Severity::Low));
    let r = start(&bus, hx).await;
    r.h.check(Actor::Policy).await.expect("check");
    wait(&r.h, "staged", |s| {
        s.state.as_str() == "staged" && s.busy.is_none()
    })
    .await;
    let (out, next) = status(&bus).await;
    assert_eq!(
        next, "3.0.0 staged; needs an admin's approval (urgency rule): patchctl approve 3.0.0",
        "{out}"
    );
    let x = patchctl(&bus, &["approve", "9.9.9"]).await;
    assert_eq!(x.code, 6, "not offered: {x:?}");
    let x = patchctl(&bus, &["approve", "2.0.0"]).await;
    assert_eq!(x.code, 5, "a security release needs no approval: {x:?}");
    assert!(x.stderr.contains("needs no approval"), "{x:?}");
    let x = patchctl(&bus, &["approve", "3.0.0"]).await;
    assert_eq!(x.code, 0, "{x:?}");
    assert!(x.stdout.contains("Approved 3.0.0"), "{x:?}");
    // Nothing else holds it back: the device switches at once.
    match tokio::time::timeout(Duration::from_secs(10), r.task).await {
        Ok(Ok(RunExit::Rebooting { .. })) => {}
        other => panic!("expected the switch after approval: {other:?}"),
    }
    let log = patchd::audit::AuditLog::open(r.hx.audit_path(), Default::default()).unwrap();
    let recs = log.query(&Default::default()).unwrap();
    let approved: Vec<_> = recs.iter().filter(|r| r.event == "approved").collect();
    assert_eq!(approved.len(), 1, "{recs:?}");
    assert_eq!(approved[0].actor.to_string(), "uid:0");
    assert!(approved[0].reason.contains("3.0.0"), "{:?}", approved[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_reboot_says_what_it_waits_for() {
    let Some(bus) = TestBus::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let hx = harness(dir.path());
    hx.dev
        .publish(release("2.0.0", 2, Kind::Security, Severity::High));
    hx.dev.set_inhibitors(vec!["backup (uid 1000)".into()]);
    let r = start(&bus, hx).await;
    r.h.check(Actor::Policy).await.expect("check");
    wait(&r.h, "staged", |s| {
        s.state.as_str() == "staged" && s.busy.is_none() && !s.reboot_waiting.is_empty()
    })
    .await;
    let (out, next) = status(&bus).await;
    assert_eq!(
        next, "2.0.0 staged; switches now; the reboot waits for backup (uid 1000)",
        "{out}"
    );
    assert_eq!(json_status(&bus).await["next"]["kind"], "reboot_pending");
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trial_then_rollback_pending_shows_what_truly_runs() {
    let Some(bus) = TestBus::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let hx = harness(dir.path());
    hx.dev
        .publish(release("2.0.0", 2, Kind::Security, Severity::High));
    let mut r = start(&bus, hx).await;
    r.h.check(Actor::Policy).await.expect("check");
    match tokio::time::timeout(Duration::from_secs(20), &mut r.task).await {
        Ok(Ok(RunExit::Rebooting { .. })) => {}
        other => panic!("expected the switch: {other:?}"),
    }
    drop(r.svc.take());
    let hx = r.hx;
    hx.dev.power_cycle();
    hx.dev.set_health_gate(true);
    hx.dev.set_unhealthy("2.0.0");
    hx.dev.set_reboot_fails(true);
    let r = start(&bus, hx).await;
    wait(&r.h, "verifying", |s| s.state.as_str() == "verifying").await;
    let (out, next) = status(&bus).await;
    assert!(
        next.starts_with("2.0.0 on trial in slot b: health checks must pass by 2026-11-25 12:10:00 UTC (in 10 min)"),
        "{out}"
    );
    assert!(next.ends_with("otherwise back to slot a"), "{out}");
    assert_eq!(json_status(&bus).await["next"]["kind"], "trial");

    // The checks fail and the reboot back does not happen: 2.0.0 still runs.
    r.hx.dev.set_health_gate(false);
    wait(&r.h, "rolled back", |s| s.state.as_str() == "rolled_back").await;
    let (out, next) = status(&bus).await;
    assert!(
        next.starts_with("rolling back from 2.0.0 to slot a: reboot pending"),
        "{out}"
    );
    assert!(
        out.contains("Current:        2.0.0 (slot b), rolling back to 1.0.0 at the next boot"),
        "{out}"
    );
    assert!(out.contains("Last outcome:   2.0.0 rolled back: "), "{out}");
    let v = json_status(&bus).await;
    assert_eq!(v["current_version"], "2.0.0");
    assert_eq!(v["rolling_back_to"], "1.0.0");
    assert_eq!(v["next"]["kind"], "rollback_pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_check_shows_with_its_time_and_a_good_one_clears_it() {
    let Some(bus) = TestBus::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let hx = harness(dir.path());
    let r = start(&bus, hx).await;
    let c = patchctl(&bus, &["check"]).await;
    assert_eq!(c.code, 0, "{c:?}");
    let (out, next) = status(&bus).await;
    assert!(next.starts_with("up to date"), "{out}");
    assert!(!out.contains("Last error"), "{out}");

    r.hx.dev.set_check_fails(Some("mirror unreachable"));
    r.hx.clock.set("2026-11-25T13:00:00Z".parse().unwrap());
    let c = patchctl(&bus, &["check"]).await;
    assert_eq!(c.code, 1, "{c:?}");
    let (out, _) = status(&bus).await;
    assert!(
        out.contains("Last check:     2026-11-25 13:00:00 UTC, just now: FAILED: repository refresh: mirror unreachable"),
        "{out}"
    );
    assert!(
        out.contains("Last error:     check failed: repository refresh: mirror unreachable"),
        "{out}"
    );
    assert!(
        out.contains("(last good check: 2026-11-25 12:00:00 UTC, 1 h ago)"),
        "{out}"
    );
    let v = json_status(&bus).await;
    // `last_check` stays the last good one (the metrics' last successful check).
    assert_eq!(v["last_check"], "2026-11-25T12:00:00Z");
    assert_eq!(v["last_check_outcome"]["at"], "2026-11-25T13:00:00Z");
    assert_eq!(v["last_check_outcome"]["ok"], false);

    r.hx.dev.set_check_fails(None);
    r.hx.clock.set("2026-11-25T14:00:00Z".parse().unwrap());
    let c = patchctl(&bus, &["check"]).await;
    assert_eq!(c.code, 0, "{c:?}");
    let (out, _) = status(&bus).await;
    assert!(
        out.contains("Last check:     2026-11-25 14:00:00 UTC, just now: 0 releases found"),
        "{out}"
    );
    assert!(!out.contains("Last error"), "stale error left: {out}");
    assert!(!out.contains("FAILED"), "{out}");
    assert_eq!(json_status(&bus).await["last_check_outcome"]["ok"], true);
}
