//! The one task that owns the lifecycle state.
//!
//! Commands arrive over an mpsc channel; long steps (check, staging, health checks) run
//! as spawned jobs so status stays readable and new mutating commands get `Busy`. Every
//! change is persisted (atomically) before it is adopted in memory, then audited, then
//! published in the `watch` snapshot.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::check::{stage_target, Context};
use super::handle::{
    AvailableRelease, Command, EngineError, EngineHandle, InstallStarted, JobOutcome, JobRecord,
    Reply, SlotView, StatusSnapshot,
};
use super::ports::{
    active_holds, Actor, Candidate, HealthCheck, HealthVerdict, PortError, Progress, Reboot,
    StageReport, Updates, WhyNot,
};
use super::state::{Lifecycle, ReleaseRef};
use super::statefile::{Pending, StateDoc, StateFile};
use crate::audit::{AuditLog, Entry};
use crate::boot::{BootError, Bootloader};
use crate::clock::Clock;
use crate::names::SlotName;
use crate::paths::Paths;
use crate::policy::{DeviceFacts, Hold, Policy};
use crate::slot::{Slot, SlotState};

/// Tunables the engine takes from the validated configuration.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Periodic check interval; `None`: only on demand.
    pub check_interval: Option<Duration>,
    /// Up to this much random delay is added to each periodic check, so a fleet does
    /// not hit the repository in lockstep.
    pub check_jitter: Duration,
    /// How often policy is re-evaluated (window opened, hold expired…).
    pub evaluate_every: Duration,
    /// Health checks must pass within this time after the first boot of a new slot.
    pub health_deadline: Duration,
    /// Keep checking this long after commit while the previous slot stays intact.
    pub probation: Option<Duration>,
    pub probation_check_every: Duration,
    /// Boot attempts the bootloader gives a slot on trial.
    pub boot_attempts: u32,
    /// First wait before staging again after a network failure; doubles per failure.
    pub retry_after: Duration,
    pub retry_after_max: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            check_interval: Some(Duration::from_secs(6 * 3600)),
            check_jitter: Duration::from_secs(1800),
            evaluate_every: Duration::from_secs(60),
            health_deadline: Duration::from_secs(600),
            probation: None,
            probation_check_every: Duration::from_secs(900),
            boot_attempts: 1,
            retry_after: Duration::from_secs(5 * 60),
            retry_after_max: Duration::from_secs(3600),
        }
    }
}

/// Everything the engine drives, as traits.
pub struct EngineParts {
    pub paths: Paths,
    pub clock: Arc<dyn Clock>,
    pub bootloader: Arc<dyn Bootloader>,
    pub slots: Vec<Arc<dyn Slot>>,
    /// `None` until a trusted repository is configured: checks then fail closed.
    pub updates: Option<Arc<dyn Updates>>,
    /// Windows, rollout, urgency (from the validated config).
    pub policy: Policy,
    /// Machine id, channel and tags for rollout bucketing.
    pub device: DeviceFacts,
    pub health: Arc<dyn HealthCheck>,
    /// The hash-chained audit log (shared with nobody else in the daemon).
    pub audit: Arc<std::sync::Mutex<AuditLog>>,
    pub reboot: Arc<dyn Reboot>,
    /// `[device]` config, for the inventory (machine id path, product, channel, tags).
    pub device_config: crate::config::DeviceConfig,
    pub settings: EngineSettings,
    /// Crash-test hook (cargo feature `failpoints` only).
    #[cfg(feature = "failpoints")]
    pub failpoints: crate::failpoint::FailPoints,
}

/// Why the engine task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunExit {
    /// A reboot was requested; the process should wait for it.
    Rebooting { reason: String },
    /// Every handle was dropped (daemon shutdown).
    Shutdown,
    /// A fail point simulated a power cut (tests only).
    PowerCut { at: String },
}

/// Backoff state of a release whose staging the network ended.
struct StageRetry {
    version: String,
    /// Network failures of this release's staging in this run.
    failures: u32,
    /// When to stage again; `None` once that attempt was started.
    at: Option<Instant>,
}

/// Wait before the next attempt after `failures` network failures in a row: `first`,
/// doubling per failure, never above `max`.
fn retry_delay(first: Duration, max: Duration, failures: u32) -> Duration {
    first
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(max)
}

/// Failure causes after which staging is tried again by itself: the bytes were fine
/// (or not yet seen), the way they came was not.
const RETRIED_CAUSES: &[&str] = &["slow_retrieval", "download"];

enum JobKind {
    Check {
        actor: Actor,
        /// Callers waiting for this check's result (a `check` asked for while one runs
        /// joins it instead of getting Busy).
        replies: Vec<Reply<Vec<AvailableRelease>>>,
        /// The check that precedes resuming an interrupted staging (after a restart).
        resume: bool,
        /// Runs beside a staging or health job: it only refreshes the list of releases
        /// and never changes the lifecycle, which the other job owns.
        side: bool,
    },
    Stage {
        actor: Actor,
        version: String,
        switch_after: bool,
    },
    Health,
}

impl JobKind {
    fn name(&self) -> &'static str {
        match self {
            JobKind::Check { .. } => "check",
            JobKind::Stage { .. } => "staging",
            JobKind::Health => "health checks",
        }
    }
}

enum JobOut {
    Check(Result<Vec<Candidate>, PortError>),
    Stage(Result<StageReport, PortError>),
    Health(HealthVerdict),
}

struct Job {
    /// The job as `LastJob` shows it while it runs.
    rec: JobRecord,
    kind: JobKind,
    handle: AbortOnDrop,
}

/// A job dies with the engine task (shutdown, simulated power cut): a staging write must
/// never outlive the state that describes it.
struct AbortOnDrop(JoinHandle<JobOut>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Internal failure of a step: either a real error, or a simulated power cut that must
/// stop the task without another write.
pub(crate) enum StepError {
    Err(EngineError),
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    PowerCut(String),
}

impl<E: Into<EngineError>> From<E> for StepError {
    fn from(e: E) -> Self {
        StepError::Err(e.into())
    }
}

pub(crate) type Step<T = ()> = Result<T, StepError>;

pub(crate) struct Runner {
    pub(crate) p: EngineParts,
    pub(crate) file: StateFile,
    pub(crate) doc: StateDoc,
    candidates: Vec<Candidate>,
    available: Vec<AvailableRelease>,
    status_tx: watch::Sender<StatusSnapshot>,
    progress_tx: watch::Sender<Option<Progress>>,
    progress_rx: watch::Receiver<Option<Progress>>,
    job: Option<Job>,
    /// A check asked for while `job` runs, so a slow download cannot keep the device
    /// from learning about (and showing) a newer release.
    side_check: Option<Job>,
    exit: Option<RunExit>,
    next_check: Option<Instant>,
    next_eval: Instant,
    next_probation_check: Instant,
    reboot_waiting: Vec<String>,
    /// A version whose staging failed in this run: not restaged automatically before
    /// the next check, so a broken image does not loop.
    stage_failed: Option<String>,
    /// A staging the network ended (slow retrieval, download error), to be tried again
    /// from its checkpoint with backoff.
    stage_retry: Option<StageRetry>,
    /// How the last successful staging in this run got its bytes.
    last_stage: Option<StageReport>,
    /// Id of the last job started in this run (ids are not persisted).
    job_seq: u64,
    /// The job started most recently, with its outcome once it ended.
    last_job: Option<JobRecord>,
    /// Set by a job's completion step when the job failed although the step itself
    /// succeeded (a staging failure is recorded and audited, not returned as an error).
    job_failure: Option<String>,
    finished_tx: broadcast::Sender<JobRecord>,
    /// Conditions found at start-up that status keeps showing for this run.
    warnings: Vec<String>,
    /// Warnings other parts of the daemon set and clear (the metrics writer).
    part_warnings: std::collections::BTreeMap<&'static str, String>,
}

/// What status warns about for the whole run: records the audit head file did not vouch
/// for when the daemon started (recorded as `audit_head_lag`).
fn startup_warnings(parts: &EngineParts) -> Vec<String> {
    let log = parts.audit.lock().unwrap_or_else(|e| e.into_inner());
    log.startup_lag()
        .map(|lag| {
            vec![format!(
                "{lag}; recorded as {}: a power cut between an append and the head update leaves one such record, otherwise they were appended by someone else; see `patchd audit verify`",
                crate::audit::HEAD_LAG_EVENT
            )]
        })
        .unwrap_or_default()
}

/// Start the engine: load (or create) the state, reconcile it with what booted, then
/// spawn the task that owns it.
pub async fn start(parts: EngineParts) -> Result<(EngineHandle, JoinHandle<RunExit>), EngineError> {
    let file = StateFile::new(&parts.paths.state_dir());
    let now = parts.clock.now();
    let doc: StateDoc = file.load(now)?.unwrap_or_default();
    let (status_tx, _status_rx) = watch::channel(StatusSnapshot::initial());
    let (progress_tx, progress_rx) = watch::channel(None);
    let warnings = startup_warnings(&parts);
    let first_check = parts
        .settings
        .check_interval
        .map(|_| Instant::now() + jitter(parts.settings.check_jitter));
    let mut r = Runner {
        p: parts,
        file,
        doc,
        candidates: Vec::new(),
        available: Vec::new(),
        status_tx,
        progress_tx,
        progress_rx,
        job: None,
        side_check: None,
        exit: None,
        next_check: first_check,
        next_eval: Instant::now(),
        next_probation_check: Instant::now(),
        reboot_waiting: Vec::new(),
        stage_failed: None,
        stage_retry: None,
        last_stage: None,
        job_seq: 0,
        last_job: None,
        job_failure: None,
        finished_tx: broadcast::channel(64).0,
        warnings,
        part_warnings: Default::default(),
    };
    let followup = match r.reconcile().await {
        Ok(f) => f,
        Err(StepError::Err(e)) => return Err(e),
        Err(StepError::PowerCut(at)) => {
            // The simulated power cut hit during reconciliation: hand back a handle
            // whose every call answers `Stopped`, and a task that already ended.
            let (tx, rx) = mpsc::channel(1);
            drop(rx);
            let handle = EngineHandle::new(tx, r.status_tx.subscribe(), r.finished_tx.clone());
            return Ok((
                handle,
                tokio::spawn(async move { RunExit::PowerCut { at } }),
            ));
        }
    };
    r.publish();
    let (tx, rx) = mpsc::channel(16);
    let handle = EngineHandle::new(tx, r.status_tx.subscribe(), r.finished_tx.clone());
    let task = tokio::spawn(r.run(rx, followup));
    Ok((handle, task))
}

/// The `cause` field of a failure's audit record (counted by the metrics).
pub(crate) fn cause(c: &str) -> (&'static str, serde_json::Value) {
    ("cause", serde_json::Value::from(c))
}

/// A health verdict's cause: the deadline verdicts are made by `start_health_with`.
fn health_cause(v: &HealthVerdict) -> &'static str {
    if v.failures.iter().any(|f| f.contains("deadline")) {
        "deadline"
    } else {
        "health"
    }
}

fn jitter(max: Duration) -> Duration {
    use rand::Rng;
    if max.is_zero() {
        return Duration::ZERO;
    }
    let ms = rand::thread_rng().gen_range(0..=max.as_millis().min(u64::MAX as u128) as u64);
    Duration::from_millis(ms)
}

/// What reconciliation leaves for the task to do first.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Followup {
    Nothing,
    StartHealth,
    Reboot(String),
    /// Staging was interrupted: check (the manifests are needed again), then stage the
    /// same release into the same slot so the pipeline resumes from its checkpoint.
    ResumeStaging,
}

enum Event {
    Cmd(Option<Command>),
    Job(Result<JobOut, tokio::task::JoinError>),
    SideCheck(Result<JobOut, tokio::task::JoinError>),
    Progress,
    Timer,
}

impl Runner {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>, followup: Followup) -> RunExit {
        let first = match followup {
            Followup::Nothing => Ok(()),
            Followup::StartHealth => {
                self.start_health();
                Ok(())
            }
            Followup::Reboot(reason) => self.reboot(&reason).await,
            Followup::ResumeStaging => {
                self.start_check_with(Actor::Policy, None, true);
                Ok(())
            }
        };
        if let Err(e) = first {
            self.note_error(e);
        }
        self.publish();
        loop {
            if let Some(exit) = self.exit.take() {
                if let Some(j) = self.job.take() {
                    j.handle.0.abort();
                }
                self.side_check = None;
                return exit;
            }
            let wait = self.time_to_next_timer();
            let event = {
                let job = self.job.as_mut().map(|j| &mut j.handle.0);
                let side = self.side_check.as_mut().map(|j| &mut j.handle.0);
                let progress = &mut self.progress_rx;
                tokio::select! {
                    cmd = rx.recv() => Event::Cmd(cmd),
                    out = async move {
                        match job {
                            Some(h) => h.await,
                            None => std::future::pending().await,
                        }
                    } => Event::Job(out),
                    out = async move {
                        match side {
                            Some(h) => h.await,
                            None => std::future::pending().await,
                        }
                    } => Event::SideCheck(out),
                    _ = progress.changed() => Event::Progress,
                    _ = tokio::time::sleep(wait) => Event::Timer,
                }
            };
            match event {
                Event::Cmd(None) => {
                    if let Some(j) = self.job.take() {
                        j.handle.0.abort();
                    }
                    return RunExit::Shutdown;
                }
                Event::Cmd(Some(cmd)) => self.on_command(cmd).await,
                Event::SideCheck(out) => {
                    let Some(job) = self.side_check.take() else {
                        continue;
                    };
                    self.job_ended(job, out).await;
                }
                Event::Job(out) => {
                    let Some(job) = self.job.take() else { continue };
                    self.progress_tx.send_replace(None);
                    self.job_ended(job, out).await;
                    if self.exit.is_none() && self.job.is_none() {
                        let r = self.evaluate().await;
                        if let Err(e) = r {
                            self.note_error(e);
                        }
                    }
                }
                Event::Progress => {}
                Event::Timer => {
                    let r = self.on_timer().await;
                    if let Err(e) = r {
                        self.note_error(e);
                    }
                }
            }
            self.publish();
        }
    }

    /// Act on how `job` ended and record its outcome (`JobFinished`, `LastJob`).
    async fn job_ended(&mut self, job: Job, out: Result<JobOut, tokio::task::JoinError>) {
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

    fn time_to_next_timer(&self) -> Duration {
        let mut next = self.next_eval;
        if let Some(c) = self.next_check {
            next = next.min(c);
        }
        if let Some(at) = self.stage_retry.as_ref().and_then(|r| r.at) {
            next = next.min(at);
        }
        next.saturating_duration_since(Instant::now())
    }

    async fn on_timer(&mut self) -> Step {
        let now = Instant::now();
        if self.next_check.is_some_and(|c| c <= now) {
            self.next_check = self
                .p
                .settings
                .check_interval
                .map(|i| now + i + jitter(self.p.settings.check_jitter));
            if self.job.is_none() && self.doc.lifecycle.is_settled() && self.p.updates.is_some() {
                self.start_check(Actor::Policy, None);
            }
        }
        let retry_due = self
            .stage_retry
            .as_ref()
            .and_then(|r| r.at)
            .is_some_and(|at| at <= now);
        if retry_due && self.job.is_none() {
            if let Some(r) = self.stage_retry.as_mut() {
                r.at = None;
                if self.stage_failed.as_deref() == Some(r.version.as_str()) {
                    tracing::info!(version = %r.version, failures = r.failures, "staging again after a network failure");
                    self.stage_failed = None;
                }
            }
            self.next_eval = now;
        }
        if self.next_eval <= now {
            self.next_eval = now + self.p.settings.evaluate_every;
            if self.job.is_none() {
                self.evaluate().await?;
            }
        }
        Ok(())
    }

    /// Schedule staging `version` again after a network failure; the wall-clock time
    /// of the attempt, or `None` when `cause` is not retried by itself.
    fn schedule_stage_retry(&mut self, version: &str, cause: &str) -> Option<Timestamp> {
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

    /// Record an error: a power cut stops the task; anything else shows in status.
    fn note_error(&mut self, e: StepError) {
        match e {
            StepError::PowerCut(at) => self.exit = Some(RunExit::PowerCut { at }),
            StepError::Err(e) => {
                tracing::warn!(error = %e, state = %self.doc.lifecycle.kind(), "engine step failed");
                let mut doc = self.doc.clone();
                doc.last_error = Some(e.to_string());
                if self.file.save(&doc).is_ok() {
                    self.doc = doc;
                } else {
                    self.doc.last_error = Some(e.to_string());
                }
            }
        }
    }

    // ---- persistence, audit, status ----------------------------------------------------

    /// Persist `doc` and adopt it; a transition of the lifecycle is audited as `event`.
    pub(crate) fn commit(
        &mut self,
        doc: StateDoc,
        event: &str,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Step {
        self.commit_with(doc, event, actor, reason, &[])
    }

    /// [`Self::commit`] with extra audit fields (e.g. the staging method and bytes).
    pub(crate) fn commit_with(
        &mut self,
        doc: StateDoc,
        event: &str,
        actor: &Actor,
        reason: Option<&str>,
        fields: &[(&str, serde_json::Value)],
    ) -> Step {
        let from = self.doc.lifecycle.kind();
        let to = doc.lifecycle.kind();
        self.failpoint(&format!("before:{event}"))?;
        self.file.save(&doc)?;
        self.doc = doc;
        self.failpoint(&format!("saved:{event}"))?;
        self.audit_with(event, actor, reason, Some(from), Some(to), fields);
        self.failpoint(&format!("audited:{event}"))?;
        Ok(())
    }

    pub(crate) fn audit(
        &mut self,
        event: &str,
        actor: &Actor,
        reason: Option<&str>,
        from: Option<super::state::StateKind>,
        to: Option<super::state::StateKind>,
    ) {
        self.audit_with(event, actor, reason, from, to, &[])
    }

    pub(crate) fn audit_with(
        &mut self,
        event: &str,
        actor: &Actor,
        reason: Option<&str>,
        from: Option<super::state::StateKind>,
        to: Option<super::state::StateKind>,
        fields: &[(&str, serde_json::Value)],
    ) {
        let now = self.p.clock.now();
        let release = self.doc.lifecycle.release().map(|r| r.version.clone());
        let slot = lifecycle_slot(&self.doc.lifecycle);
        let mut entry = Entry::new(event, *actor, reason.unwrap_or(""));
        if let Some(r) = &release {
            entry = entry.release(r.as_str());
        }
        if let Some(s) = &slot {
            entry = entry.slot(s);
        }
        if let Some(f) = from {
            entry = entry.field("from", f.as_str());
        }
        if let Some(t) = to {
            entry = entry.field("to", t.as_str());
        }
        for (k, v) in fields {
            entry = entry.field(*k, v.clone());
        }
        tracing::info!(
            event,
            release = release.as_deref().unwrap_or("-"),
            slot = slot.as_ref().map(|s| s.as_str()).unwrap_or("-"),
            actor = %actor,
            reason = reason.unwrap_or("-"),
            from = from.map(|f| f.as_str()).unwrap_or("-"),
            to = to.map(|t| t.as_str()).unwrap_or("-"),
            "lifecycle"
        );
        let res = self
            .p
            .audit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .append(entry, now);
        if let Err(e) = res {
            // The state file stays the source of truth; a lost audit record is loud.
            tracing::error!(error = %e, event, "audit record not written");
            self.doc.last_error = Some(format!("audit log: {e}"));
        }
    }

    fn publish(&mut self) {
        let snap = self.snapshot();
        self.status_tx.send_replace(snap);
    }

    fn snapshot(&self) -> StatusSnapshot {
        let now = self.p.clock.now();
        let bl = &self.p.bootloader;
        let booted = bl.booted_slot().ok();
        let boot_info = bl.slots().unwrap_or_default();
        let slots = self
            .p
            .slots
            .iter()
            .map(|s| {
                let st = s.status().ok();
                let bi = boot_info.iter().find(|b| &b.slot == s.name());
                SlotView {
                    name: s.name().clone(),
                    backend: s.kind().to_string(),
                    state: st.as_ref().map(|x| x.state),
                    version: st.as_ref().and_then(|x| x.version.clone()),
                    size: st.as_ref().and_then(|x| x.size),
                    booted: booted.as_ref() == Some(s.name()),
                    primary: bi.is_some_and(|b| b.primary),
                    tries_left: bi.and_then(|b| b.tries_left),
                    good: bi.is_some_and(|b| b.good),
                    bad: bi.is_some_and(|b| b.bad),
                }
            })
            .collect();
        let staged_version = match &self.doc.lifecycle {
            Lifecycle::Staged { release, .. } | Lifecycle::Switching { release, .. } => {
                Some(release.version.clone())
            }
            _ => None,
        };
        StatusSnapshot {
            state: self.doc.lifecycle.kind(),
            lifecycle: self.doc.lifecycle.clone(),
            booted_slot: booted,
            slots,
            current_version: self.current_version(),
            staged_version,
            security_floor: self.doc.security_floor,
            available: self.available.clone(),
            next_window: self.p.policy.schedule.next_open(now),
            last_check: self.doc.last_check,
            last_error: self.doc.last_error.clone(),
            holds: active_holds(&self.doc.holds, now).cloned().collect(),
            blocked: self.doc.blocked.clone(),
            progress: self.progress_rx.borrow().clone(),
            last_stage: self.last_stage,
            reboot_waiting: self.reboot_waiting.clone(),
            busy: self.job.as_ref().map(|j| j.kind.name().to_string()),
            last_job: self.last_job.clone(),
            warnings: self
                .warnings
                .iter()
                .chain(self.part_warnings.values())
                .cloned()
                .collect(),
        }
    }

    /// Set or clear the warning of daemon part `key`; audited when it changes.
    fn set_warning(&mut self, key: &'static str, text: Option<String>) {
        let old = match &text {
            Some(t) => self.part_warnings.insert(key, t.clone()),
            None => self.part_warnings.remove(key),
        };
        if old == text {
            return;
        }
        let part = serde_json::Value::from(key);
        match &text {
            Some(t) => self.audit_with(
                "warning",
                &Actor::Daemon,
                Some(t),
                None,
                None,
                &[("part", part)],
            ),
            None => self.audit_with(
                "warning_cleared",
                &Actor::Daemon,
                None,
                None,
                None,
                &[("part", part)],
            ),
        }
    }

    // ---- jobs ---------------------------------------------------------------------------

    /// Give the job about to start its id and make it the last job.
    fn begin_job(&mut self, kind: &str, release: Option<&str>) -> JobRecord {
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
    fn begin_side_job(&mut self, kind: &str) -> JobRecord {
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
    fn end_job(&mut self, mut rec: JobRecord, outcome: JobOutcome, error: Option<String>) {
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

    /// The version running now: under verification the new one, else the committed one,
    /// else what the booted slot says it holds.
    pub(crate) fn current_version(&self) -> Option<String> {
        if let Lifecycle::Verifying { release, .. } = &self.doc.lifecycle {
            return Some(release.version.clone());
        }
        if let Some(c) = &self.doc.committed {
            return Some(c.version.clone());
        }
        let booted = self.p.bootloader.booted_slot().ok()?;
        self.slot(&booted)?.status().ok()?.version
    }

    pub(crate) fn slot(&self, name: &SlotName) -> Option<&Arc<dyn Slot>> {
        self.p.slots.iter().find(|s| s.name() == name)
    }

    fn recategorize(&mut self) {
        let cur = self.current_version();
        self.available = self.context(cur.as_deref()).categorize(&self.candidates);
    }

    fn context<'a>(&'a self, current: Option<&'a str>) -> Context<'a> {
        Context {
            doc: &self.doc,
            current,
            policy: &self.p.policy,
            device: &self.p.device,
            now: self.p.clock.now(),
        }
    }

    // ---- commands ----------------------------------------------------------------------

    async fn on_command(&mut self, cmd: Command) {
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
    fn finish<T>(&mut self, r: Step<T>) -> Result<T, EngineError> {
        match r {
            Ok(v) => Ok(v),
            Err(StepError::PowerCut(at)) => {
                self.exit = Some(RunExit::PowerCut { at });
                Err(EngineError::Stopped)
            }
            Err(StepError::Err(e)) => Err(e),
        }
    }

    async fn on_mutating(&mut self, cmd: Command) {
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
            Command::Switch {
                actor,
                force,
                reply,
            } => {
                let r = self.switch(&actor, force).await;
                let _ = reply.send(self.finish(r));
            }
            Command::Rollback {
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
            Command::MarkBad {
                actor,
                reason,
                reply,
            } => {
                let r = self.roll_back(&actor, "manual", &reason).await;
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
            | Command::Cancel { .. } => {}
        }
    }

    fn start_check(&mut self, actor: Actor, reply: Option<Reply<Vec<AvailableRelease>>>) {
        self.start_check_with(actor, reply, false);
    }

    /// `check` while a job runs: join the running check, or run one beside the job.
    fn check_beside_job(&mut self, actor: Actor, reply: Reply<Vec<AvailableRelease>>) {
        let Some(updates) = self.p.updates.clone() else {
            let _ = reply.send(Err(no_repository()));
            return;
        };
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

    fn start_check_with(
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

    fn start_stage(&mut self, actor: Actor, version: String, slot: SlotName, switch_after: bool) {
        let Some(updates) = self.p.updates.clone() else {
            return;
        };
        let shared = self.progress_tx.clone();
        let v = version.clone();
        let handle = tokio::spawn(async move {
            // The staging pipeline writes on blocking threads that outlive an aborted job
            // (cancel): it gets a channel of its own, forwarded only while this task lives,
            // so a cancelled staging cannot bring its job line back into status.
            let (job_tx, mut job_rx) = watch::channel(None);
            let stage = updates.stage(&v, &slot, job_tx);
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

    pub(crate) fn start_health(&mut self) {
        let Lifecycle::Verifying { deadline, .. } = &self.doc.lifecycle else {
            return;
        };
        let now = self.p.clock.now();
        let remaining = deadline.duration_since(now);
        let budget = Duration::try_from(remaining).unwrap_or(Duration::ZERO);
        self.start_health_with(budget);
    }

    fn start_health_with(&mut self, budget: Duration) {
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

    async fn on_job(&mut self, kind: JobKind, out: JobOut) -> Step {
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
            _ => Ok(()),
        }
    }

    /// A check that ran beside a staging or health job: record what it found (list,
    /// last check time, audit), leave the lifecycle to the job.
    fn after_side_check(&mut self, actor: &Actor, res: Result<Vec<Candidate>, PortError>) -> Step {
        let cands = match res {
            Ok(c) => c,
            Err(e) => {
                let cause = serde_json::Value::from(e.cause.unwrap_or("check"));
                self.audit_with(
                    "check_failed",
                    actor,
                    Some(&e.to_string()),
                    None,
                    None,
                    &[("cause", cause)],
                );
                return Err(e.into());
            }
        };
        self.candidates = cands;
        self.recategorize();
        let now = self.p.clock.now();
        let mut doc = self.doc.clone();
        doc.last_check = Some(now);
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
        self.audit("check", actor, Some(&summary), None, None);
        Ok(())
    }

    fn after_check(&mut self, actor: &Actor, res: Result<Vec<Candidate>, PortError>) -> Step {
        let now = self.p.clock.now();
        let cands = match res {
            Ok(c) => c,
            Err(e) => {
                let cause = serde_json::Value::from(e.cause.unwrap_or("check"));
                self.audit_with(
                    "check_failed",
                    actor,
                    Some(&e.to_string()),
                    None,
                    None,
                    &[("cause", cause)],
                );
                return Err(e.into());
            }
        };
        self.candidates = cands;
        self.stage_failed = None;
        let mut doc = self.doc.clone();
        doc.last_check = Some(now);
        doc.last_error = None;
        self.doc.last_check = Some(now);
        self.recategorize();
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
                self.audit("check", actor, Some(&summary), None, None);
            }
            (Lifecycle::UpdateAvailable { .. }, Some(_)) if same_target => {
                self.file.save(&doc)?;
                self.doc = doc;
                self.audit("check", actor, Some(&summary), None, None);
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
                    self.audit("check", actor, Some(&summary), None, None);
                }
            }
        }
        Ok(())
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

    async fn install(
        &mut self,
        actor: &Actor,
        release: Option<String>,
        switch_now: bool,
    ) -> Step<InstallStarted> {
        if self.p.updates.is_none() {
            return Err(no_repository().into());
        }
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
            .candidates
            .iter()
            .find(|c| c.facts.version == version)
            .cloned()
            .ok_or_else(|| EngineError::NoSuchRelease {
                version: version.clone(),
            })?;
        let cur = self.current_version();
        if let Some(w) = self
            .context(cur.as_deref())
            .switch_reasons(&cand, true)
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
            self.audit("approved", actor, Some(&why), None, None);
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

    fn begin_staging(&mut self, actor: &Actor, switch_after: bool) -> Step<SlotName> {
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
    fn fence_for_write(&mut self, slot: &SlotName, actor: &Actor) -> Result<(), EngineError> {
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
        self.audit("slot_fenced", actor, Some(&why), None, None);
        Ok(())
    }

    async fn after_stage(
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
                Ok(report)
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
                let fields = [
                    ("method", serde_json::Value::from(report.method.as_str())),
                    ("bytes_fetched", report.bytes_fetched.into()),
                    ("bytes_reused", report.bytes_reused.into()),
                ];
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
    fn resume_staging(&mut self, checked: Step) -> Step {
        let Lifecycle::Staging { release, slot } = self.doc.lifecycle.clone() else {
            return checked;
        };
        let why = match checked {
            Err(StepError::PowerCut(at)) => return Err(StepError::PowerCut(at)),
            Err(StepError::Err(e)) => Some(format!("the check before resuming failed: {e}")),
            Ok(()) => {
                let cur = self.current_version();
                match self
                    .candidates
                    .iter()
                    .find(|c| c.facts.version == release.version)
                {
                    None => Some("the repository no longer offers it".to_string()),
                    Some(c) => self
                        .context(cur.as_deref())
                        .switch_reasons(c, true)
                        .first()
                        .map(|w| format!("it may no longer be installed: {w}")),
                }
            }
        };
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

    /// Reasons not to switch to the staged release now (policy + engine + inhibitors).
    async fn switch_blockers(&mut self, force: bool) -> Vec<WhyNot> {
        let Some(release) = self.doc.lifecycle.release().cloned() else {
            return vec![];
        };
        let cur = self.current_version();
        let mut why = match self
            .candidates
            .iter()
            .find(|c| c.facts.version == release.version)
        {
            Some(c) => self.context(cur.as_deref()).switch_reasons(c, force),
            // Not seen since start (a restart while staged): a check must confirm the
            // release is still signed, not withdrawn and allowed before switching.
            None => vec![WhyNot::Manifest {
                detail: "release not confirmed by a check since start".into(),
            }],
        };
        if !force {
            let inh = self.p.reboot.inhibitors().await;
            self.reboot_waiting = inh.clone();
            why.extend(inh.into_iter().map(|by| WhyNot::RebootInhibited { by }));
        }
        why
    }

    async fn switch(&mut self, actor: &Actor, force: bool) -> Step {
        let Lifecycle::Staged { release, slot } = self.doc.lifecycle.clone() else {
            return Err(EngineError::Illegal(super::state::IllegalTransition {
                from: self.doc.lifecycle.kind(),
                action: "switch",
            })
            .into());
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
        let reason = format!("switch to {} in slot {slot}", release.version);
        let mut doc = self.doc.clone();
        doc.lifecycle = self.doc.lifecycle.begin_switch(booted)?;
        doc.pending = Some(Pending::ArmTrial { slot: slot.clone() });
        self.commit(
            doc,
            "switching",
            actor,
            Some(if force {
                "admin override"
            } else {
                "window, rollout and holds allow it"
            }),
        )?;
        self.failpoint("switch.before_arm")?;
        if let Err(e) = self
            .p
            .bootloader
            .try_slot(&slot, self.p.settings.boot_attempts)
        {
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

    /// Record the reboot intent, ask for it, and stop acting.
    pub(crate) async fn reboot(&mut self, reason: &str) -> Step {
        let mut doc = self.doc.clone();
        doc.pending = Some(Pending::Reboot {
            reason: reason.to_string(),
        });
        self.file.save(&doc)?;
        self.doc = doc;
        self.audit("reboot", &Actor::Policy, Some(reason), None, None);
        self.failpoint("reboot.before")?;
        self.p.reboot.reboot(reason).await?;
        self.exit = Some(RunExit::Rebooting {
            reason: reason.to_string(),
        });
        Ok(())
    }

    async fn after_health(&mut self, v: HealthVerdict) -> Step {
        for w in &v.warnings {
            tracing::warn!(warning = %w, "wanted health check failed");
        }
        match &self.doc.lifecycle {
            Lifecycle::Verifying { .. } => {
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

    async fn mark_good(&mut self, actor: &Actor, why: &str) -> Step {
        let Lifecycle::Verifying { release, slot, .. } = self.doc.lifecycle.clone() else {
            return Err(EngineError::Illegal(super::state::IllegalTransition {
                from: self.doc.lifecycle.kind(),
                action: "mark good",
            })
            .into());
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
        self.failpoint("commit.after_mark_good")?;
        let now = self.p.clock.now();
        let probation_until = self
            .p
            .settings
            .probation
            .and_then(|d| SignedDuration::try_from(d).ok())
            .and_then(|d| now.checked_add(d).ok());
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
        Ok(())
    }

    /// Roll back the release on trial (or in probation). `cause` names the kind for the
    /// audit record and the metrics: `health`, `deadline`, `manual`, `boot`.
    pub(crate) async fn roll_back(&mut self, actor: &Actor, cause_: &str, reason: &str) -> Step {
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

    async fn cancel(&mut self, actor: &Actor) -> Step {
        let next = match self.doc.lifecycle.cancel() {
            Ok(next) => next,
            // Nothing runs and nothing waits: the admin's target does not exist (NotFound,
            // exit 6), unlike a cancel refused mid-switch.
            Err(_) if self.job.is_none() && self.doc.lifecycle.is_settled() => {
                return Err(EngineError::NothingToCancel {
                    state: self.doc.lifecycle.kind().as_str(),
                }
                .into())
            }
            Err(e) => return Err(EngineError::from(e).into()),
        };
        if let Some(j) = self.job.take() {
            if matches!(j.kind, JobKind::Stage { .. }) {
                j.handle.0.abort();
                self.progress_tx.send_replace(None);
                self.end_job(j.rec, JobOutcome::Cancelled, None);
            } else {
                let running = j.kind.name().to_string();
                self.job = Some(j);
                return Err(EngineError::Busy { running }.into());
            }
        }
        if let Lifecycle::Staging { slot, .. } | Lifecycle::Staged { slot, .. } =
            &self.doc.lifecycle
        {
            // The half-written or unused slot must not be booted by accident.
            if let Some(s) = self.slot(slot) {
                let _ = s.set_state(SlotState::Incomplete);
            }
        }
        let mut doc = self.doc.clone();
        doc.lifecycle = next;
        doc.pending = None;
        self.commit(doc, "cancelled", actor, None)
    }

    fn hold(
        &mut self,
        actor: &Actor,
        reason: String,
        until: Option<Timestamp>,
        max_version: Option<String>,
    ) -> Step {
        let now = self.p.clock.now();
        let max_version = match max_version {
            None => None,
            Some(v) => Some(
                semver::Version::parse(&v).map_err(|e| EngineError::BadVersion {
                    version: v.clone(),
                    why: e.to_string(),
                })?,
            ),
        };
        let hold = Hold {
            reason,
            by: actor.to_string(),
            created: now,
            until,
            max_version,
        };
        let detail = hold.describe();
        let mut doc = self.doc.clone();
        doc.holds.push(hold);
        self.file.save(&doc)?;
        self.doc = doc;
        self.audit("hold", actor, Some(&detail), None, None);
        self.recategorize();
        Ok(())
    }

    fn release_holds(&mut self, actor: &Actor, why: &str) -> Step {
        if self.doc.holds.is_empty() {
            return Err(EngineError::NoHold.into());
        }
        let mut doc = self.doc.clone();
        doc.holds.clear();
        self.file.save(&doc)?;
        self.doc = doc;
        self.audit("hold_released", actor, Some(why), None, None);
        self.recategorize();
        Ok(())
    }

    /// Automatic progress: expire holds, stage what policy allows, switch when the
    /// window opens, end probation.
    async fn evaluate(&mut self) -> Step {
        let now = self.p.clock.now();
        if self.doc.holds.iter().any(|h| h.is_expired(now)) {
            let (active, expired) =
                crate::policy::holds::split_expired(self.doc.holds.clone(), now);
            let mut doc = self.doc.clone();
            doc.holds = active;
            self.file.save(&doc)?;
            self.doc = doc;
            for h in expired {
                let why = format!("expired: {}", h.describe());
                self.audit("hold_expired", &Actor::Policy, Some(&why), None, None);
            }
        }
        self.recategorize();
        match self.doc.lifecycle.clone() {
            Lifecycle::UpdateAvailable { release } => {
                let allowed = self
                    .available
                    .iter()
                    .find(|a| a.version == release.version)
                    .is_some_and(|a| a.may_stage)
                    && self.stage_failed.as_deref() != Some(release.version.as_str());
                if allowed && self.p.updates.is_some() {
                    self.begin_staging(&Actor::Policy, false)?;
                }
            }
            Lifecycle::Staged { release, .. } => {
                let known = self
                    .candidates
                    .iter()
                    .any(|c| c.facts.version == release.version);
                if !known && self.p.updates.is_some() {
                    self.start_check(Actor::Policy, None);
                    return Ok(());
                }
                let why = self.switch_blockers(false).await;
                if why.is_empty() {
                    self.switch(&Actor::Policy, false).await?;
                } else {
                    tracing::debug!(why = ?why, "staged release waits");
                }
            }
            Lifecycle::Committed {
                probation_until: Some(until),
                ..
            } => {
                if until <= now {
                    let mut doc = self.doc.clone();
                    doc.lifecycle = self.doc.lifecycle.probation_over()?;
                    if let Some(c) = &doc.committed {
                        doc.security_floor = doc.security_floor.max(c.security_version);
                    }
                    self.commit(doc, "probation_over", &Actor::Policy, None)?;
                } else if Instant::now() >= self.next_probation_check {
                    self.next_probation_check =
                        Instant::now() + self.p.settings.probation_check_every;
                    let budget = self.p.settings.health_deadline;
                    self.start_health_with(budget);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn inventory(&self) -> serde_json::Value {
        use crate::inventory::{collect, EngineFacts, PatchInfo};
        let now = self.p.clock.now();
        let staged = match &self.doc.lifecycle {
            Lifecycle::Staging { release, .. }
            | Lifecycle::Staged { release, .. }
            | Lifecycle::Switching { release, .. }
            | Lifecycle::Verifying { release, .. } => Some(release.version.clone()),
            _ => None,
        };
        let patches = self
            .available
            .iter()
            .map(|a| {
                let state = if self.doc.is_blocked(&a.version) {
                    "failed"
                } else if staged.as_deref() == Some(a.version.as_str()) {
                    "pending"
                } else {
                    "available"
                };
                let reasons: Vec<String> = a.why_not.iter().map(|w| w.to_string()).collect();
                PatchInfo {
                    release: self
                        .candidates
                        .iter()
                        .find(|c| c.facts.version == a.version)
                        .map_or_else(|| a.version.clone(), |c| c.facts.id.clone()),
                    version: a.version.clone(),
                    kind: a.kind,
                    severity: a.severity,
                    cves: a.cves.clone(),
                    size: Some(a.size),
                    state: state.to_string(),
                    decision: Some(if reasons.is_empty() {
                        crate::policy::Decision::allowed("nothing stops it")
                    } else {
                        crate::policy::Decision::wait(reasons.join("; "), None)
                    }),
                }
            })
            .collect();
        let facts = EngineFacts {
            bootloader: Some(self.p.bootloader.kind().to_string()),
            slot_backend: self.p.slots.first().map(|s| s.kind().to_string()),
            slots: self
                .p
                .slots
                .iter()
                .filter_map(|s| s.status().ok())
                .collect(),
            booted: self.p.bootloader.booted_slot().ok(),
            security_floor: Some(self.doc.security_floor),
            holds: active_holds(&self.doc.holds, now).cloned().collect(),
            patches,
            audit_head: Some(self.audit_head()),
        };
        let inv = collect(&self.p.paths, &self.p.device_config, facts, now);
        serde_json::to_value(&inv).unwrap_or_else(
            |e| serde_json::json!({ "error": format!("inventory serialization: {e}") }),
        )
    }

    /// The audit chain's head as inventory and metrics show it.
    fn audit_head(&self) -> crate::inventory::AuditHead {
        let log = self.p.audit.lock().unwrap_or_else(|e| e.into_inner());
        crate::inventory::AuditHead {
            seq: log.last_seq(),
            hash: log.last_hash().to_string(),
            lag_at_start: log.startup_lag().map_or(0, |l| l.records.len() as u64),
        }
    }

    /// Test hook: with the `failpoints` feature, a named point can simulate a power cut.
    #[allow(clippy::unused_self)]
    pub(crate) fn failpoint(&self, _name: &str) -> Step {
        #[cfg(feature = "failpoints")]
        if self.p.failpoints.hit(_name) {
            return Err(StepError::PowerCut(_name.to_string()));
        }
        Ok(())
    }
}

impl StateDoc {
    fn lifecycle_is_staged(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Staged { .. })
    }
}

fn lifecycle_slot(l: &Lifecycle) -> Option<SlotName> {
    match l {
        Lifecycle::Staging { slot, .. }
        | Lifecycle::Staged { slot, .. }
        | Lifecycle::Switching { slot, .. }
        | Lifecycle::Verifying { slot, .. }
        | Lifecycle::Committed { slot, .. } => Some(slot.clone()),
        Lifecycle::RolledBack { bad_slot, .. } => Some(bad_slot.clone()),
        _ => None,
    }
}

fn no_repository() -> EngineError {
    EngineError::NotAvailable {
        what: "checking for releases",
        why: "no trusted repository is configured (fail closed)",
    }
}

/// The same error again, for the second and later callers that joined one check.
fn clone_error(e: &EngineError) -> EngineError {
    match e {
        EngineError::Port(p) => EngineError::Port(p.clone()),
        EngineError::Stopped => EngineError::Stopped,
        other => EngineError::Port(PortError::new("check", other)),
    }
}

fn reply_err(cmd: Command, e: EngineError) {
    match cmd {
        Command::Check { reply, .. } => drop(reply.send(Err(e))),
        Command::Install { reply, .. } => drop(reply.send(Err(e))),
        Command::Switch { reply, .. }
        | Command::Cancel { reply, .. }
        | Command::Rollback { reply, .. }
        | Command::MarkGood { reply, .. }
        | Command::MarkBad { reply, .. }
        | Command::Hold { reply, .. }
        | Command::ReleaseHold { reply, .. }
        | Command::AllowBelowFloor { reply, .. } => drop(reply.send(Err(e))),
        Command::History { reply, .. } => drop(reply.send(Err(e))),
        Command::Inventory { reply } => drop(reply.send(Err(e))),
        Command::VerifyAudit { reply } => drop(reply.send(Err(e))),
        Command::RecordDenial { reply, .. } | Command::SetWarning { reply, .. } => {
            drop(reply.send(Err(e)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_up_to_the_maximum() {
        let m = |s| Duration::from_secs(s);
        let got: Vec<_> = (1..=6).map(|n| retry_delay(m(300), m(3600), n)).collect();
        assert_eq!(got, [m(300), m(600), m(1200), m(2400), m(3600), m(3600)]);
        assert_eq!(retry_delay(m(300), m(3600), 0), m(300));
        assert_eq!(retry_delay(m(300), m(3600), u32::MAX), m(3600));
    }
}
