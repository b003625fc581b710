//! A release's components in the lifecycle: checked at staging, installed at the switch
//! (after the switch decision, before the OS slot is armed), judged by the release's one
//! verdict, and reconciled at start-up. The installers are the device's
//! (`EngineParts::components`); every component step becomes an audit record.

use super::*;
use crate::component::{self, ApplyError, StepEvent};
use crate::manifest::Component;

/// What installing a release's components came to.
pub(super) enum Installed {
    /// The release has none (or none changed).
    Nothing,
    /// All switched; `needs_reboot`: one takes effect at the next boot.
    Applied { needs_reboot: bool },
    /// One failed; the switched ones were rolled back and the release marked failed.
    Failed,
}

impl Runner {
    fn components_of(&self, version: &str) -> Vec<Component> {
        self.offered(version)
            .map(|o| o.components.clone())
            .unwrap_or_default()
    }

    /// Can this device install `version`'s components, and are their payloads staged
    /// and intact? A staging that leaves one out fails here, never skips it.
    pub(super) fn components_stageable(&self, version: &str) -> Result<(), PortError> {
        let c = &self.p.components;
        let what = format!("components of {version}");
        for s in self
            .components_installable(version)?
            .iter()
            .filter(|s| s.action != component::Action::Unchanged)
        {
            component::staged_payload(&c.staged, version, &s.component)
                .map_err(|e| PortError::new(&what, e).with_cause("component"))?;
        }
        Ok(())
    }

    /// The steps installing `version`'s components would take here, or why this device
    /// cannot install them (a method it does not offer, a handler it has not configured).
    /// Asked before anything is downloaded, and again once the payloads are staged.
    pub(super) fn components_installable(
        &self,
        version: &str,
    ) -> Result<Vec<component::PlannedStep>, PortError> {
        let components = self.components_of(version);
        if components.is_empty() {
            return Ok(Vec::new());
        }
        component::plan(&components, &self.p.components.installers).map_err(|e| {
            PortError::new(format!("components of {version}"), e).with_cause("component")
        })
    }

    /// The `staged` record's `components` field: the payloads kept for the switch.
    pub(super) fn staged_components(
        &self,
        version: &str,
    ) -> Vec<(&'static str, serde_json::Value)> {
        let names: Vec<serde_json::Value> = self
            .components_of(version)
            .iter()
            .map(|c| format!("{} {}", c.name, c.version).into())
            .collect();
        if names.is_empty() {
            Vec::new()
        } else {
            vec![("components", names.into())]
        }
    }

    /// Audit each component step, in order.
    pub(super) fn audit_steps(&mut self, events: &[StepEvent]) {
        for e in events {
            let fields = [
                ("component", serde_json::Value::from(e.component.as_str())),
                ("component_version", e.version.as_str().into()),
            ];
            let detail = (!e.detail.is_empty()).then_some(e.detail.as_str());
            self.audit_about(e.event, &Actor::Daemon, detail, &e.release, &fields);
        }
    }

    /// Install `release`'s components in order (after the switch decision allowed the
    /// switch, before the OS slot is armed). On a failure `apply` has rolled back what
    /// switched; the release is marked failed here and the OS slot is left alone.
    pub(super) async fn install_components(
        &mut self,
        actor: &Actor,
        release: &ReleaseRef,
        slot: &SlotName,
    ) -> Result<Installed, StepError> {
        let components = self.components_of(&release.version);
        if components.is_empty() {
            return Ok(Installed::Nothing);
        }
        self.progress_tx.send_replace(Some(Progress {
            phase: "components".into(),
            done: 0,
            total: Some(components.len() as u64),
            rate: None,
        }));
        let dc = self.p.components.clone();
        let version = release.version.clone();
        let slot_s = slot.to_string();
        #[cfg(feature = "failpoints")]
        let fp = self.p.failpoints.clone();
        let progress = self.progress_tx.clone();
        let total = components.len() as u64;
        // Installers run units' restarts and handlers: blocking work, off the runtime.
        let joined = tokio::task::spawn_blocking(move || {
            let mut events = Vec::new();
            let mut file = |c: &Component| component::staged_payload(&dc.staged, &version, c);
            // Health is judged once for the release (below, or after the reboot).
            let mut health = |_: &Component| Ok(());
            let mut record = |e: &StepEvent| {
                if e.event == component::events::SWITCHED_EVENT {
                    progress.send_modify(|p| {
                        if let Some(p) = p {
                            p.done = (p.done + 1).min(total);
                        }
                    });
                }
                events.push(e.clone());
            };
            let mut hooks = component::Hooks {
                file: &mut file,
                health: &mut health,
                record: &mut record,
                #[cfg(feature = "failpoints")]
                failpoints: Some(&fp),
            };
            let r = component::apply(
                &dc.journal,
                &version,
                &slot_s,
                &components,
                &dc.installers,
                &mut hooks,
            );
            (r, events)
        })
        .await;
        self.progress_tx.send_replace(None);
        let (result, events) = joined.map_err(|e| {
            EngineError::Port(PortError::new("components", format!("install task: {e}")))
        })?;
        self.audit_steps(&events);
        match result {
            Ok(a) if a.installed.is_empty() => Ok(Installed::Nothing),
            Ok(a) => Ok(Installed::Applied {
                needs_reboot: a.needs_reboot,
            }),
            Err(ApplyError::PowerCut { at }) => Err(StepError::PowerCut(at)),
            Err(e) => {
                let reason = format!("components of {}: {e}", release.version);
                self.release_failed(actor, release, &reason, "component")?;
                Ok(Installed::Failed)
            }
        }
    }

    /// The release failed before (or without) a switch of the OS slot: never retried
    /// automatically; the failure reaches status, the audit log and the metrics. The
    /// reboot slot stays taken, as for every failed update.
    fn release_failed(
        &mut self,
        actor: &Actor,
        release: &ReleaseRef,
        reason: &str,
        cause_: &str,
    ) -> Step {
        self.job_failure = Some(reason.to_string());
        let mut doc = self.doc.clone();
        doc.lifecycle = self.doc.lifecycle.fail(reason);
        doc.pending = None;
        doc.last_error = Some(reason.to_string());
        doc.block(&release.version, reason, self.p.clock.now());
        let from = self.doc.lifecycle.kind();
        self.file.save(&doc)?;
        self.doc = doc;
        // One record, under the release (the failed lifecycle names none).
        let fields = [
            cause(cause_),
            ("from", from.as_str().into()),
            ("to", self.doc.lifecycle.kind().as_str().into()),
        ];
        self.audit_about(
            "switch_failed",
            actor,
            Some(reason),
            &release.version,
            &fields,
        );
        Ok(())
    }

    /// A release judged without a reboot failed its health checks and its components
    /// were switched back: recorded as the rollback it is (`rolled_back`, with the cause),
    /// blocked from automatic retries. The OS slot was never armed, so nothing else
    /// changes and no reboot follows.
    fn rolled_back_in_place(
        &mut self,
        actor: &Actor,
        release: &ReleaseRef,
        booted: &SlotName,
        reason: &str,
        cause_: &str,
    ) -> Step {
        self.job_failure = Some(reason.to_string());
        let mut doc = self.doc.clone();
        doc.lifecycle = self
            .doc
            .lifecycle
            .rolled_back_in_place(booted.clone(), reason)?;
        doc.pending = None;
        doc.block(&release.version, reason, self.p.clock.now());
        self.commit_with(doc, "rolled_back", actor, Some(reason), &[cause(cause_)])?;
        // `list`, status and the inventory show it as failed here from now on.
        self.recategorize();
        Ok(())
    }

    /// Is the OS image staged in `slot` the one `booted` runs (a release of components
    /// only)?
    pub(super) fn same_image(&self, slot: &SlotName, booted: &SlotName) -> bool {
        let sha = |s: &SlotName| {
            self.slot(s)
                .and_then(|s| s.status().ok())
                .and_then(|s| s.sha256)
        };
        matches!((sha(slot), sha(booted)), (Some(a), Some(b)) if a == b)
    }

    /// A release whose components all took effect without a reboot and whose OS image is
    /// the running one: its verdict is the health checks now; commit, or roll the
    /// components back in reverse order.
    pub(super) async fn finish_without_reboot(
        &mut self,
        actor: &Actor,
        release: &ReleaseRef,
        booted: &SlotName,
    ) -> Step {
        let budget = self.p.settings.health_deadline;
        self.progress_tx.send_replace(Some(Progress {
            phase: "health checks".into(),
            ..Progress::default()
        }));
        let v = match tokio::time::timeout(budget, self.p.health.run(budget)).await {
            Ok(v) => v,
            Err(_) => HealthVerdict {
                passed: false,
                failures: vec![format!(
                    "health checks did not finish within the deadline ({}s)",
                    budget.as_secs()
                )],
                warnings: vec![],
            },
        };
        self.progress_tx.send_replace(None);
        if !v.passed {
            let rb = self.roll_back_components();
            let reason = format!(
                "health checks failed after installing the components of {} without a reboot: \
                 {}; {rb}",
                release.version,
                v.failures.join("; ")
            );
            return self.rolled_back_in_place(actor, release, booted, &reason, health_cause(&v));
        }
        self.commit_components(false);
        let mut doc = self.doc.clone();
        doc.lifecycle = Lifecycle::Committed {
            release: release.clone(),
            slot: booted.clone(),
            previous: None,
            previous_release: self.doc.committed.clone(),
            probation_until: None,
        };
        doc.pending = None;
        doc.committed = Some(release.clone());
        doc.last_error = None;
        doc.security_floor = doc.security_floor.max(release.security_version);
        self.commit(
            doc,
            "committed",
            actor,
            Some("components installed without a reboot; health checks passed"),
        )
    }

    /// The release's verdict was good: the components' journal is done with.
    /// `probation`: the release is committed on probation; its components stay
    /// revertible with it until probation ends ([`Runner::end_component_probation`]).
    pub(super) fn commit_components(&mut self, probation: bool) {
        let mut events = Vec::new();
        let r = component::commit(&self.p.components.journal, probation, &mut |e| {
            events.push(e.clone())
        });
        self.audit_steps(&events);
        if let Err(e) = r {
            self.component_problem(format!("committing components: {e}"));
        }
    }

    pub(super) fn end_component_probation(&mut self) {
        if let Err(e) = component::end_probation(&self.p.components.journal) {
            self.component_problem(format!("ending the components' probation: {e}"));
        }
    }

    /// The release's verdict was bad: roll its components back in reverse order. Says
    /// what was and was not rolled back.
    pub(crate) fn roll_back_components(&mut self) -> String {
        let mut events = Vec::new();
        let r = component::roll_back_release(
            &self.p.components.journal,
            &self.p.components.installers,
            &mut |e| events.push(e.clone()),
        );
        self.audit_steps(&events);
        match r {
            Ok((back, left)) => format!(
                "components rolled back: {}; not rolled back: {}",
                list_or_none(&back),
                list_or_none(&left)
            ),
            Err(e) => {
                let why = format!("rolling back components: {e}");
                self.component_problem(why.clone());
                why
            }
        }
    }

    /// The verdict after the reboot covers the components: one the new boot did not
    /// take up fails it like a failed health check.
    pub(super) async fn components_in_effect(&mut self, mut v: HealthVerdict) -> HealthVerdict {
        let dc = self.p.components.clone();
        // Read-backs ask the system (fwupd over D-Bus, files): off the runtime.
        let r = tokio::task::spawn_blocking(move || {
            component::not_in_effect(&dc.journal, &dc.installers)
        })
        .await
        .unwrap_or_else(|e| {
            Err(component::ComponentError::failed(
                "components",
                format!("read-back task: {e}"),
            ))
        });
        match r {
            Ok(failures) if failures.is_empty() => {}
            Ok(failures) => {
                v.passed = false;
                v.failures.extend(failures);
            }
            Err(e) => {
                v.passed = false;
                v.failures
                    .push(format!("reading back the release's components: {e}"));
            }
        }
        v
    }

    /// At start-up: finish a component step a power cut interrupted, from what the
    /// system shows installed.
    pub(super) fn reconcile_components(&mut self) {
        let mut events = Vec::new();
        let r = component::reconcile(
            &self.p.components.journal,
            &self.p.components.installers,
            &mut |e| events.push(e.clone()),
        );
        self.audit_steps(&events);
        match r {
            Ok(component::Reconciled::RolledBack {
                release,
                rolled_back,
                left,
            }) => {
                let why = format!(
                    "interrupted installation of the components of {release}: rolled back: {}; \
                     not rolled back: {}",
                    list_or_none(&rolled_back),
                    list_or_none(&left)
                );
                self.audit_about(
                    "components_reconciled",
                    &Actor::Daemon,
                    Some(&why),
                    &release,
                    &[],
                );
            }
            Ok(_) => {}
            Err(e) => self.component_problem(format!("reconciling components: {e}")),
        }
    }

    /// A component verdict step that failed: status, log, audit.
    fn component_problem(&mut self, why: String) {
        tracing::warn!(error = %why, "component step failed");
        self.audit_with(
            "component_error",
            &Actor::Daemon,
            Some(&why),
            None,
            None,
            &[],
        );
        self.note_error(StepError::Err(EngineError::Port(PortError::new(
            "components",
            why,
        ))));
    }
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
