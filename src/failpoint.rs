//! Fail points for crash tests (cargo feature `failpoints`, never in release packages).
//!
//! A test arms one named point; when the engine reaches it, the step returns a simulated
//! power cut and the engine task stops without writing anything more — exactly what a
//! power cut at that instant leaves on disk. Every point reached is recorded, so a test
//! can enumerate the points of a run and then cut power at each in turn.
//!
//! The daemon process (`patchd run` built with the feature) takes its points from the
//! environment ([`FailPoints::from_env`]): `PATCHD_FAILPOINT=NAME` or `NAME#N` aborts the
//! whole process (SIGABRT, nothing more written) the Nth time (0-based) NAME is reached,
//! and `PATCHD_FAILPOINTS_SEEN=FILE` appends every point reached to FILE, one per line —
//! so a test can kill a real process at every persisted step.

use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default)]
pub struct FailPoints {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    armed: Option<(String, u32)>,
    seen: Vec<String>,
    /// Abort the process instead of returning a simulated power cut.
    abort: bool,
    seen_file: Option<std::path::PathBuf>,
}

impl FailPoints {
    /// Points armed by `PATCHD_FAILPOINT` (abort the process when hit) and recorded to
    /// `PATCHD_FAILPOINTS_SEEN`; neither set: nothing armed, nothing recorded on disk.
    pub fn from_env() -> Self {
        let fp = Self::default();
        {
            let mut g = fp.lock();
            g.abort = true;
            g.seen_file = std::env::var_os("PATCHD_FAILPOINTS_SEEN").map(Into::into);
            if let Ok(spec) = std::env::var("PATCHD_FAILPOINT") {
                let (name, nth) = match spec.rsplit_once('#') {
                    Some((n, k)) => (n.to_string(), k.parse().unwrap_or(0)),
                    None => (spec, 0),
                };
                tracing::warn!(failpoint = %name, nth, "fail point armed: the process aborts there");
                g.armed = Some((name, nth));
            }
        }
        fp
    }

    /// Cut power the `nth` (0-based) time `name` is reached.
    pub fn arm(&self, name: &str, nth: u32) {
        self.lock().armed = Some((name.to_string(), nth));
    }

    pub fn disarm(&self) {
        self.lock().armed = None;
    }

    /// Every point reached so far, in order.
    pub fn seen(&self) -> Vec<String> {
        self.lock().seen.clone()
    }

    pub(crate) fn hit(&self, name: &str) -> bool {
        let mut g = self.lock();
        g.seen.push(name.to_string());
        if let Some(f) = &g.seen_file {
            use std::io::Write;
            let line = format!("{name}\n");
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(f)
                .and_then(|mut f| f.write_all(line.as_bytes()));
        }
        match &mut g.armed {
            Some((n, 0)) if n == name => {
                if g.abort {
                    eprintln!("patchd: fail point {name} reached: aborting");
                    std::process::abort();
                }
                g.armed = None;
                true
            }
            Some((n, k)) if n == name => {
                *k -= 1;
                false
            }
            _ => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
