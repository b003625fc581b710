//! Hardware compatibility against a real `patchd run` (private bus, files): a release
//! published with `--hardware` fits a device whose id comes from `[device] hardware`, or
//! by default from the device tree `compatible`; a mismatch is worded for people (no
//! Rust debug values); the inventory shows the id and where it came from; a bad
//! configured id is refused by `--check-config` naming the key.

mod process;

use std::process::Command;
use std::time::Duration;

use process::*;

/// Nothing stages during the test: no window today and no staging outside one.
const NO_WINDOW: &str = "windows = [\"Mon 03:00-03:01\"]\nstage_outside_windows = false\n\
                         time_zone = \"Pacific/Kiritimati\"";

fn device(top: &std::path::Path, device_toml: &str) -> Device {
    Device::new(
        top,
        &DeviceSpec {
            policy: NO_WINDOW.into(),
            device: device_toml.into(),
            hardware: vec!["acme-box-rev2".into(), "acme-box-rev3".into()],
            ..DeviceSpec::default()
        },
    )
}

/// Start the daemon, check, and return (`list --json`, `inventory --json`).
async fn check_and_read(dev: &Device, bus: &str) -> (serde_json::Value, serde_json::Value) {
    let d = dev.spawn(bus, &[]);
    let mut up = false;
    for _ in 0..200 {
        if patchctl(bus, &["status"]).await.0 == 0 {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "daemon never answered\n{}", dev.log());
    let (code, out, err) = patchctl(bus, &["check"]).await;
    assert_eq!(code, 0, "check: {out}{err}\n{}", dev.log());
    let (code, list, err) = patchctl(bus, &["--json", "list"]).await;
    assert_eq!(code, 0, "list: {list}{err}");
    let (code, inv, err) = patchctl(bus, &["--json", "inventory"]).await;
    assert_eq!(code, 0, "inventory: {inv}{err}");
    d.stop(Duration::from_secs(10));
    (
        serde_json::from_str(&list).unwrap_or_else(|e| panic!("{e}: {list}")),
        serde_json::from_str(&inv).unwrap_or_else(|e| panic!("{e}: {inv}")),
    )
}

fn release<'a>(list: &'a serde_json::Value, version: &str) -> &'a serde_json::Value {
    list.as_array()
        .and_then(|a| a.iter().find(|r| r["version"] == version))
        .unwrap_or_else(|| panic!("{version} not listed: {list}"))
}

/// Listed, and waiting (for the window) for no hardware reason.
fn fits(list: &serde_json::Value) -> bool {
    let s = release(list, "2.0.0")["summary"].as_str().unwrap_or("");
    !s.contains("hardware")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardware_id_from_config_device_tree_or_none() {
    let Some(bus) = SessionBus::start() else {
        return;
    };
    let systemd = FakeSystemd::default();
    let _sd = systemd.serve(&bus.address).await;

    // No id anywhere: the release does not fit, and the reason says what to set.
    let top = tempfile::tempdir().unwrap();
    let dev = device(top.path(), "");
    let (list, inv) = check_and_read(&dev, &bus.address).await;
    let why = release(&list, "2.0.0")["summary"].as_str().unwrap_or("");
    assert!(
        why.contains("release is for hardware acme-box-rev2, acme-box-rev3")
            && why.contains("this device has no hardware id (set [device] hardware)"),
        "{list}"
    );
    assert!(
        !why.contains("None") && !why.contains('"'),
        "debug value: {why}"
    );
    assert!(inv["hardware"]["compatibility"].is_null(), "{inv}");

    // The device tree names the board: its most specific compatible, made a name.
    let dt = dev.paths.resolve("/proc/device-tree/compatible");
    std::fs::create_dir_all(dt.parent().unwrap()).unwrap();
    std::fs::write(&dt, b"acme,box-rev2\0acme,box\0").unwrap();
    let (list, inv) = check_and_read(&dev, &bus.address).await;
    assert!(fits(&list), "eligible by the device tree id: {list}");
    assert_eq!(
        inv["hardware"]["compatibility"],
        serde_json::json!({"id": "acme-box-rev2", "source": "device-tree"}),
        "{inv}"
    );

    // The configured id wins over the device tree.
    let top2 = tempfile::tempdir().unwrap();
    let dev2 = device(top2.path(), "hardware = \"acme-box-rev9\"");
    let dt2 = dev2.paths.resolve("/proc/device-tree/compatible");
    std::fs::create_dir_all(dt2.parent().unwrap()).unwrap();
    std::fs::write(&dt2, b"acme,box-rev2\0").unwrap();
    let (list, inv) = check_and_read(&dev2, &bus.address).await;
    let why = release(&list, "2.0.0")["summary"].as_str().unwrap_or("");
    assert!(
        why.contains(
            "release is for hardware acme-box-rev2, acme-box-rev3; this device is acme-box-rev9"
        ),
        "{list}"
    );
    assert_eq!(
        inv["hardware"]["compatibility"],
        serde_json::json!({"id": "acme-box-rev9", "source": "config"}),
        "{inv}"
    );

    // ... and a matching configured id makes it fit.
    let top3 = tempfile::tempdir().unwrap();
    let dev3 = device(top3.path(), "hardware = \"acme-box-rev3\"");
    let (list, _) = check_and_read(&dev3, &bus.address).await;
    assert!(fits(&list), "{list}");
}

#[test]
fn a_bad_configured_id_is_refused_naming_the_key() {
    let top = tempfile::tempdir().unwrap();
    let dev = device(top.path(), "hardware = \"acme box/2\"");
    let out = Command::new(env!("CARGO_BIN_EXE_patchd"))
        .arg("--root")
        .arg(dev.paths.resolve("/"))
        .arg("--check-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {err}");
    assert!(
        err.contains("device.hardware") && err.contains("allowed are A-Z a-z 0-9 . _ - +"),
        "{err}"
    );
}
