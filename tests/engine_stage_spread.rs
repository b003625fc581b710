//! The staging spread in the real engine (simulated device and clock): a device that
//! learned of a release before its rollout stage opened does not start staging when the
//! stage opens, says when it will, and starts once its own delay has passed.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use patchd::engine::{Actor, EngineHandle};
use patchd::policy::{stage_delay, Kind, RolloutPlan, RolloutStage, RolloutState, Severity};
use patchd::testkit::engine::{release, Harness};

const WED_NOON: &str = "2026-11-25T12:00:00Z";
const MACHINE_ID: &str = "0123456789abcdef0123456789abcdef";

async fn events(h: &EngineHandle) -> Vec<String> {
    h.history(Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect()
}

#[tokio::test]
async fn staging_starts_only_after_the_devices_delay_once_its_stage_opened() {
    let dir = tempfile::tempdir().unwrap();
    let noon: Timestamp = WED_NOON.parse().unwrap();
    let mut hx = Harness::new(dir.path(), "1.0.0", noon);
    // Policy evaluations as the daemon's timer makes them (every 60 s there), sped up:
    // nothing below asks for a check after the first one.
    hx.settings.evaluate_every = Duration::from_millis(20);
    assert_eq!(
        hx.policy.stage_spread,
        SignedDuration::from_mins(30),
        "the default"
    );
    let mut rel = release("2.0.0", 2, Kind::Security, Severity::High);
    // Every device enters by the one stage, two hours after publishing.
    rel.facts.rollout = Some(RolloutPlan {
        published: noon,
        stages: vec![RolloutStage {
            tags: vec![],
            percent: 100,
            after_secs: 2 * 3600,
        }],
        state: RolloutState::Active,
        guarded: false,
        gate: None,
    });
    let delay = stage_delay(MACHINE_ID, &rel.facts.id, hx.policy.stage_spread);
    assert!(
        delay > SignedDuration::from_mins(2),
        "pick another release: delay {delay}"
    );
    hx.dev.publish(rel);
    let (h, _task) = hx.start().await.unwrap();
    h.check(Actor::Policy).await.unwrap();
    // Not stageable before its stage opens: nothing to do yet.
    assert_eq!(h.status().state.as_str(), "idle");

    // The stage opens; the next evaluations do not stage yet.
    let opened = noon + SignedDuration::from_hours(2);
    hx.clock.advance(SignedDuration::from_hours(2));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = h.status();
    assert_eq!(s.state.as_str(), "idle", "{:?}", s.next);
    let start = opened + delay;
    let a = s.available.iter().find(|a| a.version == "2.0.0").unwrap();
    assert!(!a.may_stage, "{a:?}");
    assert_eq!(a.stage_at, Some(start));
    let next = s.next.clone().expect("a Next: line").text;
    assert!(
        next.starts_with("2.0.0 available (not staged yet, staging starts in "),
        "{next}"
    );
    assert!(!events(&h).await.iter().any(|e| e == "staging"));

    // A second before its delay ends: still waiting.
    hx.clock.advance(delay - SignedDuration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.status().state.as_str(), "idle");

    // At its start time: the next evaluation stages it, without waiting for a check.
    hx.clock.advance(SignedDuration::from_secs(1));
    tokio::time::timeout(
        Duration::from_secs(10),
        h.wait_for(|s| matches!(s.state.as_str(), "staging" | "staged" | "switching")),
    )
    .await
    .expect("staging started")
    .unwrap();
    // (With no windows it may switch and stop at once: read the log from its file.)
    let log = patchd::audit::AuditLog::open(hx.audit_path(), Default::default()).unwrap();
    let recs = log.query(&Default::default()).unwrap();
    let staging = recs
        .iter()
        .find(|r| r.event == "staging")
        .expect("staging audited");
    assert_eq!(staging.actor.to_string(), "policy");
}
