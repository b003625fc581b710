//! Staging spread: when a rollout stage opens by time, each device it adds starts staging
//! after its own delay in [0, `stage_spread`), derived from its rollout hash — uniform
//! over the fleet minute by minute, independent of the bucket and across releases, stable
//! for a device and release; no delay for a device that learned of the release only after
//! its stage opened, nor with a spread of zero.

use jiff::{SignedDuration, Timestamp};
use patchd::manifest::ReleaseSummary;
use patchd::policy::{
    bucket, stage_delay, Decision, DeviceFacts, Kind, Policy, ReleaseFacts, RolloutPlan,
    RolloutStage, RolloutState, Severity,
};

const DEVICES: usize = 100_000;
const PUBLISHED: &str = "2026-12-01T10:00:00Z";
/// The 100 % stage opens four days after publishing.
const AFTER: u64 = 96 * 3600;

fn utc(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn machine_id(i: usize) -> String {
    // Distinct 128-bit hex ids, as /etc/machine-id holds them.
    format!(
        "{:016x}{:016x}",
        (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        i as u64
    )
}

fn device(i: usize) -> DeviceFacts {
    DeviceFacts {
        machine_id: machine_id(i),
        product: "acme".into(),
        hardware: None,
        channel: "stable".into(),
        tags: vec![],
    }
}

fn release(version: &str, known_since: Option<&str>) -> ReleaseFacts {
    let summary = ReleaseSummary {
        product: "acme".into(),
        hardware: vec![],
        version: version.parse().unwrap(),
        security_version: 0,
        min_version: None,
        kind: Kind::Bugfix,
        severity: Severity::Medium,
        cves: vec![],
        channels: vec!["stable".into()],
        withdrawn: false,
        paused: false,
        size: 1,
    };
    let plan = RolloutPlan {
        published: utc(PUBLISHED),
        stages: vec![
            RolloutStage {
                tags: vec![],
                percent: 50,
                after_secs: 72 * 3600,
            },
            RolloutStage {
                tags: vec![],
                percent: 100,
                after_secs: AFTER,
            },
        ],
        state: RolloutState::Active,
        guarded: false,
        gate: None,
    };
    ReleaseFacts::new(summary, Some(plan)).with_known_since(known_since.map(utc))
}

fn spread() -> SignedDuration {
    SignedDuration::from_mins(30)
}

/// Devices starting in each minute of the spread, out of `ids`.
fn per_minute(ids: impl Iterator<Item = usize>, release_id: &str) -> (Vec<usize>, usize) {
    let mut bins = vec![0usize; 30];
    let mut n = 0;
    for i in ids {
        let d = stage_delay(&machine_id(i), release_id, spread());
        assert!(d >= SignedDuration::ZERO && d < spread(), "device {i}: {d}");
        bins[(d.as_secs() / 60) as usize] += 1;
        n += 1;
    }
    (bins, n)
}

/// Each minute holds its share within 10 % (about 5.7 standard deviations at 100,000
/// devices), and the share started by each minute is within half a point of the ideal.
fn assert_uniform(bins: &[usize], n: usize, what: &str) {
    let ideal = n as f64 / bins.len() as f64;
    let mut started = 0usize;
    for (m, &c) in bins.iter().enumerate() {
        assert!(
            (c as f64 - ideal).abs() <= 0.1 * ideal,
            "{what}: minute {m} has {c} devices, ideal {ideal:.0}: {bins:?}"
        );
        started += c;
        let share = 100.0 * started as f64 / n as f64;
        let want = 100.0 * (m + 1) as f64 / bins.len() as f64;
        assert!(
            (share - want).abs() <= 0.5,
            "{what}: {share:.2} % started by minute {} (ideal {want:.2} %)",
            m + 1
        );
    }
    println!("{what}: {n} devices, per minute {bins:?}");
}

#[test]
fn the_share_of_devices_starting_by_each_minute_is_uniform() {
    let (bins, n) = per_minute(0..DEVICES, "acme/2.0.0");
    assert_eq!(n, DEVICES);
    assert_uniform(&bins, n, "all devices");
    // The devices the 100 % stage adds (buckets 50..99) spread over the whole interval:
    // the delay does not follow the bucket.
    let added = (0..DEVICES).filter(|&i| bucket(&machine_id(i), "acme/2.0.0") >= 50);
    let (bins, n) = per_minute(added, "acme/2.0.0");
    assert!(n > DEVICES * 45 / 100, "{n}");
    assert_uniform(&bins, n, "devices the 100 % stage adds");
}

#[test]
fn delays_are_stable_per_release_and_independent_across_releases() {
    let minute = |i: usize, r: &str| stage_delay(&machine_id(i), r, spread()).as_secs() / 60;
    // Stable: the same device and release give the same delay (nothing random, nothing
    // remembered: a restart computes it again).
    for i in 0..1000 {
        assert_eq!(minute(i, "acme/2.0.0"), minute(i, "acme/2.0.0"));
    }
    // Independent: the same minute for two releases about 1 in 30 times.
    let same = (0..DEVICES)
        .filter(|&i| minute(i, "acme/2.0.0") == minute(i, "acme/2.1.0"))
        .count();
    let share = same as f64 / DEVICES as f64;
    assert!((share - 1.0 / 30.0).abs() < 0.005, "{share}");
    assert_eq!(
        stage_delay(&machine_id(7), "acme/2.0.0", SignedDuration::ZERO),
        SignedDuration::ZERO
    );
}

#[test]
fn a_device_that_knew_of_the_release_stages_only_after_its_delay() {
    let p = Policy {
        stage_spread: spread(),
        ..Policy::default()
    };
    let opened = utc(PUBLISHED) + SignedDuration::from_secs(AFTER as i64);
    // A device of the 100 % stage (bucket 50..99) that has known of 2.0.0 since publish.
    let i = (0..)
        .find(|&i| {
            bucket(&machine_id(i), "acme/2.0.0") >= 50
                && stage_delay(&machine_id(i), "acme/2.0.0", spread())
                    > SignedDuration::from_mins(2)
        })
        .unwrap();
    let dev = device(i);
    let r = release("2.0.0", Some(PUBLISHED));
    let start = opened + stage_delay(&dev.machine_id, "acme/2.0.0", spread());
    assert_eq!(p.stage_start(&dev, &r), Some(start));
    match p.may_stage(opened, &dev, &r, &[]) {
        Decision::Wait { until, reason } => {
            assert_eq!(until, Some(start));
            assert!(
                reason.contains(&format!("staging starts at {start}")),
                "{reason}"
            );
        }
        d => panic!("staged at once: {d}"),
    }
    let second = SignedDuration::from_secs(1);
    assert!(!p.may_stage(start - second, &dev, &r, &[]).is_allowed());
    assert!(p.may_stage(start, &dev, &r, &[]).is_allowed());

    // Learned of it only after the stage opened: its check was jittered, no delay.
    let late = release("2.0.0", Some("2026-12-05T10:00:01Z"));
    assert_eq!(p.stage_start(&dev, &late), None);
    assert!(p.may_stage(opened + second, &dev, &late, &[]).is_allowed());
    // Not known (no memory of a check): no delay either.
    assert!(p
        .may_stage(opened, &dev, &release("2.0.0", None), &[])
        .is_allowed());
    // A spread of zero stages at once.
    let now = Policy {
        stage_spread: SignedDuration::ZERO,
        ..Policy::default()
    };
    assert!(now.may_stage(opened, &dev, &r, &[]).is_allowed());
    // The switch decision is not spread (it needs the staged release anyway).
    assert!(p.may_switch(opened, &dev, &r, &[], false).is_allowed());
}
