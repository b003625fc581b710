//! `patchd boot-check` (run by patchd-boot-check.service before boot-complete.target)
//! agrees with the engine's verdict on the current boot: it waits while the new slot is
//! on trial, exits 0 once the release is committed or when nothing is on trial, exits 1
//! while patchd rolls back, and 3 when no verdict comes within `--timeout`. Driven
//! against the real engine (in-memory device) behind the D-Bus service on a private bus.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use patchd::engine::ports::{HealthCheck, HealthVerdict};
use patchd::engine::{Actor, EngineHandle, RunExit};
use patchd::fetch::BoxFuture;
use patchd::policy::{Kind, Schedule, Severity};
use patchd::testkit::engine::{release, Harness};
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::sync::watch;

/// The device's health checks, held until the test opens the gate.
struct GatedHealth {
    inner: Arc<dyn HealthCheck>,
    open: watch::Receiver<bool>,
}

impl HealthCheck for GatedHealth {
    fn run(&self, budget: Duration) -> BoxFuture<'_, HealthVerdict> {
        Box::pin(async move {
            let mut open = self.open.clone();
            let _ = open.wait_for(|o| *o).await;
            self.inner.run(budget).await
        })
    }
}

fn now() -> jiff::Timestamp {
    "2026-11-25T12:00:00Z".parse().unwrap()
}

/// Install 2.0.0 with an immediate switch, "reboot" into slot b, and start the engine
/// again with its health checks held: the engine is verifying when this returns.
async fn booted_on_trial(
    hx: &mut Harness,
) -> (
    EngineHandle,
    tokio::task::JoinHandle<RunExit>,
    watch::Sender<bool>,
) {
    // Windows only on the weekend (it is Wednesday): nothing happens by itself, the
    // admin's install --now stages and switches.
    hx.policy.schedule = Schedule::parse("UTC", &["Sat,Sun 02:00-05:00"]).unwrap();
    hx.policy.stage_outside_windows = false;
    hx.dev
        .publish(release("2.0.0", 2, Kind::Security, Severity::High));
    let (h, task) = hx.start().await.expect("engine");
    h.check(Actor::Policy).await.expect("check");
    h.install(Actor::Uid(0), Some("2.0.0".into()), true)
        .await
        .expect("install --now");
    match tokio::time::timeout(Duration::from_secs(20), task).await {
        Ok(Ok(RunExit::Rebooting { .. })) => {}
        other => panic!("expected a reboot into the new slot: {other:?}"),
    }
    drop(h);
    hx.dev.power_cycle();
    assert_eq!(hx.dev.booted().as_str(), "b");

    let (gate, open) = watch::channel(false);
    let mut parts = hx.parts().expect("engine parts");
    parts.health = Arc::new(GatedHealth {
        inner: parts.health.clone(),
        open,
    });
    let (h, task) = patchd::engine::start(parts).await.expect("engine on trial");
    assert_eq!(h.status().state.as_str(), "verifying");
    (h, task, gate)
}

fn spawn_boot_check(bus: &TestBus, timeout: &str) -> Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_patchd"))
        .args([
            "--bus-address",
            &bus.address,
            "boot-check",
            "--timeout",
            timeout,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn patchd boot-check")
}

/// Read boot-check's stdout until a line contains `what`; returns the lines read.
async fn wait_for_line(child: &mut Child, what: &str) -> Vec<String> {
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(l)) = lines.next_line().await {
            let hit = l.contains(what);
            seen.push(l);
            if hit {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no line with {what:?} in {seen:#?}");
    // Keep draining in the background so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    seen
}

/// The rest of the child's output and its exit code.
async fn finish(mut child: Child) -> Run {
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = tokio::time::timeout(Duration::from_secs(30), e.read_to_string(&mut stderr)).await;
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("boot-check did not exit")
        .expect("wait");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_health_then_passes_when_committed() {
    let Some(bus) = TestBus::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut hx = Harness::new(dir.path(), "1.0.0", now());
    let (h, _task, gate) = booted_on_trial(&mut hx).await;
    let _svc = serve_backend(&bus, Arc::new(h.clone())).await;

    let mut child = spawn_boot_check(&bus, "60s");
    let seen = wait_for_line(&mut child, "waiting:").await;
    assert!(
        seen.iter()
            .any(|l| l.contains("2.0.0") && l.contains("on trial")),
        "{seen:#?}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "boot-check must wait while the slot is on trial"
    );
    gate.send_replace(true);
    let r = finish(child).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(h.status().state.as_str(), "committed");

    // Once committed, a later run answers at once.
    let r = boot_check(&bus.address, &["--timeout", "10s"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("committed"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_when_health_fails_and_patchd_rolls_back() {
    let Some(bus) = TestBus::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut hx = Harness::new(dir.path(), "1.0.0", now());
    hx.dev.set_unhealthy("2.0.0");
    let (h, task, gate) = booted_on_trial(&mut hx).await;
    let svc = serve_backend(&bus, Arc::new(h.clone())).await;

    let mut child = spawn_boot_check(&bus, "60s");
    wait_for_line(&mut child, "waiting:").await;
    gate.send_replace(true);
    let r = finish(child).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("FAILED"), "{r:?}");
    assert!(r.stderr.contains("rolling back"), "{r:?}");
    match tokio::time::timeout(Duration::from_secs(20), task).await {
        Ok(Ok(RunExit::Rebooting { .. })) => {}
        other => panic!("the engine must reboot into the old slot: {other:?}"),
    }

    // After the reboot into the old slot the rollback is finished: that boot is fine.
    svc.shutdown().await;
    hx.dev.power_cycle();
    assert_eq!(hx.dev.booted().as_str(), "a");
    let (h, _task) = hx.start().await.expect("engine after rollback");
    let _svc = serve_backend(&bus, Arc::new(h.clone())).await;
    let r = boot_check(&bus.address, &["--timeout", "10s"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("after a rollback"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_out_without_a_verdict() {
    let Some(bus) = TestBus::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut hx = Harness::new(dir.path(), "1.0.0", now());
    let (h, _task, _gate) = booted_on_trial(&mut hx).await;
    let _svc = serve_backend(&bus, Arc::new(h.clone())).await;

    let r = boot_check(&bus.address, &["--timeout", "2s"]).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("no verdict"), "{r:?}");
    assert!(r.stdout.contains("on trial"), "{r:?}");
    assert_eq!(h.status().state.as_str(), "verifying");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_pending_passes_once_patchd_appears() {
    let Some(bus) = TestBus::start() else { return };
    // patchd is not on the bus yet: boot-check waits for its name.
    let mut child = spawn_boot_check(&bus, "60s");
    wait_for_line(&mut child, "waiting for patchd").await;

    let dir = tempfile::tempdir().unwrap();
    let hx = Harness::new(dir.path(), "1.0.0", now());
    let (h, _task) = hx.start().await.expect("engine");
    let svc = serve_backend(&bus, Arc::new(h.clone())).await;
    let r = finish(child).await;
    assert_eq!(r.code, 0, "{r:?}");

    let r = boot_check(&bus.address, &["--timeout", "10s"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("no update awaits a verdict"), "{r:?}");

    // No patchd at all within the timeout: 3; no bus at all: 4.
    svc.shutdown().await;
    let r = boot_check(&bus.address, &["--timeout", "1s"]).await;
    assert_eq!(r.code, 3, "{r:?}");
    let r = boot_check(
        "unix:path=/nonexistent/patchd-test-bus",
        &["--timeout", "1s"],
    )
    .await;
    assert_eq!(r.code, 4, "{r:?}");
}

/// The unit runs exactly this subcommand, and gives it more time than its default
/// timeout so the reason for a timeout is printed by boot-check, not by systemd.
#[tokio::test]
async fn unit_exec_start_runs_boot_check() {
    let unit = std::fs::read_to_string(repo_root().join("systemd/patchd-boot-check.service"))
        .expect("unit file");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/bin/patchd"), "{exec}");
    let args: Vec<&str> = words.collect();
    assert_eq!(args.first(), Some(&"boot-check"), "{exec}");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_patchd"))
        .args(&args)
        .arg("--help")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--timeout"), "{help}");
    assert!(help.contains("[default: 25m]"), "{help}");
    let start_timeout = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStartSec="))
        .expect("TimeoutStartSec");
    assert_eq!(
        start_timeout, "30min",
        "keep it above boot-check's 25m default"
    );
}
