//! Health checks after the first boot of a new slot (and during probation).
//!
//! This room only *runs* checks and reports; the engine acts on the verdict (commit,
//! or mark bad and roll back).
//!
//! ```no_run
//! # async fn f(cfg: &patchd::config::Config, paths: &patchd::paths::Paths) -> Result<(), patchd::health::HealthError> {
//! use patchd::health::{Deadline, HealthPlan, SystemdUnits};
//! let plan = HealthPlan::from_config(&cfg.health, paths);
//! // Deadline started when the new slot booted; persisted by the engine so a restart
//! // resumes with the remaining time.
//! let deadline = Deadline { started: jiff::Timestamp::now(), total: cfg.health.deadline };
//! let systemd = SystemdUnits::system().await?;
//! let report = plan.run(deadline.remaining(jiff::Timestamp::now()), &systemd).await;
//! if report.passed() { /* commit */ } else { /* roll back: report.to_string() says why */ }
//! # Ok(()) }
//! ```
//!
//! Checks, in this order: `[[health.command]]` from config; every executable in
//! `/etc/patchd/health.d/` (required) and `/etc/patchd/health.d/wanted/` (warnings only),
//! lexical order, hidden files skipped; `health.units` must be `active` (asked over D-Bus,
//! [`UnitQuery`]); `[[health.http]]` probes. Each check has a timeout (its own or
//! `check_timeout`), capped by what is left of the overall deadline. An executable is
//! judged by its exit status (0 = pass): once its main process exits, its output is read
//! for half a second more, then its whole process tree is killed — on pass, fail and
//! timeout alike, including children that left its process group (`setsid`, double
//! fork). The daemon runs each executable under the reaper ([`reaper`], `patchd
//! __health-exec`), inside a transient systemd scope when systemd runs the machine
//! ([`ExecSettings`]). Once the deadline is used up, the checks not yet run fail with
//! "deadline reached".
//!
//! Executables (drop-ins and configured commands, resolved under the injected
//! [`crate::paths::Paths`] root) run only if they and their directory are owned by
//! [`HealthPlan::trusted_uid`] (root on devices) and not group- or world-writable;
//! otherwise the check fails with that reason. They run with an empty environment except
//! `PATH` and `LANG`, stdin from /dev/null, and the last 4 KiB of stdout+stderr kept.

mod config;
pub(crate) mod exec;
pub mod reaper;
pub use config::{HealthConfig, RawHealth};
mod report;
mod scope;
pub mod spec;
mod systemd;

pub use exec::ExecSettings;

pub use report::{CheckKind, CheckResult, HealthReport, Verdict};
pub use spec::{valid_unit_name, CommandCheck, HttpProbe, HttpUrl};
pub use systemd::{FixedUnits, SystemdUnits, UnitQuery};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::paths::Paths;

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("D-Bus: {0}")]
    Bus(#[from] zbus::Error),
    #[error("systemd unit {unit}: {why}")]
    Unit { unit: String, why: String },
}

/// The overall deadline, resumable across restarts: the engine persists `started` (when
/// the new slot booted) and asks for the remaining time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Deadline {
    pub started: Timestamp,
    #[serde(with = "crate::duration")]
    pub total: Duration,
}

impl Deadline {
    /// Time left at `now` (zero once passed; a clock that went backwards counts as no time
    /// elapsed rather than extra time).
    pub fn remaining(&self, now: Timestamp) -> Duration {
        let elapsed = now.duration_since(self.started);
        let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
        self.total.saturating_sub(elapsed)
    }
}

/// Everything to check, with paths already resolved.
#[derive(Debug, Clone)]
pub struct HealthPlan {
    pub commands: Vec<CommandCheck>,
    pub units: Vec<String>,
    pub http: Vec<HttpProbe>,
    pub check_timeout: Duration,
    /// `/etc/patchd/health.d` under the root (its `wanted/` subdirectory holds warnings).
    pub health_dir: PathBuf,
    /// Root for configured commands' `run[0]`.
    pub paths: Paths,
    /// Owner required of executables (0 on devices; the unprivileged demo uses its euid).
    pub trusted_uid: u32,
    /// How executables are started: through the reaper (and a systemd scope) in the
    /// daemon; directly, with only a process-group kill, when no reaper is set.
    pub exec: ExecSettings,
}

impl HealthPlan {
    pub fn from_config(cfg: &HealthConfig, paths: &Paths) -> Self {
        Self {
            commands: cfg.commands.clone(),
            units: cfg.units.clone(),
            http: cfg.http.clone(),
            check_timeout: cfg.check_timeout,
            health_dir: paths.health_dir(),
            paths: paths.clone(),
            trusted_uid: 0,
            exec: ExecSettings::default(),
        }
    }

    /// Run every check within `remaining` (see the module doc for order and rules).
    pub async fn run(&self, remaining: Duration, units: &dyn UnitQuery) -> HealthReport {
        let start = Instant::now();
        let left = |now: Instant| remaining.saturating_sub(now.duration_since(start));
        let mut checks = Vec::new();
        let mut tasks: Vec<exec::Task> = Vec::new();
        for c in &self.commands {
            tasks.push(exec::Task::Command {
                name: c.name.clone(),
                kind: CheckKind::Command,
                argv: c.run.clone(),
                path: c
                    .run
                    .first()
                    .map(|p| self.paths.resolve(p))
                    .unwrap_or_default(),
                timeout: c.timeout.unwrap_or(self.check_timeout),
                required: c.required,
            });
        }
        let (dropins, mut listing_problems) =
            exec::dropins(&self.health_dir, self.check_timeout, self.trusted_uid);
        tasks.extend(dropins);
        checks.append(&mut listing_problems);
        for u in &self.units {
            tasks.push(exec::Task::Unit {
                unit: u.clone(),
                timeout: self.check_timeout,
            });
        }
        for p in &self.http {
            tasks.push(exec::Task::Http {
                probe: p.clone(),
                timeout: p.timeout.unwrap_or(self.check_timeout),
            });
        }
        let mut deadline_exceeded = false;
        for t in tasks {
            let l = left(Instant::now());
            if l.is_zero() {
                deadline_exceeded = true;
                checks.push(t.not_run("overall health deadline reached before this check ran"));
                continue;
            }
            let r = t.run(l, units, self.trusted_uid, &self.exec).await;
            tracing::info!(
                check = %r.name, kind = %r.kind, verdict = %r.verdict,
                duration_ms = r.duration_ms, "health check"
            );
            checks.push(r);
        }
        if left(Instant::now()).is_zero() && checks.iter().any(|c| c.verdict == Verdict::Fail) {
            deadline_exceeded = true;
        }
        HealthReport {
            checks,
            deadline_exceeded,
            duration_ms: start.elapsed().as_millis() as u64,
        }
    }
}
