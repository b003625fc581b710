//! Mutating calls never interleave: while one runs, a second gets
//! `org.patchd.Patchd1.Error.Busy` at once (patchctl exit 4); read-only calls, Check
//! (a metadata refresh, which the engine answers beside a running job) and Cancel still
//! work, and Cancel stops the running job.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use patchd::testkit::fake::FakeBackend;
use support::*;

async fn wait_for_state(backend: &FakeBackend, state: &str) {
    for _ in 0..200 {
        if backend.current().state == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("state {state} never reached: {:?}", backend.current());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_mutating_call_gets_busy() {
    let Some(bus) = TestBus::start() else { return };
    // Staging takes 10 × 200 ms.
    let backend = FakeBackend::new(Duration::from_millis(200)).into_arc();
    let _svc = start_service(&bus, backend.clone(), root_only()).await;
    assert_eq!(patchctl(&bus, &["check"]).await.code, 0);

    let install = {
        let addr = bus.address.clone();
        tokio::spawn(async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_patchctl"))
                .args(["--bus-address", &addr, "install", "--json"])
                .output()
                .await
                .expect("run install")
        })
    };
    wait_for_state(&backend, "staging").await;

    for args in [
        &["install"][..],
        &["hold", "--reason", "x"],
        &["switch"],
        &["mark-good"],
    ] {
        let r = patchctl(&bus, args).await;
        assert_eq!(r.code, 4, "{args:?} during staging must be Busy: {r:?}");
        assert!(r.stderr.contains("busy"), "{r:?}");
    }
    // A check is answered, not Busy: a slow staging must not keep a newer release
    // from being seen.
    let r = patchctl(&bus, &["check"]).await;
    assert_eq!(r.code, 0, "check during staging: {r:?}");
    // Read-only calls are not blocked.
    let r = patchctl(&bus, &["status", "--json"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("staging"), "{r:?}");

    let out = install.await.unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(backend.current().state, "staged");
    let installs = backend
        .records()
        .iter()
        .filter(|r| r["event"] == "install")
        .count();
    assert_eq!(installs, 1, "only the first install ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_running_job() {
    let Some(bus) = TestBus::start() else { return };
    let backend = FakeBackend::new(Duration::from_millis(200)).into_arc();
    let _svc = start_service(&bus, backend.clone(), root_only()).await;
    assert_eq!(patchctl(&bus, &["check"]).await.code, 0);
    let install = {
        let addr = bus.address.clone();
        tokio::spawn(async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_patchctl"))
                .args(["--bus-address", &addr, "install"])
                .output()
                .await
                .expect("run install")
        })
    };
    wait_for_state(&backend, "staging").await;
    let r = patchctl(&bus, &["cancel"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let out = install.await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cancelled"),
        "{out:?}"
    );
    let st = backend.current();
    assert_eq!(st.state, "update_available");
    assert!(st.staged_version.is_none());
    let r = patchctl(&bus, &["cancel"]).await;
    assert_eq!(r.code, 6, "nothing left to cancel: {r:?}");
}
