//! Start-up reconciliation: compare the persisted state with the slot that actually
//! booted and the bootloader's counters, and finish or undo what a crash or power cut
//! interrupted. Every decision here is audited as `reconcile_*`.

use jiff::SignedDuration;

use super::ports::Actor;
use super::runner::{Followup, Runner, Step};
use super::state::Lifecycle;
use super::statefile::Pending;
use crate::slot::SlotState;

impl Runner {
    /// Long on purpose: one match over every persisted state against what booted, so the
    /// whole recovery table (docs/lifecycle.md, "Crash safety and start-up reconciliation") is
    /// read in one place.
    pub(crate) async fn reconcile(&mut self) -> Step<Followup> {
        let booted = self.p.bootloader.booted_slot()?;
        let info = self.p.bootloader.slots()?;
        let now = self.p.clock.now();
        let pending = self.doc.pending.clone();
        let sys = Actor::Policy;
        tracing::info!(
            state = %self.doc.lifecycle.kind(),
            booted = %booted,
            pending = ?pending,
            "reconciling state with the booted slot"
        );
        let follow = match self.doc.lifecycle.clone() {
            Lifecycle::Staging { release, slot } => {
                let st = self.slot(&slot).and_then(|s| s.status().ok());
                let finished = slot != booted
                    && st.as_ref().is_some_and(|st| {
                        st.state == SlotState::Verified
                            && st.version.as_deref() == Some(release.version.as_str())
                    });
                if finished {
                    // The pipeline verified every byte and recorded it; only the
                    // engine's own `staged` record was lost.
                    let mut doc = self.doc.clone();
                    doc.lifecycle = self.doc.lifecycle.staged()?;
                    doc.pending = None;
                    self.commit(
                        doc,
                        "staged",
                        &sys,
                        Some("staging had finished before the restart"),
                    )?;
                    Followup::Nothing
                } else {
                    // Never bootable while half written, whatever happens next.
                    if let Some(s) = self.slot(&slot) {
                        let _ = s.set_state(SlotState::Incomplete);
                    }
                    let resumable =
                        self.p.updates.is_some() && slot != booted && self.slot(&slot).is_some();
                    if resumable {
                        // Same release, same slot: the staging pipeline continues from
                        // its last checkpoint (or from zero when it has none) and checks
                        // the final hashes over every byte as always.
                        self.audit_with(
                            "reconcile_staging_resumed",
                            &sys,
                            Some(&format!(
                                "staging of {} into slot {slot} was interrupted; resuming after a check",
                                release.version
                            )),
                            None,
                            None, &[],
                        );
                        self.failpoint("audited:reconcile_staging_resumed")?;
                        Followup::ResumeStaging
                    } else {
                        let mut doc = self.doc.clone();
                        doc.lifecycle = self.doc.lifecycle.staging_aborted()?;
                        doc.pending = None;
                        self.commit(
                            doc,
                            "reconcile_staging_interrupted",
                            &sys,
                            Some("staging was interrupted and cannot resume here (no repository or slot); the slot is discarded"),
                        )?;
                        Followup::Nothing
                    }
                }
            }
            Lifecycle::Staged { release, slot } => {
                let st = self.slot(&slot).and_then(|s| s.status().ok());
                let ok = slot != booted
                    && st.as_ref().is_some_and(|st| {
                        st.state == SlotState::Verified
                            && st.version.as_deref() == Some(release.version.as_str())
                    });
                if !ok {
                    let mut doc = self.doc.clone();
                    doc.lifecycle = Lifecycle::UpdateAvailable { release };
                    doc.pending = None;
                    self.commit(
                        doc,
                        "reconcile_staged_slot_invalid",
                        &sys,
                        Some("the staged slot no longer holds the verified release"),
                    )?;
                }
                Followup::Nothing
            }
            Lifecycle::Switching {
                release,
                slot,
                from,
            } => {
                let si = info.iter().find(|i| i.slot == slot);
                let armed = si.is_some_and(|i| i.tries_left.is_some_and(|t| t > 0) && !i.bad);
                if booted == slot {
                    let deadline = now
                        .checked_add(
                            SignedDuration::try_from(self.p.settings.health_deadline)
                                .unwrap_or(SignedDuration::from_secs(600)),
                        )
                        .unwrap_or(now);
                    let mut doc = self.doc.clone();
                    doc.lifecycle = self.doc.lifecycle.booted_new(deadline)?;
                    doc.pending = None;
                    self.commit(
                        doc,
                        "booted_new_slot",
                        &sys,
                        Some(&format!("booted {} from slot {slot}", release.version)),
                    )?;
                    Followup::StartHealth
                } else if booted == from {
                    match pending {
                        Some(Pending::ArmTrial { .. }) if !armed => {
                            let mut doc = self.doc.clone();
                            doc.lifecycle = self.doc.lifecycle.switch_not_armed()?;
                            doc.pending = None;
                            self.commit(
                                doc,
                                "reconcile_switch_not_armed",
                                &sys,
                                Some("interrupted before the bootloader was told; waiting again"),
                            )?;
                            Followup::Nothing
                        }
                        _ if armed => Followup::Reboot(format!(
                            "finish the interrupted switch to {} in slot {slot}",
                            release.version
                        )),
                        _ => {
                            self.fell_back(&slot, "new slot did not boot").await?;
                            Followup::Nothing
                        }
                    }
                } else {
                    self.unexpected_boot(&booted.to_string())?;
                    Followup::Nothing
                }
            }
            Lifecycle::Verifying { slot, from, .. } => {
                if booted == slot {
                    if pending.is_some() {
                        let mut doc = self.doc.clone();
                        doc.pending = None;
                        self.file.save(&doc)?;
                        self.doc = doc;
                    }
                    // Restart the checks with what is left of the deadline.
                    Followup::StartHealth
                } else if booted == from {
                    self.fell_back(
                        &slot,
                        &format!("fell back to slot {from} during verification"),
                    )
                    .await?;
                    Followup::Nothing
                } else {
                    self.unexpected_boot(&booted.to_string())?;
                    Followup::Nothing
                }
            }
            Lifecycle::RolledBack {
                bad_slot,
                back_to,
                release,
                ..
            } => {
                if booted == bad_slot {
                    self.undo_slot(&bad_slot, &back_to)?;
                    Followup::Reboot(format!(
                        "finish the rollback from {} to slot {back_to}",
                        release.version
                    ))
                } else {
                    if pending.is_some() {
                        self.undo_slot(&bad_slot, &back_to)?;
                        if booted == back_to && self.p.bootloader.primary_slot()? != back_to {
                            self.p.bootloader.mark_good(&back_to)?;
                        }
                        let mut doc = self.doc.clone();
                        doc.pending = None;
                        self.file.save(&doc)?;
                        self.doc = doc;
                        self.audit_with(
                            "rollback_completed",
                            &sys,
                            Some(&format!("running from slot {booted}")),
                            None,
                            None,
                            &[],
                        );
                    }
                    Followup::Nothing
                }
            }
            Lifecycle::Committed { slot, .. } => {
                if booted != slot {
                    self.unexpected_boot(&booted.to_string())?;
                } else if let Some(Pending::Prune { slot: old }) = &pending {
                    // A prune a crash cut off: out of the boot order and deleted, again.
                    self.finish_prune(old).await?;
                } else if pending.is_some() {
                    self.clear_pending()?;
                }
                Followup::Nothing
            }
            Lifecycle::Idle {} | Lifecycle::UpdateAvailable { .. } | Lifecycle::Failed { .. } => {
                if pending.is_some() {
                    self.clear_pending()?;
                }
                Followup::Nothing
            }
        };
        Ok(follow)
    }

    fn clear_pending(&mut self) -> Step {
        let mut doc = self.doc.clone();
        doc.pending = None;
        self.file.save(&doc)?;
        self.doc = doc;
        Ok(())
    }

    /// The bootloader went back to the old slot by itself: record it, block the release,
    /// make sure the new slot is never tried again.
    async fn fell_back(&mut self, bad: &crate::names::SlotName, reason: &str) -> Step {
        let mut doc = self.doc.clone();
        doc.lifecycle = self.doc.lifecycle.booted_old(reason)?;
        if let Some(r) = self.doc.lifecycle.release() {
            doc.block(&r.version, reason, self.p.clock.now());
        }
        doc.pending = Some(Pending::MarkBad { slot: bad.clone() });
        let Lifecycle::RolledBack { back_to, .. } = doc.lifecycle.clone() else {
            return Ok(());
        };
        let c = super::runner::cause("boot");
        self.commit_with(doc, "rolled_back", &Actor::Policy, Some(reason), &[c])?;
        let rb = self.roll_back_components();
        tracing::info!("{rb}");
        self.undo_slot(bad, &back_to)?;
        self.clear_pending()
    }

    /// We run from a slot the state does not expect (an admin picked it in the boot
    /// menu?): do not guess; say so and wait for an admin.
    fn unexpected_boot(&mut self, booted: &str) -> Step {
        let reason = format!(
            "booted slot {booted}, which the {} state does not expect; an admin must check",
            self.doc.lifecycle.kind()
        );
        let mut doc = self.doc.clone();
        doc.lifecycle = self.doc.lifecycle.fail(reason.clone());
        doc.pending = None;
        self.commit(
            doc,
            "reconcile_unexpected_boot",
            &Actor::Policy,
            Some(&reason),
        )
    }
}
