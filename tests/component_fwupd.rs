//! The `firmware` method against the real fwupd daemon: Debian's `fwupd` with the test
//! plugin's fake device (`TestDevices=true`, as `fwupd-tests` uses it), started on a
//! private system-style bus with its configuration, state and cache in a temp dir.
//! Cabinets are built with `fwupdtool build-cabinet`; one comes through a real
//! `patchpub` repository and its TUF-verified fetch. The fake device ("Integrated
//! Webcam", GUID b585990a-…) starts at 1.2.2 in every fresh daemon, and takes the
//! version its payload spells (`0x1020005` is 1.2.5 in fwupd's triplet format).
//!
//! The test daemon runs with `OnlyTrusted=false`: the test plugin's cabinets carry no
//! signature fwupd trusts (with it on, fwupd refuses every one of them with "firmware
//! signature missing or not trusted"), which a device keeps on.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use patchd::clock::SystemClock;
use patchd::component::{
    apply, ApplyError, Firmware, FwupdBus, Hooks, Installer, Installers, Journal, SimInstaller,
    Step, StepEvent,
};
use patchd::fetch::FileSource;
use patchd::manifest::{discover, Component, ComponentMethod, DeviceProfile, Rollback};
use patchd::paths::Paths;
use patchd::trust::source::Subdir;
use patchd::trust::{Limits, TufClient};

const FWUPD: &str = "/usr/libexec/fwupd/fwupd";
const WEBCAM_GUID: &str = "b585990a-003e-5270-89d5-3705a17f9a43";

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why this test cannot run here, if it cannot.
fn unmet() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (fwupd owns its bus name as root)");
    }
    if !Path::new(FWUPD).exists() || !have("fwupdtool") {
        return Some("fwupd not installed (apt-get install fwupd fwupd-tests)");
    }
    if !have("dbus-daemon") || !have("dbus-send") {
        return Some("dbus-daemon/dbus-send not installed (apt-get install dbus dbus-bin)");
    }
    None
}

/// A private system-style bus with fwupd on it; both killed when dropped.
struct Daemon {
    dir: tempfile::TempDir,
    address: String,
    bus: Child,
    fwupd: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        for c in [&mut self.fwupd, &mut self.bus] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Daemon {
    /// Start both; `test_conf` is the `[test]` section for the test plugin.
    fn start(test_conf: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("bus.conf"),
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus"/>
  </policy>
  <include>/usr/share/dbus-1/system.d/org.freedesktop.fwupd.conf</include>
</busconfig>
"#,
                d.display()
            ),
        )
        .unwrap();
        let mut bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", d.join("bus.conf").display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut address = String::new();
        BufReader::new(bus.stdout.take().unwrap())
            .read_line(&mut address)
            .unwrap();
        let address = address.trim().to_string();
        std::fs::create_dir_all(d.join("etc/fwupd")).unwrap();
        std::fs::create_dir_all(d.join("var")).unwrap();
        std::fs::write(
            d.join("etc/fwupd/fwupd.conf"),
            format!(
                "[fwupd]\nTestDevices=true\nIdleTimeout=0\nOnlyTrusted=false\n[test]\n{test_conf}\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("fwupd.log")).unwrap();
        let fwupd = Command::new(FWUPD)
            .arg("--verbose")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
            .env("FWUPD_SYSCONFDIR", d.join("etc"))
            .env("FWUPD_LOCALSTATEDIR", d.join("var"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let daemon = Daemon {
            dir,
            address,
            bus,
            fwupd,
        };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            let out = Command::new("dbus-send")
                .arg(format!("--bus={}", self.address))
                .args([
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.freedesktop.fwupd",
                ])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains("boolean true") {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("fwupd did not come up: {}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fwupd.log")).unwrap_or_default()
    }

    fn firmware(&self, paths: &Paths) -> Firmware {
        Firmware::on_bus(paths, FwupdBus::Address(self.address.clone())).unwrap()
    }

    /// The fake webcam's version as `fwupdmgr` (not patchd) reads it.
    fn webcam_version(&self) -> String {
        let out = Command::new("fwupdmgr")
            .args(["get-devices", "--json"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["Devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["Plugin"] == "test")
            .and_then(|d| d["Version"].as_str())
            .unwrap()
            .to_string()
    }
}

/// A cabinet for the device with `guid`, release `version` (x.y.z), built by fwupdtool.
fn cabinet(dir: &Path, file: &str, version: &str, guid: &str) -> PathBuf {
    let work = dir.join(format!("{file}.d"));
    std::fs::create_dir_all(&work).unwrap();
    let n: Vec<u32> = version.split('.').map(|p| p.parse().unwrap()).collect();
    let raw = (n[0] << 24) | (n[1] << 16) | n[2];
    std::fs::write(work.join("firmware.bin"), format!("0x{raw:x}\0")).unwrap();
    std::fs::write(
        work.join("firmware.metainfo.xml"),
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<component type="firmware">
  <id>org.fwupd.fakedevice.firmware</id>
  <name>FakeDevice</name>
  <summary>Firmware for the ACME Corp Integrated Webcam</summary>
  <provides><firmware type="flashed">{guid}</firmware></provides>
  <metadata_license>CC0-1.0</metadata_license>
  <project_license>GPL-2.0+</project_license>
  <developer_name>LVFS</developer_name>
  <custom>
    <value key="LVFS::VersionFormat">triplet</value>
    <value key="LVFS::UpdateProtocol">com.acme.test</value>
  </custom>
  <releases><release version="{version}" date="2026-01-01"/></releases>
</component>
"#
        ),
    )
    .unwrap();
    let out = dir.join(file);
    let st = Command::new("fwupdtool")
        .arg("build-cabinet")
        .arg(&out)
        .arg(work.join("firmware.bin"))
        .arg(work.join("firmware.metainfo.xml"))
        .status()
        .unwrap();
    assert!(st.success(), "fwupdtool build-cabinet {file}");
    out
}

fn sha256(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

fn firmware_component(name: &str, version: &str, file: &Path) -> Component {
    Component {
        name: name.into(),
        version: version.into(),
        method: ComponentMethod::Firmware,
        target: format!("releases/acme/1.1.0/component.{name}"),
        size: std::fs::metadata(file).unwrap().len(),
        sha256: sha256(file),
        needs_reboot: false,
        order: 5,
        rollback: Rollback::None,
        units: Vec::new(),
        kind: None,
        severity: None,
        cves: Vec::new(),
    }
}

fn sim_component(name: &str, order: u32) -> Component {
    Component {
        name: name.into(),
        version: "2".into(),
        method: ComponentMethod::AppBundle,
        target: format!("releases/acme/1.1.0/component.{name}"),
        size: 1,
        sha256: "ab".repeat(32),
        needs_reboot: false,
        order,
        rollback: Rollback::Ab,
        units: Vec::new(),
        kind: None,
        severity: None,
        cves: Vec::new(),
    }
}

/// Run `component::apply` with payload files looked up by component name.
fn run_apply(
    paths: &Paths,
    release: &str,
    components: &[Component],
    installers: &Installers,
    files: &[(String, PathBuf)],
) -> (
    Result<patchd::component::Applied, ApplyError>,
    Vec<StepEvent>,
) {
    run_apply_health(paths, release, components, installers, files, "")
}

/// [`run_apply`] where the health check fails for component `unhealthy`.
fn run_apply_health(
    paths: &Paths,
    release: &str,
    components: &[Component],
    installers: &Installers,
    files: &[(String, PathBuf)],
    unhealthy: &str,
) -> (
    Result<patchd::component::Applied, ApplyError>,
    Vec<StepEvent>,
) {
    let mut events = Vec::new();
    let mut file = |c: &Component| {
        Ok(files
            .iter()
            .find(|f| f.0 == c.name)
            .map(|f| f.1.clone())
            .unwrap_or_else(|| PathBuf::from("/dev/null")))
    };
    let mut health = |c: &Component| {
        if c.name == unhealthy {
            Err("health check failed".to_string())
        } else {
            Ok(())
        }
    };
    let mut record = |e: &StepEvent| events.push(e.clone());
    let mut hooks = Hooks {
        file: &mut file,
        health: &mut health,
        record: &mut record,
        #[cfg(feature = "failpoints")]
        failpoints: None,
    };
    let r = apply(
        &Journal::path(paths),
        release,
        "b",
        components,
        installers,
        &mut hooks,
    );
    (r, events)
}

fn events(ev: &[StepEvent]) -> Vec<String> {
    ev.iter()
        .map(|e| format!("{} {}", e.event, e.component))
        .collect()
}

fn patchpub(tmp: &Path, args: &[String]) {
    let out = Command::new(env!("CARGO_BIN_EXE_patchpub"))
        .arg("--repo")
        .arg(tmp.join("repo"))
        .arg("--keys")
        .arg(tmp.join("keys"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "patchpub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Publish `cab` as firmware component `webcam` of release 1.1.0 and fetch it back the
/// way the device does: TUF refresh, discovery, the target verified against its signed
/// length and hashes. Returns the manifest's components and the verified file.
async fn through_repository(dir: &Path, cab: &Path, version: &str) -> (Vec<Component>, PathBuf) {
    patchpub(dir, &["init".to_string()]);
    let os = dir.join("rootfs.img");
    std::fs::write(&os, vec![7u8; 4096]).unwrap();
    patchpub(
        dir,
        &[
            "add".into(),
            "--product".into(),
            "acme".into(),
            "--version".into(),
            "1.1.0".into(),
            "--summary".into(),
            "webcam firmware".into(),
            "--image".into(),
            os.display().to_string(),
            "--component".into(),
            format!(
                "name=webcam,version={version},method=firmware,file={}",
                cab.display()
            ),
        ],
    );
    let repo = dir.join("repo");
    let md = dir.join("client-metadata");
    std::fs::create_dir_all(&md).unwrap();
    let root1 = std::fs::read(repo.join("metadata/1.root.json")).unwrap();
    TufClient::init(&md, &root1, &Limits::default()).unwrap();
    let mut client = TufClient::load(&md, Arc::new(SystemClock), Limits::default()).unwrap();
    let src = FileSource::new(&repo);
    let (m, t) = (Subdir::new(&src, "metadata"), Subdir::new(&src, "targets"));
    client.refresh(&m).await.unwrap();
    let dev = DeviceProfile {
        product: "acme".into(),
        hardware: None,
        channel: "stable".into(),
        running_version: Some("1.0.0".parse().unwrap()),
        security_floor: 0,
    };
    let found = discover(&mut client, &m, &t, &dev).await.unwrap();
    let manifest = found.newest.unwrap().manifest().clone();
    let c = manifest.components[0].clone();
    assert_eq!(c.method, ComponentMethod::Firmware);
    assert_eq!(c.rollback, Rollback::None, "firmware's only rollback");
    let target = client.target(&m, &c.target).await.unwrap();
    let bytes = client.fetch_target_bytes(&t, &target).await.unwrap();
    assert_eq!(bytes.len() as u64, c.size);
    let verified = dir.join("verified-webcam.cab");
    std::fs::write(&verified, &bytes).unwrap();
    (manifest.components, verified)
}

// A multi-thread runtime, as the daemon's: the installer then runs its D-Bus calls on it
// (the other two tests, outside a runtime, on the installer's own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cabinet_from_the_repository_is_installed_by_fwupd_and_read_back() {
    if let Some(why) = unmet() {
        println!("skipped: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cab = cabinet(dir, "webcam-125.cab", "1.2.5", WEBCAM_GUID);
    let (components, verified) = through_repository(dir, &cab, "1.2.5").await;
    let daemon = Daemon::start("");
    assert_eq!(daemon.webcam_version(), "1.2.2", "the fake device's start");

    let paths = Paths::new(dir.join("root"));
    let fw = Arc::new(daemon.firmware(&paths));
    assert_eq!(fw.installed("webcam").unwrap(), None, "never installed");
    let installers = Installers::new().with(ComponentMethod::Firmware, fw.clone());
    let files = vec![("webcam".to_string(), verified)];
    let (r, ev) = run_apply(&paths, "1.1.0", &components, &installers, &files);
    let applied = r.unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    assert_eq!(applied.installed, ["webcam"]);
    assert_eq!(
        events(&ev),
        ["component_staged webcam", "component_switched webcam"]
    );
    assert_eq!(daemon.webcam_version(), "1.2.5", "fwupd flashed the device");
    let now = fw.installed("webcam").unwrap().unwrap();
    assert_eq!(
        (
            now.version.as_str(),
            now.sha256.as_str(),
            now.origin.as_str()
        ),
        ("1.2.5", components[0].sha256.as_str(), "1.1.0")
    );
    let (inventory, problems) =
        patchd::component::list_installed(&paths, &paths.resolve(patchd::component::APPS_DIR));
    assert!(problems.is_empty(), "{problems:?}");
    assert!(
        inventory.iter().any(|i| i.name == "webcam"
            && i.method == ComponentMethod::Firmware
            && i.installed.version == "1.2.5"),
        "{inventory:?}"
    );

    // The same cabinet again: unchanged, nothing handed to fwupd.
    let (r, ev) = run_apply(&paths, "1.1.0", &components, &installers, &files);
    assert_eq!(r.unwrap().skipped, ["webcam"]);
    assert_eq!(ev[0].detail, "unchanged");

    // An older cabinet: fwupd's own check refuses it, and its words are the error.
    let old = cabinet(dir, "webcam-124.cab", "1.2.4", WEBCAM_GUID);
    let c = firmware_component("webcam", "1.2.4", &old);
    let files = vec![("webcam".to_string(), old)];
    let (r, _) = run_apply(&paths, "1.2.0", &[c], &installers, &files);
    match r {
        Err(ApplyError::Failed {
            component,
            step: Step::Switch,
            why,
            ..
        }) => {
            println!("downgrade refused: {why}");
            assert_eq!(component, "webcam");
            assert!(why.contains("fwupd Install: "), "{why}");
            assert!(why.to_lowercase().contains("older"), "{why}");
        }
        other => panic!("downgrade not refused: {other:?}"),
    }
    assert_eq!(daemon.webcam_version(), "1.2.5", "still the newer version");
    assert_eq!(fw.installed("webcam").unwrap().unwrap().version, "1.2.5");
}

#[test]
fn a_cabinet_no_device_here_matches_is_skipped_and_said_so() {
    if let Some(why) = unmet() {
        println!("skipped: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cab = cabinet(
        dir,
        "bmc.cab",
        "2.3.0",
        "11111111-2222-3333-4444-555555555555",
    );
    let daemon = Daemon::start("");
    let paths = Paths::new(dir.join("root"));
    let sim = Arc::new(SimInstaller::new());
    let installers = Installers::new()
        .with(ComponentMethod::Firmware, Arc::new(daemon.firmware(&paths)))
        .with(ComponentMethod::AppBundle, sim.clone());
    let components = [
        sim_component("web", 1),
        firmware_component("bmc", "2.3.0", &cab),
    ];
    let files = vec![("bmc".to_string(), cab)];
    let (r, ev) = run_apply(&paths, "1.1.0", &components, &installers, &files);
    let applied = r.unwrap();
    assert_eq!(
        (applied.installed, applied.skipped),
        (vec!["web".to_string()], vec!["bmc".to_string()])
    );
    let skip = ev
        .iter()
        .find(|e| e.event == "component_skipped")
        .expect("a skipped record");
    assert_eq!(skip.component, "bmc");
    assert!(
        skip.detail
            .contains("no device here matches the firmware cabinet")
            && skip.detail.contains("11111111-2222-3333-4444-555555555555"),
        "{}",
        skip.detail
    );
    println!("skip reason: {}", skip.detail);
    assert_eq!(
        events(&ev),
        [
            "component_skipped bmc",
            "component_staged web",
            "component_switched web"
        ]
    );
    assert_eq!(daemon.webcam_version(), "1.2.2", "nothing flashed");
}

#[test]
fn a_failing_firmware_install_stops_the_release_before_any_other_switch() {
    if let Some(why) = unmet() {
        println!("skipped: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cab = cabinet(dir, "webcam-125.cab", "1.2.5", WEBCAM_GUID);
    // The test plugin then fails every write of the fake device.
    let daemon = Daemon::start("WriteSupported=false");
    let paths = Paths::new(dir.join("root"));
    let sim = Arc::new(SimInstaller::new());
    let installers = Installers::new()
        .with(ComponentMethod::Firmware, Arc::new(daemon.firmware(&paths)))
        .with(ComponentMethod::AppBundle, sim.clone());
    // Listed first with a lower order, the app still switches only after the firmware.
    let components = [
        sim_component("web", 0),
        firmware_component("webcam", "1.2.5", &cab),
    ];
    let files = vec![("webcam".to_string(), cab)];
    let (r, ev) = run_apply(&paths, "1.1.0", &components, &installers, &files);
    match r {
        Err(ApplyError::Failed {
            component,
            step: Step::Switch,
            why,
            rolled_back,
            left,
        }) => {
            assert_eq!(component, "webcam");
            assert!(why.contains("device was not in supported mode"), "{why}");
            assert!(
                rolled_back.is_empty() && left.is_empty(),
                "{rolled_back:?} {left:?}"
            );
        }
        other => panic!("the failed install did not stop the release: {other:?}"),
    }
    assert_eq!(
        sim.log(),
        ["stage:web"],
        "the app was staged, never switched"
    );
    assert_eq!(
        events(&ev),
        [
            "component_staged webcam",
            "component_staged web",
            "component_failed webcam"
        ]
    );
    assert_eq!(daemon.webcam_version(), "1.2.2");
    assert!(!Journal::path(&paths).exists(), "the release is over");
}

#[test]
fn a_later_failure_rolls_the_others_back_and_says_the_firmware_stays() {
    if let Some(why) = unmet() {
        println!("skipped: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cab = cabinet(dir, "webcam-125.cab", "1.2.5", WEBCAM_GUID);
    let daemon = Daemon::start("");
    let paths = Paths::new(dir.join("root"));
    let sim = Arc::new(SimInstaller::new());
    let installers = Installers::new()
        .with(ComponentMethod::Firmware, Arc::new(daemon.firmware(&paths)))
        .with(ComponentMethod::AppBundle, sim.clone());
    let components = [
        sim_component("web", 0),
        firmware_component("webcam", "1.2.5", &cab),
    ];
    let files = vec![("webcam".to_string(), cab)];
    let (r, ev) = run_apply_health(&paths, "1.1.0", &components, &installers, &files, "web");
    match r {
        Err(ApplyError::Failed {
            component,
            step: Step::Health,
            rolled_back,
            left,
            ..
        }) => {
            assert_eq!(component, "web");
            assert_eq!(
                (rolled_back, left),
                (vec!["web".to_string()], vec!["webcam".to_string()])
            );
        }
        other => panic!("the failed health check did not stop the release: {other:?}"),
    }
    let names = events(&ev);
    assert!(
        names.contains(&"component_not_rolled_back webcam".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"component_rolled_back web".to_string()),
        "{names:?}"
    );
    assert_eq!(
        daemon.webcam_version(),
        "1.2.5",
        "firmware stays at the new version"
    );
}
