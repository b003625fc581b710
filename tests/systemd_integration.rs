//! patchd's systemd integration without systemd as PID 1 (there is none here; the VM
//! suite boots a real one): the reboot request's D-Bus call shape against a fake
//! `org.freedesktop.systemd1` on a private bus, and the sd_notify protocol — READY=1,
//! WATCHDOG=1 pings at half of WATCHDOG_USEC, STOPPING=1 — read from a NOTIFY_SOCKET the
//! test creates for a real `patchd run`.

mod process;

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::{Duration, Instant};

use patchd::config::InhibitorConfig;
use patchd::daemon::reboot::{KernelReboot, SystemdReboot};
use patchd::dbus::Bus;
use patchd::engine::ports::Reboot;
use patchd::paths::Paths;
use process::*;

fn reboot_port(bus: &str, root: &std::path::Path) -> SystemdReboot {
    SystemdReboot {
        inhibitors: InhibitorConfig {
            sessions: false,
            inhibitor_locks: false,
            ..InhibitorConfig::default()
        },
        login: None,
        paths: Paths::new(root),
        bus: Bus::Address(bus.to_string()),
        kernel: Arc::new(NoKernelReboot),
        audit: None,
        clock: Arc::new(patchd::clock::SystemClock),
    }
}

/// The kernel fallback must never run here (a private bus never leads to it; if it did,
/// this test, run as root, would restart its host).
struct NoKernelReboot;

impl KernelReboot for NoKernelReboot {
    fn sync_and_reboot(&self) -> std::io::Error {
        panic!("kernel reboot requested in a test");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_reboot_starts_reboot_target_replace_irreversibly() {
    let Some(bus) = SessionBus::start() else {
        return;
    };
    let systemd = FakeSystemd::default();
    // The fake answers only Manager.StartUnit(ss) at /org/freedesktop/systemd1 under the
    // name org.freedesktop.systemd1: any other destination, path, interface, member or
    // signature is an error the port would return.
    let _sd = systemd.serve(&bus.address).await;
    let top = tempfile::tempdir().unwrap();
    let port = reboot_port(&bus.address, top.path());
    assert!(port.inhibitors().await.is_empty());
    port.reboot("test").await.expect("reboot request accepted");
    assert_eq!(
        systemd.calls(),
        vec![(
            "reboot.target".to_string(),
            "replace-irreversibly".to_string()
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_reboot_without_systemd_is_an_error_not_a_silent_success() {
    let Some(bus) = SessionBus::start() else {
        return;
    };
    let top = tempfile::tempdir().unwrap();
    let err = reboot_port(&bus.address, top.path())
        .reboot("test")
        .await
        .expect_err("nobody owns org.freedesktop.systemd1");
    assert!(err.to_string().contains("reboot via systemd"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_notifies_ready_pings_the_watchdog_and_says_stopping() {
    let Some(bus) = SessionBus::start() else {
        return;
    };
    let top = tempfile::tempdir().unwrap();
    let dev = Device::new(
        top.path(),
        &DeviceSpec {
            // Nothing to do during the test: no window today and no staging outside one.
            policy: "windows = [\"Mon 03:00-03:01\"]\nstage_outside_windows = false\n\
                     time_zone = \"Pacific/Kiritimati\""
                .into(),
            ..DeviceSpec::default()
        },
    );
    let sock_path = top.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let sock_s = sock_path.display().to_string();
    // 400 ms watchdog: patchd must ping every 200 ms.
    let d = dev.spawn(
        &bus.address,
        &[
            ("NOTIFY_SOCKET", sock_s.as_str()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut got: Vec<(Instant, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    let pings = |got: &[(Instant, String)]| {
        got.iter()
            .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
            .count()
    };
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push((
                Instant::now(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
        if pings(&got) >= 5 {
            break;
        }
    }
    let ready = got
        .iter()
        .position(|(_, m)| m.lines().any(|l| l == "READY=1"))
        .unwrap_or_else(|| panic!("no READY=1: {got:?}\n{}", dev.log()));
    assert!(
        pings(&got[ready..]) >= 5,
        "fewer than 5 WATCHDOG=1 after READY=1: {got:?}"
    );
    // Report the ping spacing (no timed assertion on a loaded machine).
    let times: Vec<Instant> = got
        .iter()
        .filter(|(_, m)| m.contains("WATCHDOG=1"))
        .map(|(t, _)| *t)
        .collect();
    let gaps: Vec<u128> = times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_millis())
        .collect();
    println!("watchdog ping gaps (ms, expected ~200): {gaps:?}");

    let st = d.stop(Duration::from_secs(40)).expect("stops on SIGTERM");
    assert!(st.success(), "{st}");
    let mut stopping = false;
    while let Ok(n) = sock.recv(&mut buf) {
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "STOPPING=1")
        {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "no STOPPING=1 after SIGTERM");
}
