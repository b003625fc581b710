//! Checking for releases: the job, a check beside a running job, and what a result changes.

use super::*;

impl Runner {
    pub(super) fn start_check(
        &mut self,
        actor: Actor,
        reply: Option<Reply<Vec<AvailableRelease>>>,
    ) {
        self.start_check_with(actor, reply, false);
    }

    /// `check` while a job runs: join the running check, or run one beside the job.
    pub(super) fn check_beside_job(&mut self, actor: Actor, reply: Reply<Vec<AvailableRelease>>) {
        let Some(updates) = self.p.updates.clone() else {
            let _ = reply.send(Err(no_repository()));
            return;
        };
        // A bundle being verified writes the trusted metadata a check would too.
        if let Some(j) = self
            .job
            .as_ref()
            .filter(|j| matches!(j.kind, JobKind::Bundle { .. }))
        {
            let running = j.kind.name().to_string();
            let _ = reply.send(Err(EngineError::Busy { running }));
            return;
        }
        for job in [self.job.as_mut(), self.side_check.as_mut()]
            .into_iter()
            .flatten()
        {
            if let JobKind::Check { replies, .. } = &mut job.kind {
                replies.push(reply);
                return;
            }
        }
        let handle = tokio::spawn(async move { JobOut::Check(updates.discover().await) });
        self.side_check = Some(Job {
            rec: self.begin_side_job("check"),
            kind: JobKind::Check {
                actor,
                replies: vec![reply],
                resume: false,
                side: true,
            },
            handle: AbortOnDrop(handle),
        });
    }

    pub(super) fn start_check_with(
        &mut self,
        actor: Actor,
        reply: Option<Reply<Vec<AvailableRelease>>>,
        resume: bool,
    ) {
        let Some(updates) = self.p.updates.clone() else {
            if let Some(r) = reply {
                let _ = r.send(Err(no_repository()));
            }
            return;
        };
        // The list this check makes is the repository's: a bundle's release is no
        // longer staged from the bundle.
        self.bundle_source = None;
        self.progress_tx.send_replace(Some(Progress {
            phase: "checking".into(),
            ..Progress::default()
        }));
        let handle = tokio::spawn(async move { JobOut::Check(updates.discover().await) });
        self.job = Some(Job {
            rec: self.begin_job("check", None),
            kind: JobKind::Check {
                actor,
                replies: reply.into_iter().collect(),
                resume,
                side: false,
            },
            handle: AbortOnDrop(handle),
        });
    }

    /// The candidates a check found, or its failure, audited as `check_failed`.
    fn check_result(
        &mut self,
        actor: &Actor,
        res: Result<Vec<Offered>, PortError>,
    ) -> Step<Vec<Offered>> {
        res.map_err(|e| {
            let c = cause(e.cause.unwrap_or("check"));
            let why = e.to_string();
            // Status shows the failed check with its time and error (not only history):
            // the check was made, it did not get through.
            let mut doc = self.doc.clone();
            doc.last_check_failed = Some(self.p.clock.now());
            doc.last_check_error = Some(why.clone());
            doc.last_error = Some(format!("check failed: {why}"));
            match self.file.save(&doc) {
                Ok(()) => self.doc = doc,
                Err(se) => {
                    tracing::error!(error = %se, "state file not updated after a failed check");
                    self.doc.last_check_failed = doc.last_check_failed;
                    self.doc.last_check_error = doc.last_check_error;
                    self.doc.last_error = doc.last_error;
                }
            }
            self.audit_with("check_failed", actor, Some(&why), None, None, &[c]);
            e.into()
        })
    }

    /// The releases a check found, each with the time this run first learned of it (an
    /// earlier check's, or now): the staging spread applies only to releases the device
    /// knew of before their rollout stage opened.
    pub(super) fn known_since(&self, cands: Vec<Offered>) -> Vec<Offered> {
        let now = self.p.clock.now();
        cands
            .into_iter()
            .map(|mut c| {
                let known = self
                    .candidates
                    .iter()
                    .find(|o| o.version() == c.version())
                    .and_then(|o| o.facts.known_since)
                    .unwrap_or(now);
                c.facts.known_since = Some(known);
                c
            })
            .collect()
    }

    /// A check got through: its time, how many releases, and no check error any more.
    fn note_good_check(&self, doc: &mut StateDoc, now: Timestamp) {
        doc.last_check = Some(now);
        doc.last_check_found = self.available.len();
        doc.last_check_failed = None;
        if doc.last_check_error.take().is_some()
            && doc
                .last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("check failed: "))
        {
            doc.last_error = None;
        }
    }

    /// A check that ran beside a staging or health job: record what it found (list,
    /// last check time, audit), leave the lifecycle to the job.
    pub(super) fn after_side_check(
        &mut self,
        actor: &Actor,
        res: Result<Vec<Offered>, PortError>,
    ) -> Step {
        let cands = self.check_result(actor, res)?;
        self.candidates = self.known_since(cands);
        self.recategorize();
        let now = self.p.clock.now();
        let mut doc = self.doc.clone();
        self.note_good_check(&mut doc, now);
        self.file.save(&doc)?;
        self.doc = doc;
        let summary = format!(
            "{} release(s) found while {} ran: {}",
            self.available.len(),
            self.job.as_ref().map_or("a job", |j| j.kind.name()),
            self.available
                .iter()
                .map(|a| a.version.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.audit_with("check", actor, Some(&summary), None, None, &[]);
        Ok(())
    }

    pub(super) fn after_check(
        &mut self,
        actor: &Actor,
        res: Result<Vec<Offered>, PortError>,
    ) -> Step {
        let now = self.p.clock.now();
        let cands = self.check_result(actor, res)?;
        self.candidates = self.known_since(cands);
        self.stage_failed = None;
        self.doc.last_check = Some(now);
        self.recategorize();
        let mut doc = self.doc.clone();
        self.note_good_check(&mut doc, now);
        doc.last_error = None;
        let target =
            stage_target(&self.available).map(|a| ReleaseRef::new(&a.version, a.security_version));
        let summary = format!(
            "{} release(s) found: {}",
            self.available.len(),
            self.available
                .iter()
                .map(|a| format!(
                    "{} ({:?}/{:?}{})",
                    a.version,
                    a.kind,
                    a.severity,
                    if a.install_now { ", eligible" } else { "" }
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let same_target =
            self.doc.lifecycle.release().map(|r| &r.version) == target.as_ref().map(|t| &t.version);
        match (&self.doc.lifecycle, target) {
            // Staging or later: a check only refreshes the list.
            (l, _) if !l.is_settled() => {
                self.file.save(&doc)?;
                self.doc = doc;
                self.audit_with("check", actor, Some(&summary), None, None, &[]);
            }
            (Lifecycle::UpdateAvailable { .. }, Some(_)) if same_target => {
                self.file.save(&doc)?;
                self.doc = doc;
                self.audit_with("check", actor, Some(&summary), None, None, &[]);
            }
            (_, Some(t)) => {
                doc.lifecycle = self.doc.lifecycle.found(t)?;
                self.commit(doc, "update_available", actor, Some(&summary))?;
            }
            (_, None) => {
                doc.lifecycle = self.doc.lifecycle.nothing_found()?;
                if doc.lifecycle != self.doc.lifecycle {
                    self.commit(doc, "nothing_available", actor, Some(&summary))?;
                } else {
                    self.file.save(&doc)?;
                    self.doc = doc;
                    self.audit_with("check", actor, Some(&summary), None, None, &[]);
                }
            }
        }
        Ok(())
    }
}
