//! In-memory stand-in for the lifecycle engine, for tests of the D-Bus service and
//! `patchctl` (and for trying the admin surface without a device). It walks the same
//! states as the engine with two slots `a` and `b`, reports progress while "staging",
//! and keeps an audit list including denials. It is not a simulation of the engine's
//! rules — only of its surface.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::dbus::backend::{BackendError, BackendResult, BoxFuture, ManagerBackend};
use crate::dbus::types::{
    AvailableView, Caller, DeniedCall, HistoryFilter, HoldRequest, HoldView, ProgressView,
    SlotView, StatusView,
};

/// Release the fake offers after a `check`.
pub const FAKE_RELEASE: &str = "1.1.0";
/// Size the fake "stages".
pub const FAKE_IMAGE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub caller: Caller,
    pub action: String,
    pub method: String,
    pub detail: String,
}

#[derive(Debug, Default)]
struct Inner {
    records: Vec<Value>,
    denials: Vec<Denial>,
    previous_version: Option<String>,
    audit_broken: bool,
}

pub struct FakeBackend {
    inner: Mutex<Inner>,
    tx: watch::Sender<StatusView>,
    steps: u32,
    step_delay: Duration,
    cancel: AtomicBool,
    /// Outside the maintenance window, a switch needs `force`.
    window_closed: AtomicBool,
}

impl Default for FakeBackend {
    fn default() -> Self {
        Self::new(Duration::from_millis(20))
    }
}

impl FakeBackend {
    /// A device on release 1.0.0 booted from slot `a`; staging takes 10 steps of
    /// `step_delay`.
    pub fn new(step_delay: Duration) -> Self {
        let status = StatusView {
            state: "idle".into(),
            booted_slot: Some("a".into()),
            slots: vec![
                SlotView {
                    name: "a".into(),
                    state: "good".into(),
                    version: Some("1.0.0".into()),
                    booted: true,
                },
                SlotView {
                    name: "b".into(),
                    state: "empty".into(),
                    version: None,
                    booted: false,
                },
            ],
            current_version: Some("1.0.0".into()),
            ..StatusView::default()
        };
        let (tx, _rx) = watch::channel(status);
        Self {
            inner: Mutex::new(Inner::default()),
            tx,
            steps: 10,
            step_delay,
            cancel: AtomicBool::new(false),
            window_closed: AtomicBool::new(false),
        }
    }

    pub fn into_arc(self) -> Arc<Self> {
        Arc::new(self)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a test thread panicked; the data is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Denials recorded so far (what the audit trail would hold).
    pub fn denials(&self) -> Vec<Denial> {
        self.lock().denials.clone()
    }

    /// Every audit record so far, as JSON.
    pub fn records(&self) -> Vec<Value> {
        self.lock().records.clone()
    }

    pub fn current(&self) -> StatusView {
        self.tx.borrow().clone()
    }

    /// Open or close the (only) maintenance window; a closed one refuses an unforced
    /// switch with `Refused`.
    pub fn set_window_open(&self, open: bool) {
        self.window_closed.store(!open, Ordering::SeqCst);
    }

    /// Make the next `VerifyAudit` report a broken chain.
    pub fn break_audit(&self) {
        self.lock().audit_broken = true;
    }

    /// Set `LastError` (e.g. to one carrying credentials, to test scrubbing).
    pub fn set_last_error(&self, e: &str) {
        self.tx.send_modify(|s| s.last_error = Some(e.to_owned()));
    }

    fn record(&self, kind: &str, caller: Option<&Caller>, fields: Value) {
        let mut rec = json!({
            "seq": self.lock().records.len() as u64 + 1,
            "time": Timestamp::now().to_string(),
            "event": kind,
            "actor": caller.map(|c| format!("uid:{}", c.uid)).unwrap_or_else(|| "patchd".into()),
        });
        if let (Value::Object(r), Value::Object(f)) = (&mut rec, fields) {
            r.extend(f);
        }
        self.lock().records.push(rec);
    }

    fn set_state(&self, state: &str) {
        self.tx.send_modify(|s| s.state = state.to_owned());
        self.record("state", None, json!({ "state": state }));
    }

    fn slot_mut<'a>(s: &'a mut StatusView, name: &str) -> Option<&'a mut SlotView> {
        s.slots.iter_mut().find(|x| x.name == name)
    }

    fn inactive(s: &StatusView) -> String {
        if s.booted_slot.as_deref() == Some("a") {
            "b".into()
        } else {
            "a".into()
        }
    }

    async fn do_install(
        &self,
        caller: Caller,
        release: Option<String>,
        switch_now: bool,
    ) -> BackendResult<Value> {
        let st = self.current();
        if st.state == "verifying" {
            return Err(BackendError::Busy(
                "the booted release is still being verified".into(),
            ));
        }
        let version = match release {
            Some(r) if st.available.iter().any(|a| a.version == r) => r,
            Some(r) => {
                return Err(BackendError::NotFound(format!(
                    "release {r} is not available"
                )))
            }
            None => match st.available.last() {
                Some(a) => a.version.clone(),
                None => {
                    return Err(BackendError::NotFound(
                        "no release available (run check first)".into(),
                    ))
                }
            },
        };
        self.record("install", Some(&caller), json!({ "version": version }));
        self.cancel.store(false, Ordering::SeqCst);
        self.set_state("staging");
        let target = Self::inactive(&st);
        for i in 1..=self.steps {
            tokio::time::sleep(self.step_delay).await;
            if self.cancel.swap(false, Ordering::SeqCst) {
                self.tx.send_modify(|s| {
                    s.progress = None;
                    s.last_error = Some(format!("staging {version} cancelled"));
                    if let Some(sl) = Self::slot_mut(s, &target) {
                        sl.state = "incomplete".into();
                    }
                });
                self.set_state("update_available");
                return Err(BackendError::Failed(format!("staging {version} cancelled")));
            }
            let phase = if i <= self.steps / 2 {
                "download"
            } else {
                "write"
            };
            let done = FAKE_IMAGE_BYTES * u64::from(i) / u64::from(self.steps);
            self.tx.send_modify(|s| {
                s.progress = Some(ProgressView {
                    phase: phase.into(),
                    done,
                    total: FAKE_IMAGE_BYTES,
                    rate: 1.0e8,
                })
            });
        }
        self.tx.send_modify(|s| {
            s.progress = None;
            s.staged_version = Some(version.clone());
            if let Some(sl) = Self::slot_mut(s, &target) {
                sl.state = "verified".into();
                sl.version = Some(version.clone());
            }
        });
        self.set_state("staged");
        if switch_now {
            self.do_switch(&caller, true)?;
        }
        Ok(json!({ "version": version, "slot": target, "switched": switch_now }))
    }

    /// Switch and "reboot" at once: the fake boots the other slot immediately.
    fn do_switch(&self, caller: &Caller, force: bool) -> BackendResult<()> {
        let st = self.current();
        let Some(staged) = st.staged_version.clone() else {
            return Err(BackendError::NotFound(
                "no staged release to switch to".into(),
            ));
        };
        // Like the engine: `force` overrides the window, never a hold.
        if let Some(h) = st.holds.first() {
            let blocks = match &h.max_version {
                Some(max) => staged.as_str() > max.as_str(),
                None => true,
            };
            if blocks {
                return Err(BackendError::Refused(format!("held: {}", h.reason)));
            }
        }
        if !force && self.window_closed.load(Ordering::SeqCst) {
            return Err(BackendError::Refused(
                "outside the maintenance window".into(),
            ));
        }
        self.record(
            "switch",
            Some(caller),
            json!({ "version": staged, "force": force }),
        );
        self.set_state("switching");
        let target = Self::inactive(&st);
        self.lock().previous_version = st.current_version.clone();
        self.tx.send_modify(|s| {
            s.booted_slot = Some(target.clone());
            for sl in &mut s.slots {
                sl.booted = sl.name == target;
            }
            s.current_version = Some(staged.clone());
            s.staged_version = None;
            s.available.retain(|a| a.version != staged);
        });
        self.set_state("verifying");
        Ok(())
    }

    fn boot_back(&self, reason: &str) -> BackendResult<()> {
        let st = self.current();
        let bad = st.booted_slot.clone().unwrap_or_default();
        let other = Self::inactive(&st);
        let prev = self.lock().previous_version.clone();
        let Some(prev) = prev else {
            return Err(BackendError::NotFound(
                "no previous release to go back to".into(),
            ));
        };
        self.tx.send_modify(|s| {
            if let Some(sl) = Self::slot_mut(s, &bad) {
                sl.state = "bad".into();
            }
            s.booted_slot = Some(other.clone());
            for sl in &mut s.slots {
                sl.booted = sl.name == other;
            }
            s.current_version = Some(prev.clone());
            s.last_error = Some(reason.to_owned());
        });
        self.set_state("rolled_back");
        Ok(())
    }
}

fn ok<'a, T: Send + 'a>(v: BackendResult<T>) -> BoxFuture<'a, BackendResult<T>> {
    Box::pin(async move { v })
}

impl ManagerBackend for FakeBackend {
    fn check(&self, caller: Caller) -> BoxFuture<'_, BackendResult<Value>> {
        Box::pin(async move {
            tokio::time::sleep(self.step_delay).await;
            let current = self.current().current_version.unwrap_or_default();
            let offer = (current.as_str() < FAKE_RELEASE).then(|| AvailableView {
                version: FAKE_RELEASE.into(),
                kind: "security".into(),
                severity: "high".into(),
                cves: vec!["CVE-2026-0001".into()],
                summary: Some(
                    "openssl fix; notes at https://builder:s3cret@repo.example/notes?token=abc"
                        .into(),
                ),
                ..AvailableView::default()
            });
            self.tx.send_modify(|s| {
                s.last_check = Some(Timestamp::now());
                s.available = offer.iter().cloned().collect();
            });
            if offer.is_some() && self.current().state == "idle" {
                self.set_state("update_available");
            }
            self.record("check", Some(&caller), json!({ "found": offer.is_some() }));
            Ok(json!({
                "available": offer.map(|o| vec![o]).unwrap_or_default(),
                "repository": "https://builder:s3cret@repo.example/",
            }))
        })
    }

    fn install(
        &self,
        caller: Caller,
        release: Option<String>,
        switch_now: bool,
    ) -> BoxFuture<'_, BackendResult<Value>> {
        Box::pin(self.do_install(caller, release, switch_now))
    }

    fn switch(&self, caller: Caller, force: bool) -> BoxFuture<'_, BackendResult<()>> {
        ok(self.do_switch(&caller, force))
    }

    fn cancel(&self, caller: Caller) -> BoxFuture<'_, BackendResult<()>> {
        let r = if self.current().state == "staging" {
            self.cancel.store(true, Ordering::SeqCst);
            self.record("cancel", Some(&caller), json!({}));
            Ok(())
        } else {
            Err(BackendError::NotFound("no job running".into()))
        };
        ok(r)
    }

    fn rollback(&self, caller: Caller, reason: String) -> BoxFuture<'_, BackendResult<()>> {
        self.record("rollback", Some(&caller), json!({ "reason": reason }));
        ok(self.boot_back(&format!("rolled back by uid {}: {reason}", caller.uid)))
    }

    fn mark_good(&self, caller: Caller) -> BoxFuture<'_, BackendResult<()>> {
        let st = self.current();
        if st.state != "verifying" {
            return ok(Err(BackendError::Failed(format!(
                "nothing to commit in state {}",
                st.state
            ))));
        }
        let booted = st.booted_slot.unwrap_or_default();
        self.record("mark-good", Some(&caller), json!({}));
        self.tx.send_modify(|s| {
            if let Some(sl) = Self::slot_mut(s, &booted) {
                sl.state = "good".into();
            }
        });
        self.set_state("committed");
        ok(Ok(()))
    }

    fn mark_bad(&self, caller: Caller, reason: String) -> BoxFuture<'_, BackendResult<()>> {
        if self.current().state != "verifying" {
            return ok(Err(BackendError::Failed(
                "only a release being verified can be marked bad".into(),
            )));
        }
        self.record("mark-bad", Some(&caller), json!({ "reason": reason }));
        ok(self.boot_back(&format!("marked bad: {reason}")))
    }

    fn hold(&self, caller: Caller, hold: HoldRequest) -> BoxFuture<'_, BackendResult<()>> {
        let HoldRequest {
            reason,
            until,
            max_version,
        } = hold;
        self.record(
            "hold",
            Some(&caller),
            json!({ "reason": reason, "until": until, "max_version": max_version }),
        );
        self.tx.send_modify(|s| {
            s.holds = vec![HoldView {
                reason,
                by: format!("uid:{}", caller.uid),
                since: Some(Timestamp::now()),
                until,
                max_version,
            }]
        });
        ok(Ok(()))
    }

    fn release_hold(&self, caller: Caller) -> BoxFuture<'_, BackendResult<()>> {
        if self.current().holds.is_empty() {
            return ok(Err(BackendError::NotFound("no hold in place".into())));
        }
        self.record("release-hold", Some(&caller), json!({}));
        self.tx.send_modify(|s| s.holds.clear());
        ok(Ok(()))
    }

    fn approve(&self, caller: Caller, release: String) -> BoxFuture<'_, BackendResult<()>> {
        self.record("approved", Some(&caller), json!({ "version": release }));
        ok(Ok(()))
    }

    fn retry(
        &self,
        caller: Caller,
        release: String,
        reason: String,
    ) -> BoxFuture<'_, BackendResult<()>> {
        self.record(
            "retry_allowed",
            Some(&caller),
            json!({ "version": release, "reason": reason }),
        );
        ok(Ok(()))
    }

    fn status(&self) -> BoxFuture<'_, BackendResult<StatusView>> {
        ok(Ok(self.current()))
    }

    fn subscribe(&self) -> watch::Receiver<StatusView> {
        self.tx.subscribe()
    }

    fn history(&self, filter: HistoryFilter) -> BoxFuture<'_, BackendResult<Value>> {
        let mut recs: Vec<Value> = self
            .records()
            .into_iter()
            .filter(|r| filter.event.as_deref().is_none_or(|k| r["event"] == k))
            .filter(|r| {
                filter.since.is_none_or(|since| {
                    r["time"]
                        .as_str()
                        .and_then(|t| t.parse::<Timestamp>().ok())
                        .is_some_and(|t| t >= since)
                })
            })
            .collect();
        if let Some(n) = filter.limit {
            let n = n as usize;
            if recs.len() > n {
                recs.drain(..recs.len() - n);
            }
        }
        ok(Ok(Value::Array(recs)))
    }

    fn inventory(&self) -> BoxFuture<'_, BackendResult<Value>> {
        let st = self.current();
        ok(Ok(json!({
            "os": { "id": "debian", "version_id": "13", "pretty_name": "Debian GNU/Linux 13" },
            "kernel": "6.12.0-fake",
            "machine_id": "0123456789abcdef0123456789abcdef",
            "product": "demo",
            "channel": "stable",
            "repository": { "url": "https://device:t0psecret@repo.example/", "token": "abc123" },
            "bootloader": "file",
            "slots": st.slots,
            "booted_slot": st.booted_slot,
            "pending": st.available,
            "holds": st.holds,
        })))
    }

    fn verify_audit(&self) -> BoxFuture<'_, BackendResult<Value>> {
        let inner = self.lock();
        let n = inner.records.len();
        let v = if inner.audit_broken {
            json!({ "ok": false, "records": n, "error": format!("record {n}: hash chain broken") })
        } else {
            json!({ "ok": true, "records": n })
        };
        ok(Ok(v))
    }

    fn record_denial(
        &self,
        caller: Caller,
        denied: DeniedCall,
    ) -> BoxFuture<'_, BackendResult<()>> {
        self.record(
            "dbus.denied",
            Some(&caller),
            json!({ "action": denied.action, "method": denied.method, "detail": denied.detail }),
        );
        self.lock().denials.push(Denial {
            caller,
            action: denied.action,
            method: denied.method,
            detail: denied.detail,
        });
        ok(Ok(()))
    }
}
