//! `patchctl list` groups releases as installable, waiting (with until when) and not
//! applicable (blocked, with why: older or running, withdrawn, failed here, below the
//! floor, wrong hardware), each reason once, with the publisher's summary and CVEs;
//! `--json` keeps every field. `patchctl retry` lets a release that failed here be tried
//! again (audited with the reason and the failure it lifts). The real engine on a
//! simulated clock, served on a private bus, asked by the real patchctl binary.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use patchd::engine::statefile::{StateDoc, StateFile};
use patchd::engine::{Actor, Lifecycle};
use patchd::policy::{Kind, RolloutPlan, RolloutStage, RolloutState, Severity};
use patchd::testkit::engine::{release, Harness};
use support::*;

const WEDNESDAY: &str = "2026-11-25T12:00:00Z";

fn section<'a>(out: &'a str, title: &str) -> &'a str {
    let start = out
        .find(&format!("{title}:\n"))
        .unwrap_or_else(|| panic!("no {title} section\n{out}"));
    let rest = &out[start + title.len() + 2..];
    let end = rest.find("\n\n").map_or(rest.len(), |e| e);
    &rest[..end]
}

/// The reason line printed under `version` in a section.
fn why<'a>(sec: &'a str, version: &str) -> &'a str {
    let mut lines = sec.lines();
    while let Some(l) = lines.next() {
        if l.trim_start().starts_with(&format!("{version} ")) {
            return lines.next().unwrap_or("").trim();
        }
    }
    panic!("{version} not in section\n{sec}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_groups_releases_and_retry_lifts_a_failure() {
    let Some(bus) = TestBus::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let hx = Harness::new(dir.path(), "2.0.0", WEDNESDAY.parse().unwrap());
    // The device's memory: floor 5, 3.2.0 failed here.
    let mut doc = StateDoc {
        security_floor: 5,
        ..StateDoc::default()
    };
    doc.block("3.2.0", "health check failed", WEDNESDAY.parse().unwrap());
    std::fs::create_dir_all(hx.paths.state_dir()).unwrap();
    StateFile::new(&hx.paths.state_dir()).save(&doc).unwrap();

    let sec = |v: &str, sv: u64| release(v, sv, Kind::Security, Severity::High);
    let mut wrong_hw = sec("3.3.0", 6);
    wrong_hw.facts.summary.hardware = vec!["other-board".into()];
    let mut withdrawn = sec("3.4.0", 6);
    withdrawn.facts.summary.withdrawn = true;
    let mut staged_rollout = release("4.5.0", 6, Kind::Bugfix, Severity::Medium);
    staged_rollout.facts.rollout = Some(RolloutPlan {
        published: WEDNESDAY.parse().unwrap(),
        stages: vec![RolloutStage {
            tags: vec![],
            percent: 100,
            after_secs: 3 * 3600,
        }],
        state: RolloutState::Active,
        guarded: false,
        gate: None,
    });
    hx.dev.set_releases(vec![
        sec("1.0.0", 5),
        sec("2.0.0", 5),
        sec("3.1.0", 3),
        sec("3.2.0", 6),
        wrong_hw,
        withdrawn,
        sec("4.0.0", 6),
        staged_rollout,
        release("5.0.0", 6, Kind::Feature, Severity::Low),
    ]);
    let (h, _task) = hx.start().await.expect("engine");
    let _svc = serve_backend(&bus, Arc::new(h.clone())).await;
    h.check(Actor::Policy).await.expect("check");
    // 5.0.0 is staged (approval does not stop staging) and waits for an approval.
    tokio::time::timeout(
        Duration::from_secs(20),
        h.wait_for(|s| s.state.as_str() == "staged" && s.busy.is_none()),
    )
    .await
    .expect("staged in time")
    .expect("engine running");

    let r = patchctl(&bus, &["list"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let out = r.stdout;
    let inst = section(&out, "Installable");
    assert!(inst.contains("4.0.0"), "{out}");
    assert!(
        inst.contains("high security fixes"),
        "publisher's summary: {out}"
    );
    assert!(inst.contains("CVE-2026-0006"), "CVEs: {out}");
    let wait = section(&out, "Waiting");
    assert!(
        why(wait, "4.5.0").starts_with("waiting for the 100% stage, in 3 h"),
        "{out}"
    );
    assert!(
        why(wait, "5.0.0")
            .contains("needs an admin's approval (urgency rule): patchctl approve 5.0.0"),
        "{out}"
    );
    let na = section(&out, "Not applicable");
    let expect = [
        ("1.0.0", "blocked: not newer than the running 2.0.0"),
        ("2.0.0", "blocked: not newer than the running 2.0.0"),
        (
            "3.1.0",
            "blocked: security version 3 is below the device floor 5",
        ),
        (
            "3.2.0",
            "blocked: failed on this device before: health check failed",
        ),
        ("3.3.0", "blocked: release is for hardware other-board"),
        ("3.4.0", "blocked: "),
    ];
    for (v, w) in expect {
        assert!(why(na, v).starts_with(w), "{v}: {:?}\n{out}", why(na, v));
    }
    assert_eq!(out.matches("below the device floor").count(), 1, "{out}");
    assert!(why(na, "3.4.0").contains("withdrawn"), "{out}");
    assert!(!na.contains("waiting") && !na.contains("window"), "{out}");
    for v in ["4.0.0", "4.5.0", "5.0.0"] {
        assert!(!na.contains(&format!("{v} ")), "{v} is not blocked\n{out}");
    }

    // --json keeps everything.
    let j = patchctl(&bus, &["--json", "list"]).await;
    assert_eq!(j.code, 0, "{j:?}");
    let list: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    let get = |v: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["version"] == v)
            .cloned()
            .unwrap_or_else(|| panic!("{v} missing: {list}"))
    };
    assert_eq!(get("4.0.0")["group"], "installable");
    assert_eq!(get("4.0.0")["description"], "high security fixes");
    assert_eq!(get("4.5.0")["group"], "waiting");
    assert_eq!(get("4.5.0")["until"], "2026-11-25T15:00:00Z");
    assert_eq!(get("3.2.0")["group"], "not_applicable");
    assert_eq!(get("3.2.0")["security_version"], 6);
    // Each reason once: a release that does not fit shows only why it does not.
    for v in ["1.0.0", "2.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0"] {
        assert_eq!(get(v)["group"], "not_applicable", "{v}");
        assert_eq!(
            get(v)["reasons"].as_array().unwrap().len(),
            1,
            "{v}: {list}"
        );
    }

    // retry: refused for a release that did not fail here, needs a reason, then lifts it.
    let x = patchctl(&bus, &["retry", "3.3.0", "--reason", "x"]).await;
    assert_eq!(x.code, 6, "{x:?}");
    let x = patchctl(&bus, &["retry", "3.2.0"]).await;
    assert_eq!(x.code, 2, "--reason is required: {x:?}");
    let x = patchctl(&bus, &["retry", "3.2.0", "--reason", "fixed the unit file"]).await;
    assert_eq!(x.code, 0, "{x:?}");
    let j = patchctl(&bus, &["--json", "list"]).await;
    let list: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    let r32 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["version"] == "3.2.0")
        .unwrap();
    assert_eq!(r32["group"], "installable", "{r32}");
    let hist = patchctl(&bus, &["--json", "history", "--event", "retry_allowed"]).await;
    assert_eq!(hist.code, 0, "{hist:?}");
    let recs: serde_json::Value = serde_json::from_str(&hist.stdout).unwrap();
    let recs = recs.as_array().unwrap();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["actor"], "uid:0");
    assert_eq!(recs[0]["reason"], "fixed the unit file");
    assert_eq!(recs[0]["extra"]["failure"], "health check failed");
    assert_eq!(recs[0]["extra"]["version"], "3.2.0");
    // Filed under the release it lifts, whatever the lifecycle was on.
    let hist = patchctl(&bus, &["--json", "history", "--release", "3.2.0"]).await;
    assert!(hist.stdout.contains("retry_allowed"), "{hist:?}");
    let doc = StateFile::new(&patchd::paths::Paths::new(dir.path()).state_dir())
        .load(WEDNESDAY.parse().unwrap())
        .unwrap()
        .unwrap();
    assert!(!doc.is_blocked("3.2.0"), "the block is persisted away");
    assert!(matches!(doc.lifecycle, Lifecycle::Staged { .. }));
}
