//! Admin commands that need no job (cancel, holds) and the inventory.

use super::*;

impl Runner {
    pub(super) async fn cancel(&mut self, actor: &Actor) -> Step {
        let next = match self.doc.lifecycle.cancel() {
            Ok(next) => next,
            // Nothing runs and nothing waits: the admin's target does not exist (NotFound,
            // exit 6), unlike a cancel refused mid-switch.
            Err(_) if self.job.is_none() && self.doc.lifecycle.is_settled() => {
                return Err(EngineError::NothingToCancel {
                    state: self.doc.lifecycle.kind().as_str(),
                }
                .into())
            }
            Err(e) => return Err(EngineError::from(e).into()),
        };
        if let Some(j) = self.job.take() {
            if matches!(j.kind, JobKind::Stage { .. }) {
                j.handle.0.abort();
                self.progress_tx.send_replace(None);
                self.end_job(j.rec, JobOutcome::Cancelled, None);
            } else {
                let running = j.kind.name().to_string();
                self.job = Some(j);
                return Err(EngineError::Busy { running }.into());
            }
        }
        if let Lifecycle::Staging { slot, .. } | Lifecycle::Staged { slot, .. } =
            &self.doc.lifecycle
        {
            // The half-written or unused slot must not be booted by accident.
            if let Some(s) = self.slot(slot) {
                let _ = s.set_state(SlotState::Incomplete);
            }
        }
        let mut doc = self.doc.clone();
        doc.lifecycle = next;
        doc.pending = None;
        self.commit(doc, "cancelled", actor, None)
    }

    pub(super) fn hold(
        &mut self,
        actor: &Actor,
        reason: String,
        until: Option<Timestamp>,
        max_version: Option<String>,
    ) -> Step<Vec<Hold>> {
        let now = self.p.clock.now();
        let max_version = match max_version {
            None => None,
            Some(v) => Some(
                semver::Version::parse(&v).map_err(|e| EngineError::BadVersion {
                    version: v.clone(),
                    why: e.to_string(),
                })?,
            ),
        };
        let hold = Hold {
            reason,
            by: actor.to_string(),
            created: now,
            until,
            max_version,
        };
        // One hold at a time: a second `hold` changes the exception rather than stacking
        // a second one that `release-hold` would silently remove too.
        let mut detail = hold.describe();
        let mut doc = self.doc.clone();
        let replaced = std::mem::replace(&mut doc.holds, vec![hold]);
        for r in &replaced {
            detail.push_str(&format!("; replaces {}", r.describe()));
        }
        self.file.save(&doc)?;
        self.doc = doc;
        self.audit_with("hold", actor, Some(&detail), None, None, &[]);
        self.recategorize();
        Ok(replaced)
    }

    pub(super) fn release_holds(&mut self, actor: &Actor, why: &str) -> Step {
        if self.doc.holds.is_empty() {
            return Err(EngineError::NoHold.into());
        }
        let mut doc = self.doc.clone();
        doc.holds.clear();
        self.file.save(&doc)?;
        self.doc = doc;
        self.audit_with("hold_released", actor, Some(why), None, None, &[]);
        self.recategorize();
        Ok(())
    }

    /// Approve `version` for an urgency rule that asks for approval (`install` of a
    /// named release approves it too). Approving twice changes nothing.
    pub(super) fn approve(&mut self, actor: &Actor, version: &str) -> Step {
        let Some(offered) = self.offered(version) else {
            return Err(EngineError::NoSuchRelease {
                version: version.to_string(),
            }
            .into());
        };
        let s = &offered.facts.summary;
        let urgency = crate::policy::urgency_for(&self.p.policy.urgency, s.kind, s.severity);
        if urgency != crate::policy::Urgency::Approval {
            return Err(EngineError::NoApprovalNeeded {
                version: version.to_string(),
                urgency: urgency.to_string(),
            }
            .into());
        }
        if self.doc.approved.iter().any(|a| a == version) {
            return Ok(());
        }
        let mut doc = self.doc.clone();
        doc.approved.push(version.to_string());
        self.file.save(&doc)?;
        self.doc = doc;
        let why = format!("admin approved {version}");
        let fields = [("version", serde_json::Value::from(version))];
        self.audit_about("approved", actor, Some(&why), version, &fields);
        self.recategorize();
        // An approved release that waits for nothing else switches now, not at the next
        // periodic evaluation.
        self.next_eval = Instant::now();
        Ok(())
    }

    /// Let `version`, which failed on this device, be installed again after a fix: the
    /// block goes, the audit record keeps the admin's reason and the old failure.
    pub(super) fn allow_retry(&mut self, actor: &Actor, version: &str, reason: &str) -> Step {
        let Some(old) = self
            .doc
            .blocked
            .iter()
            .find(|b| b.version == version)
            .cloned()
        else {
            return Err(EngineError::NotFailedHere {
                version: version.to_string(),
            }
            .into());
        };
        let mut doc = self.doc.clone();
        doc.blocked.retain(|b| b.version != version);
        self.file.save(&doc)?;
        self.doc = doc;
        if self.stage_failed.as_deref() == Some(version) {
            self.stage_failed = None;
        }
        let fields = [
            ("version", serde_json::Value::from(version)),
            ("failure", serde_json::Value::from(old.reason.as_str())),
        ];
        self.audit_about("retry_allowed", actor, Some(reason), version, &fields);
        self.recategorize();
        Ok(())
    }

    pub(super) fn inventory(&self) -> serde_json::Value {
        use crate::inventory::{collect, EngineFacts, PatchInfo};
        let now = self.p.clock.now();
        let staged = match &self.doc.lifecycle {
            Lifecycle::Staging { release, .. }
            | Lifecycle::Staged { release, .. }
            | Lifecycle::Switching { release, .. }
            | Lifecycle::Verifying { release, .. } => Some(release.version.clone()),
            _ => None,
        };
        let patches = self
            .available
            .iter()
            .map(|a| {
                let state = if self.doc.is_blocked(&a.version) {
                    "failed"
                } else if staged.as_deref() == Some(a.version.as_str()) {
                    "pending"
                } else {
                    "available"
                };
                let reasons: Vec<String> = a.why_not.iter().map(|w| w.to_string()).collect();
                PatchInfo {
                    release: self
                        .offered(&a.version)
                        .map_or_else(|| a.version.clone(), |c| c.facts.id.clone()),
                    version: a.version.clone(),
                    kind: a.kind,
                    severity: a.severity,
                    cves: a.cves.clone(),
                    size: Some(a.size),
                    state: state.to_string(),
                    decision: Some(if reasons.is_empty() {
                        crate::policy::Decision::allowed("nothing stops it")
                    } else {
                        crate::policy::Decision::wait(reasons.join("; "), None)
                    }),
                    packages: a.packages.clone(),
                }
            })
            .collect();
        let facts = EngineFacts {
            bootloader: Some(self.p.bootloader.kind().to_string()),
            slot_backend: self.p.slots.first().map(|s| s.kind().to_string()),
            slots: self
                .p
                .slots
                .iter()
                .filter_map(|s| s.status().ok())
                .collect(),
            booted: self.p.bootloader.booted_slot().ok(),
            security_floor: Some(self.doc.security_floor),
            holds: active_holds(&self.doc.holds, now).cloned().collect(),
            patches,
            audit_head: Some(self.audit_head()),
            installed_packages: self.p.updates.as_ref().and_then(|u| u.installed_packages()),
            apps_dir: Some(self.p.components.apps_dir.clone()),
        };
        let inv = collect(&self.p.paths, &self.p.device_config, facts, now);
        serde_json::to_value(&inv).unwrap_or_else(
            |e| serde_json::json!({ "error": format!("inventory serialization: {e}") }),
        )
    }

    /// The audit chain's head as inventory and metrics show it.
    pub(super) fn audit_head(&self) -> crate::inventory::AuditHead {
        let log = self.p.audit.lock().unwrap_or_else(|e| e.into_inner());
        crate::inventory::AuditHead {
            seq: log.last_seq(),
            hash: log.last_hash().to_string(),
            lag_at_start: log.startup_lag().map_or(0, |l| l.records.len() as u64),
        }
    }
}
