//! Live status: every change of the daemon's status arrives as `PropertiesChanged`
//! (State, Progress, …), and `patchctl watch` follows a job to its end with the result.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use futures_util::StreamExt;
use patchd::dbus::proxy::ManagerProxy;
use patchd::testkit::fake::{FakeBackend, FAKE_IMAGE_BYTES};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_changes_are_signalled() {
    let Some(bus) = TestBus::start() else { return };
    let backend = FakeBackend::new(Duration::from_millis(20)).into_arc();
    let _svc = start_service(&bus, backend.clone(), root_only()).await;
    let conn = bus.connect().await;
    let p = ManagerProxy::new(&conn).await.unwrap();
    assert_eq!(p.state().await.unwrap(), "idle");
    assert_eq!(p.current_version().await.unwrap(), "1.0.0");
    assert_eq!(p.booted_slot().await.unwrap(), "a");
    assert_eq!(p.slots().await.unwrap().len(), 2);
    assert_eq!(p.last_check().await.unwrap(), "");

    let mut states = p.receive_state_changed().await;
    let mut progress = p.receive_progress_changed().await;
    let mut available = p.receive_available_changed().await;
    // The first item of each stream is the current value.
    let _ = states.next().await;
    let _ = progress.next().await;
    let _ = available.next().await;

    assert_eq!(patchctl(&bus, &["check"]).await.code, 0);
    let next = tokio::time::timeout(Duration::from_secs(5), states.next())
        .await
        .expect("State change signalled")
        .unwrap();
    assert_eq!(next.get().await.unwrap(), "update_available");
    let a = tokio::time::timeout(Duration::from_secs(5), available.next())
        .await
        .expect("Available change signalled")
        .unwrap();
    assert_eq!(a.get().await.unwrap()[0].1, "security");
    let mut checked = false;
    for _ in 0..100 {
        if !p.last_check().await.unwrap().is_empty() {
            checked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(checked, "LastCheck change signalled");

    let inst = tokio::spawn({
        let addr = bus.address.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_patchctl"))
                .args(["--bus-address", &addr, "install"])
                .output()
                .await
                .unwrap()
        }
    });
    let mut seen = Vec::new();
    while let Ok(Some(c)) = tokio::time::timeout(Duration::from_secs(5), progress.next()).await {
        let t = c.get().await.unwrap();
        if t.0.is_empty() {
            break;
        }
        seen.push(t);
    }
    assert!(seen.len() >= 5, "progress updates: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0].1 <= w[1].1),
        "done never goes back: {seen:?}"
    );
    // Status is a watch channel: a burst may be coalesced, but never reordered.
    assert!(seen.iter().all(|t| t.2 == FAKE_IMAGE_BYTES), "{seen:?}");
    assert!(seen.last().unwrap().1 > FAKE_IMAGE_BYTES / 2, "{seen:?}");
    assert!(seen.iter().any(|t| t.0 == "download") && seen.iter().any(|t| t.0 == "write"));
    assert!(inst.await.unwrap().status.success());
    assert_eq!(p.staged_version().await.unwrap(), "1.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_job_to_the_end() {
    let Some(bus) = TestBus::start() else { return };
    let backend = FakeBackend::new(Duration::from_millis(50)).into_arc();
    let _svc = start_service(&bus, backend.clone(), root_only()).await;

    let r = patchctl(&bus, &["watch", "--exit-if-idle"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.trim(), "idle");

    assert_eq!(patchctl(&bus, &["check"]).await.code, 0);
    let watch = tokio::spawn({
        let addr = bus.address.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_patchctl"))
                .args(["--bus-address", &addr, "watch", "--json"])
                .output()
                .await
                .unwrap()
        }
    });
    // Let watch subscribe before the job starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(patchctl(&bus, &["install"]).await.code, 0);
    let out = tokio::time::timeout(Duration::from_secs(10), watch)
        .await
        .expect("watch ends with the job")
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().filter(|l| l["progress"].is_object()).count() >= 3,
        "{text}"
    );
    let last = lines.last().unwrap();
    assert_eq!(last["result"]["state"], "staged", "{text}");
    assert!(last["result"]["error"].is_null(), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_failed_job() {
    let Some(bus) = TestBus::start() else { return };
    let backend = FakeBackend::new(Duration::from_millis(100)).into_arc();
    let _svc = start_service(&bus, backend.clone(), root_only()).await;
    assert_eq!(patchctl(&bus, &["check"]).await.code, 0);
    let install = tokio::spawn({
        let addr = bus.address.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_patchctl"))
                .args(["--bus-address", &addr, "install"])
                .output()
                .await
                .unwrap()
        }
    });
    for _ in 0..100 {
        if backend.current().progress.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let watch = tokio::spawn({
        let addr = bus.address.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_patchctl"))
                .args(["--bus-address", &addr, "watch"])
                .output()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(patchctl(&bus, &["cancel"]).await.code, 0);
    let out = watch.await.unwrap();
    assert_eq!(out.status.code(), Some(9), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cancelled"),
        "{out:?}"
    );
    let _ = install.await;
}
