//! `patchctl install --bundle FILE.tar|DIR`: the bundle is opened here, with the
//! caller's rights, and reaches the daemon as one file descriptor of a tar stream — the
//! daemon never opens a path on a caller's behalf (DESIGN's rule).
//!
//! A tar file (or a stream of one: `--bundle /dev/stdin`) is passed as it is, as a
//! read-only descriptor. A directory is not passed as
//! a directory descriptor: the root daemon would `openat()` through it, and a symlink in
//! a directory the caller controls would take it to files the caller cannot read. Nor
//! one descriptor per file: a bundle has a file per root version and per target, more
//! than a message may carry. Instead patchctl writes the directory's `metadata/` and
//! `targets/` as a tar stream into a pipe, reading them with its own rights (a symlink
//! there is followed as the caller, who can read it anyway), and passes the pipe's read
//! end; the daemon takes the same stream as from a tar file, so there is one reader.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use super::{exit, CtlError};

/// The descriptor to send, and the thread writing a directory into it (joined after the
/// call: the daemon reads the stream while the call runs).
pub struct Opened {
    pub fd: OwnedFd,
    pub writer: Option<JoinHandle<std::io::Result<()>>>,
}

pub fn open(path: &Path) -> Result<Opened, CtlError> {
    let bad = |why: String| {
        CtlError::new(
            exit::INVALID_ARGUMENT,
            format!("bundle {}: {why}", path.display()),
        )
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if !meta.is_dir() {
        // A tar file, or any stream of one (`--bundle /dev/stdin`, a FIFO, a tape).
        let f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        return Ok(Opened {
            fd: f.into(),
            writer: None,
        });
    }
    let dirs = [path.join("metadata"), path.join("targets")];
    for d in &dirs {
        if !d.is_dir() {
            return Err(bad(format!(
                "no {} directory: not a bundle (`patchpub bundle` writes metadata/ and targets/)",
                d.file_name().and_then(|n| n.to_str()).unwrap_or_default()
            )));
        }
    }
    let (reader, writer) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| bad(format!("pipe: {e}")))?;
    let writer = std::fs::File::from(writer);
    let handle = std::thread::spawn(move || write_tar(writer, dirs));
    Ok(Opened {
        fd: reader,
        writer: Some(handle),
    })
}

fn write_tar(out: std::fs::File, dirs: [PathBuf; 2]) -> std::io::Result<()> {
    // patchctl restores the default SIGPIPE action for its own output; a daemon that
    // refuses the bundle and closes the pipe must end this thread with EPIPE, not the
    // process before it printed why.
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGPIPE);
    nix::sys::signal::pthread_sigmask(nix::sys::signal::SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(std::io::Error::from)?;
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Deterministic);
    for (name, dir) in ["metadata", "targets"].iter().zip(&dirs) {
        b.append_dir_all(name, dir)?;
    }
    b.into_inner()?;
    Ok(())
}

/// After the call: a writer that failed while the daemon accepted the stream means a
/// bundle read only in part; say so (a refused bundle's error is the call's).
pub fn finish(
    writer: Option<JoinHandle<std::io::Result<()>>>,
    call_ok: bool,
) -> Result<(), CtlError> {
    let Some(w) = writer else {
        return Ok(());
    };
    match w.join() {
        Ok(Err(e)) if call_ok => Err(CtlError::new(
            exit::FAILED,
            format!("reading the bundle directory failed: {e}"),
        )),
        Err(_) if call_ok => Err(CtlError::new(
            exit::FAILED,
            "reading the bundle directory failed".to_string(),
        )),
        _ => Ok(()),
    }
}

/// `patchctl list --bundle`: what the bundle offers this device, and what it lists but
/// does not carry.
pub async fn list(
    p: &crate::dbus::proxy::ManagerProxy<'_>,
    path: &Path,
    json: bool,
) -> Result<u8, CtlError> {
    let Opened { fd, writer } = open(path)?;
    let r = p.list_bundle(fd.into()).await;
    finish(writer, r.is_ok())?;
    let v = super::parse_json(&r?)?;
    if json {
        super::print_json(&v);
        return Ok(exit::OK);
    }
    let avail: Vec<crate::dbus::types::AvailableView> =
        serde_json::from_value(v["available"].clone()).unwrap_or_default();
    if avail.is_empty() {
        println!("The bundle carries no release for this device.");
    } else {
        let s = crate::dbus::types::StatusView {
            available: avail,
            ..Default::default()
        };
        print!("{}", super::status_text::release_groups(&s));
    }
    for n in v["not_carried"].as_array().into_iter().flatten() {
        println!(
            "not offered: {}: {}",
            n["version"].as_str().unwrap_or("?"),
            n["why"].as_str().unwrap_or("")
        );
    }
    for e in v["expired"].as_array().into_iter().flatten() {
        println!(
            "accepted although expired ([offline] allow_expired): {}",
            e.as_str().unwrap_or("")
        );
    }
    Ok(exit::OK)
}
