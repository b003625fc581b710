//! After the switch: health checks, commit, rollback (also during probation).

use super::*;

impl Runner {
    pub(crate) fn start_health(&mut self) {
        let Lifecycle::Verifying { deadline, .. } = &self.doc.lifecycle else {
            return;
        };
        let now = self.p.clock.now();
        let remaining = deadline.duration_since(now);
        let budget = Duration::try_from(remaining).unwrap_or(Duration::ZERO);
        self.start_health_with(budget);
    }

    pub(super) fn start_health_with(&mut self, budget: Duration) {
        let health = self.p.health.clone();
        self.progress_tx.send_replace(Some(Progress {
            phase: "health checks".into(),
            ..Progress::default()
        }));
        let handle = tokio::spawn(async move {
            if budget.is_zero() {
                return JobOut::Health(HealthVerdict {
                    passed: false,
                    failures: vec!["health check deadline passed".into()],
                    warnings: vec![],
                });
            }
            match tokio::time::timeout(budget, health.run(budget)).await {
                Ok(v) => JobOut::Health(v),
                Err(_) => JobOut::Health(HealthVerdict {
                    passed: false,
                    failures: vec![format!(
                        "health checks did not finish within the deadline ({}s)",
                        budget.as_secs()
                    )],
                    warnings: vec![],
                }),
            }
        });
        self.job = Some(Job {
            rec: self.begin_job("health checks", None),
            kind: JobKind::Health,
            handle: AbortOnDrop(handle),
        });
    }

    pub(super) async fn after_health(&mut self, v: HealthVerdict) -> Step {
        for w in &v.warnings {
            tracing::warn!(warning = %w, "wanted health check failed");
        }
        match &self.doc.lifecycle {
            Lifecycle::Verifying { .. } => {
                let v = self.components_in_effect(v).await;
                if v.passed {
                    self.mark_good(&Actor::Policy, "health checks passed").await
                } else {
                    let reason = format!("health checks failed: {}", v.failures.join("; "));
                    self.job_failure = Some(reason.clone());
                    self.roll_back(&Actor::Policy, health_cause(&v), &reason)
                        .await
                }
            }
            Lifecycle::Committed {
                probation_until: Some(_),
                ..
            } if !v.passed => {
                let reason = format!(
                    "health checks failed during probation: {}",
                    v.failures.join("; ")
                );
                self.job_failure = Some(reason.clone());
                self.roll_back(&Actor::Policy, health_cause(&v), &reason)
                    .await
            }
            _ => Ok(()),
        }
    }

    pub(super) async fn mark_good(&mut self, actor: &Actor, why: &str) -> Step {
        let Lifecycle::Verifying { release, slot, .. } = self.doc.lifecycle.clone() else {
            return Err(
                EngineError::Illegal(crate::engine::state::IllegalTransition {
                    from: self.doc.lifecycle.kind(),
                    action: "mark good",
                })
                .into(),
            );
        };
        let mut doc = self.doc.clone();
        doc.pending = Some(Pending::MarkGood { slot: slot.clone() });
        self.file.save(&doc)?;
        self.doc = doc;
        self.failpoint("commit.before_mark_good")?;
        self.p.bootloader.mark_good(&slot)?;
        if let Some(s) = self.slot(&slot) {
            s.set_state(SlotState::Good)?;
        }
        let now = self.p.clock.now();
        let probation_until = self
            .p
            .settings
            .probation
            .and_then(|d| SignedDuration::try_from(d).ok())
            .and_then(|d| now.checked_add(d).ok());
        // The one verdict covers the components installed with the release (and a
        // rollback in probation takes them back too).
        self.commit_components(probation_until.is_some());
        self.failpoint("commit.after_mark_good")?;
        let mut doc = self.doc.clone();
        doc.lifecycle = self
            .doc
            .lifecycle
            .health_passed(probation_until, self.doc.committed.clone())?;
        doc.pending = None;
        doc.committed = Some(release.clone());
        doc.last_error = None;
        // During probation the floor waits: rolling back to the previous release must
        // stay possible until the new one has proven itself.
        if probation_until.is_none() {
            doc.security_floor = doc.security_floor.max(release.security_version);
        }
        self.commit(doc, "committed", actor, Some(why))?;
        self.next_probation_check = Instant::now() + self.p.settings.probation_check_every;
        if probation_until.is_none() {
            // Steady at once: a source that keeps no previous root deletes it now.
            self.prune_previous(self.previous_slot()).await?;
        }
        Ok(())
    }

    /// Roll back the release on trial (or in probation). `cause` names the kind for the
    /// audit record and the metrics: `health`, `deadline`, `manual`, `boot`.
    pub(crate) async fn roll_back(&mut self, actor: &Actor, cause_: &str, reason: &str) -> Step {
        if let Lifecycle::Committed {
            slot,
            previous: None,
            ..
        } = &self.doc.lifecycle
        {
            let pruned = self.p.updates.as_ref().is_some_and(|u| !u.keeps_previous());
            let why = if pruned {
                format!(
                    "the release in slot {slot} is committed and its probation is over, so the \
                     previous root was taken out of the boot order and deleted ([source.apt] keep = 1)"
                )
            } else {
                format!(
                    "the release in slot {slot} is committed and its probation is over; the other \
                     slot is no longer kept as a way back"
                )
            };
            return Err(EngineError::NoPrevious { why }.into());
        }
        let next = self.doc.lifecycle.roll_back(reason)?;
        let Lifecycle::RolledBack {
            release,
            bad_slot,
            back_to,
            ..
        } = next.clone()
        else {
            return Ok(());
        };
        let previous_release = match &self.doc.lifecycle {
            Lifecycle::Committed {
                previous_release, ..
            } => Some(previous_release.clone()),
            _ => None,
        };
        let mut doc = self.doc.clone();
        doc.lifecycle = next;
        doc.block(&release.version, reason, self.p.clock.now());
        doc.pending = Some(Pending::MarkBad {
            slot: bad_slot.clone(),
        });
        if let Some(prev) = previous_release {
            doc.committed = prev;
        }
        self.commit_with(doc, "rolled_back", actor, Some(reason), &[cause(cause_)])?;
        self.failpoint("rollback.before_mark_bad")?;
        let rb = self.roll_back_components();
        tracing::info!(release = %release.version, "{rb}");
        self.undo_slot(&bad_slot, &back_to)?;
        self.failpoint("rollback.after_mark_bad")?;
        self.reboot(&format!(
            "roll back from {} to slot {back_to}",
            release.version
        ))
        .await
    }

    /// Make sure `bad` is never booted again and `back_to` boots next. Idempotent, so
    /// reconciliation may repeat it.
    pub(crate) fn undo_slot(&mut self, bad: &SlotName, back_to: &SlotName) -> Step {
        self.p.bootloader.mark_bad(bad)?;
        if let Some(s) = self.slot(bad) {
            s.set_state(SlotState::Bad)?;
        }
        if self.p.bootloader.primary_slot()? != *back_to {
            self.p
                .bootloader
                .try_slot(back_to, self.p.settings.boot_attempts.max(1))?;
        }
        Ok(())
    }
}
