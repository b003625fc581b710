//! Policy decisions: rollout bucketing and stages, pause/withdraw, holds, urgency rules,
//! channels, clock sanity, and how they combine into stage/switch decisions.

use jiff::Timestamp;
use patchd::manifest::ReleaseSummary;
use patchd::policy::{
    bucket, holds, stage_includes, Decision, DeviceFacts, Facts, Hold, Kind, LockState, Policy,
    ReleaseFacts, RolloutPlan, RolloutStage, RolloutState, Schedule, Severity, Urgency,
    UrgencyRule,
};

fn utc(s: &str) -> Timestamp {
    s.parse().unwrap()
}

#[test]
fn bucket_is_stable_and_depends_on_both_inputs() {
    let a = bucket("4f8c2a7e0d8b4c0e9f1a2b3c4d5e6f70", "appliance/2.0.0");
    for _ in 0..10 {
        assert_eq!(
            a,
            bucket("4f8c2a7e0d8b4c0e9f1a2b3c4d5e6f70", "appliance/2.0.0")
        );
    }
    // Trailing newline as read from /etc/machine-id does not change the bucket.
    assert_eq!(
        a,
        bucket("4f8c2a7e0d8b4c0e9f1a2b3c4d5e6f70\n", "appliance/2.0.0")
    );
    // Known value (computed independently with Python's hashlib): pins the algorithm so a
    // refactor cannot silently reshuffle fleets.
    assert_eq!(a, 61);
    let differs = (0..50)
        .filter(|i| {
            bucket(
                "4f8c2a7e0d8b4c0e9f1a2b3c4d5e6f70",
                &format!("appliance/2.0.{i}"),
            ) != a
        })
        .count();
    assert!(
        differs > 40,
        "bucket barely depends on the release: {differs}/50"
    );
}

#[test]
fn bucket_is_uniform() {
    // 20 000 machine ids into 100 buckets: chi-square with 99 degrees of freedom. The
    // 99.9th percentile is about 148.2; a broken hash (e.g. only a few bytes used) is far
    // above it.
    let n = 20_000u32;
    let mut counts = [0u32; 100];
    for i in 0..n {
        let b = bucket(
            &format!("{:032x}", u128::from(i) * 0x9e37_79b9_7f4a_7c15),
            "p/1.0.0",
        );
        assert!(b < 100);
        counts[b as usize] += 1;
    }
    let expected = f64::from(n) / 100.0;
    let chi2: f64 = counts
        .iter()
        .map(|&c| (f64::from(c) - expected).powi(2) / expected)
        .sum();
    assert!(chi2 < 148.2, "chi-square {chi2:.1} too high: {counts:?}");
    // And a 10% stage takes about 10% of the fleet.
    let in10: u32 = counts[..10].iter().sum();
    assert!((1700..2300).contains(&in10), "{in10}");
}

fn plan() -> RolloutPlan {
    RolloutPlan {
        published: utc("2026-11-01T00:00:00Z"),
        stages: vec![
            RolloutStage {
                after_secs: 0,
                tags: vec!["canary".into()],
                percent: 0,
            },
            RolloutStage {
                after_secs: 86400,
                tags: vec![],
                percent: 10,
            },
            RolloutStage {
                after_secs: 259200,
                tags: vec![],
                percent: 50,
            },
        ],
        state: RolloutState::Active,
        guarded: false,
        gate: None,
    }
}

#[test]
fn stage_math_tags_first_then_percent_over_time() {
    let p = plan();
    let canary = vec!["canary".to_string()];
    let none: Vec<String> = vec![];
    assert_eq!(
        p.device_start(&canary, 99),
        Some(utc("2026-11-01T00:00:00Z"))
    );
    assert_eq!(p.device_start(&none, 5), Some(utc("2026-11-02T00:00:00Z")));
    assert_eq!(p.device_start(&none, 10), Some(utc("2026-11-04T00:00:00Z")));
    assert_eq!(p.device_start(&none, 50), None);
    // A tag-only stage (percent 0) includes no untagged device.
    assert_eq!(p.device_start(&none, 0), Some(utc("2026-11-02T00:00:00Z")));
    // A canary with a low bucket gets the earliest stage that includes it.
    assert_eq!(
        p.device_start(&canary, 3),
        Some(utc("2026-11-01T00:00:00Z"))
    );

    let at = utc("2026-11-02T12:00:00Z");
    assert!(p.decide(at, &none, 5).is_allowed());
    match p.decide(at, &none, 20) {
        Decision::Wait { until, reason } => {
            assert_eq!(until, Some(utc("2026-11-04T00:00:00Z")));
            assert!(reason.contains("bucket 20"), "{reason}");
        }
        d => panic!("{d}"),
    }
    assert!(matches!(
        p.decide(at, &none, 77),
        Decision::Wait { until: None, .. }
    ));
    let empty = RolloutPlan {
        stages: vec![],
        ..plan()
    };
    assert!(empty.decide(at, &none, 99).is_allowed());
}

#[test]
fn stage_includes_tagged_devices_or_low_buckets() {
    let s = RolloutStage {
        after_secs: 0,
        tags: vec!["edge".into()],
        percent: 50,
    };
    assert!(stage_includes(&s, &["edge".into()], 60));
    assert!(stage_includes(&s, &["core".into()], 10));
    assert!(!stage_includes(&s, &["core".into()], 60));
    let full = RolloutStage {
        after_secs: 0,
        tags: vec![],
        percent: 100,
    };
    assert!(stage_includes(&full, &[], 99));
}

#[test]
fn plan_from_a_manifest() {
    let m: patchd::manifest::Manifest = serde_json::from_value(serde_json::json!({
        "schema_version": 1, "product": "appliance", "version": "2.0.0",
        "security_version": 4, "kind": "security", "severity": "critical",
        "summary": "fix", "published": "2026-11-01T00:00:00Z",
        "images": [], "channels": ["stable"],
        "rollout": {"paused": true, "stages": [{"tags": ["canary"]}, {"percent": 20, "after_secs": 86400}]}
    }))
    .unwrap();
    let f = ReleaseFacts::from_manifest(&m);
    assert_eq!(f.id, "appliance/2.0.0");
    assert_eq!(f.summary.kind, Kind::Security);
    let plan = f.rollout.unwrap();
    assert_eq!(plan.state, RolloutState::Paused);
    assert_eq!(plan.device_start(&[], 5), Some(utc("2026-11-02T00:00:00Z")));
    let withdrawn = patchd::manifest::Manifest {
        withdrawn: true,
        ..m
    };
    assert_eq!(
        RolloutPlan::from_manifest(&withdrawn).state,
        RolloutState::Withdrawn
    );
}

#[test]
fn pause_and_withdraw_stop_devices() {
    let at = utc("2026-11-10T00:00:00Z");
    let paused = RolloutPlan {
        state: RolloutState::Paused,
        ..plan()
    };
    assert!(matches!(
        paused.decide(at, &[], 1),
        Decision::Wait { until: None, .. }
    ));
    let withdrawn = RolloutPlan {
        state: RolloutState::Withdrawn,
        ..plan()
    };
    assert!(matches!(
        withdrawn.decide(at, &[], 1),
        Decision::Blocked { .. }
    ));
}

fn hold(until: Option<&str>, max: Option<&str>) -> Hold {
    Hold {
        reason: "quarterly close".into(),
        by: "uid:1000".into(),
        created: utc("2026-11-01T00:00:00Z"),
        until: until.map(utc),
        max_version: max.map(|m| m.parse().unwrap()),
    }
}

#[test]
fn holds_block_wait_and_expire() {
    let now = utc("2026-11-10T00:00:00Z");
    let forever = hold(None, None);
    assert!(matches!(
        holds::decide(std::slice::from_ref(&forever), &v("2.0.0"), now),
        Decision::Blocked { .. }
    ));
    let temp = hold(Some("2026-11-15T00:00:00Z"), None);
    match holds::decide(std::slice::from_ref(&temp), &v("2.0.0"), now) {
        Decision::Wait { until, reason } => {
            assert_eq!(until, Some(utc("2026-11-15T00:00:00Z")));
            assert!(
                reason.contains("quarterly close") && reason.contains("uid:1000"),
                "{reason}"
            );
        }
        d => panic!("{d}"),
    }
    assert!(holds::decide(
        std::slice::from_ref(&temp),
        &v("2.0.0"),
        utc("2026-11-15T00:00:00Z")
    )
    .is_allowed());
    let (active, expired) = holds::split_expired(
        vec![forever.clone(), temp.clone()],
        utc("2026-11-16T00:00:00Z"),
    );
    assert_eq!(active, vec![forever]);
    assert_eq!(expired, vec![temp]);
}

#[test]
fn pinned_hold_allows_up_to_its_version() {
    let now = utc("2026-11-10T00:00:00Z");
    let pin = hold(None, Some("2.1.0"));
    assert!(holds::decide(std::slice::from_ref(&pin), &v("2.0.5"), now).is_allowed());
    assert!(holds::decide(std::slice::from_ref(&pin), &v("2.1.0"), now).is_allowed());
    assert!(!holds::decide(std::slice::from_ref(&pin), &v("2.1.1"), now).is_allowed());
}

fn v(s: &str) -> semver::Version {
    s.parse().unwrap()
}

fn device(tags: &[&str]) -> DeviceFacts {
    DeviceFacts {
        machine_id: "4f8c2a7e0d8b4c0e9f1a2b3c4d5e6f70".into(),
        product: "appliance".into(),
        hardware: None,
        channel: "stable".into(),
        tags: tags.iter().map(|s| s.to_string()).collect(),
    }
}

fn release(kind: Kind, severity: Severity) -> ReleaseFacts {
    ReleaseFacts::new(
        ReleaseSummary {
            product: "appliance".into(),
            hardware: vec![],
            version: v("2.0.0"),
            security_version: 1,
            min_version: None,
            kind,
            severity,
            cves: vec![],
            channels: vec!["stable".into()],
            withdrawn: false,
            paused: false,
            size: 1,
        },
        None,
    )
}

/// The switch decision's reasons for `r` on `dev` at `now`, running 1.0.0, nothing held.
fn switch_reasons(p: &Policy, now: Timestamp, dev: &DeviceFacts, r: &ReleaseFacts) -> Vec<String> {
    let running = v("1.0.0");
    p.decide(&Facts {
        now,
        device: dev,
        release: r,
        running: Some(&running),
        security_floor: 0,
        floor_overridden: false,
        failed_here: None,
        manifest_problem: None,
        holds: &[],
        approved: false,
        force: false,
        inhibitors: &[],
        lock: &LockState::NotConfigured,
    })
    .switch
    .iter()
    .map(|w| w.to_string())
    .collect()
}

fn policy(rules: Vec<UrgencyRule>) -> Policy {
    Policy {
        schedule: Schedule::parse("UTC", &["Sat,Sun 02:00-06:00"]).unwrap(),
        urgency: rules,
        stage_outside_windows: true,
        stage_spread: patchd::policy::DEFAULT_STAGE_SPREAD,
    }
}

// 2026-11-30 is a Monday.
const WEEKDAY: &str = "2026-11-30T12:00:00Z";
const IN_WINDOW: &str = "2026-12-05T03:00:00Z";

#[test]
fn switch_waits_for_the_window_but_staging_does_not() {
    let p = policy(patchd::policy::default_rules());
    let r = release(Kind::Security, Severity::High);
    assert!(p
        .may_stage(utc(WEEKDAY), &device(&[]), &r, &[])
        .is_allowed());
    match p.may_switch(utc(WEEKDAY), &device(&[]), &r, &[], false) {
        Decision::Wait { until, reason } => {
            assert_eq!(until, Some(utc("2026-12-05T02:00:00Z")));
            assert!(reason.contains("maintenance window"), "{reason}");
        }
        d => panic!("{d}"),
    }
    let d = p.may_switch(utc(IN_WINDOW), &device(&[]), &r, &[], false);
    assert!(d.is_allowed(), "{d}");
    assert!(d.reason().contains("Sat,Sun 02:00-06:00"), "{d}");

    let strict = Policy {
        stage_outside_windows: false,
        ..p
    };
    assert!(matches!(
        strict.may_stage(utc(WEEKDAY), &device(&[]), &r, &[]),
        Decision::Wait { .. }
    ));
}

#[test]
fn urgency_rules_immediate_and_approval() {
    let rules = vec![
        UrgencyRule {
            kind: Some(Kind::Security),
            min_severity: Some(Severity::Critical),
            action: Urgency::Immediate,
        },
        UrgencyRule {
            kind: Some(Kind::Feature),
            min_severity: None,
            action: Urgency::Approval,
        },
    ];
    let p = policy(rules);
    let now = utc(WEEKDAY);
    let crit = release(Kind::Security, Severity::Critical);
    let d = p.may_switch(now, &device(&[]), &crit, &[], false);
    assert!(d.is_allowed() && d.reason().contains("immediate"), "{d}");
    // High security is not matched by the critical rule.
    assert!(!p
        .may_switch(
            now,
            &device(&[]),
            &release(Kind::Security, Severity::High),
            &[],
            false
        )
        .is_allowed());
    let feat = release(Kind::Feature, Severity::Low);
    assert!(matches!(
        p.may_switch(utc(IN_WINDOW), &device(&[]), &feat, &[], false),
        Decision::Blocked { .. }
    ));
    assert!(p
        .may_switch(utc(IN_WINDOW), &device(&[]), &feat, &[], true)
        .is_allowed());
    // Approved feature still waits for the window.
    assert!(!p
        .may_switch(now, &device(&[]), &feat, &[], true)
        .is_allowed());
}

#[test]
fn channel_hold_and_withdrawal_win_over_urgency() {
    let p = policy(vec![UrgencyRule {
        kind: None,
        min_severity: None,
        action: Urgency::Immediate,
    }]);
    let now = utc(WEEKDAY);
    let mut r = release(Kind::Security, Severity::Critical);
    r.summary.channels = vec!["staging".into()];
    let why = switch_reasons(&p, now, &device(&[]), &r);
    assert!(
        why.len() == 1 && why[0].contains("staging"),
        "the channel is the one reason: {why:?}"
    );
    assert!(switch_reasons(
        &p,
        now,
        &device(&[]),
        &release(Kind::Security, Severity::Critical)
    )
    .is_empty());

    let r = release(Kind::Security, Severity::Critical);
    let d = p.may_switch(now, &device(&[]), &r, &[hold(None, None)], false);
    assert!(
        matches!(&d, Decision::Blocked { reason } if reason.contains("hold")),
        "{d}"
    );

    let mut r = release(Kind::Security, Severity::Critical);
    r.rollout = Some(RolloutPlan {
        state: RolloutState::Withdrawn,
        ..plan()
    });
    let d = p.may_switch(
        now,
        &device(&[]),
        &r,
        &[hold(Some("2027-01-01T00:00:00Z"), None)],
        false,
    );
    assert!(
        matches!(&d, Decision::Blocked { reason } if reason.contains("withdrawn")),
        "{d}"
    );
}

#[test]
fn rollout_gates_staging_and_switching() {
    let p = policy(vec![]);
    let mut r = release(Kind::Bugfix, Severity::Medium);
    r.rollout = Some(RolloutPlan {
        published: utc("2026-11-29T00:00:00Z"),
        stages: vec![RolloutStage {
            after_secs: 0,
            tags: vec!["canary".into()],
            percent: 0,
        }],
        state: RolloutState::Active,
        guarded: false,
        gate: None,
    });
    assert!(p
        .may_stage(utc(WEEKDAY), &device(&["canary"]), &r, &[])
        .is_allowed());
    assert!(matches!(
        p.may_stage(utc(WEEKDAY), &device(&["prod"]), &r, &[]),
        Decision::Wait { until: None, .. }
    ));
}

#[test]
fn implausible_clock_blocks_decisions() {
    let p = Policy::default();
    let r = release(Kind::Security, Severity::Critical);
    for t in [
        Timestamp::UNIX_EPOCH,
        utc("2023-12-31T23:59:59Z"),
        utc("2300-01-01T00:00:00Z"),
        Timestamp::MAX,
        Timestamp::MIN,
    ] {
        let d = p.may_switch(t, &device(&[]), &r, &[], true);
        assert!(
            matches!(&d, Decision::Blocked { reason } if reason.contains("system clock")),
            "{t}: {d}"
        );
        assert!(!p.may_stage(t, &device(&[]), &r, &[]).is_allowed());
    }
    assert!(p
        .may_switch(utc(WEEKDAY), &device(&[]), &r, &[], true)
        .is_allowed());
}

#[test]
fn decision_serializes_with_reason() {
    let d = Decision::wait("window", Some(utc("2026-12-05T02:00:00Z")));
    let j = serde_json::to_value(&d).unwrap();
    assert_eq!(j["decision"], "wait");
    assert_eq!(j["reason"], "window");
    assert_eq!(serde_json::from_value::<Decision>(j).unwrap(), d);
}
