//! The real `patchd` process: configuration → slots, bootloader, verified repository →
//! D-Bus on a private bus; patchctl sees it, checks, stages; SIGTERM stops it cleanly
//! (exit 0, state file intact).

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use patchd::boot::file::FileBootloader;
use patchd::names::SlotName;
use patchd::paths::Paths;
use patchd::publish::{AddRelease, InitOptions, Repo};
use patchd::slot::{SlotState, SlotStatus, StatusStore};
use serde_json::Value;
use sha2::Digest;
use support::*;

const IMAGE_SIZE: usize = 64 * 1024;

fn image(version: &str) -> Vec<u8> {
    let mut b = format!("os=test version={version}\n").into_bytes();
    b.resize(IMAGE_SIZE, 0);
    b
}

/// A device root with the file bootloader, two image-file slots (a runs 1.0.0) and a
/// local repository holding 2.0.0; the trusted root is only in /etc (first start
/// installs it).
fn make_device(top: &Path) -> Paths {
    let paths = Paths::new(top.join("device"));
    for d in ["/etc/patchd", "/var/lib/slots", "/var/lib/patchd"] {
        std::fs::create_dir_all(paths.resolve(d)).unwrap();
    }
    std::fs::write(
        paths.resolve("/etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    std::fs::write(paths.resolve("/var/lib/slots/a.img"), image("1.0.0")).unwrap();
    std::fs::write(paths.resolve("/var/lib/slots/b.img"), vec![0u8; IMAGE_SIZE]).unwrap();

    let repo_dir = top.join("repo");
    let repo = Repo::init(&repo_dir, &InitOptions::new(top.join("keys"))).unwrap();
    let img = top.join("2.0.0.img");
    std::fs::write(&img, image("2.0.0")).unwrap();
    repo.add_release(&AddRelease::new("test-box", "2.0.0".parse().unwrap(), &img))
        .unwrap();
    std::fs::write(
        paths.resolve("/etc/patchd/root.json"),
        repo.root_bytes().unwrap(),
    )
    .unwrap();

    let slots = vec![SlotName::new("a").unwrap(), SlotName::new("b").unwrap()];
    let v1 = image("1.0.0");
    StatusStore::new(&paths.state_dir(), slots[0].clone())
        .save(&SlotStatus {
            slot: slots[0].clone(),
            state: SlotState::Good,
            version: Some("1.0.0".into()),
            sha256: Some(hex::encode(sha2::Sha256::digest(&v1))),
            size: Some(v1.len() as u64),
            installed_at: None,
        })
        .unwrap();
    FileBootloader::new(paths.resolve("/var/lib/patchd/boot.json"), slots)
        .init(&SlotName::new("a").unwrap())
        .unwrap();

    // The repository lies outside the device root: reach it through a symlink so the
    // configured path is a device path.
    std::os::unix::fs::symlink(&repo_dir, paths.resolve("/srv-repo")).unwrap();
    std::fs::write(
        paths.resolve("/etc/patchd/patchd.toml"),
        r#"
[device]
product = "test-box"

[policy]
# A window on another weekday: nothing stages or switches by itself during the test;
# the admin's explicit install does stage.
windows = ["WINDOW"]
stage_outside_windows = false

[repository]
dir = "/srv-repo"
trusted_root = "/etc/patchd/root.json"
check_interval = "24h"

[boot]
backend = "file"

[slots]
backend = "file"
[[slots.slot]]
name = "a"
path = "/var/lib/slots/a.img"
[[slots.slot]]
name = "b"
path = "/var/lib/slots/b.img"
"#
        .replace("WINDOW", &other_day_window()),
    )
    .unwrap();
    paths
}

fn other_day_window() -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .weekday()
        .to_monday_zero_offset() as usize;
    format!("{} 03:00-03:01", DAYS[(today + 3) % 7])
}

/// Kills the daemon if the test fails before stopping it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_patchd(paths: &Paths, bus: &TestBus) -> Daemon {
    Daemon(
        Command::new(env!("CARGO_BIN_EXE_patchd"))
            .arg("--root")
            .arg(paths.resolve("/"))
            .args(["--bus-address", &bus.address, "--auth", "uids:0", "run"])
            .env("PATCHD_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn patchd"),
    )
}

fn json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

/// Wait for the daemon to own its name (status answers), failing if it exits first.
async fn wait_ready(bus: &TestBus, child: &mut Child) -> Run {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            panic!("patchd exited before serving: {st}");
        }
        let r = patchctl(bus, &["status", "--json"]).await;
        if r.code == 0 {
            return r;
        }
        assert!(Instant::now() < deadline, "patchd never answered: {r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_process_serves_checks_stages_and_stops_on_sigterm() {
    let Some(bus) = TestBus::start() else { return };
    let top = tempfile::tempdir().unwrap();
    let paths = make_device(top.path());
    let mut daemon = spawn_patchd(&paths, &bus);
    let child = &mut daemon.0;

    let r = wait_ready(&bus, child).await;
    assert_eq!(json(&r)["state"], "idle", "{r:?}");
    assert_eq!(json(&r)["current_version"], "1.0.0", "{r:?}");
    // The first start installed the configured trusted root.
    assert!(paths.state_dir().join("tuf/root.json").exists());

    let r = patchctl(&bus, &["check"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("2.0.0"), "{r:?}");

    let r = patchctl(&bus, &["install", "2.0.0", "--json"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(json(&r)["version"], "2.0.0", "{r:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = patchctl(&bus, &["status", "--json"]).await;
        assert_eq!(r.code, 0, "{r:?}");
        if json(&r)["state"] == "staged" {
            break;
        }
        assert!(Instant::now() < deadline, "never staged: {r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let staged = std::fs::read(paths.resolve("/var/lib/slots/b.img")).unwrap();
    assert_eq!(
        &staged[..IMAGE_SIZE],
        &image("2.0.0")[..],
        "slot b holds 2.0.0"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            panic!("patchd did not stop within 40s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "patchd exit after SIGTERM: {status}");

    // The state file is whole JSON and remembers the staged release.
    let state_file = paths.state_dir().join("state.json");
    let doc: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap())
        .expect("state file is valid JSON");
    assert!(doc.to_string().contains("2.0.0"), "{doc}");
}
