//! The fleet reboot slot in the lifecycle: taken right before a switch that nothing else
//! holds back, kept through the reboot, the health checks and probation, given back at
//! steady state; after a failed update it is kept, so the device's group stays paused,
//! until an operator releases it (`patchctl fleet release`).
//!
//! Asks are audited when the answer changes (granted, a different set of holders,
//! unreachable), not at every retry, so a long wait does not flood the audit trail; the
//! backoff and the next ask show in status.

use super::*;
use crate::engine::handle::FleetStatus;
use crate::engine::ports::RebootSlots;
use crate::engine::statefile::HeldSlot;
use crate::fleet::config::WhenUnreachable;
use crate::fleet::LockAnswer;

/// What the runner remembers about the lock between asks (memory only: the held slot
/// itself is in the state file).
#[derive(Debug, Default)]
pub(crate) struct FleetRun {
    pub(crate) state: LockState,
    /// Refusals or failures in a row, for the backoff.
    failures: u32,
    /// Not before this is the lock asked again.
    retry_at: Option<Instant>,
    /// When the timer should wake the engine for that ask (cleared once it fired).
    pub(crate) wake: Option<Instant>,
}

/// Equal but for the time of the next ask: a wait that did not change is audited once.
fn same_situation(a: &LockState, b: &LockState) -> bool {
    match (a, b) {
        (
            LockState::Waiting {
                group: g1,
                slots: s1,
                holders: h1,
                said: w1,
                ..
            },
            LockState::Waiting {
                group: g2,
                slots: s2,
                holders: h2,
                said: w2,
                ..
            },
        ) => (g1, s1, h1, w1) == (g2, s2, h2, w2),
        (LockState::Unreachable { .. }, LockState::Unreachable { .. }) => true,
        _ => false,
    }
}

impl Runner {
    fn fleet_fields(&self, slots: &RebootSlots) -> Vec<(&'static str, serde_json::Value)> {
        let mut f = vec![
            ("group", serde_json::Value::from(slots.config.group.clone())),
            ("backend", serde_json::Value::from(slots.backend.clone())),
        ];
        if let LockState::Waiting { holders, .. } = &self.fleet.state {
            f.push(("holders", serde_json::Value::from(holders.clone())));
        }
        f
    }

    /// Back off after a refusal or failure: the next ask's instant and wall time.
    fn back_off(&mut self, slots: &RebootSlots) -> Timestamp {
        self.fleet.failures = self.fleet.failures.saturating_add(1);
        let wait = slots.config.backoff(self.fleet.failures);
        let at = Instant::now() + wait;
        self.fleet.retry_at = Some(at);
        self.fleet.wake = Some(at);
        let wall = SignedDuration::try_from(wait).unwrap_or(SignedDuration::MAX);
        let now = self.p.clock.now();
        now.checked_add(wall).unwrap_or(now)
    }

    fn ask_due(&self) -> bool {
        !matches!(self.fleet.retry_at, Some(at) if Instant::now() < at)
    }

    /// The state a slot recorded in the state file stands for.
    fn held_state(h: &HeldSlot) -> LockState {
        match &h.kept {
            Some(reason) => LockState::Kept {
                group: h.group.clone(),
                version: h.version.clone(),
                reason: reason.clone(),
            },
            None => LockState::Held {
                group: h.group.clone(),
            },
        }
    }

    /// Right before a switch every other input allows: take this device's slot (or
    /// confirm the one it holds). Refusals and failures become the lock state the
    /// switch decision reads.
    pub(super) async fn take_reboot_slot(&mut self) -> Step {
        let Some(slots) = self.p.fleet.clone() else {
            return Ok(());
        };
        if let Some(h) = &self.doc.reboot_slot {
            self.fleet.state = Self::held_state(h);
            return Ok(());
        }
        let Some(version) = self.doc.lifecycle.release().map(|r| r.version.clone()) else {
            return Ok(());
        };
        if !self.ask_due() {
            return Ok(());
        }
        let group = slots.config.group.clone();
        match slots.lock.acquire().await {
            Ok(LockAnswer::Granted) => {
                let mut doc = self.doc.clone();
                doc.reboot_slot = Some(HeldSlot {
                    group: group.clone(),
                    backend: slots.backend.clone(),
                    version,
                    since: self.p.clock.now(),
                    kept: None,
                });
                self.file.save(&doc)?;
                self.doc = doc;
                self.fleet = FleetRun {
                    state: LockState::Held {
                        group: group.clone(),
                    },
                    ..FleetRun::default()
                };
                let why = format!("took a reboot slot in group {group}");
                let fields = self.fleet_fields(&slots);
                self.audit_with(
                    "reboot_slot_acquired",
                    &Actor::Policy,
                    Some(&why),
                    None,
                    None,
                    &fields,
                );
            }
            Ok(LockAnswer::Busy { kind, value }) => {
                let occupancy = slots
                    .lock
                    .occupancy()
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let retry_at = self.back_off(&slots);
                let new = LockState::Waiting {
                    group,
                    slots: occupancy.slots,
                    holders: occupancy.holders,
                    said: Some(format!("{kind}: {value}")),
                    retry_at: Some(retry_at),
                };
                let changed = !same_situation(&self.fleet.state, &new);
                self.fleet.state = new;
                if changed {
                    let why = self.fleet.state.blocker().unwrap_or_default();
                    tracing::info!(%why, "waiting for a reboot slot");
                    let fields = self.fleet_fields(&slots);
                    self.audit_with(
                        "reboot_slot_waiting",
                        &Actor::Policy,
                        Some(&why),
                        None,
                        None,
                        &fields,
                    );
                }
            }
            Err(e) => {
                let retry_at = self.back_off(&slots);
                let waits = slots.config.when_unreachable == WhenUnreachable::Wait;
                let new = LockState::Unreachable {
                    group,
                    detail: e.to_string(),
                    waits,
                    retry_at: Some(retry_at),
                };
                let changed = !same_situation(&self.fleet.state, &new);
                self.fleet.state = new;
                if changed {
                    let then = if waits {
                        "staged, not rebooting without a slot (when_unreachable = \"wait\")"
                    } else {
                        "rebooting without a slot (when_unreachable = \"reboot\")"
                    };
                    let why = format!("{e}; {then}");
                    tracing::warn!(%why, "reboot lock unreachable");
                    let fields = self.fleet_fields(&slots);
                    self.audit_with(
                        "reboot_lock_unreachable",
                        &Actor::Policy,
                        Some(&why),
                        None,
                        None,
                        &fields,
                    );
                }
            }
        }
        Ok(())
    }

    /// Something other than the lock holds the switch back: a wait for a slot (or for
    /// the service) no longer stands, and is not shown as a reason.
    pub(super) fn fleet_not_asking(&mut self) {
        if matches!(
            self.fleet.state,
            LockState::Waiting { .. } | LockState::Unreachable { .. }
        ) {
            self.fleet = FleetRun::default();
        }
    }

    /// Keep the held slot in step with the lifecycle: keep it while the update is in
    /// flight, keep it for good when it failed, give it back once steady.
    pub(super) async fn follow_reboot_slot(&mut self) -> Step {
        let Some(h) = self.doc.reboot_slot.clone() else {
            if matches!(
                self.fleet.state,
                LockState::Held { .. } | LockState::Kept { .. }
            ) {
                self.fleet.state = LockState::NotConfigured;
            }
            return Ok(());
        };
        if h.kept.is_some() {
            self.fleet.state = Self::held_state(&h);
            return Ok(());
        }
        let failed = match &self.doc.lifecycle {
            Lifecycle::RolledBack { reason, .. } | Lifecycle::Failed { reason } => {
                Some(reason.clone())
            }
            _ => self
                .doc
                .blocked
                .iter()
                .find(|b| b.version == h.version)
                .map(|b| b.reason.clone()),
        };
        if let Some(reason) = failed {
            let mut doc = self.doc.clone();
            let mut kept = h.clone();
            kept.kept = Some(reason.clone());
            doc.reboot_slot = Some(kept.clone());
            self.file.save(&doc)?;
            self.doc = doc;
            self.fleet.state = Self::held_state(&kept);
            let why = format!(
                "keeps the reboot slot in group {}: {} failed ({reason}); the group waits for \
                 patchctl fleet release",
                h.group, h.version
            );
            let fields = [
                ("group", serde_json::Value::from(h.group.clone())),
                ("backend", serde_json::Value::from(h.backend.clone())),
            ];
            self.audit_about(
                "reboot_slot_kept",
                &Actor::Policy,
                Some(&why),
                &h.version,
                &fields,
            );
            return Ok(());
        }
        let in_flight = matches!(
            self.doc.lifecycle,
            Lifecycle::Staged { .. }
                | Lifecycle::Switching { .. }
                | Lifecycle::Verifying { .. }
                | Lifecycle::Committed {
                    probation_until: Some(_),
                    ..
                }
        );
        self.fleet.state = Self::held_state(&h);
        if in_flight || !self.ask_due() {
            return Ok(());
        }
        let Some(slots) = self.p.fleet.clone() else {
            tracing::warn!(group = %h.group, "holding a reboot slot but no reboot lock is configured to give it back to");
            return Ok(());
        };
        let why = format!(
            "steady on {}: gave back the reboot slot in group {}",
            h.version, h.group
        );
        self.give_back(&slots, &Actor::Policy, &why)
            .await
            .map(|_| ())
    }

    /// Release the slot at the lock service and forget it; `Ok(Err(why))` when the
    /// service did not answer (audited, retried with backoff).
    async fn give_back(
        &mut self,
        slots: &RebootSlots,
        actor: &Actor,
        why: &str,
    ) -> Step<Result<(), String>> {
        match slots.lock.release().await {
            Ok(()) => {
                let mut doc = self.doc.clone();
                let held = doc.reboot_slot.take();
                self.file.save(&doc)?;
                self.doc = doc;
                self.fleet = FleetRun::default();
                let fields = self.fleet_fields(slots);
                match held {
                    Some(h) => self.audit_about(
                        "reboot_slot_released",
                        actor,
                        Some(why),
                        &h.version,
                        &fields,
                    ),
                    None => self.audit_with(
                        "reboot_slot_released",
                        actor,
                        Some(why),
                        None,
                        None,
                        &fields,
                    ),
                }
                Ok(Ok(()))
            }
            Err(e) => {
                let first = self.fleet.failures == 0;
                self.back_off(slots);
                if first {
                    let why = format!("{e}; could not give back the reboot slot, asking again");
                    tracing::warn!(%why, "reboot lock unreachable");
                    let fields = self.fleet_fields(slots);
                    self.audit_with(
                        "reboot_lock_unreachable",
                        actor,
                        Some(&why),
                        None,
                        None,
                        &fields,
                    );
                }
                Ok(Err(e.to_string()))
            }
        }
    }

    /// `patchctl fleet release`: give this device's slot back now, also one kept after
    /// a failed update (the operator looked), and also one the state file does not know
    /// (lost state: the service still counts it).
    pub(super) async fn operator_release(&mut self, actor: &Actor, reason: &str) -> Step {
        let Some(slots) = self.p.fleet.clone() else {
            return Err(EngineError::NoRebootLock.into());
        };
        let why = match reason {
            "" => format!(
                "an operator gave back the reboot slot in group {}",
                slots.config.group
            ),
            r => format!(
                "an operator gave back the reboot slot in group {}: {r}",
                slots.config.group
            ),
        };
        self.fleet.retry_at = None;
        match self.give_back(&slots, actor, &why).await? {
            Ok(()) => Ok(()),
            Err(detail) => Err(EngineError::Port(PortError::new("fleet release", detail)).into()),
        }
    }

    /// The slot as status shows it; `None` without a configured lock and nothing held.
    pub(super) fn fleet_status(&self) -> Option<FleetStatus> {
        let held = self.doc.reboot_slot.as_ref();
        let slots = self.p.fleet.as_ref();
        if held.is_none() && slots.is_none() {
            return None;
        }
        let state = match (&self.fleet.state, held) {
            (_, Some(h)) if h.kept.is_some() => "kept",
            (_, Some(_)) => "held",
            (LockState::Waiting { .. }, None) => "waiting",
            (LockState::Unreachable { .. }, None) => "unreachable",
            _ => "free",
        };
        let holders = match &self.fleet.state {
            LockState::Waiting { holders, .. } => holders.clone(),
            _ => vec![],
        };
        Some(FleetStatus {
            group: held
                .map(|h| h.group.clone())
                .or_else(|| slots.map(|s| s.config.group.clone()))
                .unwrap_or_default(),
            backend: held
                .map(|h| h.backend.clone())
                .or_else(|| slots.map(|s| s.backend.clone()))
                .unwrap_or_default(),
            state: state.into(),
            text: self.fleet.state.blocker(),
            holders,
            since: held.map(|h| h.since),
            retry_at: self.fleet.state.retry_at(),
        })
    }
}
