//! A device for tests that run the real `patchd run` process: a root directory with the
//! file bootloader, two slots (image files, or btrfs subvolumes), a repository signed by
//! the publisher library (served from a directory or over HTTP), a private session bus
//! with a fake systemd that records the reboot request, and helpers to start, kill and
//! "power-cycle" the daemon ([`Rig`] sets up the bus, fake systemd and directory). Shared
//! by the tests/daemon_*.rs, power_cut_process and systemd_integration.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use patchd::boot::file::FileBootloader;
use patchd::engine::statefile::{StateDoc, StateFile};
use patchd::names::SlotName;
use patchd::paths::Paths;
use patchd::publish::{AddRelease, ImageInput, InitOptions, Repo};
use patchd::slot::{SlotState, SlotStatus, StatusStore};
use sha2::Digest;
// The private session bus and tool check are the D-Bus tests' (tests/support).
#[path = "../support/mod.rs"]
pub mod support;
#[allow(unused_imports)] // not every test file uses both
pub use support::{have, SessionBus};

/// `org.freedesktop.systemd1.Manager` as far as patchd uses it for rebooting: records
/// every `StartUnit(name, mode)`.
#[derive(Clone, Default)]
pub struct FakeSystemd {
    pub calls: Arc<Mutex<Vec<(String, String)>>>,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl FakeSystemd {
    async fn start_unit(&self, name: String, mode: String) -> zbus::zvariant::OwnedObjectPath {
        self.calls.lock().unwrap().push((name, mode));
        zbus::zvariant::OwnedObjectPath::try_from("/org/freedesktop/systemd1/job/1")
            .expect("job path")
    }
}

impl FakeSystemd {
    /// Serve it as `org.freedesktop.systemd1` on `address`; keep the connection alive.
    pub async fn serve(&self, address: &str) -> zbus::Connection {
        zbus::connection::Builder::address(address)
            .expect("address")
            .name("org.freedesktop.systemd1")
            .expect("name")
            .serve_at("/org/freedesktop/systemd1", self.clone())
            .expect("serve_at")
            .build()
            .await
            .expect("fake systemd on the bus")
    }

    pub fn calls(&self) -> Vec<(String, String)> {
        self.calls.lock().unwrap().clone()
    }
}

/// What a `patchd run` test starts from: a private bus with the fake systemd on it, and
/// a temporary directory for the device. `None` (the reason printed) without dbus-daemon.
pub struct Rig {
    pub bus: SessionBus,
    pub systemd: FakeSystemd,
    _systemd_conn: zbus::Connection,
    pub top: tempfile::TempDir,
}

impl Rig {
    pub async fn start() -> Option<Rig> {
        let bus = SessionBus::start()?;
        let systemd = FakeSystemd::default();
        let conn = systemd.serve(&bus.address).await;
        Some(Rig {
            bus,
            systemd,
            _systemd_conn: conn,
            top: tempfile::tempdir().expect("tempdir"),
        })
    }

    /// The bus address, for `Device::spawn` and `patchctl`.
    pub fn addr(&self) -> &str {
        &self.bus.address
    }

    pub fn device(&self, spec: &DeviceSpec) -> Device {
        Device::new(self.top.path(), spec)
    }
}

/// `[policy]` lines that keep a daemon up with nothing to switch to: the only window is
/// one minute on Mondays in a far time zone. Staging still runs.
pub const NO_WINDOW: &str = "windows = [\"Mon 03:00-03:01\"]\ntime_zone = \"Pacific/Kiritimati\"\n";

/// [`NO_WINDOW`], and no staging outside a window either: the daemon does nothing but
/// answer.
pub const QUIET: &str = "windows = [\"Mon 03:00-03:01\"]\nstage_outside_windows = false\n\
                         time_zone = \"Pacific/Kiritimati\"\n";

/// Run patchctl against `bus`: exit code, stdout, stderr.
pub async fn patchctl(bus: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_patchctl"))
        .arg("--bus-address")
        .arg(bus)
        .args(args)
        .env_remove("PATCHCTL_BUS_ADDRESS")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run patchctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// How the slots are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotsKind {
    /// Image files of `size` bytes under /var/lib/slots.
    Files,
    /// Subvolumes under this device path (must be on btrfs).
    Btrfs(String),
}

pub struct DeviceSpec {
    pub image_size: usize,
    /// Publish the rootfs image uncompressed (resumable from checkpoints).
    pub uncompressed: bool,
    pub slots: SlotsKind,
    /// `None`: the repository directory; `Some(url)`: over HTTP at this base URL.
    pub url: Option<String>,
    pub checkpoint_every: Option<u64>,
    /// Extra lines for `[policy]`.
    pub policy: String,
    /// Extra lines for `[device]`.
    pub device: String,
    /// Extra sections at the end of patchd.toml (e.g. `[fetch]`).
    pub extra: String,
    /// The release's hardware list (`patchpub add --hardware`).
    pub hardware: Vec<String>,
}

impl Default for DeviceSpec {
    fn default() -> Self {
        Self {
            image_size: 256 * 1024,
            uncompressed: false,
            slots: SlotsKind::Files,
            url: None,
            checkpoint_every: None,
            policy: String::new(),
            device: String::new(),
            extra: String::new(),
            hardware: Vec::new(),
        }
    }
}

/// Deterministic, poorly compressible image content for `version`.
pub fn image(version: &str, size: usize) -> Vec<u8> {
    let mut b = format!("os=test version={version}\n").into_bytes();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ version.len() as u64;
    while b.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.extend_from_slice(&x.to_le_bytes());
    }
    b.truncate(size);
    b
}

/// A tar archive holding `/etc/os-release` for `version` (btrfs slots).
pub fn rootfs_tar(version: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut d = tar::Header::new_gnu();
    d.set_size(0);
    d.set_mode(0o755);
    d.set_entry_type(tar::EntryType::Directory);
    // Unset numeric fields do not parse as octal; owners are restored when root.
    d.set_uid(0);
    d.set_gid(0);
    d.set_mtime(1_700_000_000);
    b.append_data(&mut d, "etc/", std::io::empty()).unwrap();
    let body = format!("ID=test\nVERSION_ID={version}\n");
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    b.append_data(&mut h, "etc/os-release", body.as_bytes())
        .unwrap();
    b.into_inner().unwrap()
}

pub struct Device {
    pub top: PathBuf,
    pub paths: Paths,
    pub repo_dir: PathBuf,
    pub spec_slots: SlotsKind,
    pub image: Vec<u8>,
}

pub fn slot_names() -> Vec<SlotName> {
    vec![SlotName::new("a").unwrap(), SlotName::new("b").unwrap()]
}

impl Device {
    /// Slot a runs 1.0.0 (good); the repository offers 2.0.0 (security, high).
    pub fn new(top: &Path, spec: &DeviceSpec) -> Device {
        let paths = Paths::new(top.join("device"));
        for d in ["/etc/patchd", "/var/lib/slots", "/var/lib/patchd"] {
            std::fs::create_dir_all(paths.resolve(d)).unwrap();
        }
        std::fs::write(
            paths.resolve("/etc/machine-id"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        let repo_dir = top.join("repo");
        let repo = Repo::init(&repo_dir, &InitOptions::new(top.join("keys"))).unwrap();
        let (v1, v2, input) = match &spec.slots {
            SlotsKind::Files => {
                let v1 = image("1.0.0", spec.image_size);
                std::fs::write(paths.resolve("/var/lib/slots/a.img"), &v1).unwrap();
                std::fs::write(
                    paths.resolve("/var/lib/slots/b.img"),
                    vec![0u8; spec.image_size],
                )
                .unwrap();
                let img = top.join("2.0.0.img");
                let v2 = image("2.0.0", spec.image_size);
                std::fs::write(&img, &v2).unwrap();
                let mut input = ImageInput::rootfs(&img);
                if spec.uncompressed {
                    input.compression = patchd::manifest::Compression::None;
                }
                (v1, v2, input)
            }
            SlotsKind::Btrfs(_) => {
                let v1 = rootfs_tar("1.0.0");
                let v2 = rootfs_tar("2.0.0");
                let img = top.join("2.0.0.tar");
                std::fs::write(&img, &v2).unwrap();
                let mut input = ImageInput::rootfs(&img);
                input.format = patchd::manifest::ImageFormat::Tar;
                (v1, v2, input)
            }
        };
        let mut rel = AddRelease::new("test-box", "2.0.0".parse().unwrap(), input.file.clone());
        rel.images = vec![input];
        rel.hardware = spec.hardware.clone();
        rel.security_version = 2;
        rel.kind = patchd::manifest::Kind::Security;
        rel.severity = patchd::manifest::Severity::High;
        repo.add_release(&rel).unwrap();
        std::fs::write(
            paths.resolve("/etc/patchd/root.json"),
            repo.root_bytes().unwrap(),
        )
        .unwrap();
        let slots = slot_names();
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
        std::os::unix::fs::symlink(&repo_dir, paths.resolve("/srv-repo")).unwrap();
        let repository = match &spec.url {
            None => "dir = \"/srv-repo\"".to_string(),
            Some(u) => format!("url = \"{u}\"\nallow_http = true"),
        };
        let slots_toml = match &spec.slots {
            SlotsKind::Files => "backend = \"file\"\n[[slots.slot]]\nname = \"a\"\n\
                 path = \"/var/lib/slots/a.img\"\n[[slots.slot]]\nname = \"b\"\n\
                 path = \"/var/lib/slots/b.img\"\n"
                .to_string(),
            SlotsKind::Btrfs(dir) => format!(
                "backend = \"btrfs\"\ndir = \"{dir}\"\n[[slots.slot]]\nname = \"a\"\n\
                 [[slots.slot]]\nname = \"b\"\n"
            ),
        };
        let checkpoint = spec
            .checkpoint_every
            .map(|c| format!("checkpoint_every = {c}\n"))
            .unwrap_or_default();
        std::fs::write(
            paths.resolve("/etc/patchd/patchd.toml"),
            format!(
                "[device]\nproduct = \"test-box\"\n{}\n\n[policy]\n{}\n\n[repository]\n{repository}\n\
                 trusted_root = \"/etc/patchd/root.json\"\ncheck_interval = \"24h\"\n\
                 check_jitter = \"0s\"\n\n[boot]\nbackend = \"file\"\n\n[slots]\n{checkpoint}{slots_toml}\n{}",
                spec.device, spec.policy, spec.extra
            ),
        )
        .unwrap();
        Device {
            top: top.to_path_buf(),
            paths,
            repo_dir,
            spec_slots: spec.slots.clone(),
            image: v2,
        }
    }

    pub fn boot_file(&self) -> PathBuf {
        self.paths.resolve("/var/lib/patchd/boot.json")
    }

    /// The bootloader's power-on decision, as after a reboot or a power cut.
    pub fn power_cycle(&self) -> SlotName {
        patchd::boot::file::simulate_reboot(&self.boot_file(), &slot_names())
            .expect("simulated boot")
    }

    pub fn bootloader(&self) -> FileBootloader {
        FileBootloader::new(self.boot_file(), slot_names())
    }

    pub fn state(&self) -> Result<Option<StateDoc>, String> {
        StateFile::new(&self.paths.state_dir())
            .load(jiff::Timestamp::now())
            .map_err(|e| e.to_string())
    }

    pub fn state_kind(&self) -> String {
        match self.state() {
            Ok(Some(d)) => d.lifecycle.kind().to_string(),
            Ok(None) => "none".into(),
            Err(e) => format!("error: {e}"),
        }
    }

    pub fn slot_status(&self, name: &str) -> SlotStatus {
        StatusStore::new(&self.paths.state_dir(), SlotName::new(name).unwrap())
            .load()
            .unwrap()
    }

    pub fn audit_path(&self) -> PathBuf {
        self.paths.resolve("/var/lib/patchd/audit.log")
    }

    pub fn audit_events(&self) -> Vec<String> {
        let log = patchd::audit::AuditLog::open(self.audit_path(), Default::default()).unwrap();
        log.query(&Default::default())
            .unwrap()
            .into_iter()
            .map(|r| r.event)
            .collect()
    }

    /// Every file under the repository, keyed `metadata/...` / `targets/...` (for an
    /// HTTP server serving the repository from memory).
    pub fn repo_files(&self) -> Vec<(String, Vec<u8>)> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    let rel = p.strip_prefix(base).unwrap().to_string_lossy().to_string();
                    out.push((rel, std::fs::read(&p).unwrap()));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.repo_dir, &self.repo_dir, &mut out);
        out
    }

    /// The repository path of the rootfs image target (as the staging pipeline asks).
    pub fn image_target_path(&self) -> String {
        self.repo_files()
            .into_iter()
            .filter(|(p, b)| p.starts_with("targets/") && b.len() == self.image.len())
            .map(|(p, _)| p)
            .next()
            .expect("image target in the repository")
    }

    /// Start `patchd run` on `bus`; `env` adds variables (fail points).
    pub fn spawn(&self, bus: &str, env: &[(&str, &str)]) -> Daemon {
        let mut c = Command::new(env!("CARGO_BIN_EXE_patchd"));
        c.arg("--root")
            .arg(self.paths.resolve("/"))
            .args(["--bus-address", bus, "--auth", "uids:0", "run"])
            .env("PATCHD_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("PATCHD_FAILPOINT")
            .env_remove("PATCHD_FAILPOINTS_SEEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.top.join("patchd.log"))
                    .unwrap(),
            ));
        for (k, v) in env {
            c.env(k, v);
        }
        Daemon(Some(c.spawn().expect("spawn patchd")))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.top.join("patchd.log")).unwrap_or_default()
    }
}

/// The daemon process; killed if the test ends first.
pub struct Daemon(pub Option<Child>);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.0.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.0.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM; wait for the exit (at most `limit`).
    pub fn stop(mut self, limit: Duration) -> Option<ExitStatus> {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(st) = self.try_wait() {
                self.0 = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// What ended a wait.
#[derive(Debug)]
pub enum Ended {
    /// The condition became true (daemon still running).
    Reached,
    /// The daemon exited first.
    Exited(ExitStatus),
}

/// Poll `cond` until it holds or the daemon exits; panics after `limit`.
pub async fn wait_until(
    d: &mut Daemon,
    dev: &Device,
    limit: Duration,
    what: &str,
    mut cond: impl FnMut(&Device) -> bool,
) -> Ended {
    let deadline = Instant::now() + limit;
    loop {
        if cond(dev) {
            return Ended::Reached;
        }
        if let Some(st) = d.try_wait() {
            d.0 = None;
            return Ended::Exited(st);
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; state {}; log:\n{}",
            dev.state_kind(),
            tail(&dev.log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The lifecycle committed `version`.
pub fn committed(dev: &Device, version: &str) -> bool {
    matches!(dev.state(), Ok(Some(d))
        if d.lifecycle.kind() == patchd::engine::StateKind::Committed
            && d.committed.as_ref().is_some_and(|c| c.version == version))
}
