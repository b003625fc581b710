//! A failed job is reported as failed, every time and whenever the client looks: against a
//! real `patchd run` (private bus, files, an HTTP mirror that corrupts the image), the same
//! failing install three times in a row exits 9 with the error each time, and a job that
//! failed before any client followed it is still reported (`LastJob`, `watch`).

mod common;
mod process;

use std::time::Duration;

use common::http::{FaultServer, Faults};
use process::*;

fn count(dev: &Device, event: &str) -> usize {
    dev.audit_events().iter().filter(|e| *e == event).count()
}

/// A daemon whose every staging fails (the mirror flips one byte of the image), after the
/// policy's own first staging attempt has failed and the engine is idle again.
async fn failing_device(bus: &SessionBus, top: &std::path::Path) -> (Daemon, Device, FaultServer) {
    let server = FaultServer::start().await;
    let dev = Device::new(
        top,
        &DeviceSpec {
            uncompressed: true,
            url: Some(server.url()),
            ..DeviceSpec::default()
        },
    );
    for (path, bytes) in dev.repo_files() {
        server.add(&path, bytes);
    }
    server.set(Faults {
        // Past every metadata file, inside the 256 KiB image.
        corrupt: vec![100_000],
        ..Faults::default()
    });
    let mut d = dev.spawn(&bus.address, &[]);
    let e = wait_until(
        &mut d,
        &dev,
        Duration::from_secs(120),
        "the policy's staging to fail",
        |dev| count(dev, "staging_failed") >= 1 && dev.state_kind() == "update_available",
    )
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    (d, dev, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_failing_install_three_times_fails_three_times() {
    let Some(bus) = SessionBus::start() else {
        return;
    };
    let systemd = FakeSystemd::default();
    let _sd = systemd.serve(&bus.address).await;
    let top = tempfile::tempdir().unwrap();
    let (d, dev, _server) = failing_device(&bus, top.path()).await;

    let mut ids = Vec::new();
    for round in 1..=3 {
        let before = count(&dev, "staging_failed");
        let (code, out, err) = patchctl(&bus.address, &["install"]).await;
        assert_eq!(
            count(&dev, "staging_failed"),
            before + 1,
            "round {round}: audit"
        );
        assert_eq!(code, 9, "round {round}: failed install exits 9: {out}{err}");
        assert!(out.contains("failed"), "round {round}: {out}{err}");
        assert!(!out.contains("Installed"), "round {round}: {out}{err}");

        let before = count(&dev, "staging_failed");
        let (code, out, err) = patchctl(&bus.address, &["--json", "install"]).await;
        assert_eq!(
            count(&dev, "staging_failed"),
            before + 1,
            "round {round}: audit"
        );
        assert_eq!(code, 9, "round {round}: --json exits 9 too: {out}{err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("install JSON");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "round {round}: error named: {out}"
        );
        assert_eq!(v["outcome"], "failed", "round {round}: {out}");
        ids.push(v["job"].as_u64().expect("job id"));
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "every job has its own id: {ids:?}"
    );
    d.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_failed_before_the_client_looked_is_reported_failed() {
    let Some(bus) = SessionBus::start() else {
        return;
    };
    let systemd = FakeSystemd::default();
    let _sd = systemd.serve(&bus.address).await;
    let top = tempfile::tempdir().unwrap();
    let (mut d, dev, _server) = failing_device(&bus, top.path()).await;

    // Any client may listen for JobFinished; this one subscribes before the install.
    let conn = zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .build()
        .await
        .expect("connect to the private bus");
    let mgr = patchd::dbus::proxy::ManagerProxy::new(&conn).await.unwrap();
    let mut finished = mgr.receive_job_finished().await.unwrap();

    let before = count(&dev, "staging_failed");
    let (code, out, err) = patchctl(&bus.address, &["--json", "install", "--no-wait"]).await;
    assert_eq!(code, 0, "started: {out}{err}");
    let started: serde_json::Value = serde_json::from_str(&out).expect("install JSON");
    let id = started["job"]
        .as_u64()
        .expect("job id in the Install answer");
    let e = wait_until(
        &mut d,
        &dev,
        Duration::from_secs(60),
        "the job to fail",
        |dev| count(dev, "staging_failed") > before && dev.state_kind() == "update_available",
    )
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    let sig = tokio::time::timeout(Duration::from_secs(30), async {
        use futures_util::StreamExt;
        loop {
            let s = finished.next().await.expect("signal stream");
            let a = s.args().expect("JobFinished arguments");
            if a.id == id {
                break (a.outcome.clone(), a.error.clone());
            }
        }
    })
    .await
    .expect("JobFinished for the install's job");
    assert_eq!(sig.0, "failed", "{sig:?}");
    assert!(!sig.1.is_empty(), "{sig:?}");

    // The job ended before anyone followed it: status still names it and its outcome.
    let (code, out, err) = patchctl(&bus.address, &["--json", "status"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    let job = &v["last_job"];
    assert_eq!(job["id"].as_u64(), Some(id), "{out}");
    assert_eq!(job["kind"], "staging", "{out}");
    assert_eq!(job["outcome"], "failed", "{out}");
    assert!(
        job["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{out}"
    );
    assert!(job["finished"].is_string(), "{out}");

    // `watch` that finds no job running reports the last one, the same way each time.
    for _ in 0..2 {
        let (code, out, err) = patchctl(&bus.address, &["watch", "--exit-if-idle"]).await;
        assert_eq!(code, 9, "watch after the failed job: {out}{err}");
        assert!(out.contains("failed"), "{out}{err}");
        let (code, out, err) = patchctl(&bus.address, &["--json", "watch", "--exit-if-idle"]).await;
        assert_eq!(code, 9, "{out}{err}");
        let last: serde_json::Value =
            serde_json::from_str(out.lines().last().unwrap_or_default()).expect("JSON line");
        assert_eq!(last["result"]["job"].as_u64(), Some(id), "{out}");
        assert_eq!(last["result"]["outcome"], "failed", "{out}");
    }
    d.kill();
}
