//! docs/setup.md "Try it on one machine", run as written: every ```sh block of that
//! section, in order, in one `sh -e`, with the binaries of this build first in PATH, in
//! an empty temporary directory. The device must reach `committed` on 2.0.0.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The ```sh blocks between the `## Try it on one machine` heading and the next `## `.
fn try_it_blocks(doc: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut in_section = false;
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if current.is_none() && line.starts_with("## ") {
            in_section = line.trim() == "## Try it on one machine";
            continue;
        }
        match &mut current {
            Some(b) if line.trim_end() == "```" => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None if in_section && line.trim_end() == "```sh" => current = Some(String::new()),
            None => {}
        }
    }
    blocks
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_patchd"))
        .parent()
        .expect("binary dir")
        .to_path_buf()
}

/// Kill what the script left running (it stops both itself; this is for a failure).
fn kill_leftovers(dir: &Path) {
    for f in ["patchd.pid", "bus.pid"] {
        if let Some(pid) = std::fs::read_to_string(dir.join(f))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn the_try_it_section_has_its_commands() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/setup.md"))
        .expect("docs/setup.md");
    let script = try_it_blocks(&doc).join("");
    for want in [
        "patchd init",
        "--auth uids:0",
        "dbus-daemon",
        "patchctl install",
        "simulate-reboot",
    ] {
        assert!(script.contains(want), "{want} missing from:\n{script}");
    }
}

#[test]
fn following_try_it_on_one_machine_reaches_committed() {
    if !have("dbus-daemon") || !have("dbus-uuidgen") {
        println!("skipped: dbus-daemon or dbus-uuidgen not installed");
        return;
    }
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/setup.md"))
        .expect("docs/setup.md");
    let script = try_it_blocks(&doc).join("");
    let top = tempfile::tempdir().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("sh")
        .args(["-e", "-c", &script])
        .current_dir(top.path())
        .env("PATH", path)
        .env("HOME", top.path())
        .env_remove("PATCHD_ROOT")
        .env_remove("PATCHCTL_BUS_ADDRESS")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("PATCHD_FAILPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            std::fs::File::create(top.path().join("out.txt")).unwrap(),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(top.path().join("err.txt")).unwrap(),
        ))
        .spawn()
        .expect("sh");
    let work = top.path().join("patchd-try");
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    kill_leftovers(&work);
    let read = |f: &str| std::fs::read_to_string(top.path().join(f)).unwrap_or_default();
    let log = std::fs::read_to_string(work.join("patchd.log")).unwrap_or_default();
    let report = format!(
        "status {status:?}\n--- stdout\n{}\n--- stderr\n{}\n--- patchd.log (tail)\n{}",
        read("out.txt"),
        read("err.txt"),
        log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    assert!(status.is_some_and(|s| s.success()), "{report}");
    let out = read("out.txt");
    assert!(
        out.lines()
            .any(|l| l.starts_with("State:") && l.contains("committed")),
        "{report}"
    );
    let paths = patchd::paths::Paths::new(work.join("device"));
    let doc = patchd::engine::statefile::StateFile::new(&paths.state_dir())
        .load(jiff::Timestamp::now())
        .expect("state file")
        .expect("state exists");
    assert_eq!(doc.lifecycle.kind(), patchd::engine::StateKind::Committed);
    assert_eq!(
        doc.committed.as_ref().map(|c| c.version.as_str()),
        Some("2.0.0")
    );
}
