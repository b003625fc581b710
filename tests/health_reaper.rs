//! Health checks run under the reaper (the real `patchd __health-exec`): a check is judged
//! by its exit status, not by when its output pipes close, and its whole process tree —
//! children that stayed in its process group, left it with `setsid`, or were double-forked
//! away — is gone once the verdict is in, on pass, fail and timeout alike. Without a
//! reaper (the fallback) the verdict still comes from the exit status.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use patchd::config::HealthConfig;
use patchd::health::{ExecSettings, FixedUnits, HealthPlan, HealthReport, Verdict};
use patchd::paths::Paths;

fn script(path: &Path, body: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn plan(root: &Path, reaper: bool) -> HealthPlan {
    let paths = Paths::new(root);
    let mut p = HealthPlan::from_config(&HealthConfig::default(), &paths);
    p.trusted_uid = nix::unistd::geteuid().as_raw();
    p.check_timeout = Duration::from_secs(20);
    if reaper {
        p.exec = ExecSettings {
            reaper: Some(PathBuf::from(env!("CARGO_BIN_EXE_patchd"))),
            systemd_run: None,
        };
    }
    p
}

/// A `sleep` argument no other test (or process) uses: `300.<pid><n>`.
fn marker(n: u32) -> String {
    format!("300.{}{n:02}", std::process::id())
}

/// Live (non-zombie) processes whose command line is `sleep MARKER`.
fn with_marker(marker: &str) -> Vec<i32> {
    let want = format!("sleep\0{marker}\0");
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !cmdline.ends_with(want.as_bytes()) {
            continue;
        }
        let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rfind(')')
                    .map(|i| s[i + 1..].trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie {
            found.push(pid);
        }
    }
    found
}

/// Processes carrying one of `markers` that are still alive after a short settling time;
/// they are killed (by pid) so a failing test leaves nothing behind.
async fn survivors(markers: &[&str]) -> Vec<(String, i32)> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut left = Vec::new();
    for m in markers {
        for pid in with_marker(m) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            left.push((m.to_string(), pid));
        }
    }
    left
}

fn units() -> FixedUnits {
    FixedUnits(BTreeMap::new())
}

async fn run_one(p: &HealthPlan) -> (HealthReport, Duration) {
    let t = Instant::now();
    let r = p.run(Duration::from_secs(60), &units()).await;
    (r, t.elapsed())
}

#[tokio::test]
async fn a_check_that_exits_0_passes_at_once_and_its_background_child_is_killed() {
    let d = tempfile::tempdir().unwrap();
    let p = plan(d.path(), true);
    let m = marker(1);
    script(
        &p.health_dir.join("10-detach"),
        &format!("echo ok\nsleep {m} &\nexit 0"),
    );
    let (r, took) = run_one(&p).await;
    let left = survivors(&[&m]).await;
    assert_eq!(r.checks[0].verdict, Verdict::Pass, "{r}");
    assert!(took < Duration::from_secs(3), "took {took:?}:\n{r}");
    assert!(r.checks[0].output.starts_with("ok"), "{r}");
    assert!(
        r.checks[0].output.contains("killed 1 leftover process"),
        "{}",
        r.checks[0].output
    );
    assert!(left.is_empty(), "survived the check: {left:?}");
    // The reaping happened in the reaper, not in the caller.
    assert!(!nix::sys::prctl::get_child_subreaper().unwrap());
}

#[tokio::test]
async fn children_that_left_the_process_group_are_killed_too() {
    let d = tempfile::tempdir().unwrap();
    let p = plan(d.path(), true);
    let (m1, m2) = (marker(2), marker(3));
    script(
        &p.health_dir.join("10-escape"),
        &format!("echo ok\nsetsid sleep {m1} &\n(sleep {m2} &)\nexit 0"),
    );
    let (r, took) = run_one(&p).await;
    let left = survivors(&[&m1, &m2]).await;
    assert_eq!(r.checks[0].verdict, Verdict::Pass, "{r}");
    assert!(took < Duration::from_secs(3), "took {took:?}:\n{r}");
    assert!(left.is_empty(), "survived the check: {left:?}");
}

#[tokio::test]
async fn a_failing_check_reports_its_exit_status_and_its_children_are_killed() {
    let d = tempfile::tempdir().unwrap();
    let p = plan(d.path(), true);
    let (m1, m2) = (marker(4), marker(5));
    script(
        &p.health_dir.join("20-bad"),
        &format!("sleep {m1} &\nsetsid sleep {m2} &\necho disk full >&2\nexit 3"),
    );
    let (r, took) = run_one(&p).await;
    let left = survivors(&[&m1, &m2]).await;
    assert_eq!(r.checks[0].verdict, Verdict::Fail, "{r}");
    assert!(took < Duration::from_secs(3), "took {took:?}:\n{r}");
    let out = &r.checks[0].output;
    assert!(out.starts_with("exit status: 3"), "{out}");
    assert!(out.contains("disk full"), "{out}");
    assert!(left.is_empty(), "survived the check: {left:?}");
    assert!(
        r.summary().contains("20-bad (drop-in): exit status: 3"),
        "{}",
        r.summary()
    );
}

#[tokio::test]
async fn a_hanging_check_times_out_and_its_whole_tree_is_killed() {
    let d = tempfile::tempdir().unwrap();
    let mut p = plan(d.path(), true);
    p.check_timeout = Duration::from_secs(1);
    let (m1, m2) = (marker(6), marker(7));
    script(
        &p.health_dir.join("10-hang"),
        &format!("setsid sleep {m1} &\nsleep {m2}"),
    );
    let (r, took) = run_one(&p).await;
    let left = survivors(&[&m1, &m2]).await;
    assert_eq!(r.checks[0].verdict, Verdict::Fail, "{r}");
    assert!(took < Duration::from_secs(4), "took {took:?}:\n{r}");
    let out = &r.checks[0].output;
    // sh, its sleep, and the setsid'd sleep.
    assert!(
        out.starts_with("timed out after 1s; killed (3 processes)"),
        "{out}"
    );
    assert!(left.is_empty(), "survived the timeout: {left:?}");
}

#[tokio::test]
async fn a_check_killed_by_a_signal_fails_and_says_so() {
    let d = tempfile::tempdir().unwrap();
    let p = plan(d.path(), true);
    script(&p.health_dir.join("10-signal"), "kill -USR1 $$");
    let (r, _) = run_one(&p).await;
    assert_eq!(r.checks[0].verdict, Verdict::Fail, "{r}");
    let out = &r.checks[0].output;
    assert!(out.starts_with("exit status: 138"), "{out}");
    assert!(out.contains("killed by signal 10 (SIGUSR1)"), "{out}");
}

#[tokio::test]
async fn without_a_reaper_the_exit_status_still_decides_within_the_grace() {
    let d = tempfile::tempdir().unwrap();
    let p = plan(d.path(), false);
    let m = marker(8);
    script(
        &p.health_dir.join("10-detach"),
        &format!("echo ok\nsleep {m} &\nexit 0"),
    );
    let (r, took) = run_one(&p).await;
    let left = survivors(&[&m]).await;
    assert_eq!(r.checks[0].verdict, Verdict::Pass, "{r}");
    assert_eq!(r.checks[0].output, "ok", "{r}");
    assert!(took < Duration::from_secs(3), "took {took:?}:\n{r}");
    // Same process group: the fallback's group kill reaches it.
    assert!(left.is_empty(), "survived the check: {left:?}");
}

#[tokio::test]
async fn the_reaper_ends_a_check_by_itself_when_nobody_stops_it() {
    // As if the daemon had died: nobody sends SIGTERM, the reaper's own deadline acts.
    let (m1, m2) = (marker(9), marker(10));
    let t = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_patchd"))
        .args(["__health-exec", "--timeout", "1", "--", "/bin/sh", "-c"])
        .arg(format!("setsid sleep {m1} & sleep {m2}"))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let left = survivors(&[&m1, &m2]).await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(out.status.code(), Some(128 + 14), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("killed 3 processes of the check (timed out)"),
        "{err}"
    );
    assert!(left.is_empty(), "survived: {left:?}");
}

#[test]
fn the_reaper_mode_is_not_in_the_help() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_patchd"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("boot-check"), "{help}");
    assert!(!help.contains("health-exec"), "{help}");
}

#[tokio::test]
async fn a_check_abandoned_by_the_daemon_is_stopped_with_its_tree() {
    // The health run's future is dropped mid-check (the daemon shutting down).
    let d = tempfile::tempdir().unwrap();
    let p = plan(d.path(), true);
    let (m1, m2) = (marker(11), marker(12));
    let started = d.path().join("started");
    script(
        &p.health_dir.join("10-hang"),
        &format!(
            "setsid sleep {m1} &\ntouch {}\nsleep {m2}",
            started.display()
        ),
    );
    let run = tokio::spawn(async move { p.run(Duration::from_secs(60), &units()).await });
    let t = Instant::now();
    while !started.exists() && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(started.exists(), "the check never started");
    run.abort();
    let _ = run.await;
    // The reaper gets SIGTERM and needs a moment to kill and reap the tree.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3)
        && !(with_marker(&m1).is_empty() && with_marker(&m2).is_empty())
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = survivors(&[&m1, &m2]).await;
    assert!(left.is_empty(), "survived the abandoned check: {left:?}");
}

#[tokio::test]
async fn the_scope_path_runs_the_reaper_in_place_of_systemd_run() {
    // Only the command line and the exec-in-place contract can be checked without
    // systemd as PID 1: a stand-in systemd-run records its arguments and execs what
    // follows the first `--`, as `systemd-run --scope` does once the scope exists.
    let d = tempfile::tempdir().unwrap();
    let mut p = plan(d.path(), true);
    let fake = d.path().join("bin/systemd-run");
    let argv = d.path().join("systemd-run.args");
    script(
        &fake,
        &format!(
            "echo \"$@\" > {}\nwhile [ \"$1\" != -- ]; do shift; done\nshift\nexec \"$@\"",
            argv.display()
        ),
    );
    p.exec.systemd_run = Some(fake);
    let m = marker(13);
    script(
        &p.health_dir.join("10-detach"),
        &format!("echo ok\nsetsid sleep {m} &\nexit 0"),
    );
    let (r, took) = run_one(&p).await;
    let left = survivors(&[&m]).await;
    assert_eq!(r.checks[0].verdict, Verdict::Pass, "{r}");
    assert!(took < Duration::from_secs(3), "took {took:?}:\n{r}");
    assert!(left.is_empty(), "survived the check: {left:?}");
    let args = fs::read_to_string(&argv).unwrap();
    assert!(
        args.starts_with("--scope --quiet --collect --unit=patchd-health-")
            && args.contains("-10-detach.scope -- ")
            && args.contains(" __health-exec --timeout "),
        "{args}"
    );
}
