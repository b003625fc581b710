//! Running a command inside the snapshot: chrooted, with the host's /proc, /sys, /dev
//! (and whatever else staging needs) bound in.
//!
//! The binds are made in a private mount namespace of the command itself (after
//! `fork`, before `exec`), with propagation switched to private first. So they are never
//! visible outside, nothing propagates back to the running system (an unmount of a
//! bound /dev/pts cannot take the host's with it), and they vanish with the command on
//! every path — failure, cancel, `kill -9` of patchd (the command gets SIGKILL when
//! patchd's thread dies) — with nothing left to unmount. The command also runs in a
//! PID namespace of its own, so no process it started outlives it.

use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use nix::mount::{mount, MsFlags};

/// Why a command in the snapshot could not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("{what}: could not run: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed ({status}): {tail}")]
    Failed {
        what: String,
        status: String,
        tail: String,
    },
    #[error("{what}: cancelled")]
    Cancelled { what: String },
}

/// A snapshot root and the host directories bound into it.
#[derive(Debug, Clone)]
pub struct Jail {
    root: PathBuf,
    /// (host directory, its place inside the root, absolute)
    binds: Vec<(PathBuf, PathBuf)>,
    env: Vec<(String, String)>,
}

/// The output of a command that succeeded.
pub struct Output {
    pub lines: Vec<String>,
}

impl Jail {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            binds: Vec::new(),
            env: vec![
                ("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into()),
                ("LC_ALL".into(), "C.UTF-8".into()),
                ("DEBIAN_FRONTEND".into(), "noninteractive".into()),
                ("DEBCONF_NONINTERACTIVE_SEEN".into(), "true".into()),
                ("HOME".into(), "/root".into()),
            ],
        }
    }

    /// Bind the host's `host` at `inside` (absolute, inside the root), recursively.
    pub fn bind(mut self, host: impl Into<PathBuf>, inside: impl Into<PathBuf>) -> Self {
        self.binds.push((host.into(), inside.into()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Run `argv` in the jail, stdout and stderr as one stream of lines; each line goes
    /// to `on_line` as it comes. The command is killed when `cancel` turns true.
    pub fn run(
        &self,
        what: &str,
        argv: &[String],
        cancel: &AtomicBool,
        mut on_line: impl FnMut(&str),
    ) -> Result<Output, JailError> {
        let spawn_err = |source| JailError::Spawn {
            what: what.to_string(),
            source,
        };
        let (prog, args) = argv.split_first().ok_or_else(|| {
            spawn_err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "empty command",
            ))
        })?;
        let prep = Prepared::new(&self.root, &self.binds).map_err(spawn_err)?;
        // In a PID namespace of its own under util-linux's `unshare` (Essential in
        // Debian): when `unshare` dies (killed with patchd, or on cancel) its child, the
        // namespace's init, gets SIGKILL, and with it every process of the staging —
        // dpkg and maintainer scripts included, none left running in the snapshot. The
        // init is a shell that runs the command as its child (apt-get as init does not
        // keep the parent-death signal).
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork", "--kill-child=SIGKILL", "--"])
            .args(["/bin/sh", "-c", "\"$@\"", "sh"])
            .arg(prog)
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: the closure only makes system calls on memory prepared before the fork
        // (no allocation, no locks), as `pre_exec` requires.
        unsafe {
            cmd.pre_exec(move || prep.enter());
        }
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(spawn_err(std::io::Error::other("no stdout pipe")));
        };
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                if tx
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let mut cancelled = false;
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(l) => {
                    on_line(&l);
                    lines.push(l);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if !cancelled && cancel.load(Ordering::SeqCst) {
                cancelled = true;
                let _ = child.kill();
            }
        }
        let _ = reader.join();
        let status = child.wait().map_err(spawn_err)?;
        if cancelled {
            return Err(JailError::Cancelled { what: what.into() });
        }
        if !status.success() {
            return Err(JailError::Failed {
                what: what.into(),
                status: status.to_string(),
                tail: tail(&lines, 12),
            });
        }
        Ok(Output { lines })
    }
}

/// The last `n` non-empty lines, joined (the part of apt's output that says why).
pub fn tail(lines: &[String], n: usize) -> String {
    let kept: Vec<&str> = lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    kept[kept.len().saturating_sub(n)..].join(" | ")
}

/// Everything the child needs after `fork`, made before it.
struct Prepared {
    root: CString,
    binds: Vec<(CString, CString)>,
}

fn cstr(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in a path"))
}

impl Prepared {
    fn new(root: &Path, binds: &[(PathBuf, PathBuf)]) -> std::io::Result<Self> {
        let mut out = Vec::new();
        for (host, inside) in binds {
            let rel = inside.strip_prefix("/").unwrap_or(inside);
            let dst = root.join(rel);
            std::fs::create_dir_all(&dst)?;
            out.push((cstr(host)?, cstr(&dst)?));
        }
        Ok(Self {
            root: cstr(root)?,
            binds: out,
        })
    }

    /// In the child: die with the parent thread, a mount namespace of its own, binds,
    /// chroot. Async-signal-safe calls only.
    fn enter(&self) -> std::io::Result<()> {
        let err = |e: nix::Error| std::io::Error::from_raw_os_error(e as i32);
        // SAFETY: plain system calls with constant arguments.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // stderr joins stdout, so apt's errors come in order with its output.
            if libc::dup2(1, 2) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        mount(
            None::<&str>,
            c"/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(err)?;
        for (host, dst) in &self.binds {
            mount(
                Some(host.as_c_str()),
                dst.as_c_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(err)?;
        }
        nix::unistd::chroot(self.root.as_c_str()).map_err(err)?;
        nix::unistd::chdir(c"/").map_err(err)?;
        Ok(())
    }
}
