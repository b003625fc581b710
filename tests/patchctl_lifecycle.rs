//! patchctl drives the whole lifecycle over a private system-like bus: check → list →
//! install → switch → (simulated reboot) → mark-good → committed; then a failed release
//! marked bad rolls back; holds block switching; history and audit verify; exit codes.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use patchd::testkit::fake::{FakeBackend, FAKE_RELEASE};
use serde_json::Value;
use support::*;

fn json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lifecycle_through_patchctl() {
    let Some(bus) = TestBus::start() else { return };
    let backend = FakeBackend::new(Duration::from_millis(10)).into_arc();
    let _svc = start_service(&bus, backend.clone(), root_only()).await;

    let r = patchctl(&bus, &["status", "--json"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(json(&r)["state"], "idle");
    assert_eq!(json(&r)["current_version"], "1.0.0");

    let r = patchctl(&bus, &["status"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("State:"), "{r:?}");
    assert!(r.stdout.lines().any(|l| l.starts_with("SLOT")), "{r:?}");

    // Nothing staged yet: switch has nothing to do.
    let r = patchctl(&bus, &["switch"]).await;
    assert_eq!(
        r.code, 6,
        "switch without staged release must be NotFound: {r:?}"
    );

    let r = patchctl(&bus, &["check"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains(FAKE_RELEASE), "{r:?}");
    assert!(r.stdout.contains("security"), "{r:?}");

    let r = patchctl(&bus, &["list", "--json"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let list = json(&r);
    assert_eq!(list[0]["version"], FAKE_RELEASE);
    assert_eq!(list[0]["severity"], "high");
    assert_eq!(list[0]["cves"][0], "CVE-2026-0001");

    let r = patchctl(&bus, &["install", "9.9.9"]).await;
    assert_eq!(r.code, 6, "unknown release must be NotFound: {r:?}");

    let r = patchctl(&bus, &["install", "--json"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(json(&r)["version"], FAKE_RELEASE);
    assert_eq!(backend.current().state, "staged");

    // A hold blocks the switch; releasing it lets it through.
    let r = patchctl(
        &bus,
        &["hold", "--reason", "change freeze", "--until", "7d"],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    let r = patchctl(&bus, &["status", "--json"]).await;
    assert_eq!(json(&r)["holds"][0]["reason"], "change freeze");
    assert!(json(&r)["holds"][0]["until"].is_string(), "{r:?}");
    let r = patchctl(&bus, &["switch"]).await;
    assert_eq!(r.code, 10, "held switch must be refused: {r:?}");
    assert!(r.stderr.contains("held"), "{r:?}");
    let r = patchctl(&bus, &["switch", "--force"]).await;
    assert_eq!(r.code, 10, "--force does not override a hold: {r:?}");
    let r = patchctl(&bus, &["release-hold"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let r = patchctl(&bus, &["release-hold"]).await;
    assert_eq!(r.code, 6, "no hold left: {r:?}");

    // Outside the maintenance window a plain switch is refused; --force overrides it.
    backend.set_window_open(false);
    let r = patchctl(&bus, &["switch"]).await;
    assert_eq!(r.code, 10, "{r:?}");
    assert!(r.stderr.contains("maintenance window"), "{r:?}");
    assert_eq!(backend.current().state, "staged");
    let r = patchctl(&bus, &["switch", "--force"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let st = backend.current();
    assert_eq!(st.state, "verifying");
    assert_eq!(st.booted_slot.as_deref(), Some("b"));

    let r = patchctl(&bus, &["mark-good"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let r = patchctl(&bus, &["status", "--json"]).await;
    let st = json(&r);
    assert_eq!(st["state"], "committed");
    assert_eq!(st["current_version"], FAKE_RELEASE);

    let r = patchctl(&bus, &["history", "--json", "--event", "install"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let h = json(&r);
    assert_eq!(h.as_array().map(Vec::len), Some(1), "{r:?}");
    assert_eq!(h[0]["actor"], "uid:0");

    let r = patchctl(&bus, &["history", "-n", "2"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.lines().count(), 3, "header + 2 records: {r:?}");

    let r = patchctl(&bus, &["audit", "verify"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    backend.break_audit();
    let r = patchctl(&bus, &["audit", "verify", "--json"]).await;
    assert_eq!(r.code, 8, "{r:?}");
    assert_eq!(json(&r)["ok"], false);

    let r = patchctl(&bus, &["inventory"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("kernel:"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_release_rolls_back() {
    let Some(bus) = TestBus::start() else { return };
    let backend = FakeBackend::new(Duration::from_millis(5)).into_arc();
    let _svc = start_service(&bus, backend.clone(), root_only()).await;

    assert_eq!(patchctl(&bus, &["check"]).await.code, 0);
    let r = patchctl(&bus, &["install", FAKE_RELEASE, "--now"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("verifying"), "{r:?}");
    assert_eq!(backend.current().state, "verifying");

    let r = patchctl(&bus, &["mark-bad"]).await;
    assert_eq!(r.code, 2, "--reason is required: {r:?}");
    let r = patchctl(&bus, &["mark-bad", "--reason", "app does not start"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let st = backend.current();
    assert_eq!(st.state, "rolled_back");
    assert_eq!(st.current_version.as_deref(), Some("1.0.0"));
    assert_eq!(st.booted_slot.as_deref(), Some("a"));
    let b = st.slots.iter().find(|s| s.name == "b").expect("slot b");
    assert_eq!(b.state, "bad");

    let r = patchctl(&bus, &["mark-good"]).await;
    assert_eq!(r.code, 1, "nothing to commit after rollback: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_rollback_after_commit() {
    let Some(bus) = TestBus::start() else { return };
    let backend = FakeBackend::new(Duration::from_millis(5)).into_arc();
    let _svc = start_service(&bus, backend.clone(), root_only()).await;
    let r = patchctl(&bus, &["rollback", "--reason", "nothing to go back to"]).await;
    assert_eq!(r.code, 6, "{r:?}");
    assert_eq!(patchctl(&bus, &["check"]).await.code, 0);
    assert_eq!(patchctl(&bus, &["install", "--now"]).await.code, 0);
    assert_eq!(patchctl(&bus, &["mark-good"]).await.code, 0);
    let r = patchctl(&bus, &["rollback", "--reason", "regression in app"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let st = backend.current();
    assert_eq!(st.state, "rolled_back");
    assert_eq!(st.current_version.as_deref(), Some("1.0.0"));
    let rec = backend.records();
    assert!(
        rec.iter()
            .any(|r| r["event"] == "rollback" && r["reason"] == "regression in app"),
        "{rec:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_daemon_exit_code() {
    let Some(bus) = TestBus::start() else { return };
    // Bus up, no patchd on it.
    let r = patchctl(&bus, &["status"]).await;
    assert_eq!(r.code, 7, "{r:?}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_patchctl"))
        .args(["--bus-address", "unix:path=/nonexistent/bus", "status"])
        .output()
        .expect("run patchctl");
    assert_eq!(out.status.code(), Some(7), "{out:?}");
}
