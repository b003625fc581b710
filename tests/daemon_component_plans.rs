//! Per-component plans against a real `patchd run` (private bus, image slots, a signed
//! repository in a directory): a release published with `patchpub add --component`
//! shows, in `patchctl list` and `patchctl status`, what it does to each component
//! against what the device shows installed ("app: web 1.2 → 1.3, no reboot, rollback by
//! switching back"), and `patchctl inventory --json` lists the installed components.

mod process;

use std::time::Duration;

use process::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_status_show_component_plans() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let dev = rig.device(&DeviceSpec {
        policy: QUIET.into(),
        ..DeviceSpec::default()
    });
    // web 1.2 is installed in copy a (as an earlier release left it).
    let web = dev.paths.resolve("/var/lib/patchd/apps/web");
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

    let os = dev.top.join("3.0.0.img");
    std::fs::write(&os, image("3.0.0", 4096)).unwrap();
    let (web_tar, mcu) = (dev.top.join("web.tar"), dev.top.join("mcu.bin"));
    std::fs::write(&web_tar, rootfs_tar("web-1.3")).unwrap();
    std::fs::write(&mcu, b"mcu 8").unwrap();
    let args: Vec<String> = [
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
    .chain([
        os.display().to_string(),
        "--component".into(),
        format!(
            "name=mcu,version=8,method=handler,file={},order=2,needs_reboot=true",
            mcu.display()
        ),
        "--component".into(),
        format!(
            "name=web,version=1.3,method=app-bundle,file={},order=1,units=web.service",
            web_tar.display()
        ),
    ])
    .collect();
    run_patchpub(&dev, &args);

    let d = dev.spawn(rig.addr(), &[]);
    let mut up = false;
    for _ in 0..200 {
        if patchctl(rig.addr(), &["status"]).await.0 == 0 {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "daemon never answered\n{}", dev.log());
    let (code, out, err) = patchctl(rig.addr(), &["check"]).await;
    assert_eq!(code, 0, "{out}{err}\n{}", dev.log());

    let web_line = "app: web 1.2 → 1.3, no reboot, rollback by switching back";
    let mcu_line =
        "handler: mcu new at 8, needs reboot, rollback by reinstalling the previous version";
    let (code, out, err) = patchctl(rig.addr(), &["list"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let at_web = out.find(web_line).unwrap_or_else(|| panic!("{out}"));
    let at_mcu = out.find(mcu_line).unwrap_or_else(|| panic!("{out}"));
    assert!(at_web < at_mcu, "install order: {out}");
    assert!(out.find("3.0.0").is_some_and(|v| v < at_web), "{out}");
    assert!(
        !out.contains("2.0.0 ") || out.matches(web_line).count() == 1,
        "{out}"
    );

    let (code, out, err) = patchctl(rig.addr(), &["status"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("3.0.0 {web_line}")), "{out}");
    assert!(out.contains(&format!("3.0.0 {mcu_line}")), "{out}");

    let (code, out, err) = patchctl(rig.addr(), &["inventory", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let inv: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(inv["components"][0]["name"], "web", "{out}");
    assert_eq!(inv["components"][0]["version"], "1.2", "{out}");
    assert_eq!(inv["components"][0]["copy"], "a", "{out}");
    assert_eq!(inv["components"][0]["origin"], "1.0.0", "{out}");

    d.stop(Duration::from_secs(10));
}
