//! Shared by the D-Bus tests: a private, system-bus-like `dbus-daemon` (with patchd's real
//! bus policy included), the service on it with the fake backend or the engine, `patchctl`
//! and `patchd boot-check` runs as root or as an unprivileged user, and a plain session
//! bus for fake system services (systemd, logind).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use patchd::dbus::{serve, AuthMode, Bus, ManagerBackend, Service, ServiceOptions};
use patchd::testkit::fake::FakeBackend;

pub mod fleetlock;

pub const NOBODY: u32 = 65534;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub struct TestBus {
    pub dir: tempfile::TempDir,
    pub address: String,
    child: Child,
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bus_config(dir: &Path) -> String {
    let policy = repo_root().join("systemd/org.patchd.Patchd1.conf");
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={dir}/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <!-- the tests' fake polkit (or a real polkitd started as root) -->
  <policy user="root">
    <allow own="org.freedesktop.PolicyKit1"/>
  </policy>
  <include ignore_missing="yes">/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf</include>
  <include>{policy}</include>
</busconfig>
"#,
        dir = dir.display(),
        policy = policy.display()
    )
}

impl TestBus {
    /// Start a private system-like bus, or `None` (reason printed) when dbus-daemon is
    /// missing.
    pub fn start() -> Option<TestBus> {
        if !have("dbus-daemon") {
            println!("skipped: dbus-daemon not installed (apt-get install dbus)");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        // Unprivileged test callers must reach the socket.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod tempdir");
        let conf = dir.path().join("system.conf");
        std::fs::write(&conf, bus_config(dir.path())).expect("write bus config");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn dbus-daemon");
        let stdout = child.stdout.take().expect("dbus-daemon stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read bus address");
        let address = line.trim().to_owned();
        assert!(
            address.starts_with("unix:"),
            "dbus-daemon did not print an address: {address:?}"
        );
        Some(TestBus {
            dir,
            address,
            child,
        })
    }

    pub async fn connect(&self) -> zbus::Connection {
        zbus::connection::Builder::address(self.address.as_str())
            .expect("address")
            .build()
            .await
            .expect("connect to test bus")
    }
}

/// The service with the fake backend on `bus`.
pub async fn start_service(bus: &TestBus, backend: Arc<FakeBackend>, auth: AuthMode) -> Service {
    serve(
        backend,
        ServiceOptions {
            bus: Bus::Address(bus.address.clone()),
            auth,
            ..ServiceOptions::default()
        },
    )
    .await
    .expect("serve on test bus")
}

/// The service with any backend (e.g. an `EngineHandle`) on `bus`, root only.
pub async fn serve_backend(bus: &TestBus, backend: Arc<dyn ManagerBackend>) -> Service {
    serve(
        backend,
        ServiceOptions {
            bus: Bus::Address(bus.address.clone()),
            auth: root_only(),
            ..ServiceOptions::default()
        },
    )
    .await
    .expect("serve on test bus")
}

/// Test authorization: only root may change anything.
pub fn root_only() -> AuthMode {
    AuthMode::Uids(vec![0])
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Run patchctl against `bus`, as root or (with `uid`) through setpriv as that user.
pub async fn patchctl_as(bus: &TestBus, uid: Option<u32>, args: &[&str]) -> Run {
    let exe = env!("CARGO_BIN_EXE_patchctl");
    let mut cmd = match uid {
        Some(uid) => {
            let mut c = tokio::process::Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .args(["--clear-groups", "--", exe]);
            c
        }
        None => tokio::process::Command::new(exe),
    };
    cmd.arg("--bus-address")
        .arg(&bus.address)
        .args(args)
        .env_remove("PATCHCTL_BUS_ADDRESS")
        .stdin(Stdio::null());
    let out = cmd.output().await.expect("run patchctl");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub async fn patchctl(bus: &TestBus, args: &[&str]) -> Run {
    patchctl_as(bus, None, args).await
}

/// Tests that need root (setpriv to another user, polkitd) call this first.
pub fn need_root(what: &str) -> bool {
    if is_root() {
        true
    } else {
        println!("skipped: {what} needs root");
        false
    }
}

/// A plain `dbus-daemon --session` on a socket in its own temp dir, for fake system
/// services (`org.freedesktop.systemd1`, `org.freedesktop.login1`) that the code under
/// test reaches over D-Bus. Killed when dropped.
pub struct SessionBus {
    child: Child,
    pub address: String,
    _dir: tempfile::TempDir,
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SessionBus {
    /// Start one, or `None` (reason printed) when dbus-daemon is missing.
    pub fn start() -> Option<SessionBus> {
        if !have("dbus-daemon") {
            println!("skipped: dbus-daemon not installed (apt-get install dbus)");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .arg(format!(
                "--address=unix:path={}",
                dir.path().join("bus").display()
            ))
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn dbus-daemon");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("dbus-daemon stdout"))
            .read_line(&mut line)
            .expect("read bus address");
        let address = line.trim().to_owned();
        assert!(
            address.starts_with("unix:"),
            "dbus-daemon did not print an address: {address:?}"
        );
        Some(SessionBus {
            child,
            address,
            _dir: dir,
        })
    }

    /// A connection builder that will own `name` (add objects with `serve_at`, then
    /// `build`): the fake service.
    pub fn service(&self, name: &'static str) -> zbus::connection::Builder<'static> {
        zbus::connection::Builder::address(self.address.as_str())
            .expect("bus address")
            .name(name)
            .expect("well-known name")
    }

    /// A plain client connection: what the code under test uses.
    pub async fn client(&self) -> zbus::Connection {
        zbus::connection::Builder::address(self.address.as_str())
            .expect("bus address")
            .build()
            .await
            .expect("connect to session bus")
    }
}

/// Run `patchd [--bus-address BUS] boot-check ARGS` and capture its output.
pub async fn boot_check(address: &str, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_patchd"))
        .args(["--bus-address", address, "boot-check"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run patchd boot-check");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
