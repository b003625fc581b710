//! A mirror that trickles the image, slower than `[fetch] min_rate`, against a real
//! `patchd run` (private bus, files, HTTP): the staging job ends with a "slow retrieval"
//! error within the configured window instead of staying `staging` for hours; the
//! error reaches `patchctl status`, the job's recorded outcome (`last_job`) and the audit
//! log; the target slot stays out of the bootloader's order.

mod common;
mod process;

use std::time::{Duration, Instant};

use common::http::{FaultServer, Faults};
use patchd::boot::Bootloader;
use process::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_mirror_ends_staging_as_slow_retrieval() {
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
            image_size: 1 << 20,
            uncompressed: true,
            url: Some(server.url()),
            extra: "[fetch]\nmin_rate = \"64K\"\nmin_rate_window = \"2s\"\n\
                    deadline_floor = \"2s\"\nstall_timeout = \"1s\"\n"
                .into(),
            ..DeviceSpec::default()
        },
    );
    for (path, bytes) in dev.repo_files() {
        server.add(&path, bytes);
    }
    // 8 KiB/s: never silent for a second, so only the rate rule can end it (the 1 MiB
    // image would take about two minutes).
    server.set(Faults {
        trickle: Some((4096, Duration::from_millis(500))),
        ..Faults::default()
    });
    let started = Instant::now();
    let mut d = dev.spawn(&bus.address, &[]);
    let e = wait_until(&mut d, &dev, Duration::from_secs(60), "staging", |dev| {
        dev.state_kind() == "staging"
    })
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    let e = wait_until(
        &mut d,
        &dev,
        Duration::from_secs(60),
        "staging ended",
        |dev| dev.state_kind() != "staging",
    )
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "took {:?}: not ended by the rate rule",
        started.elapsed()
    );

    let (code, status, err) = patchctl(&bus.address, &["status"]).await;
    assert_eq!(code, 0, "{status}{err}");
    assert!(status.contains("slow retrieval"), "status: {status}");
    let (code, out, err) = patchctl(&bus.address, &["--json", "status"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["last_job"]["outcome"], "failed", "{out}");
    let audit = std::fs::read_to_string(dev.audit_path()).unwrap();
    let failed = audit
        .lines()
        .find(|l| l.contains("\"staging_failed\""))
        .unwrap_or_else(|| panic!("no staging_failed:\n{audit}"));
    assert!(failed.contains("slow retrieval"), "{failed}");
    let info = dev.bootloader().slots().unwrap();
    let b = info.iter().find(|i| i.slot.as_str() == "b").unwrap();
    assert!(b.bad, "slot b bootable after the failed staging: {info:?}");
    d.stop(Duration::from_secs(10));
}
