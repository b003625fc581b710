//! `handler`: the device's own executable installs the payload (microcontrollers and
//! other custom targets). Its path comes from the device configuration, never from a
//! manifest, and it runs only when it is a root-owned regular executable that neither
//! it nor its directory lets group or others write.
//!
//! Protocol (docs/components.md): stdin is the verified payload (a regular file, so the
//! handler may also seek or `fstat` it), or with `input = "fd"` an inherited read-only
//! descriptor of it whose number is in `PATCHD_PAYLOAD_FD` (stdin is then `/dev/null`);
//! the environment is `PATH`, `LANG=C`,
//! `PATCHD_COMPONENT`, `PATCHD_VERSION`, `PATCHD_SLOT`, `PATCHD_SHA256`, `PATCHD_SIZE`,
//! `PATCHD_ACTION` (`install` or `rollback`); stdout lines `progress N [TEXT]` (N 0..=100)
//! and `status TEXT` are progress, other lines are logged; exit status 0 is success,
//! anything else (or the timeout) is failure. patchd keeps the payload of the installed
//! version and of the one before, so `reinstall_previous` can give the handler the
//! previous payload again; what is installed is patchd's record of the last success (a
//! run a power cut interrupted is rolled back at start-up, since the target may hold
//! part of the new payload).

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::config::HandlerInput;
use super::{io_err, ComponentError, Installed, Installer, Job};
use crate::fsutil;
use crate::manifest::Component;
use crate::paths::Paths;

/// Where patchd keeps handler components' payloads and records, below the root.
pub const HANDLER_DIR: &str = "/var/lib/patchd/components";

#[derive(Debug, Clone)]
pub struct HandlerSettings {
    /// The executable (already resolved under the root).
    pub path: PathBuf,
    pub timeout: Duration,
    /// Owner the executable must have (0 on devices).
    pub trusted_uid: u32,
    /// How the payload is given to it.
    pub input: HandlerInput,
}

/// The payload as an inherited descriptor: an open read-only file at a number of 3 or
/// more (never one the child's standard streams take over), close-on-exec in patchd so
/// that no other child inherits it; only the handler's child side clears that flag.
struct PayloadFd {
    fd: std::os::fd::OwnedFd,
}

impl PayloadFd {
    fn open(payload: &Path) -> std::io::Result<Self> {
        use std::os::fd::{AsRawFd, FromRawFd};
        // std opens read-only with O_CLOEXEC.
        let file = fs::File::open(payload)?;
        let raw = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
            .map_err(std::io::Error::from)?;
        // SAFETY: `raw` was just returned by F_DUPFD_CLOEXEC, is open and owned by no one
        // else.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        Ok(Self { fd })
    }

    fn number(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }

    /// Let the handler inherit the descriptor: clear close-on-exec in the child between
    /// fork and exec (one `fcntl`, async-signal-safe, no allocation).
    fn pass_to(&self, cmd: &mut Command) {
        let fd = self.number();
        // SAFETY: the closure only calls fcntl(2) on a descriptor number copied in
        // before the fork; it allocates nothing and takes no lock.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

#[derive(Debug, Clone)]
pub struct Handler {
    settings: HandlerSettings,
    base: PathBuf,
}

/// One progress line of a handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Percent(u8, String),
    Status(String),
}

/// Read one stdout line of a handler; `None` for lines that are not progress.
pub fn parse_progress(line: &str) -> Option<Progress> {
    let line = line.trim_end();
    if let Some(rest) = line.strip_prefix("progress ") {
        let (n, text) = rest.split_once(' ').unwrap_or((rest, ""));
        let n: u8 = n.parse().ok().filter(|n| *n <= 100)?;
        return Some(Progress::Percent(n, text.trim().to_string()));
    }
    line.strip_prefix("status ")
        .map(|t| Progress::Status(t.trim().to_string()))
}

/// The install record of handler component `name`, kept in `dir`.
fn read_record_in(dir: &Path, name: &str) -> Result<Option<Record>, ComponentError> {
    let p = dir.join("installed.json");
    match fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| ComponentError::failed(name, format!("{}: {e}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ComponentError::io(
            name,
            format!("reading {}", p.display()),
            e,
        )),
    }
}

/// What handler component `name` (directory `dir`) has installed, by patchd's record.
pub(super) fn installed_in(dir: &Path, name: &str) -> Result<Option<Installed>, ComponentError> {
    Ok(read_record_in(dir, name)?.map(|r| r.installed))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    installed: Installed,
    /// What was installed before (its payload is kept for `reinstall_previous`).
    #[serde(default)]
    previous: Option<Installed>,
}

impl Handler {
    pub fn new(paths: &Paths, settings: HandlerSettings) -> Self {
        Self {
            settings,
            base: paths.resolve(HANDLER_DIR),
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }

    fn read_record(&self, name: &str) -> Result<Option<Record>, ComponentError> {
        read_record_in(&self.dir(name), name)
    }

    fn write_record(&self, name: &str, r: &Record) -> Result<(), ComponentError> {
        let body =
            serde_json::to_vec(r).map_err(|e| ComponentError::failed(name, e.to_string()))?;
        fsutil::atomic_write(&self.dir(name).join("installed.json"), &body)
            .map_err(io_err(name, "writing the install record"))
    }

    /// Refuse a handler anyone but its trusted owner could have changed.
    pub fn check_executable(&self, component: &str) -> Result<(), ComponentError> {
        let path = &self.settings.path;
        let refuse = |why: String| ComponentError::HandlerRefused {
            name: component.to_string(),
            path: path.display().to_string(),
            why,
        };
        let m = fs::metadata(path).map_err(|e| refuse(e.to_string()))?;
        if !m.is_file() {
            return Err(refuse("not a regular file".into()));
        }
        if m.uid() != self.settings.trusted_uid {
            return Err(refuse(format!(
                "owned by uid {}, must be owned by uid {}",
                m.uid(),
                self.settings.trusted_uid
            )));
        }
        let mode = m.permissions().mode();
        if mode & 0o022 != 0 {
            return Err(refuse(format!(
                "mode {:o} is group- or world-writable",
                mode & 0o7777
            )));
        }
        if mode & 0o100 == 0 {
            return Err(refuse("not executable by its owner".into()));
        }
        if let Some(parent) = path.parent() {
            let d = fs::metadata(parent).map_err(|e| refuse(e.to_string()))?;
            if d.permissions().mode() & 0o022 != 0 && d.permissions().mode() & 0o1000 == 0 {
                return Err(refuse(format!(
                    "its directory {} is group- or world-writable",
                    parent.display()
                )));
            }
        }
        Ok(())
    }

    /// Run the handler on `payload`; `Ok` on exit status 0 within the timeout.
    fn run(&self, job: &Job<'_>, payload: &Path, action: &str) -> Result<(), ComponentError> {
        let c = job.component;
        let name = c.name.as_str();
        self.check_executable(name)?;
        let mut cmd = Command::new(&self.settings.path);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C")
            .env("PATCHD_COMPONENT", name)
            .env("PATCHD_VERSION", &c.version)
            .env("PATCHD_SLOT", job.slot)
            .env("PATCHD_SHA256", &c.sha256)
            .env("PATCHD_SIZE", c.size.to_string())
            .env("PATCHD_ACTION", action)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // Open at the fork; the child's copy is the handler's.
        let mut payload_fd = None;
        match self.settings.input {
            HandlerInput::Stdin => {
                let f = fs::File::open(payload).map_err(io_err(name, "opening the payload"))?;
                cmd.stdin(Stdio::from(f));
            }
            HandlerInput::Fd => {
                let p = PayloadFd::open(payload).map_err(io_err(name, "opening the payload"))?;
                p.pass_to(&mut cmd);
                cmd.stdin(Stdio::null())
                    .env("PATCHD_PAYLOAD_FD", p.number().to_string());
                payload_fd = Some(p);
            }
        }
        let spawned = cmd.spawn();
        drop(payload_fd);
        let mut child = spawned.map_err(io_err(name, "starting the handler"))?;
        let pid = child.id();
        let out = child.stdout.take();
        let err = child.stderr.take();
        let comp = name.to_string();
        let reader = std::thread::spawn(move || {
            if let Some(out) = out {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    match parse_progress(&line) {
                        Some(Progress::Percent(n, t)) => {
                            tracing::info!(component = %comp, percent = n, "{t}")
                        }
                        Some(Progress::Status(t)) => tracing::info!(component = %comp, "{t}"),
                        None => tracing::debug!(component = %comp, "handler: {line}"),
                    }
                }
            }
        });
        let err_reader = std::thread::spawn(move || {
            let mut tail = String::new();
            if let Some(err) = err {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    tail.push_str(&line);
                    tail.push('\n');
                    if tail.len() > 4096 {
                        tail.drain(..tail.len() - 2048);
                    }
                }
            }
            tail
        });
        let started = Instant::now();
        let status = loop {
            match child
                .try_wait()
                .map_err(io_err(name, "waiting for the handler"))?
            {
                Some(s) => break Some(s),
                None if started.elapsed() >= self.settings.timeout => break None,
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let Some(status) = status else {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait();
            return Err(ComponentError::failed(
                name,
                format!(
                    "handler did not finish within {}s and was killed",
                    self.settings.timeout.as_secs()
                ),
            ));
        };
        let _ = reader.join();
        let tail = err_reader.join().unwrap_or_default();
        if !status.success() {
            return Err(ComponentError::failed(
                name,
                format!("handler failed ({status}): {}", tail.trim()),
            ));
        }
        Ok(())
    }
}

/// Where the payload with `sha256` is kept (payloads are named by their hash, so a
/// rollback finds the one it needs whatever step a power cut interrupted).
fn payload(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(format!("{sha256}.payload"))
}

/// Remove every kept payload but those of `keep`.
fn prune(dir: &Path, keep: &[&str]) -> std::io::Result<()> {
    for e in fs::read_dir(dir)?.filter_map(Result::ok) {
        let n = e.file_name().to_string_lossy().to_string();
        if let Some(sha) = n.strip_suffix(".payload") {
            if !keep.contains(&sha) {
                fs::remove_file(e.path())?;
            }
        }
    }
    fsutil::fsync_dir(dir)
}

impl Installer for Handler {
    fn installed(&self, name: &str) -> Result<Option<Installed>, ComponentError> {
        Ok(self.read_record(name)?.map(|r| r.installed))
    }

    /// What the target runs is known only from patchd's record: a run a power cut
    /// interrupted may have changed it.
    fn reads_back(&self) -> bool {
        false
    }

    /// Keep the verified payload beside the record, named by its hash.
    fn stage(&self, job: &Job<'_>) -> Result<(), ComponentError> {
        let name = job.component.name.as_str();
        let dir = self.dir(name);
        fsutil::ensure_dir(&dir, 0o700)
            .map_err(io_err(name, "creating the component directory"))?;
        self.check_executable(name)?;
        let bytes = fs::read(job.file).map_err(io_err(name, "reading the payload"))?;
        fsutil::atomic_write(&payload(&dir, &job.component.sha256), &bytes)
            .map_err(io_err(name, "keeping the payload"))
    }

    fn switch(&self, job: &Job<'_>) -> Result<(), ComponentError> {
        let c = job.component;
        let name = c.name.as_str();
        let dir = self.dir(name);
        let before = self.read_record(name)?;
        if before
            .as_ref()
            .is_some_and(|r| r.installed.sha256 == c.sha256)
        {
            return Ok(());
        }
        self.run(job, &payload(&dir, &c.sha256), "install")?;
        let previous = before.map(|r| r.installed);
        self.write_record(
            name,
            &Record {
                installed: Installed {
                    version: c.version.clone(),
                    sha256: c.sha256.clone(),
                    copy: None,
                    origin: job.release.to_string(),
                },
                previous: previous.clone(),
            },
        )?;
        let mut keep = vec![c.sha256.as_str()];
        keep.extend(previous.as_ref().map(|p| p.sha256.as_str()));
        prune(&dir, &keep).map_err(io_err(name, "removing old payloads"))
    }

    /// Install `before`'s payload again. Also after a failed or interrupted run (the
    /// handler may have written part of the new one), so it does not ask the record.
    fn roll_back(&self, c: &Component, before: Option<&Installed>) -> Result<(), ComponentError> {
        let name = c.name.as_str();
        let Some(before) = before else {
            return Err(ComponentError::failed(
                name,
                "nothing was installed before; a handler component cannot be uninstalled",
            ));
        };
        let dir = self.dir(name);
        let prev = payload(&dir, &before.sha256);
        if !prev.exists() {
            return Err(ComponentError::failed(
                name,
                format!("the payload of version {} is not kept", before.version),
            ));
        }
        let size = fs::metadata(&prev).map(|m| m.len()).unwrap_or_default();
        let old = Component {
            version: before.version.clone(),
            sha256: before.sha256.clone(),
            size,
            ..c.clone()
        };
        let job = Job {
            component: &old,
            file: &prev,
            release: &before.origin,
            slot: "",
        };
        self.run(&job, &prev, "rollback")?;
        self.write_record(
            name,
            &Record {
                installed: before.clone(),
                previous: None,
            },
        )
    }
}
