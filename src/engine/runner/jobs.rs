//! Jobs: ids, outcomes (`LastJob`, `JobFinished`) and what a finished job changes.

use super::*;

impl Runner {
    /// Act on how `job` ended and record its outcome (`JobFinished`, `LastJob`).
    pub(super) async fn job_ended(
        &mut self,
        job: Job,
        out: Result<JobOut, tokio::task::JoinError>,
    ) {
        self.job_failure = None;
        let rec = job.rec.clone();
        let res = match out {
            Ok(out) => self.on_job(job.kind, out).await,
            Err(e) => Err(StepError::Err(EngineError::Port(PortError::new(
                job.kind.name(),
                format!("task ended abnormally: {e}"),
            )))),
        };
        let failure = match &res {
            Err(StepError::Err(e)) => Some(e.to_string()),
            _ => self.job_failure.take(),
        };
        if let Err(e) = res {
            self.note_error(e);
        }
        // A power cut ends the task before the outcome is known.
        if self.exit.is_none() {
            let outcome = if failure.is_some() {
                JobOutcome::Failed
            } else {
                JobOutcome::Succeeded
            };
            self.end_job(rec, outcome, failure);
        }
    }

    /// Give the job about to start its id and make it the last job.
    pub(super) fn begin_job(&mut self, kind: &str, release: Option<&str>) -> JobRecord {
        self.job_seq += 1;
        let rec = JobRecord {
            id: self.job_seq,
            kind: kind.to_owned(),
            release: release.map(str::to_owned),
            outcome: JobOutcome::Running,
            error: None,
            started: self.p.clock.now(),
            finished: None,
        };
        self.last_job = Some(rec.clone());
        rec
    }

    /// A job that runs beside the main one (a check during staging): it gets an id and
    /// a `JobFinished`, but `last_job` keeps describing the main job, which is what a
    /// client following an install looks at.
    pub(super) fn begin_side_job(&mut self, kind: &str) -> JobRecord {
        self.job_seq += 1;
        JobRecord {
            id: self.job_seq,
            kind: kind.to_owned(),
            release: None,
            outcome: JobOutcome::Running,
            error: None,
            started: self.p.clock.now(),
            finished: None,
        }
    }

    /// Record how job `rec` ended and announce it (`JobFinished`). `last_job` takes the
    /// outcome only while it still describes this job: finishing one job may already
    /// have started the next, which then is the last job.
    pub(super) fn end_job(
        &mut self,
        mut rec: JobRecord,
        outcome: JobOutcome,
        error: Option<String>,
    ) {
        rec.outcome = outcome;
        rec.error = error;
        rec.finished = Some(self.p.clock.now());
        if self.last_job.as_ref().is_some_and(|j| j.id == rec.id) {
            self.last_job = Some(rec.clone());
        }
        tracing::info!(job = rec.id, kind = %rec.kind, outcome = rec.outcome.as_str(), error = rec.error.as_deref().unwrap_or(""), "job finished");
        // No receiver (no D-Bus service, the demo) is fine.
        let _ = self.finished_tx.send(rec);
    }

    pub(super) async fn on_job(&mut self, kind: JobKind, out: JobOut) -> Step {
        match (kind, out) {
            (
                // Started by reconciliation only: nobody waits for its answer.
                JobKind::Check {
                    actor,
                    resume: true,
                    ..
                },
                JobOut::Check(res),
            ) => {
                let r = self.after_check(&actor, res);
                self.resume_staging(r)
            }
            (
                JobKind::Check {
                    actor,
                    replies,
                    side,
                    ..
                },
                JobOut::Check(res),
            ) => {
                let r = if side {
                    self.after_side_check(&actor, res)
                } else {
                    self.after_check(&actor, res)
                };
                let r = match r {
                    Ok(()) => Ok(self.available.clone()),
                    Err(e) => Err(e),
                };
                if replies.is_empty() {
                    return r.map(|_| ());
                }
                let r = self.finish(r);
                let failed = r.as_ref().err().map(|e| e.to_string());
                for reply in replies {
                    let _ = reply.send(match &r {
                        Ok(v) => Ok(v.clone()),
                        Err(e) => Err(clone_error(e)),
                    });
                }
                // The callers got the error; the job record still says the check failed.
                if let Some(f) = failed {
                    self.job_failure = Some(f);
                }
                Ok(())
            }
            (
                JobKind::Stage {
                    actor,
                    version,
                    switch_after,
                },
                JobOut::Stage(res),
            ) => self.after_stage(&actor, &version, switch_after, res).await,
            (JobKind::Health, JobOut::Health(v)) => self.after_health(v).await,
            (JobKind::Bundle { actor, then }, JobOut::Bundle(res)) => {
                self.after_bundle(actor, then, res).await
            }
            _ => Ok(()),
        }
    }
}
