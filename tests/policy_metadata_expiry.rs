//! The validity of the trusted metadata as an input of the switch and staging decision:
//! a release whose vouching metadata expired waits (`WaitFor::Stale`) for a check that
//! renews it, says so with the expiry and the last good check, yields to `--force` like
//! other waits, and a release without an enforced expiry (an offline bundle under
//! `[offline] allow_expired`) is not affected.

use jiff::Timestamp;
use patchd::manifest::ReleaseSummary;
use patchd::policy::{
    DeviceFacts, Facts, Hold, Kind, LockState, Policy, ReleaseFacts, Severity, Standing, Vouched,
    WaitFor,
};

fn utc(s: &str) -> Timestamp {
    s.parse().unwrap()
}

const NOW: &str = "2026-12-07T12:00:00Z";
const CHECKED: &str = "2026-12-06T10:00:00Z";

fn device() -> DeviceFacts {
    DeviceFacts {
        machine_id: "4f8c2a7e0d8b4c0e9f1a2b3c4d5e6f70".into(),
        product: "gw".into(),
        hardware: None,
        channel: "stable".into(),
        tags: vec![],
    }
}

fn release(until: Option<&str>) -> ReleaseFacts {
    let summary = ReleaseSummary {
        product: "gw".into(),
        hardware: vec![],
        version: "2.0.0".parse().unwrap(),
        security_version: 0,
        min_version: None,
        kind: Kind::Security,
        severity: Severity::Critical,
        cves: vec![],
        channels: vec!["stable".into()],
        withdrawn: false,
        paused: false,
        size: 1,
    };
    ReleaseFacts::new(summary, None).with_vouched(until.map(|u| Vouched {
        until: utc(u),
        checked: utc(CHECKED),
    }))
}

struct Answer {
    switch: Vec<String>,
    stage: Vec<String>,
    wait: Option<WaitFor>,
    words: String,
    standing: Standing,
}

fn decide(r: &ReleaseFacts, force: bool, holds: &[Hold]) -> Answer {
    let running: semver::Version = "1.0.0".parse().unwrap();
    let p = Policy::default();
    let dev = device();
    let v = p.decide(&Facts {
        now: utc(NOW),
        device: &dev,
        release: r,
        running: Some(&running),
        security_floor: 0,
        floor_overridden: false,
        failed_here: None,
        manifest_problem: None,
        holds,
        approved: false,
        force,
        inhibitors: &[],
        lock: &LockState::NotConfigured,
    });
    let next = v
        .next
        .clone()
        .expect("a fitting release has a next opportunity");
    Answer {
        switch: v.switch.iter().map(|w| w.to_string()).collect(),
        stage: v.stage.iter().map(|w| w.to_string()).collect(),
        wait: next.waiting_for,
        words: next.describe(utc(NOW), &p.schedule, "2.0.0"),
        standing: v.standing(),
    }
}

const SAID: &str = "the repository's signed metadata expired at 2026-12-07T11:59:59Z \
                    (last successful check at 2026-12-06T10:00:00Z); waiting for a check to renew it";

#[test]
fn expired_metadata_stops_switch_and_staging_and_says_why() {
    let a = decide(&release(Some("2026-12-07T11:59:59Z")), false, &[]);
    assert_eq!(a.wait, Some(WaitFor::Stale));
    let reason = format!("waiting: {SAID}");
    assert_eq!(a.switch, std::slice::from_ref(&reason));
    assert_eq!(
        a.stage,
        [reason],
        "nothing is staged on dead metadata either"
    );
    assert_eq!(a.words, SAID, "the Next: line");
    assert_eq!(a.standing, Standing::Waiting);
}

#[test]
fn the_expiry_instant_itself_is_expired_and_a_second_before_is_not() {
    // TUF: metadata is expired once now >= expires.
    let a = decide(&release(Some(NOW)), false, &[]);
    assert_eq!(a.wait, Some(WaitFor::Stale), "{:?}", a.switch);
    let a = decide(&release(Some("2026-12-07T12:00:01Z")), false, &[]);
    assert!(a.switch.is_empty(), "{:?}", a.switch);
    assert_eq!(a.wait, None);
}

#[test]
fn unenforced_expiry_as_under_offline_allow_expired_changes_nothing() {
    let a = decide(&release(None), false, &[]);
    assert!(a.switch.is_empty() && a.stage.is_empty(), "{:?}", a.switch);
}

#[test]
fn force_overrides_the_wait_but_not_a_hold() {
    let r = release(Some("2026-12-07T11:59:59Z"));
    assert!(decide(&r, true, &[]).switch.is_empty());
    let hold = Hold {
        reason: "freeze".into(),
        by: "uid:0".into(),
        created: utc(CHECKED),
        until: None,
        max_version: None,
    };
    assert!(!decide(&r, true, &[hold]).switch.is_empty());
}

#[test]
fn a_later_opportunity_is_not_judged_by_todays_expiry() {
    // Valid now, expiring before the next window: the switch time is still the window
    // (the checks before then renew the metadata), not "never".
    let p = Policy {
        schedule: patchd::policy::Schedule::parse("UTC", &["Sat 02:00-03:00"]).unwrap(),
        ..Policy::default()
    };
    let running: semver::Version = "1.0.0".parse().unwrap();
    let dev = device();
    let r = release(Some("2026-12-08T12:00:00Z"));
    let v = p.decide(&Facts {
        now: utc(NOW),
        device: &dev,
        release: &r,
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
    });
    let next = v.next.expect("next");
    assert_eq!(next.at, Some(utc("2026-12-12T02:00:00Z")), "{next:?}");
}
