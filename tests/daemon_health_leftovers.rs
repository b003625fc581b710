//! A health drop-in that passes (exit 0) but leaves detached children holding its output,
//! against a real `patchd run` (private bus, file repository, fake systemd): after the
//! reboot into the new slot the check is judged by its exit status, so the release
//! commits well within the check timeout instead of being rolled back after it, and no
//! process the check left behind survives.

mod process;

use std::time::{Duration, Instant};

use process::*;

const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Live (non-zombie) processes whose command line is `sleep MARKER`.
fn with_marker(marker: &str) -> Vec<i32> {
    let want = format!("sleep\0{marker}\0");
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !cmdline.ends_with(want.as_bytes()) {
            continue;
        }
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rfind(')')
                    .map(|i| s[i + 1..].trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie {
            found.push(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_check_with_detached_children_commits_and_leaves_nothing_behind() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: the daemon trusts only root-owned health checks");
        return;
    }
    let Some(bus) = SessionBus::start() else {
        return;
    };
    let systemd = FakeSystemd::default();
    let _sd = systemd.serve(&bus.address).await;
    let top = tempfile::tempdir().unwrap();
    let dev = Device::new(
        top.path(),
        &DeviceSpec {
            extra: format!(
                "[health]\ncheck_timeout = \"{}s\"\ndeadline = \"120s\"\n",
                CHECK_TIMEOUT.as_secs()
            ),
            ..DeviceSpec::default()
        },
    );
    let id = std::process::id();
    let (in_group, escaped) = (format!("300.{id}1"), format!("300.{id}2"));
    // The check notes its children's pids: proof that it ran, and what must be gone.
    let pids = top.path().join("children.pid");
    let check = dev.paths.resolve("/etc/patchd/health.d/10-service");
    std::fs::create_dir_all(check.parent().unwrap()).unwrap();
    std::fs::write(
        &check,
        format!(
            "#!/bin/sh\necho service answers\nsleep {in_group} &\necho $! >> {p}\n\
             setsid sleep {escaped} &\necho $! >> {p}\nexit 0\n",
            p = pids.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&check, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    // Stage and switch; the daemon exits after asking for the reboot.
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
    assert_eq!(systemd.calls().len(), 1, "{:?}", systemd.calls());

    // The new slot boots; the health check runs in the daemon.
    assert_eq!(dev.power_cycle().as_str(), "b");
    let started = Instant::now();
    let mut d = dev.spawn(&bus.address, &[]);
    let e = wait_until(&mut d, &dev, Duration::from_secs(120), "a verdict", |dev| {
        committed(dev, "2.0.0") || dev.state_kind() == "rolled_back"
    })
    .await;
    let took = started.elapsed();
    let left: Vec<i32> = [&in_group, &escaped]
        .iter()
        .flat_map(|m| with_marker(m))
        .collect();
    for pid in &left {
        // Leave nothing behind even when the assertion below fails.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    assert!(
        committed(&dev, "2.0.0"),
        "not committed (state {}) after {took:?}:\n{}",
        dev.state_kind(),
        tail(&dev.log(), 40)
    );
    assert!(
        took < CHECK_TIMEOUT / 2,
        "commit took {took:?}: the check was not judged by its exit"
    );
    let noted = std::fs::read_to_string(&pids).unwrap_or_default();
    assert_eq!(noted.lines().count(), 2, "the check did not run: {noted:?}");
    assert!(
        left.is_empty(),
        "processes the check left survived: {left:?}"
    );
    for pid in noted.lines() {
        // Alive and still our sleep (not a reused pid).
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
            && std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.starts_with(b"sleep\x00300."))
                .unwrap_or(false);
        assert!(!alive, "child {pid} of the check survived");
    }
    let st = d.stop(Duration::from_secs(40)).expect("stops on SIGTERM");
    assert!(st.success(), "{st}");
    assert_eq!(dev.slot_status("b").state, patchd::slot::SlotState::Good);
}
