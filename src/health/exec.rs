//! Running one check: executables (with ownership rules and process-group kill), units,
//! HTTP probes.

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
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                problems.push(result(
                    &d.display().to_string(),
                    kind,
                    required,
                    false,
                    format!("cannot list {}: {e}", d.display()),
                    Instant::now(),
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
                problems.push(result(
                    &name,
                    kind,
                    required,
                    false,
                    format!("{}: cannot stat (dangling link?)", path.display()),
                    Instant::now(),
                ));
                continue;
            };
            if meta.is_dir() {
                continue;
            }
            if meta.permissions().mode() & 0o111 == 0 {
                problems.push(result(
                    &name,
                    kind,
                    required,
                    false,
                    format!(
                        "{} is not executable (chmod 755 it, or remove it)",
                        path.display()
                    ),
                    Instant::now(),
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

async fn read_tail<R: AsyncRead + Unpin>(mut r: R) -> Vec<u8> {
    let mut tail = Vec::new();
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
    tail
}

fn tail_text(mut b: Vec<u8>) -> String {
    if b.len() > OUTPUT_TAIL {
        b.drain(..b.len() - OUTPUT_TAIL);
    }
    String::from_utf8_lossy(&b).trim_end().to_string()
}

async fn run_exec(path: &Path, args: &[String], timeout: Duration, uid: u32) -> (bool, String) {
    if let Some(why) = ownership_problem(path, uid) {
        return (false, why);
    }
    let mut cmd = tokio::process::Command::new(path);
    cmd.args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot run {}: {e}", path.display())),
    };
    let pid = child.id();
    let out = child.stdout.take();
    let err = child.stderr.take();
    // Both streams into one tail buffer: stdout first, then stderr (each bounded).
    let reader = async move {
        let (a, b) = tokio::join!(
            async {
                match out {
                    Some(o) => read_tail(o).await,
                    None => Vec::new(),
                }
            },
            async {
                match err {
                    Some(e) => read_tail(e).await,
                    None => Vec::new(),
                }
            }
        );
        let mut v = a;
        v.extend_from_slice(&b);
        v
    };
    let both = async { tokio::join!(child.wait(), reader) };
    match tokio::time::timeout(timeout, both).await {
        Ok((Ok(status), output)) => {
            let text = tail_text(output);
            if status.success() {
                (true, text)
            } else {
                let mut why = format!("{status}");
                if !text.is_empty() {
                    why.push('\n');
                    why.push_str(&text);
                }
                (false, why)
            }
        }
        Ok((Err(e), _)) => (false, format!("waiting for {}: {e}", path.display())),
        Err(_) => {
            // Kill the whole process group: a shell script's children would otherwise keep
            // running (and keep the pipes open).
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill().await;
            (false, format!("timed out after {timeout:?}; killed"))
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
