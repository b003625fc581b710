//! Persist, audit, publish: every change goes to the state file first, then the audit
//! log, then the status snapshot.

use super::*;
use crate::engine::handle::{CheckOutcome, NextStep};

impl Runner {
    /// Record an error: a power cut stops the task; anything else shows in status.
    pub(super) fn note_error(&mut self, e: StepError) {
        match e {
            StepError::PowerCut(at) => self.exit = Some(RunExit::PowerCut { at }),
            StepError::Err(e) => {
                tracing::warn!(error = %e, state = %self.doc.lifecycle.kind(), "engine step failed");
                let mut doc = self.doc.clone();
                doc.last_error = Some(e.to_string());
                if self.file.save(&doc).is_ok() {
                    self.doc = doc;
                } else {
                    self.doc.last_error = Some(e.to_string());
                }
            }
        }
    }

    /// Persist `doc` and adopt it; a transition of the lifecycle is audited as `event`.
    pub(crate) fn commit(
        &mut self,
        doc: StateDoc,
        event: &str,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Step {
        self.commit_with(doc, event, actor, reason, &[])
    }

    /// [`Self::commit`] with extra audit fields (e.g. the staging method and bytes).
    pub(crate) fn commit_with(
        &mut self,
        doc: StateDoc,
        event: &str,
        actor: &Actor,
        reason: Option<&str>,
        fields: &[(&str, serde_json::Value)],
    ) -> Step {
        let from = self.doc.lifecycle.kind();
        let to = doc.lifecycle.kind();
        self.failpoint(&format!("before:{event}"))?;
        self.file.save(&doc)?;
        self.doc = doc;
        self.failpoint(&format!("saved:{event}"))?;
        self.audit_with(event, actor, reason, Some(from), Some(to), fields);
        self.failpoint(&format!("audited:{event}"))?;
        Ok(())
    }

    pub(crate) fn audit_with(
        &mut self,
        event: &str,
        actor: &Actor,
        reason: Option<&str>,
        from: Option<crate::engine::state::StateKind>,
        to: Option<crate::engine::state::StateKind>,
        fields: &[(&str, serde_json::Value)],
    ) {
        let release = self.doc.lifecycle.release().map(|r| r.version.clone());
        self.audit_entry(event, actor, reason, release, from, to, fields);
    }

    /// An admin's decision about one release (`approved`, `retry_allowed`), recorded
    /// under that release whatever the lifecycle is on, so `history --release` finds it.
    pub(crate) fn audit_about(
        &mut self,
        event: &str,
        actor: &Actor,
        reason: Option<&str>,
        version: &str,
        fields: &[(&str, serde_json::Value)],
    ) {
        let release = Some(version.to_owned());
        self.audit_entry(event, actor, reason, release, None, None, fields);
    }

    #[allow(clippy::too_many_arguments)] // the record's fields, each optional
    fn audit_entry(
        &mut self,
        event: &str,
        actor: &Actor,
        reason: Option<&str>,
        release: Option<String>,
        from: Option<crate::engine::state::StateKind>,
        to: Option<crate::engine::state::StateKind>,
        fields: &[(&str, serde_json::Value)],
    ) {
        let now = self.p.clock.now();
        let slot = lifecycle_slot(&self.doc.lifecycle);
        let mut entry = Entry::new(event, *actor, reason.unwrap_or(""));
        if let Some(r) = &release {
            entry = entry.release(r.as_str());
        }
        if let Some(s) = &slot {
            entry = entry.slot(s);
        }
        if let Some(f) = from {
            entry = entry.field("from", f.as_str());
        }
        if let Some(t) = to {
            entry = entry.field("to", t.as_str());
        }
        for (k, v) in fields {
            entry = entry.field(*k, v.clone());
        }
        tracing::info!(
            event,
            release = release.as_deref().unwrap_or("-"),
            slot = slot.as_ref().map(|s| s.as_str()).unwrap_or("-"),
            actor = %actor,
            reason = reason.unwrap_or("-"),
            from = from.map(|f| f.as_str()).unwrap_or("-"),
            to = to.map(|t| t.as_str()).unwrap_or("-"),
            "lifecycle"
        );
        let res = self
            .p
            .audit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .append(entry, now);
        if let Err(e) = res {
            // The state file stays the source of truth; a lost audit record is loud.
            tracing::error!(error = %e, event, "audit record not written");
            self.doc.last_error = Some(format!("audit log: {e}"));
        }
    }

    pub(super) fn publish(&mut self) {
        let snap = self.snapshot();
        self.status_tx.send_replace(snap);
    }

    pub(super) fn snapshot(&self) -> StatusSnapshot {
        let now = self.p.clock.now();
        let bl = &self.p.bootloader;
        let booted = bl.booted_slot().ok();
        let booted_ref = booted.as_ref();
        let boot_info = bl.slots().unwrap_or_default();
        let slots = self
            .p
            .slots
            .iter()
            .map(|s| {
                let st = s.status().ok();
                let bi = boot_info.iter().find(|b| &b.slot == s.name());
                SlotView {
                    name: s.name().clone(),
                    backend: s.kind().to_string(),
                    state: st.as_ref().map(|x| x.state),
                    version: st.as_ref().and_then(|x| x.version.clone()),
                    size: st.as_ref().and_then(|x| x.size),
                    booted: booted.as_ref() == Some(s.name()),
                    primary: bi.is_some_and(|b| b.primary),
                    tries_left: bi.and_then(|b| b.tries_left),
                    good: bi.is_some_and(|b| b.good),
                    bad: bi.is_some_and(|b| b.bad),
                }
            })
            .collect();
        let staged_version = match &self.doc.lifecycle {
            Lifecycle::Staged { release, .. } | Lifecycle::Switching { release, .. } => {
                Some(release.version.clone())
            }
            _ => None,
        };
        StatusSnapshot {
            state: self.doc.lifecycle.kind(),
            lifecycle: self.doc.lifecycle.clone(),
            booted_slot: booted.clone(),
            slots,
            current_version: self.current_version(),
            staged_version,
            security_floor: self.doc.security_floor,
            available: self.available.clone(),
            next_window: self.p.policy.schedule.next_open(now),
            last_check: self.doc.last_check,
            last_error: self.doc.last_error.clone(),
            holds: active_holds(&self.doc.holds, now).cloned().collect(),
            blocked: self.doc.blocked.clone(),
            progress: self.progress_rx.borrow().clone(),
            last_stage: self.last_stage,
            reboot_waiting: self.reboot_waiting.clone(),
            busy: self.job.as_ref().map(|j| j.kind.name().to_string()),
            last_job: self.last_job.clone(),
            as_of: Some(now),
            time_zone: self.p.policy.schedule.time_zone_name().to_string(),
            next: Some(self.next_step(now, booted_ref)),
            last_check_outcome: self.check_outcome(),
            last_outcome: self.last_outcome(),
            rolling_back_to: self.rolling_back_to(booted_ref),
            fleet: self.fleet_status(),
            warnings: self
                .warnings
                .iter()
                .chain(self.part_warnings.values())
                .cloned()
                .collect(),
        }
    }

    /// The `Next:` sentence for this snapshot.
    fn next_step(&self, now: Timestamp, booted: Option<&SlotName>) -> NextStep {
        let next_check = self.next_check.map(|at| {
            let left = at.saturating_duration_since(Instant::now());
            let left = SignedDuration::try_from(left).unwrap_or(SignedDuration::MAX);
            now.checked_add(left).unwrap_or(now)
        });
        crate::engine::next::NextInputs {
            now,
            lifecycle: &self.doc.lifecycle,
            available: &self.available,
            schedule: &self.p.policy.schedule,
            busy: self.job.as_ref().map(|j| j.kind.name()),
            reboot_waiting: &self.reboot_waiting,
            lock: &self.fleet.state,
            booted,
            next_check,
        }
        .next_step()
    }

    /// The last check: a failed one (with its time and error) or the last good one.
    fn check_outcome(&self) -> Option<CheckOutcome> {
        let d = &self.doc;
        match (d.last_check_failed, &d.last_check_error) {
            (Some(at), Some(e)) => Some(CheckOutcome {
                at,
                last_good: d.last_check,
                error: Some(e.clone()),
                found: 0,
            }),
            _ => d.last_check.map(|at| CheckOutcome {
                at,
                last_good: Some(at),
                error: None,
                found: d.last_check_found,
            }),
        }
    }

    /// The last outcome of an update with its reason.
    fn last_outcome(&self) -> Option<String> {
        match &self.doc.lifecycle {
            Lifecycle::RolledBack {
                release, reason, ..
            } => return Some(format!("{} rolled back: {reason}", release.version)),
            Lifecycle::Failed { reason } => return Some(format!("failed: {reason}")),
            Lifecycle::Committed { release, .. } => {
                return Some(format!("{} committed", release.version))
            }
            _ => {}
        }
        if let Some(b) = self.doc.blocked.last() {
            let tz = self.p.policy.schedule.zone();
            let zone = self.p.policy.schedule.time_zone_name();
            let at = crate::policy::next::full(b.at, tz, zone);
            return Some(format!("{} failed here ({at}): {}", b.version, b.reason));
        }
        self.doc
            .committed
            .as_ref()
            .map(|c| format!("{} committed", c.version))
    }

    /// During a rollback whose reboot has not happened: the release the device goes
    /// back to.
    fn rolling_back_to(&self, booted: Option<&SlotName>) -> Option<String> {
        match &self.doc.lifecycle {
            Lifecycle::RolledBack {
                bad_slot, back_to, ..
            } if booted == Some(bad_slot) => self
                .slot(back_to)
                .and_then(|s| s.status().ok())
                .and_then(|st| st.version)
                .or_else(|| self.doc.committed.as_ref().map(|c| c.version.clone())),
            _ => None,
        }
    }

    /// Set or clear the warning of daemon part `key`; audited when it changes.
    pub(super) fn set_warning(&mut self, key: &'static str, text: Option<String>) {
        let old = match &text {
            Some(t) => self.part_warnings.insert(key, t.clone()),
            None => self.part_warnings.remove(key),
        };
        if old == text {
            return;
        }
        let part = serde_json::Value::from(key);
        match &text {
            Some(t) => self.audit_with(
                "warning",
                &Actor::Daemon,
                Some(t),
                None,
                None,
                &[("part", part)],
            ),
            None => self.audit_with(
                "warning_cleared",
                &Actor::Daemon,
                None,
                None,
                None,
                &[("part", part)],
            ),
        }
    }
}
