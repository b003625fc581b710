//! Staging: choosing the slot, fencing it, the job, its result, resuming and retrying.

use super::*;

impl Runner {
    pub(super) fn start_stage(
        &mut self,
        actor: Actor,
        version: String,
        slot: SlotName,
        switch_after: bool,
    ) {
        let Some(updates) = self
            .bundle_source
            .clone()
            .or_else(|| self.p.updates.clone())
        else {
            return;
        };
        // A release this device cannot install is refused before its image downloads.
        let refused = self.components_installable(&version).err();
        let shared = self.progress_tx.clone();
        let v = version.clone();
        let handle = tokio::spawn(async move {
            if let Some(e) = refused {
                return JobOut::Stage(Err(e));
            }
            // The staging pipeline writes on blocking threads that outlive an aborted job
            // (cancel): it gets a channel of its own, forwarded only while this task lives,
            // so a cancelled staging cannot bring its job line back into status.
            let (job_tx, mut job_rx) = watch::channel(None);
            // The lifecycle names the release as text (it is persisted); the port takes
            // the version as discovery parsed it from the signed summary.
            let stage = async {
                match semver::Version::parse(&v) {
                    Ok(sv) => updates.stage(&sv, &slot, job_tx).await,
                    Err(e) => Err(PortError::new(
                        format!("stage {v}"),
                        format!("not a release version: {e}"),
                    )),
                }
            };
            tokio::pin!(stage);
            let mut open = true;
            loop {
                tokio::select! {
                    out = &mut stage => {
                        if job_rx.has_changed().unwrap_or(false) {
                            shared.send_replace(job_rx.borrow_and_update().clone());
                        }
                        break JobOut::Stage(out);
                    }
                    changed = job_rx.changed(), if open => match changed {
                        Ok(()) => {
                            shared.send_replace(job_rx.borrow_and_update().clone());
                        }
                        Err(_) => open = false,
                    },
                }
            }
        });
        self.job = Some(Job {
            rec: self.begin_job("staging", Some(&version)),
            kind: JobKind::Stage {
                actor,
                version,
                switch_after,
            },
            handle: AbortOnDrop(handle),
        });
    }

    /// Schedule staging `version` again after a network failure; the wall-clock time
    /// of the attempt, or `None` when `cause` is not retried by itself.
    pub(super) fn schedule_stage_retry(&mut self, version: &str, cause: &str) -> Option<Timestamp> {
        if !RETRIED_CAUSES.contains(&cause) {
            self.stage_retry = None;
            return None;
        }
        let failures = match &self.stage_retry {
            Some(r) if r.version == version => r.failures + 1,
            _ => 1,
        };
        let s = &self.p.settings;
        let base = retry_delay(s.retry_after, s.retry_after_max, failures);
        // A fleet behind one slow mirror must not come back in lockstep.
        let delay = base + jitter(base / 10);
        self.stage_retry = Some(StageRetry {
            version: version.to_owned(),
            failures,
            at: Some(Instant::now() + delay),
        });
        let wall = self
            .p
            .clock
            .now()
            .checked_add(SignedDuration::try_from(delay).unwrap_or(SignedDuration::ZERO))
            .unwrap_or_else(|_| self.p.clock.now());
        Some(wall)
    }

    /// Pick the slot to write: one that is not booted, preferring non-primary.
    pub(crate) fn inactive_slot(&self) -> Result<SlotName, EngineError> {
        let booted = self.p.bootloader.booted_slot()?;
        self.p
            .slots
            .iter()
            .map(|s| s.name().clone())
            .find(|n| n != &booted)
            .ok_or_else(|| {
                EngineError::NoInactiveSlot(format!(
                    "every configured slot is the booted one ({booted})"
                ))
            })
    }

    pub(super) async fn install(
        &mut self,
        actor: &Actor,
        release: Option<String>,
        switch_now: bool,
    ) -> Step<InstallStarted> {
        if self.p.updates.is_none() {
            return Err(no_repository().into());
        }
        // Releases come from the repository again.
        self.bundle_source = None;
        self.install_chosen(actor, release, switch_now).await
    }

    /// Install `release` (default: the best allowed) from the releases the last check,
    /// or the last bundle, listed.
    pub(super) async fn install_chosen(
        &mut self,
        actor: &Actor,
        release: Option<String>,
        switch_now: bool,
    ) -> Step<InstallStarted> {
        let chosen = match &release {
            Some(v) => self
                .available
                .iter()
                .find(|a| &a.version == v)
                .ok_or_else(|| EngineError::NoSuchRelease { version: v.clone() })?,
            None => stage_target(&self.available).ok_or_else(|| EngineError::NothingToInstall {
                why: if self.available.is_empty() {
                    "no release is available (run check first)".into()
                } else {
                    "every available release is excluded (see status)".into()
                },
            })?,
        };
        // An admin may install outside the rollout stage and the window (an explicit
        // install is also the approval urgency rules ask for), never a release that
        // failed here, is below the floor without an override, is not newer, is held,
        // withdrawn or in another channel.
        let version = chosen.version.clone();
        let cand = self
            .offered(&version)
            .ok_or_else(|| EngineError::NoSuchRelease {
                version: version.clone(),
            })?;
        let running = self.running_version();
        if let Some(w) = self
            .context(running.as_ref())
            .decide(cand, true, &[])
            .switch
            .into_iter()
            .next()
        {
            return Err(EngineError::Refused { version, why: w }.into());
        }
        let chosen = self
            .available
            .iter()
            .find(|a| a.version == version)
            .ok_or_else(|| EngineError::NoSuchRelease {
                version: version.clone(),
            })?;
        let target = ReleaseRef::new(&chosen.version, chosen.security_version);
        let mut doc = self.doc.clone();
        if release.is_some() && !doc.approved.contains(&version) {
            doc.approved.push(version.clone());
            let why = format!("admin approved {version}");
            self.file.save(&doc)?;
            self.doc = doc.clone();
            self.audit_with("approved", actor, Some(&why), None, None, &[]);
        }
        if self.doc.lifecycle.release() != Some(&target)
            || !matches!(self.doc.lifecycle, Lifecycle::UpdateAvailable { .. })
        {
            doc.lifecycle = self.doc.lifecycle.found(target.clone())?;
            self.commit(doc, "update_available", actor, Some("chosen by an admin"))?;
        }
        let slot = self.begin_staging(actor, switch_now)?;
        let job = self.job.as_ref().map(|j| j.rec.id).unwrap_or_default();
        Ok(InstallStarted {
            job,
            version: target.version,
            slot,
            switch_after: switch_now,
        })
    }

    /// Remember which releases staging waits for now (a rollout stage, its spread, a
    /// hold, a window); returns the ones it waited for at the evaluation before.
    pub(super) fn note_stage_waits(&mut self) -> Vec<String> {
        let now: Vec<String> = self
            .available
            .iter()
            .filter(|a| !a.may_stage && a.standing != crate::policy::Standing::NotApplicable)
            .map(|a| a.version.clone())
            .collect();
        std::mem::replace(&mut self.stage_waiting, now)
    }

    /// A settled device whose release became stageable by time since the last evaluation
    /// (its rollout stage opened and its spread passed, a hold ended) stages it now, not
    /// at the next check. Only on that edge: a release an admin cancelled stays cancelled
    /// until a check offers it again.
    pub(super) fn stage_opened(&mut self, waited: &[String]) -> Step {
        if self.p.updates.is_none() || self.job.is_some() {
            return Ok(());
        }
        let Some(t) = stage_target(&self.available)
            .filter(|a| waited.contains(&a.version))
            .map(|a| ReleaseRef::new(&a.version, a.security_version))
        else {
            return Ok(());
        };
        if self.stage_failed.as_deref() == Some(t.version.as_str()) {
            return Ok(());
        }
        let why = format!("{} may be staged now (its rollout stage opened)", t.version);
        let mut doc = self.doc.clone();
        doc.lifecycle = self.doc.lifecycle.found(t)?;
        self.commit(doc, "update_available", &Actor::Policy, Some(&why))?;
        self.begin_staging(&Actor::Policy, false)?;
        Ok(())
    }

    pub(super) fn begin_staging(&mut self, actor: &Actor, switch_after: bool) -> Step<SlotName> {
        let slot = self.inactive_slot()?;
        let Some(release) = self.doc.lifecycle.release().cloned() else {
            return Err(EngineError::NothingToInstall {
                why: "no release chosen".into(),
            }
            .into());
        };
        let mut doc = self.doc.clone();
        doc.lifecycle = self.doc.lifecycle.begin_staging(slot.clone())?;
        doc.pending = Some(Pending::WriteSlot {
            slot: slot.clone(),
            version: release.version.clone(),
        });
        self.commit(doc, "staging", actor, None)?;
        self.failpoint("staging.started")?;
        if let Err(e) = self.fence_for_write(&slot, actor) {
            let why = e.to_string();
            let mut doc = self.doc.clone();
            doc.pending = None;
            doc.lifecycle = self.doc.lifecycle.staging_aborted()?;
            doc.last_error = Some(why.clone());
            self.stage_failed = Some(release.version.clone());
            self.commit_with(doc, "staging_failed", actor, Some(&why), &[cause("fence")])?;
            return Err(e.into());
        }
        self.start_stage(*actor, release.version, slot.clone(), switch_after);
        Ok(slot)
    }

    /// Before the first byte of `slot` is written, the bootloader must no longer see it
    /// as a fallback: an interrupted or failed write leaves a half-written slot, and a
    /// boot-counter fallback (or a rollback) would boot it. RAUC marks the target bad
    /// before writing for the same reason. The slot becomes bootable again only through
    /// `try_slot` after a verified staging, or an explicit `patchd boot reset`.
    /// Idempotent: a slot the bootloader already lists as bad is left as it is.
    pub(super) fn fence_for_write(
        &mut self,
        slot: &SlotName,
        actor: &Actor,
    ) -> Result<(), EngineError> {
        let bl = &self.p.bootloader;
        let unfenced = |source: BootError| EngineError::Unfenced {
            slot: slot.clone(),
            kind: bl.kind(),
            source,
        };
        let info = bl.slots().map_err(unfenced)?;
        if info.iter().any(|i| i.slot == *slot && i.bad) {
            return Ok(());
        }
        bl.mark_bad(slot).map_err(unfenced)?;
        let why = format!(
            "slot {slot} marked unbootable in the {} bootloader before it is written",
            bl.kind()
        );
        tracing::info!(slot = %slot, bootloader = bl.kind(), "target slot fenced before staging");
        self.audit_with("slot_fenced", actor, Some(&why), None, None, &[]);
        Ok(())
    }

    pub(super) async fn after_stage(
        &mut self,
        actor: &Actor,
        version: &str,
        switch_after: bool,
        res: Result<StageReport, PortError>,
    ) -> Step {
        let Lifecycle::Staging { slot, .. } = self.doc.lifecycle.clone() else {
            return Ok(());
        };
        let verified = res.and_then(|report| {
            let st = self
                .slot(&slot)
                .ok_or_else(|| PortError::new(format!("slot {slot}"), "not configured"))?
                .status()
                .map_err(|e| PortError::new(format!("slot {slot}"), e))?;
            if st.state == SlotState::Verified && st.version.as_deref() == Some(version) {
                self.components_stageable(version).map(|()| report)
            } else {
                Err(PortError::new(
                    format!("slot {slot}"),
                    format!(
                        "staging reported success but the slot is {:?} with version {:?}",
                        st.state, st.version
                    ),
                ))
            }
        });
        let mut doc = self.doc.clone();
        doc.pending = None;
        match verified {
            Ok(report) => {
                doc.lifecycle = self.doc.lifecycle.staged()?;
                doc.last_error = None;
                self.last_stage = Some(report);
                self.stage_retry = None;
                let mut fields = vec![
                    ("method", serde_json::Value::from(report.method.as_str())),
                    ("bytes_fetched", report.bytes_fetched.into()),
                    ("bytes_reused", report.bytes_reused.into()),
                ];
                if let Some(u) = self.p.updates.clone() {
                    fields.extend(u.staged_fields(&slot));
                    if let Some(p) = u.release_packages(version) {
                        if let Some(a) = self.available.iter_mut().find(|a| a.version == version) {
                            a.packages = p;
                        }
                    }
                }
                fields.extend(self.staged_components(version));
                self.commit_with(doc, "staged", actor, None, &fields)?;
                if switch_after {
                    self.switch(actor, true).await?;
                }
                Ok(())
            }
            Err(e) => {
                // Never bootable: the slot stays Incomplete (the pipeline marks it so);
                // say so again in case the failure happened before it could.
                if let Some(s) = self.slot(&slot) {
                    let _ = s.set_state(SlotState::Incomplete);
                }
                doc.lifecycle = self.doc.lifecycle.staging_aborted()?;
                self.job_failure = Some(e.to_string());
                self.stage_failed = Some(version.to_string());
                let why = e.cause.unwrap_or("staging");
                let mut fields = vec![cause(why)];
                let mut shown = e.to_string();
                if let Some(at) = self.schedule_stage_retry(version, why) {
                    let n = self.stage_retry.as_ref().map_or(1, |r| r.failures);
                    shown.push_str(&format!(
                        "; staging is tried again from its checkpoint at {} (after {n} \
                         network failure(s); `patchctl check` or `install` tries at once)",
                        at.strftime("%Y-%m-%d %H:%M:%S UTC")
                    ));
                    fields.push(("retry_at", serde_json::Value::from(at.to_string())));
                }
                doc.last_error = Some(shown.clone());
                self.commit_with(doc, "staging_failed", actor, Some(&e.to_string()), &fields)?;
                Ok(())
            }
        }
    }

    /// After the check that follows a restart during `Staging`: stage the same release
    /// into the same slot again (the pipeline resumes from its checkpoint), unless the
    /// check failed or the release may no longer be installed even by an admin; then
    /// staging is abandoned (back to `UpdateAvailable`, the slot left `Incomplete` with
    /// its checkpoint, so the next staging of that release still resumes).
    pub(super) fn resume_staging(&mut self, checked: Step) -> Step {
        let Lifecycle::Staging { release, slot } = self.doc.lifecycle.clone() else {
            return checked;
        };
        let mut wait = None;
        let why = match checked {
            Err(StepError::PowerCut(at)) => return Err(StepError::PowerCut(at)),
            Err(StepError::Err(e)) => Some(format!("the check before resuming failed: {e}")),
            Ok(()) => {
                let running = self.running_version();
                match self.offered(&release.version) {
                    None => Some("the repository no longer offers it".to_string()),
                    Some(c) => {
                        let ctx = self.context(running.as_ref());
                        let hard = ctx
                            .decide(c, true, &[])
                            .switch
                            .first()
                            .map(|w| format!("it may no longer be installed: {w}"));
                        // A resumed staging is a staging starting now: it obeys the same
                        // rules as a new one (`stage_outside_windows = false` keeps it
                        // for the window), whatever the configuration was when it began.
                        wait = ctx
                            .decide(c, false, &[])
                            .stage
                            .first()
                            .map(|w| w.to_string());
                        hard
                    }
                }
            }
        };
        if let (None, Some(wait)) = (&why, wait) {
            return self.defer_staging(&release.version, &slot, &wait);
        }
        // A restart can land between the `staging` record and the fence: fence again.
        let why = why.or_else(|| {
            self.fence_for_write(&slot, &Actor::Policy)
                .err()
                .map(|e| e.to_string())
        });
        match why {
            None => {
                self.start_stage(Actor::Policy, release.version, slot, false);
                Ok(())
            }
            Some(why) => {
                let reason = format!(
                    "staging of {} into slot {slot} not resumed: {why}",
                    release.version
                );
                if let Some(s) = self.slot(&slot) {
                    let _ = s.set_state(SlotState::Incomplete);
                }
                let mut doc = self.doc.clone();
                doc.lifecycle = self.doc.lifecycle.staging_aborted()?;
                doc.pending = None;
                doc.last_error = Some(reason.clone());
                self.commit_with(
                    doc,
                    "staging_failed",
                    &Actor::Policy,
                    Some(&reason),
                    &[cause("staging")],
                )
            }
        }
    }

    /// An interrupted staging policy does not allow now: back to `UpdateAvailable`
    /// without an error (nothing failed). The slot stays `Incomplete` with its
    /// checkpoint, so the staging that starts once policy allows it resumes from there;
    /// status says what it waits for.
    fn defer_staging(&mut self, version: &str, slot: &SlotName, wait: &str) -> Step {
        if let Some(s) = self.slot(slot) {
            let _ = s.set_state(SlotState::Incomplete);
        }
        let reason =
            format!("staging of {version} into slot {slot} was interrupted and waits: {wait}");
        tracing::info!(release = version, slot = %slot, wait, "interrupted staging deferred");
        let mut doc = self.doc.clone();
        doc.lifecycle = self.doc.lifecycle.staging_aborted()?;
        doc.pending = None;
        self.commit_with(doc, "staging_deferred", &Actor::Policy, Some(&reason), &[])
    }
}
