//! A reader that goes away (`patchctl history | head`) ends the command quietly: killed
//! by SIGPIPE (status 141 in a shell) or exit 0, never a panic ("failed printing to
//! stdout", exit 101). Each binary runs with its stdout the write end of a pipe whose read
//! end is already closed, so its first write meets EPIPE.

#[path = "support/mod.rs"]
mod support;

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use patchd::testkit::fake::FakeBackend;
use support::*;

/// Stdout for a child: a pipe nobody reads.
fn closed_pipe() -> Stdio {
    let (read, write) = nix::unistd::pipe().expect("pipe");
    drop(read);
    Stdio::from(write)
}

fn assert_quiet(what: &str, status: ExitStatus, stderr: &[u8]) {
    let stderr = String::from_utf8_lossy(stderr);
    let quiet = status.code() == Some(0) || status.signal() == Some(libc::SIGPIPE);
    assert!(
        quiet,
        "{what}: want exit 0 or SIGPIPE on a closed stdout, got {status:?}; stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("failed printing"),
        "{what}: panicked on a closed stdout:\n{stderr}"
    );
}

#[test]
fn patchd_demo_with_closed_stdout() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_patchd"))
        .arg("demo")
        .stdin(Stdio::null())
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .output()
        .expect("run patchd demo");
    assert_quiet("patchd demo", out.status, &out.stderr);
}

#[test]
fn patchpub_with_closed_stdout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_patchpub"))
        .arg("--repo")
        .arg(dir.path().join("repo"))
        .arg("--keys")
        .arg(dir.path().join("keys"))
        .arg("init")
        .stdin(Stdio::null())
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .output()
        .expect("run patchpub init");
    assert_quiet("patchpub init", out.status, &out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patchctl_with_closed_stdout() {
    let Some(bus) = TestBus::start() else { return };
    let backend = FakeBackend::new(Duration::from_millis(1)).into_arc();
    let _svc = start_service(&bus, backend, root_only()).await;
    for args in [
        &["history"][..],
        &["--json", "list"],
        &["status"],
        &["inventory", "--json"],
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_patchctl"))
            .arg("--bus-address")
            .arg(&bus.address)
            .args(args)
            .env_remove("PATCHCTL_BUS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .await
            .expect("run patchctl");
        assert_quiet(
            &format!("patchctl {}", args.join(" ")),
            out.status,
            &out.stderr,
        );
    }
}
