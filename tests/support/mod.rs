//! Shared by the `dbus_*` and `patchctl_*` tests: a private, system-bus-like
//! `dbus-daemon` (with patchd's real bus policy included), the service on it with the fake
//! backend, and `patchctl` runs as root or as an unprivileged user.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use patchd::dbus::fake::FakeBackend;
use patchd::dbus::{serve, AuthMode, Bus, Service, ServiceOptions};

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
