//! A D-Bus call polkit (here: the test uid mode) refuses is written to the engine's
//! hash-chained audit log — who (uid, unique bus name), which polkit action, which
//! method — and the chain still verifies, on the live engine and from the file.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;

use patchd::audit::Filter;
use patchd::policy::{Kind, Schedule, Severity};
use patchd::testkit::engine::{release, Harness};
use serde_json::Value;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_calls_are_in_the_hash_chained_audit_log() {
    if !need_root("running patchctl as another user") {
        return;
    }
    let Some(bus) = TestBus::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut hx = Harness::new(dir.path(), "1.0.0", "2026-11-25T12:00:00Z".parse().unwrap());
    // Weekend windows on a Wednesday: the engine does nothing by itself meanwhile.
    hx.policy.schedule = Schedule::parse("UTC", &["Sat,Sun 02:00-05:00"]).unwrap();
    hx.policy.stage_outside_windows = false;
    hx.dev
        .publish(release("2.0.0", 2, Kind::Security, Severity::High));
    let (h, _task) = hx.start().await.expect("engine");
    let _svc = serve_backend(&bus, Arc::new(h.clone())).await;

    // Something legitimate first, so denials chain onto lifecycle records.
    assert_eq!(patchctl(&bus, &["check"]).await.code, 0);
    let before = h.history(Filter::default()).await.unwrap().len();

    let denied: &[(&[&str], &str, &str)] = &[
        (
            &["switch", "--force"],
            "org.patchd.patchd1.switch",
            "Switch",
        ),
        (
            &["hold", "--reason", "sneaky"],
            "org.patchd.patchd1.hold",
            "PlaceHold",
        ),
        (&["cancel"], "org.patchd.patchd1.install", "Cancel"),
    ];
    for (args, _, _) in denied {
        let r = patchctl_as(&bus, Some(NOBODY), args).await;
        assert_eq!(r.code, 3, "{args:?}: {r:?}");
    }

    // Through the daemon: history filtered by event, and the verdict on the chain.
    let r = patchctl(&bus, &["history", "--json", "--event", "dbus.denied"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let recs: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(recs.len(), denied.len(), "{recs:#?}");
    for (rec, (args, action, method)) in recs.iter().zip(denied) {
        assert_eq!(rec["actor"], format!("uid:{NOBODY}"), "{args:?}: {rec}");
        assert_eq!(rec["extra"]["action"], *action, "{args:?}: {rec}");
        assert_eq!(rec["extra"]["method"], *method, "{args:?}: {rec}");
        let bus_name = rec["extra"]["bus_name"].as_str().unwrap_or_default();
        assert!(bus_name.starts_with(":1."), "{args:?}: {rec}");
        assert!(
            rec["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("uid 65534"),
            "{args:?}: {rec}"
        );
    }
    assert!(recs[1]["reason"].as_str().unwrap().contains("sneaky"));

    let r = patchctl(&bus, &["audit", "verify", "--json"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["records"], (before + denied.len()) as u64, "{v}");

    // The file itself, read by a fresh reader.
    let report = hx.verify_audit().unwrap();
    assert!(report.is_intact(), "{report:?}");
    let log = std::fs::read_to_string(hx.audit_path()).unwrap();
    assert_eq!(
        log.matches("\"dbus.denied\"").count(),
        denied.len(),
        "{log}"
    );
    // Nothing was changed by the refused calls.
    assert!(h.status().holds.is_empty());
}
