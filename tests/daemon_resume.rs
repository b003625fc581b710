//! A real `patchd run` killed with SIGKILL in the middle of staging resumes from the
//! staging pipeline's checkpoint after it is started again — it fetches only the rest of
//! the image (asserted from the HTTP server's request log) — and then completes the
//! update: switch, reboot (a fake systemd on a private bus takes the request), health
//! checks, commit.

mod common;
mod process;

use std::time::Duration;

use common::http::{FaultServer, Faults};
use process::*;

const SIZE: usize = 8 << 20;
const CHUNK: u64 = 1 << 20;

/// Content bytes the staging pipeline has checkpointed (0 without a checkpoint).
fn checkpointed(dev: &Device) -> u64 {
    let p = dev.paths.state_dir().join("slots/b.stage.json");
    std::fs::read(p)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["content_offset"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_staging_resumes_from_the_checkpoint_and_completes() {
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
            checkpoint_every: Some(CHUNK),
            ..DeviceSpec::default()
        },
    );
    for (path, bytes) in dev.repo_files() {
        server.add(&path, bytes);
    }
    let image_path = dev.image_target_path();
    // Slow enough (~6 s for the image) to be killed in the middle.
    server.set(Faults {
        chunk_delay: Some(Duration::from_millis(45)),
        ..Faults::default()
    });

    // First run: no windows (always open), so the engine checks and stages by itself.
    let mut d = dev.spawn(&bus.address, &[]);
    let e = wait_until(
        &mut d,
        &dev,
        Duration::from_secs(120),
        "2 MiB checkpointed",
        |dev| checkpointed(dev) >= 2 * CHUNK,
    )
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    d.kill();
    let at_kill = checkpointed(&dev);
    assert!(at_kill < SIZE as u64, "killed too late");
    assert_eq!(dev.state_kind(), "staging");
    assert_eq!(
        dev.slot_status("b").state,
        patchd::slot::SlotState::Incomplete
    );

    // Restart at full speed.
    server.set(Faults::default());
    let seen_before = server.seen().len();
    let mut d = dev.spawn(&bus.address, &[]);
    let e = wait_until(
        &mut d,
        &dev,
        Duration::from_secs(120),
        "reboot request",
        |_| false,
    )
    .await;
    let Ended::Exited(st) = e else { unreachable!() };
    assert!(st.success(), "patchd exit {st}:\n{}", dev.log());
    assert_eq!(
        systemd.calls(),
        vec![(
            "reboot.target".to_string(),
            "replace-irreversibly".to_string()
        )]
    );
    let after: Vec<_> = server.seen()[seen_before..]
        .iter()
        .filter(|s| s.path == image_path)
        .cloned()
        .collect();
    assert!(!after.is_empty(), "image never fetched after the restart");
    for s in &after {
        let start = s.range_start.unwrap_or(0);
        assert!(
            start >= CHUNK,
            "the image was fetched from {start} after the restart, not resumed: {after:?}"
        );
        let fetched = SIZE as u64 - start;
        assert!(fetched < SIZE as u64, "fetched {fetched} of {SIZE}");
        println!("resumed at {start} of {SIZE} bytes ({at_kill} bytes checkpointed at the kill)");
    }
    let ev = dev.audit_events();
    assert!(
        ev.contains(&"reconcile_staging_resumed".to_string()),
        "{ev:?}"
    );
    assert!(!ev.contains(&"reconcile_staging_interrupted".to_string()));

    // The reboot: the bootloader tries slot b; the daemon verifies and commits.
    assert_eq!(dev.power_cycle().as_str(), "b");
    let mut d = dev.spawn(&bus.address, &[]);
    let e = wait_until(&mut d, &dev, Duration::from_secs(120), "commit", |dev| {
        committed(dev, "2.0.0")
    })
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    let st = d.stop(Duration::from_secs(40)).expect("stops on SIGTERM");
    assert!(st.success(), "{st}");
    let slot_b = std::fs::read(dev.paths.resolve("/var/lib/slots/b.img")).unwrap();
    assert!(
        slot_b[..SIZE] == dev.image[..],
        "slot b holds 2.0.0 exactly"
    );
    assert_eq!(dev.slot_status("b").state, patchd::slot::SlotState::Good);
    let report = patchd::audit::AuditLog::open(dev.audit_path(), Default::default())
        .unwrap()
        .verify()
        .unwrap();
    assert!(report.is_intact(), "{report}");
}

/// A staging interrupted by SIGKILL does not resume after the restart when the
/// configuration now says `stage_outside_windows = false` (a drop-in) and no window is
/// open: the daemon goes back to `update_available` without an error, fetches nothing,
/// keeps the checkpoint for later, and status says staging waits for the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_staging_waits_for_the_window_when_staging_outside_is_off() {
    let Some(bus) = SessionBus::start() else {
        return;
    };
    let server = FaultServer::start().await;
    let top = tempfile::tempdir().unwrap();
    let dev = Device::new(
        top.path(),
        &DeviceSpec {
            image_size: SIZE,
            uncompressed: true,
            url: Some(server.url()),
            checkpoint_every: Some(CHUNK),
            // Closed window, staging outside it allowed: the first run stages.
            policy: NO_WINDOW.to_string(),
            ..DeviceSpec::default()
        },
    );
    for (path, bytes) in dev.repo_files() {
        server.add(&path, bytes);
    }
    let image_path = dev.image_target_path();
    server.set(Faults {
        chunk_delay: Some(Duration::from_millis(45)),
        ..Faults::default()
    });
    let mut d = dev.spawn(&bus.address, &[]);
    let e = wait_until(
        &mut d,
        &dev,
        Duration::from_secs(120),
        "2 MiB checkpointed",
        |dev| checkpointed(dev) >= 2 * CHUNK,
    )
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    d.kill();
    assert_eq!(dev.state_kind(), "staging");
    let at_kill = checkpointed(&dev);

    // The admin turns staging outside windows off through a drop-in.
    let dropin = dev
        .paths
        .resolve("/etc/patchd/patchd.toml.d/50-no-staging.toml");
    std::fs::create_dir_all(dropin.parent().unwrap()).unwrap();
    std::fs::write(&dropin, "[policy]\nstage_outside_windows = false\n").unwrap();
    server.set(Faults::default());
    let seen_before = server.seen().len();
    let mut d = dev.spawn(&bus.address, &[]);
    let e = wait_until(
        &mut d,
        &dev,
        Duration::from_secs(60),
        "staging deferred",
        |dev| dev.audit_events().contains(&"staging_deferred".to_string()),
    )
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    // Long enough for a staging the daemon would start anyway to fetch something.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(dev.state_kind(), "update_available", "{}", dev.log());
    let fetched: Vec<_> = server.seen()[seen_before..]
        .iter()
        .filter(|s| s.path == image_path)
        .cloned()
        .collect();
    assert!(fetched.is_empty(), "staged outside the window: {fetched:?}");
    let ev = dev.audit_events();
    assert!(!ev.contains(&"staging_failed".to_string()), "{ev:?}");
    assert_eq!(
        dev.slot_status("b").state,
        patchd::slot::SlotState::Incomplete
    );
    assert_eq!(
        checkpointed(&dev),
        at_kill,
        "the checkpoint is kept for the window"
    );
    let (code, out, err) = patchctl(&bus.address, &["status"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("staging waits (staging only inside maintenance windows"),
        "status does not say why staging waits:\n{out}"
    );
    let st = d.stop(Duration::from_secs(40)).expect("stops on SIGTERM");
    assert!(st.success(), "{st}");
    assert!(dev.state().unwrap().unwrap().last_error.is_none());
}
