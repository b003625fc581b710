//! Fail points for crash tests (cargo feature `failpoints`, never in release packages).
//!
//! A test arms one named point; when the engine reaches it, the step returns a simulated
//! power cut and the engine task stops without writing anything more — exactly what a
//! power cut at that instant leaves on disk. Every point reached is recorded, so a test
//! can enumerate the points of a run and then cut power at each in turn.

use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default)]
pub struct FailPoints {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    armed: Option<(String, u32)>,
    seen: Vec<String>,
}

impl FailPoints {
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
        match &mut g.armed {
            Some((n, 0)) if n == name => {
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
