//! Wording and exit statuses of patchctl against a real `patchd run` (private bus, files,
//! a throttled HTTP mirror), where the fake service of the D-Bus tests cannot show them:
//! a Busy refusal is prefixed once ("busy: …", exit 4), `cancel` stops the running
//! staging, and `cancel` with no job or `release-hold` with no hold answer NotFound
//! (exit 6) as docs/admin.md lists.

mod common;
mod process;

use std::time::Duration;

use common::http::{FaultServer, Faults};
use process::*;

const SIZE: usize = 8 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_cancel_and_not_found_against_the_running_daemon() {
    let Some(bus) = SessionBus::start() else {
        return;
    };
    let systemd = FakeSystemd::default();
    let _sd = systemd.serve(&bus.address).await;
    let server = FaultServer::start().await;
    let top = tempfile::tempdir().unwrap();
    let dev = Device::new(
        top.path(),
        &DeviceSpec {
            image_size: SIZE,
            uncompressed: true,
            url: Some(server.url()),
            ..DeviceSpec::default()
        },
    );
    for (path, bytes) in dev.repo_files() {
        server.add(&path, bytes);
    }
    // Slow enough (~30 s for the image) that staging is still running while we ask.
    server.set(Faults {
        chunk_delay: Some(Duration::from_millis(250)),
        ..Faults::default()
    });
    let mut d = dev.spawn(&bus.address, &[]);
    let e = wait_until(&mut d, &dev, Duration::from_secs(120), "staging", |dev| {
        dev.state_kind() == "staging"
    })
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());

    // The engine answers the job in progress; patchctl names it once.
    let mut busy = None;
    for _ in 0..100 {
        let r = patchctl(&bus.address, &["install"]).await;
        if r.0 == 4 {
            busy = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, out, err) = busy.unwrap_or_else(|| panic!("install never Busy\n{}", dev.log()));
    assert_eq!(code, 4, "{out}{err}");
    assert_eq!(err.matches("busy:").count(), 1, "prefix once: {err}");

    let (code, out, err) = patchctl(&bus.address, &["cancel"]).await;
    assert_eq!(code, 0, "cancel of the running staging: {out}{err}");
    let e = wait_until(&mut d, &dev, Duration::from_secs(60), "cancelled", |dev| {
        dev.state_kind() != "staging"
    })
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());

    // The cancelled job leaves no line behind in status, also after the staging threads
    // that were still writing have noticed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, out, err) = patchctl(&bus.address, &["status"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.lines().any(|l| l.trim_start().starts_with("Job")),
        "stale job line after cancel:\n{out}"
    );
    let (code, out, err) = patchctl(&bus.address, &["--json", "status"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    assert!(
        v["progress"].is_null(),
        "stale progress after cancel: {out}"
    );

    let (code, out, err) = patchctl(&bus.address, &["cancel"]).await;
    assert_eq!(code, 6, "cancel with no job is NotFound: {out}{err}");
    let (code, out, err) = patchctl(&bus.address, &["release-hold"]).await;
    assert_eq!(code, 6, "release-hold with no hold is NotFound: {out}{err}");
    d.kill();
}
