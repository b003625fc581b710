//! `patchctl switch` asks policy: outside the maintenance window it is refused (exit 10,
//! the reason printed, nothing changed); inside the window the same command switches.
//! The D-Bus `Switch` with no options is the admin's explicit "switch now" and overrides
//! the window. (`--force` and holds: tests/dbus_engine.rs and tests/patchctl_lifecycle.rs.)

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use patchd::dbus::proxy::ManagerProxy;
use patchd::dbus::Service;
use patchd::engine::{Actor, RunExit};
use patchd::policy::{Kind, Schedule, Severity};
use patchd::testkit::engine::{release, Harness};
use support::*;

/// A staged 2.0.0 on a Wednesday with weekend windows, served on `bus`.
async fn staged_outside_the_window(
    bus: &TestBus,
    dir: &std::path::Path,
) -> (
    Harness,
    patchd::engine::EngineHandle,
    tokio::task::JoinHandle<RunExit>,
    Service,
) {
    let wednesday = "2026-11-25T12:00:00Z".parse().unwrap();
    let mut hx = Harness::new(dir, "1.0.0", wednesday);
    hx.policy.schedule = Schedule::parse("UTC", &["Sat,Sun 02:00-05:00"]).unwrap();
    hx.policy.stage_outside_windows = true;
    hx.dev
        .publish(release("2.0.0", 2, Kind::Bugfix, Severity::Medium));
    let (h, task) = hx.start().await.expect("engine");
    let svc = serve_backend(bus, Arc::new(h.clone())).await;
    // Staging may run any time: the check stages by itself; switching waits.
    h.check(Actor::Policy).await.expect("check");
    tokio::time::timeout(
        Duration::from_secs(20),
        h.wait_for(|s| s.state.as_str() == "staged" && s.busy.is_none()),
    )
    .await
    .expect("staged in time")
    .expect("engine running");
    (hx, h, task, svc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_switch_waits_for_the_window_then_switches() {
    let Some(bus) = TestBus::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (hx, h, task, _svc) = staged_outside_the_window(&bus, dir.path()).await;

    let r = patchctl(&bus, &["switch"]).await;
    assert_eq!(r.code, 10, "{r:?}");
    assert!(r.stderr.contains("not now"), "{r:?}");
    assert!(r.stderr.contains("window"), "{r:?}");
    assert_eq!(h.status().state.as_str(), "staged");
    assert!(hx.dev.reboot_requests().is_empty());

    // Saturday 03:00 UTC: inside the window, the same command goes ahead.
    hx.clock.set("2026-11-28T03:00:00Z".parse().unwrap());
    let r = patchctl(&bus, &["switch"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    match tokio::time::timeout(Duration::from_secs(10), task).await {
        Ok(Ok(RunExit::Rebooting { .. })) => {}
        other => panic!("expected a reboot into the new slot: {other:?}"),
    }
    assert_eq!(hx.dev.reboot_requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbus_switch_without_options_overrides_the_window() {
    let Some(bus) = TestBus::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (hx, _h, task, _svc) = staged_outside_the_window(&bus, dir.path()).await;

    let conn = bus.connect().await;
    let p = ManagerProxy::new(&conn).await.expect("proxy");
    p.switch(Default::default())
        .await
        .expect("Switch with no options switches now, window or not");
    match tokio::time::timeout(Duration::from_secs(10), task).await {
        Ok(Ok(RunExit::Rebooting { .. })) => {}
        other => panic!("expected a reboot into the new slot: {other:?}"),
    }
    assert_eq!(hx.dev.reboot_requests().len(), 1);
}
