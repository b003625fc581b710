//! The one task that owns the lifecycle state.
//!
//! Commands arrive over an mpsc channel; long steps (check, staging, health checks) run
//! as spawned jobs so status stays readable and new mutating commands get `Busy`. Every
//! change is persisted (atomically) before it is adopted in memory, then audited, then
//! published in the `watch` snapshot.
//!
//! This file holds the task's state and its loop; the steps live by phase in the child
//! modules: `commands`, `jobs`, `record` (persist, audit, publish), `checking`,
//! `staging`, `switching`, `verifying` (health, commit, rollback) and `admin`.

mod admin;
mod bundle;
mod checking;
mod commands;
mod components;
mod fleet;
mod jobs;
mod pruning;
mod record;
mod staging;
mod stale;
mod switching;
mod verifying;

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
    active_holds, Actor, HealthCheck, HealthVerdict, Offered, PortError, Progress, Reboot,
    StageReport, Updates, WhyNot,
};
use super::state::{Lifecycle, ReleaseRef};
use super::statefile::{Pending, StateDoc, StateFile};
use crate::audit::{AuditLog, Entry};
use crate::boot::{BootError, Bootloader};
use crate::clock::Clock;
use crate::names::SlotName;
use crate::paths::Paths;
use crate::policy::{DeviceFacts, Hold, LockState, Policy};
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
    /// Offline bundles (`patchctl install --bundle`); `None`: not offered.
    pub bundles: Option<Arc<dyn super::ports::Bundles>>,
    /// Windows, rollout, urgency (from the validated config).
    pub policy: Policy,
    /// Product, hardware id and channel for eligibility; machine id and tags for rollout.
    pub device: DeviceFacts,
    pub health: Arc<dyn HealthCheck>,
    /// The hash-chained audit log (shared with nobody else in the daemon).
    pub audit: Arc<std::sync::Mutex<AuditLog>>,
    pub reboot: Arc<dyn Reboot>,
    /// `[device]` config, for the inventory (machine id path, product, channel, tags).
    pub device_config: crate::config::DeviceConfig,
    pub settings: EngineSettings,
    /// The fleet reboot lock (`[fleet] lock`); `None`: reboots are not coordinated.
    pub fleet: Option<super::ports::RebootSlots>,
    /// The device's component installers (`[components]`).
    pub components: super::ports::DeviceComponents,
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

/// The running version as semver. Releases are semver (signed manifests), but a slot
/// provisioned by hand may name its content `1.0` or `3`: those are read as `1.0.0` and
/// `3.0.0`, so "not newer" still holds older releases back. Anything else counts as
/// unknown (as on a first provisioning), with a warning; the floor still applies.
fn running_semver(v: &str) -> Option<semver::Version> {
    if let Ok(parsed) = semver::Version::parse(v) {
        return Some(parsed);
    }
    let parts: Vec<&str> = v.split('.').collect();
    let numeric = parts.len() < 3 && parts.iter().all(|p| p.parse::<u64>().is_ok());
    let padded = format!("{v}{}", ".0".repeat(3 - parts.len().min(3)));
    match semver::Version::parse(&padded) {
        Ok(parsed) if numeric => Some(parsed),
        _ => {
            // Asked at every evaluation: say it once per run, not once a minute.
            static WARNED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(version = %v, "running version is not semver; taken as unknown");
            }
            None
        }
    }
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
    /// Reading and verifying an offline bundle, then what to do with it.
    Bundle {
        actor: Actor,
        then: bundle::BundleThen,
    },
}

impl JobKind {
    fn name(&self) -> &'static str {
        match self {
            JobKind::Check { .. } => "check",
            JobKind::Stage { .. } => "staging",
            JobKind::Health => "health checks",
            JobKind::Bundle { .. } => "bundle",
        }
    }
}

enum JobOut {
    Check(Result<Vec<Offered>, PortError>),
    Stage(Result<StageReport, PortError>),
    Health(HealthVerdict),
    Bundle(Result<super::ports::OpenedBundle, PortError>),
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
    candidates: Vec<Offered>,
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
    /// The fleet reboot lock, an input of every switch decision (`fleet.rs`).
    fleet: fleet::FleetRun,
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
    /// The offline bundle the current release came from: staging reads it instead of
    /// the repository until the next check or install replaces the list.
    bundle_source: Option<Arc<dyn Updates>>,
    /// The release and metadata expiry last audited as holding it back (`stale.rs`).
    stale_audited: Option<(String, jiff::Timestamp)>,
    /// Releases staging waited for at the last evaluation (`staging.rs`, `stage_opened`).
    stage_waiting: Vec<String>,
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
        fleet: fleet::FleetRun::default(),
        stage_failed: None,
        stage_retry: None,
        last_stage: None,
        job_seq: 0,
        last_job: None,
        job_failure: None,
        finished_tx: broadcast::channel(64).0,
        warnings,
        part_warnings: Default::default(),
        bundle_source: None,
        stale_audited: None,
        stage_waiting: Vec::new(),
    };
    r.reconcile_components();
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

    fn time_to_next_timer(&self) -> Duration {
        let mut next = self.next_eval;
        if let Some(c) = self.next_check {
            next = next.min(c);
        }
        if let Some(at) = self.stage_retry.as_ref().and_then(|r| r.at) {
            next = next.min(at);
        }
        if let Some(at) = self.fleet.wake {
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
        if self.fleet.wake.is_some_and(|at| at <= now) {
            self.fleet.wake = None;
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

    /// The version running now: under verification the new one, during a rollback whose
    /// reboot is pending still the bad one, else the committed one, else what the booted
    /// slot says it holds.
    pub(crate) fn current_version(&self) -> Option<String> {
        match &self.doc.lifecycle {
            Lifecycle::Verifying { release, .. } => return Some(release.version.clone()),
            Lifecycle::RolledBack {
                release, bad_slot, ..
            } if self.p.bootloader.booted_slot().ok().as_ref() == Some(bad_slot) => {
                return Some(release.version.clone())
            }
            _ => {}
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

    /// The running version, parsed once for the switch decision (see [`running_semver`]).
    fn running_version(&self) -> Option<semver::Version> {
        running_semver(&self.current_version()?)
    }

    fn recategorize(&mut self) {
        let running = self.running_version();
        let mut available = self.context(running.as_ref()).categorize(&self.candidates);
        // Component plans compare with what the system shows installed now.
        if self.candidates.iter().any(|c| !c.components.is_empty()) {
            let (installed, _) =
                crate::component::list_installed(&self.p.paths, &self.p.components.apps_dir);
            for a in &mut available {
                if let Some(c) = self.offered(&a.version) {
                    a.components = crate::component::plan_lines(&c.components, &installed);
                }
            }
        }
        self.available = available;
    }

    /// The inputs of the switch decision the engine holds, for [`Context::decide`].
    fn context<'a>(&'a self, running: Option<&'a semver::Version>) -> Context<'a> {
        Context {
            doc: &self.doc,
            running,
            policy: &self.p.policy,
            device: &self.p.device,
            lock: &self.fleet.state,
            now: self.p.clock.now(),
        }
    }

    /// The release a check offered under `version` (as the lifecycle names it).
    fn offered(&self, version: &str) -> Option<&Offered> {
        self.candidates.iter().find(|c| c.is(version))
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
                self.audit_with("hold_expired", &Actor::Policy, Some(&why), None, None, &[]);
            }
        }
        self.follow_reboot_slot().await?;
        self.recategorize();
        self.audit_stale_wait();
        let waited = self.note_stage_waits();
        match self.doc.lifecycle.clone() {
            Lifecycle::Idle {}
            | Lifecycle::Committed {
                probation_until: None,
                ..
            } => self.stage_opened(&waited)?,
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
                let known = self.offered(&release.version).is_some();
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
                    let previous = self.previous_slot();
                    let mut doc = self.doc.clone();
                    doc.lifecycle = self.doc.lifecycle.probation_over()?;
                    if let Some(c) = &doc.committed {
                        doc.security_floor = doc.security_floor.max(c.security_version);
                    }
                    self.commit(doc, "probation_over", &Actor::Policy, None)?;
                    self.end_component_probation();
                    self.prune_previous(previous).await?;
                    // Steady now: the reboot slot goes back at once.
                    self.follow_reboot_slot().await?;
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
        Command::Install { reply, .. } | Command::InstallBundle { reply, .. } => {
            drop(reply.send(Err(e)))
        }
        Command::ListBundle { reply, .. } => drop(reply.send(Err(e))),
        Command::Switch { reply, .. }
        | Command::Cancel { reply, .. }
        | Command::Rollback { reply, .. }
        | Command::MarkGood { reply, .. }
        | Command::MarkBad { reply, .. }
        | Command::ReleaseHold { reply, .. }
        | Command::Approve { reply, .. }
        | Command::Retry { reply, .. }
        | Command::FleetRelease { reply, .. }
        | Command::AllowBelowFloor { reply, .. } => drop(reply.send(Err(e))),
        Command::Hold { reply, .. } => drop(reply.send(Err(e))),
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

    #[test]
    fn running_versions_are_read_as_semver() {
        let v = |s: &str| running_semver(s).map(|v| v.to_string());
        assert_eq!(v("2.0.0-rc1").as_deref(), Some("2.0.0-rc1"));
        assert_eq!(v("1.10").as_deref(), Some("1.10.0"));
        assert_eq!(v("3").as_deref(), Some("3.0.0"));
        assert_eq!(v("banana"), None);
        assert_eq!(v("1.x"), None);
        assert_eq!(v(""), None);
    }
}
