//! Release components installed by a real `patchd run` (private bus, image slots, a
//! signed repository in a directory): a release of an app bundle and a handler
//! component, its OS image the one the device runs, installs without a reboot, with one
//! audit record per step and the inventory showing each component's version and
//! origin; a failing handler stops the release, the app bundle is switched back and the
//! OS slot does not switch.

mod process;

use std::path::{Path, PathBuf};
use std::time::Duration;

use patchd::boot::Bootloader;
use process::*;

const WEB_UNIT: &str = "web.service";

fn run_patchpub(dev: &Device, args: &[String]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_patchpub"))
        .arg("--repo")
        .arg(&dev.repo_dir)
        .arg("--keys")
        .arg(dev.top.join("keys"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "patchpub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A device (app bundles in a configured `/srv/apps`) whose handler for `mcu` is a
/// root-owned 0755 script exiting `exit`, with web 1.2 installed in copy a, and release
/// 3.0.0 (the running OS image, web 1.3, mcu 8) published.
fn device(rig: &Rig, exit: i32) -> (Device, PathBuf) {
    let handler_log = rig.top.path().join("handler.log");
    let dev = rig.device(&DeviceSpec {
        extra: "[components]\napps_dir = \"/srv/apps\"\nrestart_command = [\"/bin/true\"]\n\
                [[components.handler]]\ncomponent = \"mcu\"\npath = \"/etc/patchd/handlers/mcu\"\n"
            .into(),
        ..DeviceSpec::default()
    });
    let handler = dev.paths.resolve("/etc/patchd/handlers/mcu");
    std::fs::create_dir_all(handler.parent().unwrap()).unwrap();
    std::fs::write(
        &handler,
        format!(
            "#!/bin/sh\nbytes=$(wc -c)\necho \"$PATCHD_ACTION $PATCHD_COMPONENT $PATCHD_VERSION \
             $bytes\" >> {log}\necho 'progress 50 flashing'\nexit {exit}\n",
            log = handler_log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &handler,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let web = dev.paths.resolve("/srv/apps/web");
    std::fs::create_dir_all(web.join("a")).unwrap();
    std::fs::write(
        web.join("a.json"),
        format!(
            r#"{{"version":"1.2","sha256":"{}","origin":"1.0.0"}}"#,
            "1".repeat(64)
        ),
    )
    .unwrap();
    std::os::unix::fs::symlink("a", web.join("current")).unwrap();

    // The OS image of 3.0.0 is the one slot a runs: a release of components only.
    let os = dev.top.join("3.0.0.img");
    std::fs::write(&os, image("1.0.0", DeviceSpec::default().image_size)).unwrap();
    let (web_tar, mcu) = (dev.top.join("web.tar"), dev.top.join("mcu.bin"));
    std::fs::write(&web_tar, rootfs_tar("web-1.3")).unwrap();
    std::fs::write(&mcu, b"mcu 8").unwrap();
    let mut args: Vec<String> = [
        "add",
        "--product",
        "test-box",
        "--version",
        "3.0.0",
        "--summary",
        "web and mcu",
        "--kind",
        "security",
        "--severity",
        "high",
        "--security-version",
        "3",
        "--image",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([
        os.display().to_string(),
        "--component".into(),
        format!(
            "name=mcu,version=8,method=handler,file={},order=2",
            mcu.display()
        ),
        "--component".into(),
        format!(
            "name=web,version=1.3,method=app-bundle,file={},order=1,units={WEB_UNIT}",
            web_tar.display()
        ),
    ]);
    run_patchpub(&dev, &args);
    (dev, handler_log)
}

/// `event:component` of every component record, in order, and every event.
fn audit(dev: &Device) -> (Vec<String>, Vec<String>) {
    let log = patchd::audit::AuditLog::open(dev.audit_path(), Default::default()).unwrap();
    let rs = log.query(&Default::default()).unwrap();
    let steps = rs
        .iter()
        .filter_map(|r| {
            let c = r.extra.get("component")?.as_str()?;
            Some(format!("{}:{c}", r.event))
        })
        .collect();
    (steps, rs.into_iter().map(|r| r.event).collect())
}

fn current(dev: &Device) -> String {
    let link = dev.paths.resolve("/srv/apps/web/current");
    std::fs::read_link(&link)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("{}: {e}", Path::new(&link).display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_and_handler_release_installs_in_the_window_without_a_reboot() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: handlers must be root-owned");
        return;
    }
    let Some(rig) = Rig::start().await else {
        return;
    };
    let (dev, handler_log) = device(&rig, 0);
    let mut d = dev.spawn(rig.addr(), &[]);
    let e = wait_until(
        &mut d,
        &dev,
        Duration::from_secs(60),
        "3.0.0 committed",
        |dev| committed(dev, "3.0.0") || dev.state_kind() == "failed",
    )
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    assert!(
        committed(&dev, "3.0.0"),
        "state {}:\n{}",
        dev.state_kind(),
        tail(&dev.log(), 40)
    );
    assert!(
        rig.systemd.calls().is_empty(),
        "rebooted: {:?}",
        rig.systemd.calls()
    );
    assert_eq!(current(&dev), "b", "the app bundle did not switch");
    let ran = std::fs::read_to_string(&handler_log).unwrap();
    assert_eq!(ran.trim(), "install mcu 8 5", "{ran}");

    let (steps, events) = audit(&dev);
    assert_eq!(
        steps,
        [
            "component_staged:web",
            "component_staged:mcu",
            "component_switched:web",
            "component_switched:mcu",
            "component_committed:web",
            "component_committed:mcu",
        ],
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e == "switching" || e == "reboot"),
        "{events:?}"
    );

    let (code, out, err) = patchctl(rig.addr(), &["inventory", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let inv: serde_json::Value = serde_json::from_str(&out).unwrap();
    let comps = inv["components"].as_array().cloned().unwrap_or_default();
    let of = |n: &str| {
        comps
            .iter()
            .find(|c| c["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("no {n} in {out}"))
    };
    assert_eq!(of("web")["version"], "1.3", "{out}");
    assert_eq!(of("web")["origin"], "3.0.0", "{out}");
    assert_eq!(of("mcu")["version"], "8", "{out}");
    assert_eq!(of("mcu")["origin"], "3.0.0", "{out}");
    d.stop(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_stops_the_release_and_switches_the_app_back() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: handlers must be root-owned");
        return;
    }
    let Some(rig) = Rig::start().await else {
        return;
    };
    let (dev, _) = device(&rig, 3);
    let mut d = dev.spawn(rig.addr(), &[]);
    let e = wait_until(
        &mut d,
        &dev,
        Duration::from_secs(60),
        "the release failed",
        |dev| dev.state_kind() == "failed" || committed(dev, "3.0.0"),
    )
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    assert_eq!(dev.state_kind(), "failed", "{}", tail(&dev.log(), 40));
    assert_eq!(current(&dev), "a", "the app bundle was not switched back");
    assert!(
        rig.systemd.calls().is_empty(),
        "rebooted: {:?}",
        rig.systemd.calls()
    );
    let bl = dev.bootloader();
    assert_eq!(
        bl.primary_slot().unwrap().as_str(),
        "a",
        "the OS slot switched"
    );

    let (steps, events) = audit(&dev);
    let at = |s: &str| {
        steps
            .iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("no {s} in {steps:?}"))
    };
    assert!(at("component_switched:web") < at("component_failed:mcu"));
    assert!(at("component_failed:mcu") < at("component_rolled_back:web"));
    assert!(events.iter().any(|e| e == "switch_failed"), "{events:?}");
    assert!(!events.iter().any(|e| e == "switching"), "{events:?}");

    let (code, out, err) = patchctl(rig.addr(), &["status"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("mcu"),
        "status does not say what failed: {out}"
    );
    d.stop(Duration::from_secs(10));
}
