//! Running one check: executables (with ownership rules, judged by exit status, their
//! whole process tree killed at the end), units, HTTP probes.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

use super::report::{CheckKind, CheckResult, Verdict};
use super::spec::HttpProbe;
use super::systemd::UnitQuery;

const OUTPUT_TAIL: usize = 4096;

pub(crate) enum Task {
    Command {
        name: String,
        kind: CheckKind,
        argv: Vec<String>,
        /// `argv[0]` resolved under the root.
        path: PathBuf,
        timeout: Duration,
        required: bool,
    },
    Unit {
        unit: String,
        timeout: Duration,
    },
    Http {
        probe: HttpProbe,
        timeout: Duration,
    },
}

fn result(
    name: &str,
    kind: CheckKind,
    required: bool,
    ok: bool,
    output: String,
    started: Instant,
) -> CheckResult {
    CheckResult {
        name: name.to_string(),
        kind,
        required,
        verdict: match (ok, required) {
            (true, _) => Verdict::Pass,
            (false, true) => Verdict::Fail,
            (false, false) => Verdict::Warn,
        },
        output,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

impl Task {
    fn ident(&self) -> (String, CheckKind, bool) {
        match self {
            Task::Command {
                name,
                kind,
                required,
                ..
            } => (name.clone(), *kind, *required),
            Task::Unit { unit, .. } => (unit.clone(), CheckKind::Unit, true),
            Task::Http { probe, .. } => (probe.name.clone(), CheckKind::Http, probe.required),
        }
    }

    pub(crate) fn not_run(&self, why: &str) -> CheckResult {
        let (name, kind, required) = self.ident();
        result(
            &name,
            kind,
            required,
            false,
            why.to_string(),
            Instant::now(),
        )
    }

    pub(crate) async fn run(
        &self,
        left: Duration,
        units: &dyn UnitQuery,
        trusted_uid: u32,
        exec: &ExecSettings,
    ) -> CheckResult {
        let started = Instant::now();
        let (name, kind, required) = self.ident();
        let (ok, output) = match self {
            Task::Command {
                argv,
                path,
                timeout,
                ..
            } => {
                run_exec(
                    path,
                    argv.get(1..).unwrap_or(&[]),
                    (*timeout).min(left),
                    trusted_uid,
                    exec,
                    &name,
                )
                .await
            }
            Task::Unit { unit, timeout } => {
                match tokio::time::timeout((*timeout).min(left), units.active_state(unit)).await {
                    Err(_) => (
                        false,
                        format!("asking systemd timed out after {:?}", (*timeout).min(left)),
                    ),
                    Ok(Err(e)) => (false, e.to_string()),
                    Ok(Ok(state)) if state == "active" => (true, "active".to_string()),
                    Ok(Ok(state)) => (false, format!("unit is {state}, not active")),
                }
            }
            Task::Http { probe, timeout } => http(probe, (*timeout).min(left)).await,
        };
        result(&name, kind, required, ok, output, started)
    }
}

/// Why `path` may not be run: not owned by `uid`, or writable by group/others. Checked
/// for the file and its directory.
pub(crate) fn ownership_problem(path: &Path, uid: u32) -> Option<String> {
    let check = |p: &Path, what: &str| -> Option<String> {
        match fs::metadata(p) {
            Err(e) => Some(format!("{what} {}: {e}", p.display())),
            Ok(m) if m.uid() != uid => Some(format!(
                "{what} {} is owned by uid {}, not {uid}: refusing to run it",
                p.display(),
                m.uid()
            )),
            Ok(m) if m.mode() & 0o022 != 0 => Some(format!(
                "{what} {} is group- or world-writable (mode {:o}): refusing to run it",
                p.display(),
                m.mode() & 0o7777
            )),
            Ok(_) => None,
        }
    };
    check(path, "file").or_else(|| path.parent().and_then(|d| check(d, "directory")))
}

/// Drop-in executables (`health.d/*` required, `health.d/wanted/*` warnings), plus
/// results for entries that cannot be run at all (listing errors).
pub(crate) fn dropins(dir: &Path, timeout: Duration, _uid: u32) -> (Vec<Task>, Vec<CheckResult>) {
    let mut tasks = Vec::new();
    let mut problems = Vec::new();
    for (d, kind, required) in [
        (dir.to_path_buf(), CheckKind::DropIn, true),
        (dir.join("wanted"), CheckKind::Wanted, false),
    ] {
        // An entry that cannot be run fails (or, under `wanted/`, warns) at once.
        let unusable =
            |name: &str, why: String| result(name, kind, required, false, why, Instant::now());
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                problems.push(unusable(
                    &d.display().to_string(),
                    format!("cannot list {}: {e}", d.display()),
                ));
                continue;
            }
        };
        let mut entries: Vec<(String, PathBuf)> = rd
            .filter_map(|e| e.ok())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .filter(|(n, _)| !n.starts_with('.'))
            .collect();
        entries.sort();
        for (name, path) in entries {
            let Ok(meta) = fs::metadata(&path) else {
                problems.push(unusable(
                    &name,
                    format!("{}: cannot stat (dangling link?)", path.display()),
                ));
                continue;
            };
            if meta.is_dir() {
                continue;
            }
            if meta.permissions().mode() & 0o111 == 0 {
                problems.push(unusable(
                    &name,
                    format!(
                        "{} is not executable (chmod 755 it, or remove it)",
                        path.display()
                    ),
                ));
                continue;
            }
            tasks.push(Task::Command {
                name: name.clone(),
                kind,
                argv: vec![path.display().to_string()],
                path,
                timeout,
                required,
            });
        }
    }
    (tasks, problems)
}

/// How long output is still read after the check's main process exited: a leftover
/// child holding the pipe must not hold up the verdict.
pub(crate) const OUTPUT_GRACE: Duration = Duration::from_millis(500);
/// After SIGTERM on timeout, how long the reaper gets to kill the tree and exit.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// How executables are started. The daemon's composition root fills it in; the default
/// (no reaper) runs checks directly and kills only their process group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSettings {
    /// The `patchd` binary, run as `patchd __health-exec -- PATH ARGS...` between the
    /// daemon and each check (see [`super::reaper`]).
    pub reaper: Option<PathBuf>,
    /// `systemd-run`, to start each reaper in its own transient scope (only with a
    /// reaper; chosen by [`ExecSettings::detect`] when systemd runs the machine).
    pub systemd_run: Option<PathBuf>,
}

impl ExecSettings {
    /// `reaper` as given, with a transient scope per check when systemd is PID 1
    /// (`/run/systemd/system` exists), `systemd-run` is installed, and a trial scope
    /// works from where the daemon runs (else a scope failure would fail every check).
    pub async fn detect(reaper: Option<PathBuf>) -> Self {
        let mut systemd_run = None;
        if let Some(r) = &reaper {
            if Path::new("/run/systemd/system").is_dir() {
                if let Some(run) = super::scope::find_tool("systemd-run") {
                    if super::scope::works(&run, r).await {
                        systemd_run = Some(run);
                    }
                }
            }
        }
        tracing::info!(
            reaper = ?reaper, systemd_scope = systemd_run.is_some(),
            "how health checks run"
        );
        Self {
            reaper,
            systemd_run,
        }
    }
}

async fn read_tail<R: AsyncRead + Unpin>(mut r: R, tail: &mut Vec<u8>) {
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * OUTPUT_TAIL {
                    tail.drain(..tail.len() - OUTPUT_TAIL);
                }
            }
        }
    }
}

fn tail_text(mut b: Vec<u8>) -> String {
    if b.len() > OUTPUT_TAIL {
        b.drain(..b.len() - OUTPUT_TAIL);
    }
    String::from_utf8_lossy(&b).trim_end().to_string()
}

/// The reaper's own deadline: later than ours, so it only acts when the daemon died.
fn reaper_timeout(timeout: Duration) -> u64 {
    (timeout + TERM_GRACE).as_secs() + 5
}

/// What is still to be stopped if the check's future is dropped before it ended (daemon
/// shutdown): the reaper is asked to kill the tree (SIGKILL would leave it orphaned), or,
/// without one, the check's process group is killed.
struct StopOnDrop {
    pid: Option<nix::unistd::Pid>,
    reaped: bool,
}

impl StopOnDrop {
    fn stop(&mut self) {
        use nix::sys::signal::{kill, killpg, Signal};
        if let Some(p) = self.pid.take() {
            let _ = if self.reaped {
                kill(p, Signal::SIGTERM)
            } else {
                killpg(p, Signal::SIGKILL)
            };
        }
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How the process the daemon started ended.
enum Ended {
    Exited(std::io::Result<std::process::ExitStatus>),
    /// Timed out; `stopped`: it exited within the grace after being told to stop.
    TimedOut {
        stopped: bool,
    },
}

/// Run one executable check: pass when it exits 0. Output is read until a short grace
/// after the main process exited; then its whole process tree is killed (through the
/// reaper, or the process group without one), on timeout too.
///
/// Long on purpose: spawning, reading output, the grace after exit and the kill of the
/// tree share the child and its deadlines; one body keeps every path to the kill visible.
pub(crate) async fn run_exec(
    path: &Path,
    args: &[String],
    timeout: Duration,
    uid: u32,
    exec: &ExecSettings,
    name: &str,
) -> (bool, String) {
    if let Some(why) = ownership_problem(path, uid) {
        return (false, why);
    }
    let scope = match (&exec.reaper, &exec.systemd_run) {
        (Some(_), Some(_)) => Some(super::scope::unit_name(name)),
        _ => None,
    };
    let mut cmd = match (&exec.reaper, &exec.systemd_run, &scope) {
        (Some(reaper), Some(run), Some(unit)) => {
            super::scope::command(run, unit, reaper, reaper_timeout(timeout), path, args)
        }
        (Some(reaper), _, _) => {
            let mut c = tokio::process::Command::new(reaper);
            c.arg0("patchd-health-exec")
                .arg(super::reaper::SUBCOMMAND)
                .arg("--timeout")
                .arg(reaper_timeout(timeout).to_string())
                .arg("--")
                .arg(path)
                .args(args);
            c
        }
        (None, _, _) => {
            let mut c = tokio::process::Command::new(path);
            c.args(args);
            c
        }
    };
    cmd.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // The reaper is stopped by SIGTERM (see StopOnDrop), so it can clean up.
        .kill_on_drop(exec.reaper.is_none());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let what = exec.reaper.as_deref().unwrap_or(path);
            return (false, format!("cannot run {}: {e}", what.display()));
        }
    };
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .map(nix::unistd::Pid::from_raw);
    let reaped = exec.reaper.is_some();
    let mut stop_on_drop = StopOnDrop { pid, reaped };
    let (mut out_tail, mut err_tail) = (Vec::new(), Vec::new());
    let ended = {
        let out = child.stdout.take();
        let err = child.stderr.take();
        let read = async {
            tokio::join!(
                async {
                    if let Some(o) = out {
                        read_tail(o, &mut out_tail).await
                    }
                },
                async {
                    if let Some(e) = err {
                        read_tail(e, &mut err_tail).await
                    }
                }
            )
        };
        tokio::pin!(read);
        let wait = child.wait();
        tokio::pin!(wait);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut read_done = false;
        let first = loop {
            tokio::select! {
                st = &mut wait => break Some(st),
                _ = &mut read, if !read_done => read_done = true,
                _ = &mut deadline => break None,
            }
        };
        match first {
            Some(st) => {
                if !read_done {
                    let _ = tokio::time::timeout(OUTPUT_GRACE, &mut read).await;
                }
                Ended::Exited(st)
            }
            None => {
                // The reaper kills the tree, counts it, and exits; without one, at least
                // the check's process group is killed (a shell script's children would
                // otherwise keep running and keep the pipes open).
                stop_on_drop.stop();
                let stopped = tokio::time::timeout(TERM_GRACE, async {
                    let _ = (&mut wait).await;
                    if !read_done {
                        let _ = tokio::time::timeout(OUTPUT_GRACE, &mut read).await;
                    }
                })
                .await
                .is_ok();
                Ended::TimedOut { stopped }
            }
        }
    };
    if let Ended::TimedOut { stopped: false } = ended {
        // It did not stop when asked: no count, no cleanup by the reaper; at least the
        // reaper (or the check) itself goes.
        let _ = child.kill().await;
    }
    if reaped {
        // The reaper has exited: nothing left to signal.
        stop_on_drop.pid = None;
    } else {
        // The check's main process is gone; anything left in its group is a leftover.
        stop_on_drop.stop();
    }
    if let Some(unit) = &scope {
        super::scope::stop(unit).await;
    }
    out_tail.extend_from_slice(&err_tail);
    let text = tail_text(out_tail);
    match ended {
        Ended::Exited(Ok(status)) if status.success() => (true, text),
        Ended::Exited(Ok(status)) => {
            let mut why = format!("{status}");
            if !text.is_empty() {
                why.push('\n');
                why.push_str(&text);
            }
            (false, why)
        }
        Ended::Exited(Err(e)) => (false, format!("waiting for {}: {e}", path.display())),
        Ended::TimedOut { .. } => {
            let killed = match super::reaper::killed_count(&text) {
                Some(1) => " (1 process)".to_string(),
                Some(n) => format!(" ({n} processes)"),
                None => String::new(),
            };
            let mut why = format!("timed out after {timeout:?}; killed{killed}");
            if !text.is_empty() {
                why.push('\n');
                why.push_str(&text);
            }
            (false, why)
        }
    }
}

async fn http(probe: &HttpProbe, timeout: Duration) -> (bool, String) {
    let client = match reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => return (false, format!("HTTP client: {e}")),
    };
    match client.get(probe.url.0.clone()).send().await {
        Err(e) if e.is_timeout() => (
            false,
            format!("GET {}: timed out after {timeout:?}", probe.url),
        ),
        Err(e) => (false, format!("GET {}: {e}", probe.url)),
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            // Only an excerpt of the body: a probe must not be able to fill our memory.
            let mut body = Vec::new();
            while body.len() < 512 {
                match resp.chunk().await {
                    Ok(Some(c)) => body.extend_from_slice(&c),
                    _ => break,
                }
            }
            let excerpt = String::from_utf8_lossy(&body[..body.len().min(512)])
                .trim()
                .to_string();
            if status == probe.status {
                (true, format!("HTTP {status}"))
            } else {
                (
                    false,
                    format!("HTTP {status}, expected {}\n{excerpt}", probe.status),
                )
            }
        }
    }
}
