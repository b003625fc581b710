//! [`ManagerBackend`] of a daemon in degraded mode: its state file or trusted metadata
//! is damaged (see [`crate::repair`]), so no engine runs. Status names the
//! problem, history, inventory and audit verification are answered, every mutating call
//! is refused with the way out, and `Repair` (polkit `org.patchd.patchd1.repair`) moves
//! the damaged file aside, rebuilds it, audits what was kept and lost, and tells the
//! daemon to start normally.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};

use super::backend::{BackendError, BackendResult, BoxFuture, ManagerBackend};
use super::engine_backend::{audit_filter, verify_json};
use super::types::{Caller, DeniedCall, HistoryFilter, HoldRequest, SlotView, StatusView};
use crate::audit::{Actor, AuditLog, Entry};
use crate::boot::Bootloader;
use crate::paths::Paths;
use crate::repair::{self, Damage};
use crate::slot::StatusStore;

/// Audit event of a start in degraded mode, and of a repair.
pub const DEGRADED_EVENT: &str = "degraded";
pub const REPAIRED_EVENT: &str = "repaired";

pub struct DegradedBackend {
    damage: Damage,
    paths: Paths,
    bootloader: Option<Arc<dyn Bootloader>>,
    /// `None` when the audit log itself cannot be opened (said in status).
    audit: Option<Mutex<AuditLog>>,
    status: watch::Sender<StatusView>,
    repaired: Arc<Notify>,
    done: Mutex<bool>,
    /// Looks for the damage again: `None` once it is gone.
    rediagnose: Box<dyn Fn() -> Option<Damage> + Send + Sync>,
}

impl DegradedBackend {
    /// `repaired` is notified once a repair succeeded and the daemon should start
    /// normally.
    pub fn new(
        damage: Damage,
        paths: Paths,
        bootloader: Option<Arc<dyn Bootloader>>,
        audit: Option<AuditLog>,
        repaired: Arc<Notify>,
        rediagnose: Box<dyn Fn() -> Option<Damage> + Send + Sync>,
    ) -> Self {
        let status = watch::channel(StatusView::default()).0;
        let b = Self {
            damage,
            paths,
            bootloader,
            audit: audit.map(Mutex::new),
            status,
            repaired,
            done: Mutex::new(false),
            rediagnose,
        };
        b.status.send_replace(b.view());
        b
    }

    /// The one line every refusal and the status carry.
    pub fn problem(&self) -> String {
        format!(
            "patchd is in degraded mode: {}; {}",
            self.damage.describe(),
            self.damage.remedy()
        )
    }

    fn view(&self) -> StatusView {
        let booted = self.bootloader.as_ref().and_then(|b| b.booted_slot().ok());
        let slots = self
            .bootloader
            .as_ref()
            .and_then(|b| b.slots().ok())
            .unwrap_or_default()
            .into_iter()
            .map(|info| {
                let st = StatusStore::new(&self.paths.state_dir(), info.slot.clone())
                    .load()
                    .ok();
                SlotView {
                    name: info.slot.to_string(),
                    state: st
                        .as_ref()
                        .and_then(|s| serde_json::to_value(s.state).ok())
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_else(|| "unknown".into()),
                    version: st.and_then(|s| s.version),
                    booted: booted.as_ref() == Some(&info.slot),
                }
            })
            .collect();
        let mut warnings = vec![self.problem()];
        if self.audit.is_none() {
            warnings.push("the audit log cannot be opened either: nothing is recorded".into());
        }
        StatusView {
            state: "failed".into(),
            booted_slot: booted.map(|s| s.to_string()),
            slots,
            last_error: Some(self.damage.describe()),
            warnings,
            ..StatusView::default()
        }
    }

    fn refuse<T>(&self) -> BoxFuture<'_, BackendResult<T>>
    where
        T: Send + 'static,
    {
        let e = BackendError::Refused(self.problem());
        Box::pin(async move { Err(e) })
    }

    fn append(&self, entry: Entry) -> BackendResult<()> {
        let Some(log) = &self.audit else {
            return Ok(());
        };
        log.lock()
            .unwrap_or_else(|e| e.into_inner())
            .append(entry, Timestamp::now())
            .map(|_| ())
            .map_err(|e| BackendError::Failed(format!("audit log: {e}")))
    }

    /// Record that the daemon started degraded (once per start).
    pub fn record_start(&self) {
        let entry = Entry::new(DEGRADED_EVENT, Actor::Daemon, self.damage.describe())
            .field("path", self.damage.path().display().to_string());
        if let Err(e) = self.append(entry) {
            tracing::error!(error = %e, "cannot audit the degraded start");
        }
    }

    fn do_repair(&self, caller: &Caller) -> BackendResult<Value> {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        if *done {
            return Err(BackendError::NotFound(
                "already repaired; patchd is starting normally".into(),
            ));
        }
        let now = Timestamp::now();
        // Damage fixed outside patchd (a reset bootloader environment, a reinstalled
        // root) needs nothing more than a normal start.
        let report = if (self.rediagnose)().is_none() {
            repair::already_fixed(&self.damage)
        } else {
            repair::repair(&self.damage, &self.paths, self.bootloader.as_deref(), now)
                .map_err(|e| BackendError::Refused(e.to_string()))?
        };
        let shown = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "-".into())
        };
        let entry = Entry::new(
            REPAIRED_EVENT,
            Actor::Uid(caller.uid),
            self.damage.describe(),
        )
        .field("moved", shown(&report.moved))
        .field("moved_to", shown(&report.moved_to))
        .field("rebuilt", report.rebuilt.clone())
        .field("lost", report.lost.clone());
        // The repair is done on disk; a lost audit record is loud but must not undo it.
        if let Err(e) = self.append(entry) {
            tracing::error!(error = %e, "repair not audited");
        }
        tracing::warn!(
            moved = %shown(&report.moved),
            moved_to = %shown(&report.moved_to),
            lost = ?report.lost,
            "repaired; starting normally"
        );
        *done = true;
        self.repaired.notify_one();
        serde_json::to_value(&report)
            .map_err(|e| BackendError::Failed(format!("cannot encode the report: {e}")))
    }
}

impl ManagerBackend for DegradedBackend {
    fn check(&self, _: Caller) -> BoxFuture<'_, BackendResult<Value>> {
        self.refuse()
    }
    fn install(
        &self,
        _: Caller,
        _: Option<String>,
        _: bool,
    ) -> BoxFuture<'_, BackendResult<Value>> {
        self.refuse()
    }
    fn switch(&self, _: Caller, _: bool) -> BoxFuture<'_, BackendResult<()>> {
        self.refuse()
    }
    fn cancel(&self, _: Caller) -> BoxFuture<'_, BackendResult<()>> {
        self.refuse()
    }
    fn rollback(&self, _: Caller, _: String) -> BoxFuture<'_, BackendResult<()>> {
        self.refuse()
    }
    fn mark_good(&self, _: Caller) -> BoxFuture<'_, BackendResult<()>> {
        self.refuse()
    }
    fn mark_bad(&self, _: Caller, _: String) -> BoxFuture<'_, BackendResult<()>> {
        self.refuse()
    }
    fn hold(&self, _: Caller, _: HoldRequest) -> BoxFuture<'_, BackendResult<()>> {
        self.refuse()
    }
    fn approve(&self, _: Caller, _: String) -> BoxFuture<'_, BackendResult<()>> {
        self.refuse()
    }
    fn retry(&self, _: Caller, _: String, _: String) -> BoxFuture<'_, BackendResult<()>> {
        self.refuse()
    }
    fn release_hold(&self, _: Caller) -> BoxFuture<'_, BackendResult<()>> {
        self.refuse()
    }

    fn repair(&self, caller: Caller) -> BoxFuture<'_, BackendResult<Value>> {
        let r = self.do_repair(&caller);
        Box::pin(async move { r })
    }

    fn status(&self) -> BoxFuture<'_, BackendResult<StatusView>> {
        let v = self.view();
        Box::pin(async move { Ok(v) })
    }

    fn subscribe(&self) -> watch::Receiver<StatusView> {
        self.status.subscribe()
    }

    fn history(&self, filter: HistoryFilter) -> BoxFuture<'_, BackendResult<Value>> {
        let r = match &self.audit {
            None => Err(BackendError::Failed(
                "the audit log cannot be opened (see `patchctl status`)".into(),
            )),
            Some(log) => {
                let f = audit_filter(filter);
                log.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .query(&f)
                    .map_err(|e| BackendError::Failed(e.to_string()))
                    .and_then(|recs| {
                        serde_json::to_value(recs)
                            .map_err(|e| BackendError::Failed(format!("cannot encode reply: {e}")))
                    })
            }
        };
        Box::pin(async move { r })
    }

    fn inventory(&self) -> BoxFuture<'_, BackendResult<Value>> {
        let v = self.view();
        let r = Ok(json!({
            "degraded": {
                "damage": self.damage,
                "problem": self.problem(),
            },
            "booted_slot": v.booted_slot,
            "slots": v.slots,
        }));
        Box::pin(async move { r })
    }

    fn verify_audit(&self) -> BoxFuture<'_, BackendResult<Value>> {
        let r = match &self.audit {
            None => Err(BackendError::Failed(
                "the audit log cannot be opened".into(),
            )),
            Some(log) => log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .verify()
                .map(|r| verify_json(&r))
                .map_err(|e| BackendError::Failed(e.to_string())),
        };
        Box::pin(async move { r })
    }

    fn record_denial(
        &self,
        caller: Caller,
        denied: DeniedCall,
    ) -> BoxFuture<'_, BackendResult<()>> {
        let entry = Entry::new(
            crate::engine::handle::DENIAL_EVENT,
            Actor::Uid(caller.uid),
            denied.detail,
        )
        .field("action", denied.action)
        .field("method", denied.method)
        .field("bus_name", caller.bus_name.clone());
        let r = self.append(entry);
        Box::pin(async move { r })
    }
}
