//! The rollout gate on the device side: a guarded release is entered at stage k only
//! while an unexpired gate allows k; an expired or missing gate freezes the rollout and
//! status says so; unguarded releases and older manifests behave as before.

use jiff::Timestamp;
use patchd::manifest::{Manifest, ReleaseSummary, RolloutGate};
use patchd::policy::{
    bucket, DeviceFacts, Facts, LockState, Policy, ReleaseFacts, RolloutPlan, RolloutStage,
    RolloutState, WaitFor,
};

fn utc(s: &str) -> Timestamp {
    s.parse().unwrap()
}

const PUBLISHED: &str = "2026-11-01T00:00:00Z";
const NOW: &str = "2026-11-02T00:00:00Z";

fn device(tags: &[&str]) -> DeviceFacts {
    DeviceFacts {
        machine_id: "4f8c2a7e0d8b4c0e9f1a2b3c4d5e6f70".into(),
        product: "gw".into(),
        hardware: None,
        channel: "stable".into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
    }
}

/// Stage 0: canaries; stage 1: every device (both open by their schedule at NOW).
fn release(guarded: bool, gate: Option<RolloutGate>) -> ReleaseFacts {
    let summary = ReleaseSummary {
        product: "gw".into(),
        hardware: vec![],
        version: "2.0.0".parse().unwrap(),
        security_version: 0,
        min_version: None,
        kind: patchd::manifest::Kind::Bugfix,
        severity: patchd::manifest::Severity::Medium,
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
                tags: vec!["canary".into()],
                percent: 0,
                after_secs: 0,
            },
            RolloutStage {
                tags: vec![],
                percent: 100,
                after_secs: 3600,
            },
        ],
        state: RolloutState::Active,
        guarded,
        gate,
    };
    ReleaseFacts::new(summary, Some(plan))
}

fn gate(open_to: usize, expires: &str) -> Option<RolloutGate> {
    Some(RolloutGate {
        open_to,
        expires: utc(expires),
    })
}

/// The switch reasons and the `Next:` words for `dev` at NOW.
fn decide(dev: &DeviceFacts, r: &ReleaseFacts) -> (Vec<String>, Option<WaitFor>, String) {
    let running: semver::Version = "1.0.0".parse().unwrap();
    let p = Policy::default();
    let v = p.decide(&Facts {
        now: utc(NOW),
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
    });
    let next = v
        .next
        .clone()
        .expect("a fitting release has a next opportunity");
    let words = next.describe(utc(NOW), &p.schedule, "2.0.0");
    (
        v.switch.iter().map(|w| w.to_string()).collect(),
        next.waiting_for,
        words,
    )
}

#[test]
fn an_open_gate_lets_its_stages_in_and_holds_later_ones_back() {
    let r = release(true, gate(0, "2026-11-02T00:30:00Z"));
    let (why, _, _) = decide(&device(&["canary"]), &r);
    assert!(why.is_empty(), "a canary enters by stage 0: {why:?}");
    let (why, wait, words) = decide(&device(&[]), &r);
    assert_eq!(wait, Some(WaitFor::Gate), "{why:?}");
    assert!(
        why.iter().any(|w| w.contains(
            "rollout gate is open up to stage 0 until 2026-11-02T00:30:00Z; this device enters by stage 1"
        )),
        "{why:?}"
    );
    assert!(words.contains("open up to stage 0"), "{words}");
    let r = release(true, gate(1, "2026-11-02T00:30:00Z"));
    assert!(decide(&device(&[]), &r).0.is_empty());
}

#[test]
fn an_expired_or_missing_gate_freezes_the_rollout() {
    let r = release(true, gate(1, "2026-11-01T23:59:59Z"));
    for tags in [&["canary"][..], &[]] {
        let (why, wait, words) = decide(&device(tags), &r);
        assert_eq!(wait, Some(WaitFor::Gate), "{why:?}");
        let want = "rollout gate expired at 2026-11-01T23:59:59Z (frozen at stage 1)";
        assert!(why.iter().any(|w| w.contains(want)), "{why:?}");
        assert_eq!(words, want, "the Next: line");
    }
    let (why, wait, _) = decide(&device(&["canary"]), &release(true, None));
    assert_eq!(wait, Some(WaitFor::Gate));
    assert!(
        why.iter().any(|w| w.contains("no rollout gate signed")),
        "{why:?}"
    );
    // Staging waits too: nothing enters a frozen release.
    let p = Policy::default();
    assert!(!p.may_stage(utc(NOW), &device(&[]), &r, &[]).is_allowed());
}

#[test]
fn unguarded_releases_ignore_gates_and_schedules_still_count() {
    let (why, _, _) = decide(&device(&[]), &release(false, None));
    assert!(why.is_empty(), "{why:?}");
    let (why, _, _) = decide(
        &device(&[]),
        &release(false, gate(0, "2020-01-01T00:00:00Z")),
    );
    assert!(
        why.is_empty(),
        "a stray gate on an unguarded release: {why:?}"
    );
    // A gate never opens a stage before its own time.
    let mut r = release(true, gate(1, "2026-11-03T00:00:00Z"));
    r.rollout.as_mut().unwrap().stages[1].after_secs = 2 * 86400;
    let (_, wait, _) = decide(&device(&[]), &r);
    assert_eq!(wait, Some(WaitFor::Rollout));
    // Nor does an expired one hide when the stage opens by its schedule.
    r.rollout.as_mut().unwrap().gate = gate(0, "2020-01-01T00:00:00Z");
    let (why, wait, words) = decide(&device(&[]), &r);
    assert_eq!(wait, Some(WaitFor::Rollout), "{why:?}");
    assert!(words.contains("waiting for the 100% stage"), "{words}");
}

#[test]
fn the_entry_stage_is_the_first_stage_that_includes_the_device() {
    let r = release(true, None);
    let plan = r.rollout.as_ref().unwrap();
    let b = bucket(&device(&[]).machine_id, &r.id);
    assert_eq!(plan.device_stage(&["canary".to_string()], b), Some(0));
    assert_eq!(plan.device_stage(&[], b), Some(1));
    let mut p = plan.clone();
    p.stages.clear();
    assert_eq!(p.device_stage(&[], b), Some(0));
}

#[test]
fn manifests_without_the_guarded_field_still_read_and_unguarded_ones_are_unchanged() {
    let old = r#"{"schema_version":1,"product":"gw","version":"2.0.0","security_version":0,
        "kind":"bugfix","severity":"medium","summary":"s","published":"2026-11-01T00:00:00Z",
        "images":[{"component":"os","slot_class":"rootfs","target":"t","format":"raw",
        "compression":"none","size":1,"sha256":"00"}],
        "rollout":{"paused":false,"stages":[{"tags":["canary"],"percent":0,"after_secs":0}]},
        "channels":["stable"]}"#;
    let m: Manifest = serde_json::from_str(old).unwrap();
    assert!(!m.rollout.guarded);
    let text = serde_json::to_string(&m).unwrap();
    assert!(!text.contains("guarded"), "{text}");
    let mut g = m.clone();
    g.rollout.guarded = true;
    let back: Manifest = serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
    assert!(back.rollout.guarded);
    assert!(RolloutPlan::from_manifest(&back).guarded);
}
