//! `patchctl` verbs after which the daemon reboots (`install --now`, `switch`, `rollback`)
//! against `patchd run` on a private bus: each returns once the reboot is asked for (the
//! fake systemd takes it, patchd stops) with success and says what comes next, instead of
//! waiting for a daemon that is gone; `watch` ends when patchd leaves the bus. Every run
//! has a deadline; past it patchctl is killed and the test fails.

mod process;

use std::time::{Duration, Instant};

use process::*;

/// Long enough for a debug build on a loaded machine, far below "hangs".
const DEADLINE: Duration = Duration::from_secs(30);

struct Run {
    code: i32,
    text: String,
    took: Duration,
}

/// patchctl `args` against the rig, killed at [`DEADLINE`].
async fn patchctl_bounded(rig: &Rig, dev: &Device, args: &[&str]) -> Run {
    let started = Instant::now();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_patchctl"))
        .arg("--bus-address")
        .arg(rig.addr())
        .args(args)
        .env_remove("PATCHCTL_BUS_ADDRESS")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(DEADLINE, run)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "patchctl {args:?} still runs after {DEADLINE:?}; log:\n{}",
                tail(&dev.log(), 30)
            )
        })
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        took: started.elapsed(),
    }
}

async fn start(rig: &Rig, dev: &Device) -> Daemon {
    let mut d = dev.spawn(rig.addr(), &[]);
    let addr = rig.addr().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, _, _) = patchctl(&addr, &["status"]).await;
        if code == 0 {
            return d;
        }
        assert!(d.try_wait().is_none(), "patchd exited:\n{}", dev.log());
        assert!(Instant::now() < deadline, "{}", dev.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The daemon stops after asking the fake systemd for the reboot (`calls` requests so far).
async fn rebooted(rig: &Rig, dev: &Device, d: &mut Daemon, calls: usize, said: &str) {
    let e = wait_until(d, dev, Duration::from_secs(60), "reboot", |_| false).await;
    let Ended::Exited(st) = e else { unreachable!() };
    assert!(st.success(), "{said}\n{}", dev.log());
    assert_eq!(rig.systemd.calls().len(), calls, "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_now_from_the_repository_returns_once_the_reboot_is_asked_for() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let dev = rig.device(&DeviceSpec {
        policy: QUIET.into(),
        ..DeviceSpec::default()
    });
    let mut d = start(&rig, &dev).await;
    let r = patchctl_bounded(&rig, &dev, &["install", "2.0.0", "--now"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.text, tail(&dev.log(), 30));
    assert!(
        r.text
            .contains("Installed 2.0.0 into slot b; rebooting into it now."),
        "{}",
        r.text
    );
    assert!(r.text.contains("After the reboot"), "{}", r.text);
    assert!(r.took < DEADLINE, "{:?}", r.took);
    rebooted(&rig, &dev, &mut d, 1, &r.text).await;
    assert_eq!(dev.power_cycle().as_str(), "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_now_json_says_rebooting() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let dev = rig.device(&DeviceSpec {
        policy: QUIET.into(),
        ..DeviceSpec::default()
    });
    let mut d = start(&rig, &dev).await;
    let r = patchctl_bounded(&rig, &dev, &["--json", "install", "2.0.0", "--now"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.text, tail(&dev.log(), 30));
    let v: serde_json::Value = serde_json::from_str(r.text.trim()).expect(&r.text);
    assert_eq!(v["outcome"], "rebooting", "{v}");
    assert_eq!(v["version"], "2.0.0", "{v}");
    assert_eq!(v["slot"], "b", "{v}");
    rebooted(&rig, &dev, &mut d, 1, &r.text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_and_rollback_return_once_the_reboot_is_asked_for() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let dev = rig.device(&DeviceSpec {
        policy: QUIET.into(),
        ..DeviceSpec::default()
    });
    let mut d = start(&rig, &dev).await;
    let r = patchctl_bounded(&rig, &dev, &["install", "2.0.0"]).await;
    assert_eq!(r.code, 0, "{}", r.text);
    assert!(r.text.contains("Installed 2.0.0 into slot b"), "{}", r.text);
    assert!(d.try_wait().is_none(), "no --now: no reboot\n{}", dev.log());

    let r = patchctl_bounded(&rig, &dev, &["switch", "--force"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.text, tail(&dev.log(), 30));
    assert!(r.text.contains("rebooting"), "{}", r.text);
    rebooted(&rig, &dev, &mut d, 1, &r.text).await;
    assert_eq!(dev.power_cycle().as_str(), "b");

    let mut d = start(&rig, &dev).await;
    let r = patchctl_bounded(&rig, &dev, &["rollback", "--reason", "test"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.text, tail(&dev.log(), 30));
    // It says what it left and that the machine is rebooting, not just "Rolled back.".
    assert!(
        r.text.contains("2.0.0 rolled back") && r.text.contains("rebooting into"),
        "{}",
        r.text
    );
    rebooted(&rig, &dev, &mut d, 2, &r.text).await;
    assert_eq!(dev.power_cycle().as_str(), "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_when_the_daemon_leaves_the_bus() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let dev = rig.device(&DeviceSpec {
        policy: QUIET.into(),
        ..DeviceSpec::default()
    });
    let mut d = start(&rig, &dev).await;
    // Waits for the next job: the install below, which ends in the reboot.
    let watch = patchctl_bounded(&rig, &dev, &["watch"]);
    let install = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        patchctl_bounded(&rig, &dev, &["install", "2.0.0", "--now", "--no-wait"]).await
    };
    let (w, i) = tokio::join!(watch, install);
    assert_eq!(i.code, 0, "{}", i.text);
    // The reboot need not show in the state before patchd stops: watch ends either way,
    // as unreachable (7) unless it saw `switching` (then 0, "rebooting").
    assert!(
        matches!(w.code, 0 | 7),
        "{}\n{}",
        w.text,
        tail(&dev.log(), 30)
    );
    assert!(w.text.contains("rebooting"), "{}", w.text);
    rebooted(&rig, &dev, &mut d, 1, &w.text).await;
}
