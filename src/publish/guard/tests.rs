use super::*;
use crate::manifest::{Kind, Manifest, Rollout, RolloutStage, Severity};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn stage(tags: &[&str], percent: u8, after_secs: u64) -> RolloutStage {
    RolloutStage {
        tags: tags.iter().map(|s| s.to_string()).collect(),
        percent,
        after_secs,
    }
}

fn view(guarded: bool, paused: bool, gate: Option<RolloutGate>) -> RolloutView {
    RolloutView {
        manifest: Manifest {
            schema_version: 1,
            product: "gw".into(),
            hardware: vec![],
            version: "2.0.0".parse().unwrap(),
            security_version: 0,
            kind: Kind::Bugfix,
            severity: Severity::Medium,
            cves: vec![],
            summary: "x".into(),
            notes_url: None,
            published: t("2026-01-01T00:00:00Z"),
            min_version: None,
            images: vec![],
            components: vec![],
            rollout: Rollout {
                paused,
                stages: vec![
                    stage(&["canary"], 0, 0),
                    stage(&[], 25, 3600),
                    stage(&[], 100, 7200),
                ],
                guarded,
            },
            channels: vec!["stable".into()],
            withdrawn: false,
        },
        gate,
    }
}

fn settings() -> GuardSettings {
    GuardSettings {
        prometheus: "http://127.0.0.1:1".into(),
        timeout: Duration::from_secs(1),
        channel: None,
        thresholds: Thresholds {
            min_reported: 10,
            max_bad_ratio: Some(0.1),
            max_bad: None,
        },
        gate_ttl: SignedDuration::from_mins(30),
        min_committed: 5,
    }
}

fn outcomes(stage: usize, committed: u64, rolled_back: u64) -> Outcomes {
    let mut o = Outcomes::default();
    o.by_stage.insert(
        stage.to_string(),
        Counts {
            committed,
            rolled_back,
            ..Counts::default()
        },
    );
    o
}

#[test]
fn three_of_twenty_rolled_back_pauses_and_none_renews() {
    let now = t("2026-01-01T00:30:00Z");
    let gate = RolloutGate {
        open_to: 0,
        expires: t("2026-01-01T00:40:00Z"),
    };
    let v = view(true, false, Some(gate));
    assert!(matches!(
        decide(&v, &outcomes(0, 17, 3), &settings(), now),
        Verdict::Pause { .. }
    ));
    match decide(&v, &outcomes(0, 20, 0), &settings(), now) {
        Verdict::Gate { gate, opened, .. } => {
            assert_eq!(gate.open_to, 0, "stage 1 is not due before 01:00");
            assert!(!opened);
            assert_eq!(gate.expires, t("2026-01-01T01:00:00Z"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn too_few_reports_judge_nothing_and_counts_may_trigger_alone() {
    let now = t("2026-01-01T00:30:00Z");
    let v = view(true, false, None);
    // 3 of 5 is 60 %, but 10 must have reported.
    match decide(&v, &outcomes(0, 2, 3), &settings(), now) {
        Verdict::Gate { gate, opened, .. } => {
            assert_eq!(gate.open_to, 0);
            assert!(opened, "the first gate opens stage 0");
        }
        other => panic!("{other:?}"),
    }
    let mut s = settings();
    s.thresholds.max_bad_ratio = None;
    s.thresholds.max_bad = Some(2);
    assert!(matches!(
        decide(&v, &outcomes(0, 30, 3), &s, now),
        Verdict::Pause { .. }
    ));
    assert!(!matches!(
        decide(&v, &outcomes(0, 30, 2), &s, now),
        Verdict::Pause { .. }
    ));
}

#[test]
fn the_next_stage_opens_when_due_and_enough_committed() {
    let gate = RolloutGate {
        open_to: 0,
        expires: t("2026-01-01T01:10:00Z"),
    };
    let v = view(true, false, Some(gate));
    let at = t("2026-01-01T01:00:00Z");
    match decide(&v, &outcomes(0, 20, 0), &settings(), at) {
        Verdict::Gate { gate, opened, .. } => assert_eq!((gate.open_to, opened), (1, true)),
        other => panic!("{other:?}"),
    }
    // Committed devices of another stage do not count for the current one.
    match decide(&v, &outcomes(1, 20, 0), &settings(), at) {
        Verdict::Gate { gate, .. } => assert_eq!(gate.open_to, 0),
        other => panic!("{other:?}"),
    }
    let last = view(
        true,
        false,
        Some(RolloutGate {
            open_to: 2,
            expires: at,
        }),
    );
    match decide(
        &last,
        &outcomes(2, 50, 0),
        &settings(),
        t("2026-02-01T00:00:00Z"),
    ) {
        Verdict::Gate { gate, .. } => assert_eq!(gate.open_to, 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn paused_withdrawn_and_unguarded_releases_sign_nothing() {
    let now = t("2026-01-01T00:30:00Z");
    for (v, want) in [
        (view(true, true, None), "already_paused"),
        (view(false, false, None), "healthy_unguarded"),
    ] {
        match decide(&v, &outcomes(0, 20, 0), &settings(), now) {
            Verdict::Nothing { decision, .. } => assert_eq!(decision, want),
            other => panic!("{other:?}"),
        }
    }
    let mut w = view(true, false, None);
    w.manifest.withdrawn = true;
    assert!(matches!(
        decide(&w, &outcomes(0, 0, 20), &settings(), now),
        Verdict::Nothing {
            decision: "withdrawn",
            ..
        }
    ));
    // An unguarded release that fails is still paused.
    assert!(matches!(
        decide(
            &view(false, false, None),
            &outcomes(0, 10, 10),
            &settings(),
            now
        ),
        Verdict::Pause { .. }
    ));
}
