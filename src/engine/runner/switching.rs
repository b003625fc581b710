//! Switching: what holds a switch back, arming the bootloader, the reboot.

use super::*;

impl Runner {
    /// Reasons not to switch to the staged release now: the switch decision, with the
    /// reboot inhibitors asked right now (unless forced).
    pub(super) async fn switch_blockers(&mut self, force: bool) -> Vec<WhyNot> {
        let Some(release) = self.doc.lifecycle.release().cloned() else {
            return vec![];
        };
        let inhibitors = if force {
            vec![]
        } else {
            let inh = self.p.reboot.inhibitors().await;
            self.reboot_waiting = inh.clone();
            inh
        };
        let running = self.running_version();
        match self.offered(&release.version).cloned() {
            Some(c) => {
                let why = self
                    .context(running.as_ref())
                    .decide(&c, force, &inhibitors)
                    .switch;
                // The reboot slot is asked for last, once nothing else holds the switch
                // back: a slot taken outside the window would idle a group's capacity.
                let only_lock = why.iter().all(|w| matches!(w, WhyNot::RebootLock { .. }));
                if force || !only_lock || self.p.fleet.is_none() {
                    // A wait for the lock is over once something else holds the switch:
                    // the lock is asked again when that lets go.
                    if !only_lock {
                        self.fleet_not_asking();
                    }
                    return why;
                }
                if let Err(e) = self.take_reboot_slot().await {
                    // Never switch on a slot that is not on record: it would never be
                    // given back.
                    let detail = match &e {
                        StepError::Err(e) => format!("the reboot slot could not be recorded: {e}"),
                        StepError::PowerCut(at) => format!("power cut at {at}"),
                    };
                    self.note_error(e);
                    return vec![WhyNot::RebootLock { detail }];
                }
                // `list` and status show the lock's answer as the release's reason.
                self.recategorize();
                self.context(running.as_ref())
                    .decide(&c, force, &inhibitors)
                    .switch
            }
            // Not seen since start (a restart while staged): a check must confirm the
            // release is still signed, not withdrawn and allowed before switching.
            None => {
                let mut why = vec![WhyNot::Manifest {
                    detail: "release not confirmed by a check since start".into(),
                }];
                why.extend(
                    inhibitors
                        .into_iter()
                        .map(|by| WhyNot::RebootInhibited { by }),
                );
                why
            }
        }
    }

    pub(super) async fn switch(&mut self, actor: &Actor, force: bool) -> Step {
        let Lifecycle::Staged { release, slot } = self.doc.lifecycle.clone() else {
            return Err(
                EngineError::Illegal(crate::engine::state::IllegalTransition {
                    from: self.doc.lifecycle.kind(),
                    action: "switch",
                })
                .into(),
            );
        };
        let why = self.switch_blockers(force).await;
        if !why.is_empty() {
            return Err(EngineError::SwitchRefused { why }.into());
        }
        let booted = self.p.bootloader.booted_slot()?;
        if booted == slot {
            let mut doc = self.doc.clone();
            doc.lifecycle = self.doc.lifecycle.fail(format!(
                "staged slot {slot} is the booted slot; refusing to switch"
            ));
            self.commit(doc, "failed", actor, Some("staged slot is the booted slot"))?;
            return Ok(());
        }
        let st = self
            .slot(&slot)
            .ok_or_else(|| EngineError::NoInactiveSlot(format!("slot {slot} is not configured")))?
            .status()?;
        if !st.state.is_bootable() || st.version.as_deref() != Some(release.version.as_str()) {
            let mut doc = self.doc.clone();
            let why = format!(
                "slot {slot} is {:?} with version {:?}, not verified {}",
                st.state, st.version, release.version
            );
            doc.lifecycle = Lifecycle::UpdateAvailable { release };
            self.commit(doc, "staged_slot_invalid", actor, Some(&why))?;
            return Ok(());
        }
        match self.install_components(actor, &release, &slot).await? {
            components::Installed::Failed => return Ok(()),
            components::Installed::Applied {
                needs_reboot: false,
            } if self.same_image(&slot, &booted) => {
                return self.finish_without_reboot(actor, &release, &booted).await
            }
            _ => {}
        }
        let reason = format!("switch to {} in slot {slot}", release.version);
        let mut doc = self.doc.clone();
        doc.lifecycle = self.doc.lifecycle.begin_switch(booted)?;
        doc.pending = Some(Pending::ArmTrial { slot: slot.clone() });
        // The rollout stage this device enters by: the `stage` label of the fleet's
        // per-release outcome metrics, counted from this record.
        let stage = self.entry_stage(&release.version);
        self.commit_with(
            doc,
            "switching",
            actor,
            Some(if force {
                "admin override"
            } else {
                "window, rollout and holds allow it"
            }),
            &stage
                .map(|s| ("stage", serde_json::Value::from(s)))
                .into_iter()
                .collect::<Vec<_>>(),
        )?;
        self.failpoint("switch.before_arm")?;
        let prepared = match self.p.updates.clone() {
            Some(u) => u.before_switch(&slot).await,
            None => Ok(Vec::new()),
        };
        let armed = match prepared {
            Ok(fields) => {
                if !fields.is_empty() {
                    self.audit_with("etc_carried", actor, None, None, None, &fields);
                }
                self.p
                    .bootloader
                    .try_slot(&slot, self.p.settings.boot_attempts)
                    .map_err(EngineError::from)
            }
            Err(e) => Err(EngineError::Port(e)),
        };
        if let Err(e) = armed {
            // The OS slot does not switch: neither do the components installed for it.
            let rb = self.roll_back_components();
            tracing::warn!(release = %release.version, "{rb}");
            let mut doc = self.doc.clone();
            doc.lifecycle = self.doc.lifecycle.switch_not_armed()?;
            doc.pending = None;
            let c = cause("switch");
            self.commit_with(doc, "switch_failed", actor, Some(&e.to_string()), &[c])?;
            return Err(e.into());
        }
        self.failpoint("switch.after_arm")?;
        self.reboot(&reason).await
    }

    /// The rollout stage (index) by which this device enters `version`, from the plan
    /// the last check verified (`None`: not offered by a check, or in no stage).
    fn entry_stage(&self, version: &str) -> Option<usize> {
        let facts = &self.offered(version)?.facts;
        let plan = facts.rollout.as_ref()?;
        let d = &self.p.device;
        plan.device_stage(&d.tags, crate::policy::bucket(&d.machine_id, &facts.id))
    }

    /// Record the reboot intent, ask for it, and stop acting.
    pub(crate) async fn reboot(&mut self, reason: &str) -> Step {
        let mut doc = self.doc.clone();
        doc.pending = Some(Pending::Reboot {
            reason: reason.to_string(),
        });
        self.file.save(&doc)?;
        self.doc = doc;
        self.audit_with("reboot", &Actor::Policy, Some(reason), None, None, &[]);
        self.failpoint("reboot.before")?;
        self.p.reboot.reboot(reason).await?;
        self.exit = Some(RunExit::Rebooting {
            reason: reason.to_string(),
        });
        Ok(())
    }
}
