//! A damaged state file or trusted metadata against a real `patchd run` (private bus,
//! real files): the daemon no longer exits into a restart loop but stays up in degraded
//! mode — `patchctl status` names the file and what is wrong, reads work, writes are
//! refused naming `patchctl repair` — and `patchctl repair` moves the file aside (kept),
//! rebuilds state from the bootloader and the slot status records, audits what was kept
//! and lost, and the engine starts. A configuration patchd cannot run with exits 78, which
//! the unit's `RestartPreventExitStatus=` does not restart.

mod common;
mod process;

use std::time::{Duration, Instant};

use process::*;

/// No window and no staging outside one: the daemon stays up with nothing to do.
fn quiet() -> DeviceSpec {
    DeviceSpec {
        policy: QUIET.into(),
        ..DeviceSpec::default()
    }
}

/// Poll `patchctl --json status` until `cond` holds.
async fn wait_status(
    bus: &str,
    d: &mut Daemon,
    dev: &Device,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, _) = patchctl(bus, &["--json", "status"]).await;
        if code == 0 {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&out) {
                if cond(&v) {
                    return v;
                }
            }
        }
        if let Some(st) = d.try_wait() {
            panic!("daemon exited {st:?} waiting for {what}:\n{}", dev.log());
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {out}\n{}",
            tail(&dev.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn corrupt_files(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{name}.corrupt-")))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_state_file_means_degraded_mode_until_repair() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let dev = Device::new(rig.top.path(), &quiet());
    let state_dir = dev.paths.state_dir();
    let state = state_dir.join("state.json");
    // JSON, but not a state this patchd can read: the floor is still there to salvage.
    let damaged =
        br#"{"version": 2, "lifecycle": {"state": "exploded"}, "security_floor": 5, "holds": []}"#;
    std::fs::write(&state, damaged).unwrap();

    let mut d = dev.spawn(rig.addr(), &[]);
    let v = wait_status(rig.addr(), &mut d, &dev, "degraded status", |v| {
        v["state"] == "failed"
    })
    .await;
    let err = v["last_error"].as_str().unwrap_or_default();
    assert!(err.contains(&state.display().to_string()), "{v}");
    assert!(
        err.contains("exploded") || err.contains("unknown variant"),
        "{v}"
    );
    let (code, text, _) = patchctl(rig.addr(), &["status"]).await;
    assert_eq!(code, 0);
    assert!(
        text.contains("degraded mode") && text.contains("patchctl repair"),
        "{text}"
    );

    // Writes are refused, naming the way out; reads work.
    for args in [&["check"][..], &["install"], &["hold", "--reason", "x"]] {
        let (code, out, err) = patchctl(rig.addr(), args).await;
        assert_eq!(code, 10, "{args:?} in degraded mode: {out}{err}");
        assert!(err.contains("patchctl repair"), "{args:?}: {err}");
    }
    let (code, hist, err) = patchctl(rig.addr(), &["--json", "history"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(hist.contains("\"degraded\""), "{hist}");
    let (code, _, err) = patchctl(rig.addr(), &["inventory"]).await;
    assert_eq!(code, 0, "{err}");
    // Not a restart loop: still the same process a while later, file untouched.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(d.try_wait().is_none(), "daemon exited:\n{}", dev.log());
    assert_eq!(std::fs::read(&state).unwrap(), damaged);

    let (code, out, err) = patchctl(rig.addr(), &["repair"]).await;
    assert_eq!(code, 0, "repair: {out}{err}\n{}", dev.log());
    assert!(out.contains("Moved") && out.contains("state.json"), "{out}");
    assert!(out.contains("committed release 1.0.0"), "{out}");
    assert!(out.contains("security floor 5"), "{out}");
    assert!(out.contains("Lost:"), "{out}");
    let kept = corrupt_files(&state_dir, "state.json");
    assert_eq!(kept.len(), 1, "damaged file not kept: {kept:?}");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), damaged);

    // The engine runs now: a check is answered and the state is a real one.
    let v = wait_status(rig.addr(), &mut d, &dev, "engine status", |v| {
        v["state"] != "failed"
    })
    .await;
    assert_eq!(v["current_version"], "1.0.0", "{v}");
    let (code, out, err) = patchctl(rig.addr(), &["check"]).await;
    assert_eq!(code, 0, "check after repair: {out}{err}");
    let doc = dev.state().unwrap().expect("state written");
    assert_eq!(doc.security_floor, 5);
    assert_eq!(doc.committed.map(|c| c.version), Some("1.0.0".into()));
    let events = dev.audit_events();
    let rep = events.iter().position(|e| e == "repaired");
    let deg = events.iter().position(|e| e == "degraded");
    assert!(deg.is_some() && rep > deg, "{events:?}");
    let (code, _, _) = patchctl(rig.addr(), &["repair"]).await;
    assert_eq!(code, 6, "nothing left to repair");
    d.stop(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_trusted_metadata_is_repaired_from_the_shipped_root() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let dev = Device::new(rig.top.path(), &quiet());
    let tuf = dev.paths.state_dir().join("tuf");
    std::fs::create_dir_all(&tuf).unwrap();
    std::fs::write(tuf.join("root.json"), b"{\"signed\": tru").unwrap();

    let mut d = dev.spawn(rig.addr(), &[]);
    let v = wait_status(rig.addr(), &mut d, &dev, "degraded status", |v| {
        v["state"] == "failed"
    })
    .await;
    assert!(
        v["last_error"].as_str().is_some_and(
            |e| e.contains("trusted TUF metadata") && e.contains(&tuf.display().to_string())
        ),
        "{v}"
    );
    let (code, out, err) = patchctl(rig.addr(), &["repair"]).await;
    assert_eq!(code, 0, "repair: {out}{err}\n{}", dev.log());
    assert!(out.contains("shipped trusted root"), "{out}");
    assert_eq!(corrupt_files(&dev.paths.state_dir(), "tuf").len(), 1);
    wait_status(rig.addr(), &mut d, &dev, "engine status", |v| {
        v["state"] != "failed"
    })
    .await;
    let (code, out, err) = patchctl(rig.addr(), &["--json", "check"]).await;
    assert_eq!(code, 0, "check after repair: {out}{err}");
    assert!(out.contains("2.0.0"), "{out}");
    d.stop(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_error_exits_78_not_into_a_restart_loop() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let dev = Device::new(
        rig.top.path(),
        &DeviceSpec {
            extra: "[fetch]\nmin_rate = \"fast\"\n".into(),
            ..quiet()
        },
    );
    let mut d = dev.spawn(rig.addr(), &[]);
    let e = wait_until(&mut d, &dev, Duration::from_secs(30), "exit", |_| false).await;
    match e {
        Ended::Exited(st) => assert_eq!(st.code(), Some(78), "{}", dev.log()),
        other => panic!("{other:?}"),
    }
    assert!(dev.log().contains("min_rate"), "{}", dev.log());
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/patchd.service"
    ))
    .unwrap();
    assert!(
        unit.lines()
            .any(|l| l.trim() == "RestartPreventExitStatus=78"),
        "the unit would restart into the same configuration error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_bootloader_environment_waits_for_boot_reset_then_repair() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let dev = Device::new(rig.top.path(), &quiet());
    std::fs::write(dev.boot_file(), b"{\"version\": 1, \"order\": [\"a\"").unwrap();

    let mut d = dev.spawn(rig.addr(), &[]);
    let v = wait_status(rig.addr(), &mut d, &dev, "degraded status", |v| {
        v["state"] == "failed"
    })
    .await;
    let err = v["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("bootloader environment") && err.contains("boot.json"),
        "{v}"
    );
    // patchd cannot know what the environment should hold: repair sends the admin to
    // the bootloader tool and changes nothing.
    let (code, out, err) = patchctl(rig.addr(), &["repair"]).await;
    assert_eq!(code, 10, "{out}{err}");
    assert!(err.contains("patchd boot reset"), "{err}");
    assert!(corrupt_files(&dev.paths.state_dir(), "boot.json").is_empty());

    let reset = std::process::Command::new(env!("CARGO_BIN_EXE_patchd"))
        .arg("--root")
        .arg(dev.paths.resolve("/"))
        .args(["boot", "reset", "--primary", "a"])
        .output()
        .unwrap();
    assert!(
        reset.status.success(),
        "patchd boot reset: {}",
        String::from_utf8_lossy(&reset.stderr)
    );
    let (code, out, err) = patchctl(rig.addr(), &["repair"]).await;
    assert_eq!(code, 0, "repair after the reset: {out}{err}\n{}", dev.log());
    assert!(out.contains("readable again"), "{out}");
    let v = wait_status(rig.addr(), &mut d, &dev, "engine status", |v| {
        v["state"] != "failed"
    })
    .await;
    assert_eq!(v["booted_slot"], "a", "{v}");
    let events = dev.audit_events();
    assert!(events.iter().any(|e| e == "repaired"), "{events:?}");
    d.stop(Duration::from_secs(10));
}

/// After a rollback the old slot's patchd reads the state file the newer release wrote
/// during its trial. Fields that release added are not damage: the daemon starts its
/// engine (no degraded mode), keeps what it knows (the floor, a failed release) and
/// answers a check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_from_a_newer_release_is_read_not_degraded() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let dev = Device::new(rig.top.path(), &quiet());
    let mut d = dev.spawn(rig.addr(), &[]);
    wait_status(rig.addr(), &mut d, &dev, "first start", |v| {
        v["current_version"] == "1.0.0"
    })
    .await;
    assert!(d.stop(Duration::from_secs(10)).is_some(), "{}", dev.log());
    assert!(matches!(dev.state(), Ok(Some(_))), "no state file written");

    let state = dev.paths.state_dir().join("state.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    v["security_floor"] = 5.into();
    v["blocked"] = serde_json::json!([{
        "version": "3.0.0", "reason": "health check failed", "at": "2026-12-01T10:00:00Z",
        "retries_allowed_by": "admin"
    }]);
    v["fleet_lock"] = serde_json::json!({"group": "db-eu1", "slot": 1});
    std::fs::write(&state, v.to_string()).unwrap();

    let mut d = dev.spawn(rig.addr(), &[]);
    let v = wait_status(rig.addr(), &mut d, &dev, "engine status", |v| {
        v["current_version"] == "1.0.0"
    })
    .await;
    assert_ne!(v["state"], "failed", "{v}\n{}", dev.log());
    assert_eq!(v["security_floor"], 5, "{v}");
    let (code, out, err) = patchctl(rig.addr(), &["check"]).await;
    assert_eq!(code, 0, "check: {out}{err}");
    assert!(!dev.audit_events().iter().any(|e| e == "degraded"));
    let doc = dev.state().unwrap().expect("state");
    assert!(doc.is_blocked("3.0.0"), "{doc:?}");
}
