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
    let Some(rig) = Rig::start().await else {
        return;
    };
    let server = FaultServer::start().await;
    let dev = Device::new(
        rig.top.path(),
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
    let mut d = dev.spawn(rig.addr(), &[]);
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

    let (code, status, err) = patchctl(rig.addr(), &["status"]).await;
    assert_eq!(code, 0, "{status}{err}");
    assert!(status.contains("slow retrieval"), "status: {status}");
    let (code, out, err) = patchctl(rig.addr(), &["--json", "status"]).await;
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

/// While a slow mirror keeps the device staging, `patchctl check` is answered (not Busy)
/// and shows a release published after staging began; two checks at once share one
/// refresh; staging goes on, and `cancel` still ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_is_answered_while_a_slow_staging_runs() {
    use patchd::publish::{AddRelease, ImageInput, Repo};
    let Some(rig) = Rig::start().await else {
        return;
    };
    let server = FaultServer::start().await;
    let dev = Device::new(
        rig.top.path(),
        &DeviceSpec {
            image_size: 1 << 20,
            uncompressed: true,
            url: Some(server.url()),
            // 3 KiB/s passes a 1K minimum: staging would take about five minutes.
            extra: "[fetch]\nmin_rate = \"1K\"\nstall_timeout = \"5s\"\n".into(),
            ..DeviceSpec::default()
        },
    );
    for (path, bytes) in dev.repo_files() {
        server.add(&path, bytes);
    }
    // About 3 KiB/s for everything: the metadata of a check takes a second or more, so
    // two checks asked for together overlap.
    server.set(Faults {
        trickle: Some((1024, Duration::from_millis(300))),
        ..Faults::default()
    });
    let mut d = dev.spawn(rig.addr(), &[]);
    let e = wait_until(&mut d, &dev, Duration::from_secs(60), "staging", |dev| {
        dev.state_kind() == "staging"
    })
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());

    // The publisher ships 3.0.0 while the device is stuck downloading 2.0.0.
    let repo = Repo::open(&dev.repo_dir, rig.top.path().join("keys")).unwrap();
    let img = rig.top.path().join("3.0.0.img");
    std::fs::write(&img, image("3.0.0", 4096)).unwrap();
    let mut rel = AddRelease::new("test-box", "3.0.0".parse().unwrap(), &img);
    rel.images = vec![ImageInput::rootfs(&img)];
    rel.security_version = 3;
    rel.kind = patchd::manifest::Kind::Security;
    rel.severity = patchd::manifest::Severity::Critical;
    repo.add_release(&rel).unwrap();
    for (path, bytes) in dev.repo_files() {
        server.add(&path, bytes);
    }

    let (a, b) = tokio::join!(
        patchctl(rig.addr(), &["--json", "check"]),
        patchctl(rig.addr(), &["--json", "check"])
    );
    for (code, out, err) in [&a, &b] {
        assert_eq!(*code, 0, "check during staging: {out}{err}");
        assert!(out.contains("3.0.0"), "3.0.0 not found by the check: {out}");
    }
    let (code, status, err) = patchctl(rig.addr(), &["status"]).await;
    assert_eq!(code, 0, "{status}{err}");
    assert!(
        status.contains("3.0.0"),
        "status does not list 3.0.0: {status}"
    );
    assert_eq!(dev.state_kind(), "staging", "the check ended the staging");
    let checks = std::fs::read_to_string(dev.audit_path())
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"event\":\"check\"") && l.contains("while staging ran"))
        .count();
    assert_eq!(checks, 1, "two concurrent checks should share one refresh");

    let (code, out, err) = patchctl(rig.addr(), &["cancel"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let e = wait_until(&mut d, &dev, Duration::from_secs(20), "cancelled", |dev| {
        dev.state_kind() != "staging"
    })
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    d.stop(Duration::from_secs(10));
}

/// A staging the mirror's slowness ended is tried again by itself after `[fetch]
/// retry_after` (not only at the next periodic check, hours later), resumes from its
/// checkpoint, and status says when the retry comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_retrieval_is_retried_with_backoff_from_the_checkpoint() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let server = FaultServer::start().await;
    let dev = Device::new(
        rig.top.path(),
        &DeviceSpec {
            image_size: 4 << 20,
            uncompressed: true,
            url: Some(server.url()),
            checkpoint_every: Some(1 << 20),
            // Stay staged: no window, so no reboot ends the daemon.
            policy: NO_WINDOW.into(),
            extra: "[fetch]\nmin_rate = \"512K\"\nmin_rate_window = \"6s\"\n\
                    deadline_floor = \"6s\"\nstall_timeout = \"2s\"\nretry_after = \"3s\"\n"
                .into(),
            ..DeviceSpec::default()
        },
    );
    for (path, bytes) in dev.repo_files() {
        server.add(&path, bytes);
    }
    // 64 KiB every 250 ms: 256 KiB/s, half the minimum, so the rate rule ends the first
    // attempt after its 6 s window, with more than one 1 MiB checkpoint written.
    server.set(Faults {
        chunk_delay: Some(Duration::from_millis(250)),
        ..Faults::default()
    });
    let mut d = dev.spawn(rig.addr(), &[]);
    let e = wait_until(
        &mut d,
        &dev,
        Duration::from_secs(60),
        "slow retrieval",
        |dev| dev.audit_events().iter().any(|e| e == "staging_failed"),
    )
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    let (code, status, err) = patchctl(rig.addr(), &["status"]).await;
    assert_eq!(code, 0, "{status}{err}");
    assert!(
        status.contains("tried again from its checkpoint at"),
        "status does not say when staging is retried: {status}"
    );
    let failed = std::fs::read_to_string(dev.audit_path())
        .unwrap()
        .lines()
        .find(|l| l.contains("\"staging_failed\""))
        .map(str::to_owned)
        .unwrap();
    assert!(failed.contains("\"retry_at\""), "{failed}");
    assert!(failed.contains("\"cause\":\"slow_retrieval\""), "{failed}");

    // The mirror recovers; nobody runs a check: the retry alone finishes the staging.
    server.set(Faults::default());
    let e = wait_until(&mut d, &dev, Duration::from_secs(60), "staged", |dev| {
        dev.state_kind() == "staged"
    })
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    let events = dev.audit_events();
    let stagings = events.iter().filter(|e| *e == "staging").count();
    assert_eq!(stagings, 2, "one retry after the failure: {events:?}");
    let checks = events
        .iter()
        .filter(|e| *e == "check" || *e == "update_available")
        .count();
    assert_eq!(checks, 1, "the retry must not need a new check: {events:?}");
    assert!(
        dev.log().contains("staging again after a network failure"),
        "{}",
        tail(&dev.log(), 30)
    );
    // The second attempt continued from the bytes the first one verified.
    let image = dev.image_target_path();
    let starts: Vec<Option<u64>> = server
        .seen()
        .iter()
        .filter(|r| r.path.trim_start_matches('/') == image)
        .map(|r| r.range_start)
        .collect();
    assert!(
        starts.last().is_some_and(|s| s.unwrap_or(0) > 0),
        "the retry did not resume: image requests started at {starts:?}"
    );
    d.stop(Duration::from_secs(10));
}
