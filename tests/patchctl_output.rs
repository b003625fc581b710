//! patchctl's output against a real `patchd run` (private bus, files): `watch` follows the
//! jobs the daemon starts by itself (a check another client asked for, and the staging the
//! engine starts when that check ends); a second `hold` says it replaced the first; the
//! completion scripts call `patchctl __complete`, which answers with the daemon's release
//! versions and the audit event names; and under a terminal 60 columns wide the progress
//! bar of `install` never draws a line wider than that, starts empty, and is followed by
//! the summary line.

mod common;
mod process;

use std::time::Duration;

use common::http::{FaultServer, Faults};
use patchd::publish::{AddRelease, ImageInput, Repo};
use process::*;

/// A device whose only release is withdrawn: the daemon checks at start-up, finds nothing
/// to install, and waits.
async fn idle_device(rig: &Rig) -> (Daemon, Device) {
    let dev = rig.device(&DeviceSpec {
        policy: NO_WINDOW.into(),
        ..DeviceSpec::default()
    });
    repo(&dev)
        .withdraw("test-box", &"2.0.0".parse().unwrap())
        .unwrap();
    let mut d = dev.spawn(rig.addr(), &[]);
    let e = wait_until(
        &mut d,
        &dev,
        Duration::from_secs(60),
        "the first check",
        |dev| dev.audit_events().iter().any(|e| e == "check"),
    )
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    // And the check job's end published: no job runs when the test starts.
    for _ in 0..100 {
        let (_, out, _) = patchctl(rig.addr(), &["--json", "status"]).await;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        if v["last_job"]["outcome"] == "succeeded" && v["progress"].is_null() {
            return (d, dev);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the first check never finished\n{}", dev.log());
}

fn repo(dev: &Device) -> Repo {
    Repo::open(&dev.repo_dir, dev.top.join("keys")).unwrap()
}

fn publish(dev: &Device, version: &str) {
    let img = dev.top.join(format!("{version}.img"));
    std::fs::write(&img, image(version, dev.image.len())).unwrap();
    let mut rel = AddRelease::new("test-box", version.parse().unwrap(), img.clone());
    rel.images = vec![ImageInput::rootfs(&img)];
    rel.security_version = 2;
    repo(dev).add_release(&rel).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_the_check_and_the_staging_the_daemon_starts_after_it() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let (d, dev) = idle_device(&rig).await;
    let watch = tokio::spawn({
        let addr = rig.addr().to_owned();
        async move { patchctl(&addr, &["--json", "watch"]).await }
    });
    // watch is waiting for a job; none of the jobs it follows is started by it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!watch.is_finished(), "watch ended with no job running");
    publish(&dev, "2.1.0");
    let (code, out, err) = patchctl(rig.addr(), &["check"]).await;
    assert_eq!(code, 0, "check: {out}{err}");
    let (code, out, err) = tokio::time::timeout(Duration::from_secs(120), watch)
        .await
        .expect("watch ends once the staging is done")
        .unwrap();
    assert_eq!(code, 0, "{out}{err}\n{}", dev.log());
    let result: serde_json::Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("result").cloned())
        .unwrap_or_else(|| panic!("no result line: {out}"));
    assert_eq!(result["state"], "staged", "followed to the end: {out}");
    assert_eq!(
        result["kind"], "staging",
        "the staging the check led to: {out}"
    );
    assert_eq!(result["release"], "2.1.0", "{out}");
    assert_eq!(result["outcome"], "succeeded", "{out}");
    let states: Vec<&str> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["state"].as_str().map(str::to_owned))
        .map(|s| if s == "staging" { "staging" } else { "other" })
        .collect();
    assert!(states.contains(&"staging"), "saw the staging run: {out}");

    // Human output: the result and the summary line.
    let (code, out, err) = patchctl(rig.addr(), &["watch", "--exit-if-idle"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let last = out.lines().last().unwrap_or("");
    assert!(last.contains("Next:"), "summary last: {out}");
    d.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_hold_says_it_replaced_the_first() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let (d, _dev) = idle_device(&rig).await;
    let (code, out, err) = patchctl(rig.addr(), &["hold", "--reason", "first freeze"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "Hold placed.\n");
    let (code, out, err) = patchctl(
        rig.addr(),
        &["hold", "--reason", "second freeze", "--until", "7d"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("replaced the hold by uid:0: \"first freeze\""),
        "{out}"
    );
    let (_, out, _) = patchctl(rig.addr(), &["--json", "status"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let holds = v["holds"].as_array().unwrap();
    assert_eq!(holds.len(), 1, "one hold at a time: {out}");
    assert_eq!(holds[0]["reason"], "second freeze");
    let (_, out, _) = patchctl(rig.addr(), &["--json", "history", "--event", "hold"]).await;
    assert!(
        out.contains("replaces hold by uid:0: first freeze"),
        "{out}"
    );
    d.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_ask_the_daemon_for_releases() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let (d, dev) = idle_device(&rig).await;
    publish(&dev, "2.1.0");
    let (code, out, err) = patchctl(rig.addr(), &["check"]).await;
    assert_eq!(code, 0, "{out}{err}");
    // The status a Check reply leaves behind is published a moment later.
    let mut out = String::new();
    for _ in 0..100 {
        let (code, o, err) = patchctl(rig.addr(), &["__complete", "releases"]).await;
        assert_eq!(code, 0, "{o}{err}");
        out = o;
        if out.lines().any(|l| l == "2.1.0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let versions: Vec<&str> = out.lines().collect();
    assert!(versions.contains(&"2.1.0"), "the offered release: {out}");
    assert!(versions.contains(&"1.0.0"), "the running one: {out}");
    let (code, out, _) = patchctl(rig.addr(), &["__complete", "events"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        patchd::audit::events::EVENTS
    );

    let (code, bash, _) = patchctl(rig.addr(), &["completions", "bash"]).await;
    assert_eq!(code, 0);
    assert!(bash.contains("complete -F _patchctl"), "the hook: {bash}");
    assert!(bash.contains("__complete \"$1\""), "{bash}");
    for shell in ["zsh", "fish"] {
        let (code, s, _) = patchctl(rig.addr(), &["completions", shell]).await;
        assert_eq!(code, 0);
        assert!(s.contains("__complete"), "{shell}: {s}");
    }
    if have("bash") {
        // TAB after `patchctl --bus-address ADDR install ` in a real bash.
        let script = top_file(&dev, "patchctl.bash", &bash);
        let bindir = std::path::Path::new(env!("CARGO_BIN_EXE_patchctl"))
            .parent()
            .unwrap();
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=(patchctl --bus-address {} install ''); COMP_CWORD=4; \
                 _patchctl patchctl '' install; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display(),
                rig.addr()
            ))
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bindir.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .output()
            .unwrap();
        let offered = String::from_utf8_lossy(&out.stdout);
        assert!(
            offered.lines().any(|l| l == "2.1.0"),
            "bash offers the release: {offered}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=(patchctl history --event ho); COMP_CWORD=3; \
                 _patchctl patchctl ho --event; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display()
            ))
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bindir.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .output()
            .unwrap();
        let offered = String::from_utf8_lossy(&out.stdout);
        assert!(offered.lines().any(|l| l == "hold"), "events: {offered}");
        assert!(!offered.lines().any(|l| l == "staged"), "prefix: {offered}");
    }
    d.kill();
}

fn top_file(dev: &Device, name: &str, text: &str) -> std::path::PathBuf {
    let p = dev.top.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Visible text of one terminal frame: without escape sequences.
fn visible(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // CSI: parameters, then one final byte in @..~
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        if !c.is_control() {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_progress_bar_fits_a_60_column_terminal() {
    if !have("script") {
        println!("skipped: script(1) missing (util-linux)");
        return;
    }
    let Some(rig) = Rig::start().await else {
        return;
    };
    let server = FaultServer::start().await;
    let dev = rig.device(&DeviceSpec {
        image_size: 2 << 20,
        uncompressed: true,
        url: Some(server.url()),
        policy: QUIET.into(),
        ..DeviceSpec::default()
    });
    for (path, bytes) in dev.repo_files() {
        server.add(&path, bytes);
    }
    let mut d = dev.spawn(rig.addr(), &[]);
    let e = wait_until(
        &mut d,
        &dev,
        Duration::from_secs(60),
        "the first check",
        |dev| dev.audit_events().iter().any(|e| e == "check"),
    )
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    // About 3 s of download: many frames.
    server.set(Faults {
        chunk_delay: Some(Duration::from_millis(100)),
        ..Faults::default()
    });
    let cmd = format!(
        "stty cols 60 rows 24; exec {} --bus-address '{}' install 2.0.0",
        env!("CARGO_BIN_EXE_patchctl"),
        rig.addr()
    );
    let out = tokio::process::Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .env_remove("PATCHCTL_BUS_ADDRESS")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", dev.log());
    // Frames are separated by carriage returns and line feeds (and cursor moves).
    let frames: Vec<String> = text
        .split(['\r', '\n'])
        .map(visible)
        .filter(|f| !f.trim().is_empty())
        .collect();
    for f in &frames {
        assert!(
            f.chars().count() <= 60,
            "wider than 60 columns: {f:?}\n{text:?}"
        );
    }
    let bars: Vec<&String> = frames
        .iter()
        .filter(|f| f.contains('[') && f.contains(']'))
        .collect();
    assert!(bars.len() >= 2, "the bar was drawn: {text:?}");
    let first = bars[0];
    let inside = &first[first.find('[').unwrap() + 1..first.rfind(']').unwrap()];
    assert!(
        !inside.contains('='),
        "the first frame is empty, not full: {first:?}"
    );
    let labels: Vec<&str> = bars
        .iter()
        .filter_map(|b| b.split_whitespace().nth(1))
        .collect();
    let mut changes = labels.clone();
    changes.dedup();
    let mut seen = Vec::new();
    for l in &changes {
        assert!(!seen.contains(l), "label came back: {changes:?}");
        seen.push(*l);
    }
    assert!(
        frames.iter().any(|f| f.starts_with("Installed 2.0.0")),
        "{frames:?}"
    );
    let installed = frames
        .iter()
        .position(|f| f.starts_with("Installed 2.0.0"))
        .unwrap();
    let summary = frames[installed + 1..].join(" ");
    assert!(
        summary.starts_with("Fetched 2.00 MiB, reused 0 B, took")
            && summary.contains("Next: 2.0.0 switches and reboots"),
        "ends with the summary: {summary:?}"
    );
    d.kill();
}
