//! Commands from the handle: read-only ones answered at once, mutating ones refused as
//! Busy while a job runs (except `check` and `cancel`).

use super::*;

impl Runner {
    pub(super) async fn on_command(&mut self, cmd: Command) {
        // Read-only commands are answered even while a job runs.
        match cmd {
            Command::History { filter, reply } => {
                let log = self.p.audit.lock().unwrap_or_else(|e| e.into_inner());
                let _ = reply.send(log.query(&filter).map_err(EngineError::from));
            }
            Command::Inventory { reply } => {
                let _ = reply.send(Ok(self.inventory()));
            }
            Command::VerifyAudit { reply } => {
                let log = self.p.audit.lock().unwrap_or_else(|e| e.into_inner());
                let _ = reply.send(log.verify().map_err(EngineError::from));
            }
            Command::RecordDenial { entry, reply } => {
                let now = self.p.clock.now();
                let mut log = self.p.audit.lock().unwrap_or_else(|e| e.into_inner());
                let r = log.append(*entry, now).map(|_| ());
                let _ = reply.send(r.map_err(EngineError::from));
            }
            Command::SetWarning { key, text, reply } => {
                self.set_warning(key, text);
                let _ = reply.send(Ok(()));
            }
            // The reboot slot is the fleet's, not the lifecycle's: an operator may give it
            // back while a job runs.
            Command::FleetRelease {
                actor,
                reason,
                reply,
            } => {
                let r = self.operator_release(&actor, &reason).await;
                let _ = reply.send(self.finish(r));
            }
            Command::Cancel { actor, reply } => {
                let r = self.cancel(&actor).await;
                let _ = reply.send(self.finish(r));
            }
            // A check is read-only as far as a running job is concerned: it is answered
            // instead of Busy (joining a check that already runs).
            Command::Check { actor, reply } if self.job.is_some() || self.side_check.is_some() => {
                self.check_beside_job(actor, reply);
            }
            other => {
                if let Some(j) = &self.job {
                    let busy = EngineError::Busy {
                        running: j.kind.name().to_string(),
                    };
                    reply_err(other, busy);
                    return;
                }
                self.on_mutating(other).await;
            }
        }
    }

    /// Turn a step result into a reply; a power cut ends the task.
    pub(super) fn finish<T>(&mut self, r: Step<T>) -> Result<T, EngineError> {
        match r {
            Ok(v) => Ok(v),
            Err(StepError::PowerCut(at)) => {
                self.exit = Some(RunExit::PowerCut { at });
                Err(EngineError::Stopped)
            }
            Err(StepError::Err(e)) => Err(e),
        }
    }

    pub(super) async fn on_mutating(&mut self, cmd: Command) {
        match cmd {
            Command::Check { actor, reply } => {
                if self.p.updates.is_none() {
                    let _ = reply.send(Err(no_repository()));
                } else if !self.doc.lifecycle.is_settled() && !self.doc.lifecycle_is_staged() {
                    let _ = reply.send(Err(EngineError::Busy {
                        running: self.doc.lifecycle.kind().to_string(),
                    }));
                } else {
                    self.start_check(actor, Some(reply));
                }
            }
            Command::Install {
                actor,
                release,
                switch_now,
                reply,
            } => {
                let r = self.install(&actor, release, switch_now).await;
                let _ = reply.send(self.finish(r));
            }
            Command::InstallBundle {
                actor,
                bundle,
                release,
                switch_now,
                reply,
            } => {
                let then = bundle::BundleThen::Install {
                    release,
                    switch_now,
                    reply,
                };
                self.start_bundle(actor, bundle, then);
            }
            Command::ListBundle {
                actor,
                bundle,
                reply,
            } => self.start_bundle(actor, bundle, bundle::BundleThen::List { reply }),
            Command::Switch {
                actor,
                force,
                reply,
            } => {
                let r = self.switch(&actor, force).await;
                let _ = reply.send(self.finish(r));
            }
            // Marking the running release bad is a manual rollback.
            Command::Rollback {
                actor,
                reason,
                reply,
            }
            | Command::MarkBad {
                actor,
                reason,
                reply,
            } => {
                let r = self.roll_back(&actor, "manual", &reason).await;
                let _ = reply.send(self.finish(r));
            }
            Command::MarkGood { actor, reply } => {
                let r = self.mark_good(&actor, "marked good by an admin").await;
                let _ = reply.send(self.finish(r));
            }
            Command::Hold {
                actor,
                reason,
                until,
                max_version,
                reply,
            } => {
                let r = self.hold(&actor, reason, until, max_version);
                let _ = reply.send(self.finish(r));
            }
            Command::ReleaseHold { actor, reply } => {
                let r = self.release_holds(&actor, "released by an admin");
                let _ = reply.send(self.finish(r));
            }
            Command::Approve {
                actor,
                version,
                reply,
            } => {
                let r = self.approve(&actor, &version);
                let _ = reply.send(self.finish(r));
            }
            Command::Retry {
                actor,
                version,
                reason,
                reply,
            } => {
                let r = self.allow_retry(&actor, &version, &reason);
                let _ = reply.send(self.finish(r));
            }
            Command::AllowBelowFloor {
                actor,
                version,
                reply,
            } => {
                let mut doc = self.doc.clone();
                if !doc.floor_overrides.contains(&version) {
                    doc.floor_overrides.push(version.clone());
                }
                let reason = format!("admin allowed {version} below the security floor");
                let r = self.commit(doc, "floor_override", &actor, Some(&reason));
                self.recategorize();
                let _ = reply.send(self.finish(r));
            }
            Command::History { .. }
            | Command::Inventory { .. }
            | Command::VerifyAudit { .. }
            | Command::RecordDenial { .. }
            | Command::SetWarning { .. }
            | Command::FleetRelease { .. }
            | Command::Cancel { .. } => {}
        }
    }
}
