//! The real lifecycle engine (in-memory device from `testkit::engine`) behind the D-Bus
//! service, driven by patchctl: check → list → install → switch refused outside the
//! window → hold blocks even a forced switch → switch --force →
//! simulated reboot → health → committed; audit verify; an unprivileged user is refused.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use patchd::dbus::{serve, Bus, ServiceOptions};
use patchd::engine::RunExit;
use patchd::policy::{Kind, Schedule, Severity};
use patchd::testkit::engine::{release, Harness};
use serde_json::Value;
use support::*;

fn json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

async fn serve_engine(bus: &TestBus, h: &patchd::engine::EngineHandle) -> patchd::dbus::Service {
    serve(
        Arc::new(h.clone()),
        ServiceOptions {
            bus: Bus::Address(bus.address.clone()),
            auth: root_only(),
            ..ServiceOptions::default()
        },
    )
    .await
    .expect("serve engine")
}

async fn wait_status(bus: &TestBus, state: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let r = patchctl(bus, &["status", "--json"]).await;
        if r.code == 0 {
            last = json(&r);
            if last["state"] == state && last["progress"].is_null() {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("state {state} not reached; last status {last:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_lifecycle_through_patchctl() {
    let Some(bus) = TestBus::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let now = "2026-11-25T12:00:00Z".parse().unwrap(); // a Wednesday
    let mut hx = Harness::new(dir.path(), "1.0.0", now);
    hx.policy.schedule = Schedule::parse("UTC", &["Sat,Sun 02:00-05:00"]).unwrap();
    hx.policy.stage_outside_windows = false;
    hx.dev
        .publish(release("2.0.0", 2, Kind::Security, Severity::High));

    let (h, task) = hx.start().await.expect("engine");
    let svc = serve_engine(&bus, &h).await;

    let r = patchctl(&bus, &["status"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let r = patchctl(&bus, &["check"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("2.0.0"), "{r:?}");
    let r = patchctl(&bus, &["list", "--json"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let l = json(&r);
    assert_eq!(l[0]["version"], "2.0.0");
    assert_eq!(l[0]["kind"], "security");
    assert_eq!(l[0]["severity"], "high");

    let r = patchctl(&bus, &["install", "2.0.0", "--json"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(json(&r)["version"], "2.0.0");
    let st = wait_status(&bus, "staged").await;
    assert_eq!(st["staged_version"], "2.0.0");

    // Wednesday, windows on the weekend: a plain switch respects the window and says
    // why not, with its own exit status; nothing changes.
    let r = patchctl(&bus, &["switch"]).await;
    assert_eq!(
        r.code, 10,
        "outside the window a plain switch is refused: {r:?}"
    );
    assert!(r.stderr.contains("window"), "{r:?}");
    assert!(r.stderr.contains("--force"), "{r:?}");
    assert_eq!(wait_status(&bus, "staged").await["staged_version"], "2.0.0");

    // --force overrides the window, but never a hold.
    let r = patchctl(&bus, &["hold", "--reason", "change freeze"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let r = patchctl(&bus, &["switch", "--force"]).await;
    assert_eq!(r.code, 10, "a hold blocks even a forced switch: {r:?}");
    assert!(r.stderr.contains("change freeze"), "{r:?}");
    assert_eq!(patchctl(&bus, &["release-hold"]).await.code, 0);

    if is_root() {
        let r = patchctl_as(&bus, Some(NOBODY), &["switch", "--force"]).await;
        assert_eq!(r.code, 3, "{r:?}");
    }

    let r = patchctl(&bus, &["switch", "--force"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    match tokio::time::timeout(Duration::from_secs(10), task).await {
        Ok(Ok(RunExit::Rebooting { .. })) => {}
        other => panic!("expected the engine to ask for a reboot: {other:?}"),
    }
    svc.shutdown().await;
    drop(h);

    // Simulated reboot into the new slot; the engine verifies health and commits.
    hx.dev.power_cycle();
    let (h, _task) = hx.start().await.expect("engine after reboot");
    let _svc = serve_engine(&bus, &h).await;
    let st = wait_status(&bus, "committed").await;
    assert_eq!(st["current_version"], "2.0.0", "{st:#}");
    assert_eq!(st["booted_slot"], "b", "{st:#}");

    let r = patchctl(&bus, &["history", "--json"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let events: Vec<String> = json(&r)
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"].as_str().map(str::to_owned))
        .collect();
    assert!(events.len() >= 4, "{events:?}");
    let r = patchctl(&bus, &["history", "--json", "--limit", "2"]).await;
    assert_eq!(json(&r).as_array().map(Vec::len), Some(2), "{r:?}");

    let r = patchctl(&bus, &["audit", "verify", "--json"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(json(&r)["ok"], true);

    let r = patchctl(&bus, &["inventory", "--json"]).await;
    assert_eq!(r.code, 0, "{r:?}");
}
