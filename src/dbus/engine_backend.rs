//! [`ManagerBackend`] for the lifecycle engine's [`EngineHandle`]: maps callers to audit
//! actors, engine values to the service's views, and engine errors to the service's error
//! kinds (which become named D-Bus errors in `super::error`).

use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch};

use super::backend::{BackendError, BackendResult, BoxFuture, ManagerBackend};
use super::types::{
    AvailableView, Caller, CheckView, DeniedCall, HistoryFilter, HoldRequest, HoldView, JobView,
    NextView, ProgressView, SlotView, StatusView,
};
use crate::audit::{Actor, Filter};
use crate::engine::{AvailableRelease, EngineError, EngineHandle, JobRecord, StatusSnapshot};
use crate::policy::Standing;

fn actor(c: &Caller) -> Actor {
    Actor::Uid(c.uid)
}

fn map_err(e: EngineError) -> BackendError {
    let msg = e.to_string();
    match e {
        // The D-Bus error name already says Busy and patchctl prefixes "busy: ": the
        // message carries only what runs.
        EngineError::Busy { running } => {
            BackendError::Busy(format!("{running} is running; try again when it finished"))
        }
        EngineError::NoSuchRelease { .. }
        | EngineError::NothingToInstall { .. }
        | EngineError::NothingToCancel { .. }
        | EngineError::NoPrevious { .. }
        | EngineError::NotFailedHere { .. }
        | EngineError::NoHold
        | EngineError::NoRebootLock
        | EngineError::NotInBundle { .. } => BackendError::NotFound(msg),
        EngineError::BadVersion { .. } | EngineError::NoApprovalNeeded { .. } => {
            BackendError::InvalidArgument(msg)
        }
        EngineError::SwitchRefused { .. } | EngineError::Refused { .. } => {
            BackendError::Refused(msg)
        }
        _ => BackendError::Failed(msg),
    }
}

/// An engine call as the service's future, its error mapped to the service's kind.
fn engine<'a, T>(
    call: impl std::future::Future<Output = Result<T, EngineError>> + Send + 'a,
) -> BoxFuture<'a, BackendResult<T>> {
    Box::pin(async move { call.await.map_err(map_err) })
}

fn to_json<T: serde::Serialize>(v: &T) -> BackendResult<Value> {
    serde_json::to_value(v).map_err(|e| BackendError::Failed(format!("cannot encode reply: {e}")))
}

/// The engine's snapshot as the D-Bus service shows it.
pub fn status_view(s: &StatusSnapshot) -> StatusView {
    StatusView {
        state: s.state.as_str().to_owned(),
        progress: s.progress.as_ref().map(|p| ProgressView {
            phase: p.phase.clone(),
            done: p.done,
            total: p.total.unwrap_or(0),
            rate: p.rate.unwrap_or(0.0),
        }),
        booted_slot: s.booted_slot.as_ref().map(|n| n.to_string()),
        slots: s
            .slots
            .iter()
            .map(|sl| SlotView {
                name: sl.name.to_string(),
                state: sl
                    .state
                    .and_then(|st| serde_json::to_value(st).ok())
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "unknown".into()),
                version: sl.version.clone(),
                booted: sl.booted,
            })
            .collect(),
        current_version: s.current_version.clone(),
        staged_version: s.staged_version.clone(),
        available: s.available.iter().map(available_view).collect(),
        next_window: s.next_window,
        last_check: s.last_check,
        last_error: s.last_error.clone(),
        last_stage: s.last_stage.map(|r| r.to_string()),
        last_job: s.last_job.as_ref().map(job_view),
        warnings: s.warnings.clone(),
        security_floor: s.security_floor,
        as_of: s.as_of,
        time_zone: s.time_zone.clone(),
        next: s.next.as_ref().map(|n| NextView {
            kind: n.kind.clone(),
            text: n.text.clone(),
            at: n.at,
        }),
        last_check_outcome: s.last_check_outcome.as_ref().map(|c| CheckView {
            at: Some(c.at),
            last_good: c.last_good,
            ok: c.error.is_none(),
            error: c.error.clone(),
            found: c.found as u64,
        }),
        last_outcome: s.last_outcome.clone(),
        rolling_back_to: s.rolling_back_to.clone(),
        fleet: s.fleet.as_ref().map(|f| crate::dbus::types::FleetView {
            group: f.group.clone(),
            backend: f.backend.clone(),
            state: f.state.clone(),
            text: f.text.clone(),
            holders: f.holders.clone(),
            since: f.since,
            retry_at: f.retry_at,
        }),
        holds: s.holds.iter().map(hold_view).collect(),
    }
}

fn hold_view(h: &crate::policy::Hold) -> HoldView {
    HoldView {
        reason: h.reason.clone(),
        by: h.by.clone(),
        since: Some(h.created),
        until: h.until,
        max_version: h.max_version.as_ref().map(|v| v.to_string()),
    }
}

/// One release as clients see it: its group, every reason once, the publisher's summary.
fn available_view(a: &AvailableRelease) -> AvailableView {
    let mut reasons: Vec<String> = Vec::new();
    for w in &a.why_not {
        let r = w.to_string();
        if !reasons.contains(&r) {
            reasons.push(r);
        }
    }
    let summary = (!reasons.is_empty()).then(|| match a.standing {
        Standing::NotApplicable => format!("not applicable: {}", reasons.join("; ")),
        _ => format!("waiting: {}", reasons.join("; ")),
    });
    let until = match (&a.standing, &a.next) {
        (Standing::Waiting, Some(o)) => o.at.or(o.rule_until),
        _ => None,
    };
    AvailableView {
        version: a.version.clone(),
        kind: a.kind.to_string(),
        severity: a.severity.to_string(),
        cves: a.cves.clone(),
        summary,
        group: a.standing.as_str().to_owned(),
        description: a.description.clone(),
        reasons,
        until,
        when: (a.standing == Standing::Waiting)
            .then(|| a.when.clone())
            .flatten(),
        security_version: a.security_version,
        size: a.size,
        components: a.components.clone(),
        packages: a.packages.clone(),
    }
}

/// The audit log's filter for a `GetHistory` call.
pub fn audit_filter(filter: HistoryFilter) -> Filter {
    Filter {
        event: filter.event,
        release: filter.release,
        since: filter.since,
        limit: filter.limit.map(|n| n as usize),
        ..Filter::default()
    }
}

/// The `VerifyAudit` reply.
pub fn verify_json(r: &crate::audit::VerifyReport) -> Value {
    let problems: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
    json!({
        "ok": r.is_intact(),
        "power_cut_lag_only": r.only_power_cut_lag(),
        "lagging": r.lagging().map(|p| p.to_string()).collect::<Vec<_>>(),
        "records": r.records,
        "files": r.files,
        "error": problems.first(),
        "problems": problems,
        "warnings": r.warnings.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "notes": r.notes,
    })
}

pub fn job_view(j: &JobRecord) -> JobView {
    JobView {
        id: j.id,
        kind: j.kind.clone(),
        release: j.release.clone(),
        outcome: j.outcome.as_str().to_owned(),
        error: j.error.clone(),
        started: Some(j.started),
        finished: j.finished,
    }
}

impl ManagerBackend for EngineHandle {
    fn check(&self, caller: Caller) -> BoxFuture<'_, BackendResult<Value>> {
        Box::pin(async move {
            let list = EngineHandle::check(self, actor(&caller))
                .await
                .map_err(map_err)?;
            // The engine's fields and the clients' (group, reasons, until) in one object.
            let mut out = Vec::new();
            for a in &list {
                let mut v = to_json(a)?;
                if let (Value::Object(m), Value::Object(view)) =
                    (&mut v, to_json(&available_view(a))?)
                {
                    m.extend(view);
                }
                out.push(v);
            }
            Ok(json!({ "available": out }))
        })
    }

    fn install(
        &self,
        caller: Caller,
        release: Option<String>,
        switch_now: bool,
    ) -> BoxFuture<'_, BackendResult<Value>> {
        Box::pin(async move {
            let started = EngineHandle::install(self, actor(&caller), release, switch_now)
                .await
                .map_err(map_err)?;
            to_json(&started)
        })
    }

    fn install_bundle(
        &self,
        caller: Caller,
        bundle: std::os::fd::OwnedFd,
        release: Option<String>,
        switch_now: bool,
    ) -> BoxFuture<'_, BackendResult<Value>> {
        Box::pin(async move {
            let started =
                EngineHandle::install_bundle(self, actor(&caller), bundle, release, switch_now)
                    .await
                    .map_err(map_err)?;
            to_json(&started)
        })
    }

    fn list_bundle(
        &self,
        caller: Caller,
        bundle: std::os::fd::OwnedFd,
    ) -> BoxFuture<'_, BackendResult<Value>> {
        Box::pin(async move {
            let listing = EngineHandle::list_bundle(self, actor(&caller), bundle)
                .await
                .map_err(map_err)?;
            to_json(&listing)
        })
    }

    /// `force` is the engine's: it overrides the maintenance window, rollout stage and
    /// reboot inhibitors; holds, the floor and failed releases still apply.
    fn switch(&self, caller: Caller, force: bool) -> BoxFuture<'_, BackendResult<()>> {
        engine(EngineHandle::switch(self, actor(&caller), force))
    }

    fn cancel(&self, caller: Caller) -> BoxFuture<'_, BackendResult<()>> {
        engine(EngineHandle::cancel(self, actor(&caller)))
    }

    fn rollback(&self, caller: Caller, reason: String) -> BoxFuture<'_, BackendResult<()>> {
        engine(EngineHandle::rollback(self, actor(&caller), reason))
    }

    fn mark_good(&self, caller: Caller) -> BoxFuture<'_, BackendResult<()>> {
        engine(EngineHandle::mark_good(self, actor(&caller)))
    }

    fn mark_bad(&self, caller: Caller, reason: String) -> BoxFuture<'_, BackendResult<()>> {
        engine(EngineHandle::mark_bad(self, actor(&caller), reason))
    }

    fn hold(&self, caller: Caller, hold: HoldRequest) -> BoxFuture<'_, BackendResult<()>> {
        let HoldRequest {
            reason,
            until,
            max_version,
        } = hold;
        let call = EngineHandle::hold(self, actor(&caller), reason, until, max_version);
        Box::pin(async move { call.await.map(drop).map_err(map_err) })
    }

    fn place_hold(
        &self,
        caller: Caller,
        hold: HoldRequest,
    ) -> BoxFuture<'_, BackendResult<Vec<HoldView>>> {
        let HoldRequest {
            reason,
            until,
            max_version,
        } = hold;
        let call = EngineHandle::hold(self, actor(&caller), reason, until, max_version);
        Box::pin(async move {
            let replaced = call.await.map_err(map_err)?;
            Ok(replaced.iter().map(hold_view).collect())
        })
    }

    fn release_hold(&self, caller: Caller) -> BoxFuture<'_, BackendResult<()>> {
        engine(EngineHandle::release_hold(self, actor(&caller)))
    }

    fn approve(&self, caller: Caller, release: String) -> BoxFuture<'_, BackendResult<()>> {
        engine(EngineHandle::approve(self, actor(&caller), release))
    }

    fn retry(
        &self,
        caller: Caller,
        release: String,
        reason: String,
    ) -> BoxFuture<'_, BackendResult<()>> {
        engine(EngineHandle::retry(self, actor(&caller), release, reason))
    }

    fn fleet_release(&self, caller: Caller, reason: String) -> BoxFuture<'_, BackendResult<()>> {
        engine(EngineHandle::fleet_release(self, actor(&caller), reason))
    }

    fn status(&self) -> BoxFuture<'_, BackendResult<StatusView>> {
        let v = status_view(&EngineHandle::status(self));
        Box::pin(async move { Ok(v) })
    }

    /// Must be called inside the tokio runtime: a small task maps every engine snapshot to
    /// the service's view, until either side goes away.
    fn subscribe(&self) -> watch::Receiver<StatusView> {
        let mut src = EngineHandle::subscribe(self);
        let (tx, rx) = watch::channel(status_view(&src.borrow_and_update()));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = src.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let view = status_view(&src.borrow_and_update());
                        tx.send_if_modified(|cur| {
                            if *cur == view {
                                false
                            } else {
                                *cur = view;
                                true
                            }
                        });
                    }
                    _ = tx.closed() => break,
                }
            }
        });
        rx
    }

    /// Must be called inside the tokio runtime: forwards every finished job in order.
    fn job_finished(&self) -> mpsc::UnboundedReceiver<JobView> {
        let mut src = EngineHandle::job_finished(self);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match src.recv().await {
                    Ok(j) => {
                        if tx.send(job_view(&j)).is_err() {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "JobFinished signals lost (LastJob still tells)"
                        );
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        rx
    }

    fn history(&self, filter: HistoryFilter) -> BoxFuture<'_, BackendResult<Value>> {
        Box::pin(async move {
            let recs = EngineHandle::history(self, audit_filter(filter))
                .await
                .map_err(map_err)?;
            to_json(&recs)
        })
    }

    fn inventory(&self) -> BoxFuture<'_, BackendResult<Value>> {
        engine(EngineHandle::inventory(self))
    }

    fn verify_audit(&self) -> BoxFuture<'_, BackendResult<Value>> {
        Box::pin(async move {
            let r = EngineHandle::verify_audit(self).await.map_err(map_err)?;
            Ok(verify_json(&r))
        })
    }

    /// Appended to the hash-chained audit log by the engine task (its only writer), and
    /// logged to the journal under the audit target.
    fn record_denial(
        &self,
        caller: Caller,
        denied: DeniedCall,
    ) -> BoxFuture<'_, BackendResult<()>> {
        let DeniedCall {
            action,
            method,
            detail,
        } = denied;
        tracing::warn!(
            target: "patchd::audit",
            event = crate::engine::handle::DENIAL_EVENT,
            actor = %actor(&caller),
            bus_name = %caller.bus_name,
            action = %action,
            method = %method,
            detail = %detail,
            "D-Bus request denied"
        );
        Box::pin(async move {
            EngineHandle::record_denial(
                self,
                actor(&caller),
                &action,
                &method,
                &caller.bus_name,
                &detail,
            )
            .await
            .map_err(map_err)
        })
    }
}
