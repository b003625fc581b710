//! Installing from an offline bundle: the `Bundles` port reads and verifies it; here what
//! it carries becomes the list of releases, what the offline policy let through and what
//! it lacks are audited, and the chosen release is staged from the bundle's bytes.

use std::os::fd::OwnedFd;

use super::*;
use crate::engine::handle::BundleListing;
use crate::engine::ports::OpenedBundle;

/// What to do once the bundle was read: install from it, or only list what it offers.
pub(super) enum BundleThen {
    Install {
        release: Option<String>,
        switch_now: bool,
        reply: Reply<InstallStarted>,
    },
    List {
        reply: Reply<BundleListing>,
    },
}

impl BundleThen {
    fn refuse(self, e: EngineError) {
        match self {
            BundleThen::Install { reply, .. } => drop(reply.send(Err(e))),
            BundleThen::List { reply } => drop(reply.send(Err(e))),
        }
    }
}

impl Runner {
    /// Read and verify the bundle as a job (copying gigabytes must not stall the task:
    /// timers, probation and status go on), then act on it in [`Runner::after_bundle`].
    pub(super) fn start_bundle(&mut self, actor: Actor, bundle: OwnedFd, then: BundleThen) {
        let Some(bundles) = self.p.bundles.clone() else {
            then.refuse(EngineError::NotAvailable {
                what: "installing from a bundle",
                why: "no trusted root is configured (fail closed)",
            });
            return;
        };
        self.progress_tx.send_replace(Some(Progress {
            phase: "reading bundle".into(),
            ..Progress::default()
        }));
        let handle = tokio::spawn(async move { JobOut::Bundle(bundles.open(bundle).await) });
        self.job = Some(Job {
            rec: self.begin_job("bundle", None),
            kind: JobKind::Bundle { actor, then },
            handle: AbortOnDrop(handle),
        });
    }

    pub(super) async fn after_bundle(
        &mut self,
        actor: Actor,
        then: BundleThen,
        res: Result<OpenedBundle, PortError>,
    ) -> Step {
        let opened = self.opened(&actor, res);
        match then {
            BundleThen::List { reply } => {
                let r = opened.map(|o| self.listing(o));
                let r = self.finish(r);
                self.job_failure = r.as_ref().err().map(|e| e.to_string());
                let _ = reply.send(r);
            }
            BundleThen::Install {
                release,
                switch_now,
                reply,
            } => {
                let r = match opened {
                    Ok(o) => self.install_opened(&actor, o, release, switch_now).await,
                    Err(e) => Err(e),
                };
                let r = self.finish(r);
                self.job_failure = r.as_ref().err().map(|e| e.to_string());
                let _ = reply.send(r);
            }
        }
        Ok(())
    }

    async fn install_opened(
        &mut self,
        actor: &Actor,
        opened: OpenedBundle,
        release: Option<String>,
        switch_now: bool,
    ) -> Step<InstallStarted> {
        if let Some(n) = release
            .as_ref()
            .and_then(|v| opened.not_carried.iter().find(|n| &n.version == v))
        {
            return Err(EngineError::NotInBundle {
                version: n.version.clone(),
                why: n.why.clone(),
            }
            .into());
        }
        if opened.offered.is_empty() {
            let mut why = "the bundle carries no release for this device".to_string();
            for n in &opened.not_carried {
                why.push_str(&format!("; {}: {}", n.version, n.why));
            }
            return Err(EngineError::NothingToInstall { why }.into());
        }
        self.candidates = opened.offered;
        self.recategorize();
        self.bundle_source = Some(opened.updates);
        let r = self.install_chosen(actor, release, switch_now).await;
        if r.is_err() && !matches!(self.doc.lifecycle, Lifecycle::Staging { .. }) {
            self.bundle_source = None;
        }
        r
    }

    /// What the bundle offers this device, categorized; nothing else changes.
    fn listing(&self, opened: OpenedBundle) -> BundleListing {
        let running = self.running_version();
        let available = self.context(running.as_ref()).categorize(&opened.offered);
        BundleListing {
            available,
            not_carried: opened.not_carried,
            expired: opened.expired,
        }
    }

    /// The bundle's refusal, or what it holds, audited.
    fn opened(
        &mut self,
        actor: &Actor,
        res: Result<OpenedBundle, PortError>,
    ) -> Step<OpenedBundle> {
        match res {
            Ok(o) => {
                self.audit_opened(actor, &o);
                Ok(o)
            }
            Err(e) => {
                // Nothing else changed: the bundle never reached the lifecycle.
                // One cause for every refusal (the metrics' `reason`); the message says
                // which check refused it.
                let c = cause("bundle");
                self.audit_with(
                    "bundle_rejected",
                    actor,
                    Some(&e.to_string()),
                    None,
                    None,
                    &[c],
                );
                Err(e.into())
            }
        }
    }

    /// One record per role the offline policy accepted expired, one for the bundle.
    fn audit_opened(&mut self, actor: &Actor, opened: &OpenedBundle) {
        for line in &opened.expired {
            let why = format!("expired metadata accepted from an offline bundle ([offline] allow_expired): {line}");
            self.audit_with(
                "bundle_expired_accepted",
                actor,
                Some(&why),
                None,
                None,
                &[("expired", serde_json::Value::from(line.as_str()))],
            );
        }
        let carried: Vec<String> = opened
            .offered
            .iter()
            .map(|o| o.version().to_string())
            .collect();
        let mut summary = format!(
            "offline bundle verified; carries {}",
            if carried.is_empty() {
                "no release".to_string()
            } else {
                carried.join(", ")
            }
        );
        for n in &opened.not_carried {
            summary.push_str(&format!("; {} not offered: {}", n.version, n.why));
        }
        let not_carried: Vec<serde_json::Value> = opened
            .not_carried
            .iter()
            .map(|n| serde_json::json!({"version": n.version, "why": n.why}))
            .collect();
        self.audit_with(
            "bundle_opened",
            actor,
            Some(&summary),
            None,
            None,
            &[
                ("carried", serde_json::Value::from(carried)),
                ("not_carried", serde_json::Value::from(not_carried)),
            ],
        );
    }
}
