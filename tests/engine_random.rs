//! Property test: random sequences of events (new releases that are healthy, unhealthy
//! or unbootable, checks, staging failures, power cuts at random moments, holds, the
//! clock moving windows open and shut) driven through the real engine on the in-memory
//! device. After every event the invariants of issue 6 must hold.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use patchd::engine::Actor;
use patchd::policy::{Kind, Schedule, Severity};
use patchd::testkit::engine::{release, Harness};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Event {
    Publish {
        healthy: bool,
        bootable: bool,
        security: bool,
    },
    Check,
    /// Cut power `after_ms` after asking for a check (often mid-staging or mid-switch).
    PowerCut {
        after_ms: u64,
    },
    Advance {
        hours: i64,
    },
    Hold {
        hours: Option<i64>,
    },
    ReleaseHold,
    StagingBreaks(bool),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => (any::<bool>(), prop::bool::weighted(0.85), any::<bool>()).prop_map(
            |(healthy, bootable, security)| Event::Publish { healthy, bootable, security }
        ),
        2 => Just(Event::Check),
        2 => (0u64..4).prop_map(|after_ms| Event::PowerCut { after_ms }),
        2 => (1i64..72).prop_map(|hours| Event::Advance { hours }),
        1 => prop::option::of(1i64..12).prop_map(|hours| Event::Hold { hours }),
        1 => Just(Event::ReleaseHold),
        1 => any::<bool>().prop_map(Event::StagingBreaks),
    ]
}

async fn run(events: Vec<Event>) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let start: Timestamp = "2026-11-25T12:00:00Z".parse().map_err(|e| format!("{e}"))?;
    let mut hx = Harness::new(dir.path(), "1.0.0", start);
    hx.policy.schedule =
        Schedule::parse("UTC", &["Sat,Sun 02:00-05:00"]).map_err(|e| e.to_string())?;
    let mut next_minor = 1;
    let (mut h, mut task, _) = hx.settle().await?;
    for (i, ev) in events.into_iter().enumerate() {
        match &ev {
            Event::Publish {
                healthy,
                bootable,
                security,
            } => {
                let v = format!("1.{next_minor}.0");
                next_minor += 1;
                let (kind, sev) = if *security {
                    (Kind::Security, Severity::Critical)
                } else {
                    (Kind::Bugfix, Severity::Medium)
                };
                hx.dev.publish(release(&v, next_minor as u64, kind, sev));
                if !healthy {
                    hx.dev.set_unhealthy(&v);
                }
                if !bootable {
                    hx.dev.set_unbootable(&v);
                }
            }
            Event::Check => {}
            Event::PowerCut { after_ms } => {
                let h2 = h.clone();
                let checker = tokio::spawn(async move { h2.check(Actor::Policy).await });
                tokio::time::sleep(Duration::from_millis(*after_ms)).await;
                task.abort();
                let _ = (&mut task).await;
                let _ = checker.await;
                hx.dev.power_cycle();
                hx.check_invariants()
                    .map_err(|e| format!("after event {i} {ev:?} (before restart): {e}"))?;
            }
            Event::Advance { hours } => hx.clock.advance(SignedDuration::from_hours(*hours)),
            Event::Hold { hours } => {
                let until = hours.and_then(|n| {
                    hx.clock_now()
                        .checked_add(SignedDuration::from_hours(n))
                        .ok()
                });
                let _ = h
                    .hold(Actor::Uid(1000), "random hold".into(), until, None)
                    .await;
            }
            Event::ReleaseHold => {
                let _ = h.release_hold(Actor::Uid(1000)).await;
            }
            Event::StagingBreaks(b) => hx.dev.set_stage_fails(*b),
        }
        if !matches!(ev, Event::PowerCut { .. }) {
            task.abort();
            let _ = (&mut task).await;
        }
        let settled = hx
            .settle()
            .await
            .map_err(|e| format!("after event {i} {ev:?}: {e}"))?;
        h = settled.0;
        task = settled.1;
        hx.check_invariants()
            .map_err(|e| format!("after event {i} {ev:?}: {e}"))?;
    }
    task.abort();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_for_random_event_sequences(events in prop::collection::vec(event(), 1..10)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let r = rt.block_on(run(events));
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}
