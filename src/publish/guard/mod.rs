//! `patchpub rollout guard`: a rollout that stops itself. One run reads a release's
//! outcomes from Prometheus and either pauses the release (too many rollbacks and
//! failures among the devices that reported) or renews its rollout gate, opening the
//! next stage when the current one has committed enough devices and the next one's own
//! schedule has come. When Prometheus cannot be asked it signs nothing, so the gate
//! expires and devices stop entering: the dead-man's switch. Every run appends its
//! decision and the numbers behind it to the decision log.
//!
//! [`decide`] is the pure rule; [`run`] asks, acts and logs.

pub mod log;
pub mod prometheus;

use std::path::Path;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use semver::Version;
use serde::Serialize;

use super::gate::RolloutView;
use super::{PublishError, Repo};
use crate::manifest::RolloutGate;
pub use log::{DecisionRecord, LogError};
pub use prometheus::{Counts, Outcomes, QueryError};

/// When a release counts as failing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Thresholds {
    /// Devices that must have entered the release before it can be judged.
    pub min_reported: u64,
    /// Pause when (rolled back + failed) / entered exceeds this.
    pub max_bad_ratio: Option<f64>,
    /// Pause when rolled back + failed exceeds this many devices.
    pub max_bad: Option<u64>,
}

/// Everything one guard run needs besides the repository and the release.
#[derive(Debug, Clone)]
pub struct GuardSettings {
    /// Prometheus base URL, e.g. `http://prometheus:9090`.
    pub prometheus: String,
    pub timeout: Duration,
    /// Count only devices on this channel (`None`: every channel).
    pub channel: Option<String>,
    pub thresholds: Thresholds,
    /// How long a renewed gate holds: longer than the timer's period, with room for a
    /// missed run, and short enough that a dead guard freezes the rollout soon.
    pub gate_ttl: SignedDuration,
    /// Committed devices of the current stage needed to open the next one.
    pub min_committed: u64,
}

/// What the guard does about one release this run.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Too many rollbacks and failures: pause the release.
    Pause { reason: String },
    /// Healthy: sign `gate` (`opened`: it opens a stage the last gate did not).
    Gate {
        gate: RolloutGate,
        opened: bool,
        reason: String,
    },
    /// Nothing to sign (`decision` names why: already paused, withdrawn, not guarded).
    Nothing {
        decision: &'static str,
        reason: String,
    },
}

fn over(t: &Thresholds, c: &Counts) -> Option<String> {
    let (bad, n) = (c.bad(), c.entered());
    if n < t.min_reported {
        return None;
    }
    if let Some(max) = t.max_bad {
        if bad > max {
            return Some(format!(
                "{bad} of {n} devices rolled back or failed, more than {max}"
            ));
        }
    }
    if let Some(r) = t.max_bad_ratio {
        let ratio = bad as f64 / n as f64;
        if ratio > r {
            return Some(format!(
                "{bad} of {n} devices rolled back or failed ({:.1}%), more than {:.1}%",
                ratio * 100.0,
                r * 100.0
            ));
        }
    }
    None
}

/// The guard's rule for `view` given the fleet's `outcomes`, at `now`.
pub fn decide(
    view: &RolloutView,
    outcomes: &Outcomes,
    s: &GuardSettings,
    now: Timestamp,
) -> Verdict {
    let m = &view.manifest;
    if m.withdrawn {
        return Verdict::Nothing {
            decision: "withdrawn",
            reason: "release withdrawn; nothing to guard".into(),
        };
    }
    let total = outcomes.total();
    if let Some(why) = over(&s.thresholds, &total) {
        if m.rollout.paused {
            return Verdict::Nothing {
                decision: "already_paused",
                reason: format!("{why}; the release is paused already"),
            };
        }
        return Verdict::Pause { reason: why };
    }
    if m.rollout.paused {
        return Verdict::Nothing {
            decision: "already_paused",
            reason: "the release is paused (patchpub resume lets the guard renew its gate again)"
                .into(),
        };
    }
    let judged = if total.entered() < s.thresholds.min_reported {
        format!(
            "{} of {} devices needed to judge have reported",
            total.entered(),
            s.thresholds.min_reported
        )
    } else {
        format!(
            "{} of {} devices rolled back or failed: within the thresholds",
            total.bad(),
            total.entered()
        )
    };
    if !m.rollout.guarded {
        return Verdict::Nothing {
            decision: "healthy_unguarded",
            reason: format!("{judged}; the release is not guarded: no gate to renew"),
        };
    }
    let current = view.gate.map_or(0, |g| g.open_to);
    let expires = now.checked_add(s.gate_ttl).unwrap_or(Timestamp::MAX);
    let expires = Timestamp::from_second(expires.as_second()).unwrap_or(expires);
    let next = current + 1;
    let committed = outcomes.stage(current).committed;
    let due = view.stage_opens(next).filter(|t| *t <= now);
    if next < view.stage_count() && due.is_some() && committed >= s.min_committed {
        return Verdict::Gate {
            gate: RolloutGate {
                open_to: next,
                expires,
            },
            opened: true,
            reason: format!(
                "{judged}; stage {current} has {committed} committed device(s) (needs {}) and stage {next} is due: opened stage {next}",
                s.min_committed
            ),
        };
    }
    let why_not_next = if next >= view.stage_count() {
        "the last stage is open".to_string()
    } else if due.is_none() {
        format!("stage {next} is not due yet")
    } else {
        format!(
            "stage {current} has {committed} committed device(s), {} needed to open stage {next}",
            s.min_committed
        )
    };
    Verdict::Gate {
        gate: RolloutGate {
            open_to: current,
            expires,
        },
        opened: view.gate.is_none(),
        reason: format!("{judged}; {why_not_next}"),
    }
}

/// One guard run's result, as logged.
#[derive(Debug, Clone)]
pub struct Report {
    pub record: DecisionRecord,
    /// Prometheus could not be asked (the gate was left to expire).
    pub query_failed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("{decision} ({reason}), but the decision log could not be written: {source}")]
    Log {
        decision: String,
        reason: String,
        #[source]
        source: LogError,
    },
}

/// Ask, decide, act, log: one run of the guard for `product`/`version`.
pub async fn run(
    repo: &Repo,
    product: &str,
    version: &Version,
    s: &GuardSettings,
    log_path: &Path,
) -> Result<Report, GuardError> {
    let view = repo.rollout(product, version)?;
    let now = repo.now();
    let promql = prometheus::outcome_query(product, &version.to_string(), s.channel.as_deref());
    let mut rec = DecisionRecord::new(now, product, version, &s.prometheus, &promql, s);
    rec.gate_before = view.gate;
    rec.paused_before = view.manifest.rollout.paused;
    let outcomes = match prometheus::query(&s.prometheus, &promql, s.timeout).await {
        Ok(o) => o,
        Err(e) => {
            rec.decision = "could_not_query".into();
            rec.reason = match view.gate {
                Some(g) => format!(
                    "not renewing the rollout gate: it expires at {} and the rollout freezes at stage {}",
                    g.expires, g.open_to
                ),
                None => "not signing a rollout gate: the rollout stays frozen".into(),
            };
            rec.error = Some(e.to_string());
            rec.gate_after = view.gate;
            write_log(log_path, &rec)?;
            return Ok(Report {
                record: rec,
                query_failed: true,
            });
        }
    };
    rec.counts = Some(outcomes.total());
    rec.by_stage = Some(outcomes.by_stage.clone());
    let verdict = decide(&view, &outcomes, s, now);
    rec.gate_after = view.gate;
    let acted = match &verdict {
        Verdict::Pause { reason } => {
            rec.decision = "paused".into();
            rec.reason = reason.clone();
            repo.pause(product, version).map(|_| ())
        }
        Verdict::Gate {
            gate,
            opened,
            reason,
        } => {
            rec.decision = if *opened {
                format!("opened_stage_{}", gate.open_to)
            } else {
                "renewed".into()
            };
            rec.reason = reason.clone();
            rec.gate_after = Some(*gate);
            repo.set_gate(product, version, *gate)
        }
        Verdict::Nothing { decision, reason } => {
            rec.decision = (*decision).into();
            rec.reason = reason.clone();
            Ok(())
        }
    };
    if let Err(e) = acted {
        // The decision was made but not published: say so in the log too.
        rec.error = Some(format!("not published: {e}"));
        rec.gate_after = view.gate;
        write_log(log_path, &rec)?;
        return Err(e.into());
    }
    write_log(log_path, &rec)?;
    Ok(Report {
        record: rec,
        query_failed: false,
    })
}

fn write_log(path: &Path, rec: &DecisionRecord) -> Result<(), GuardError> {
    log::append(path, rec).map_err(|source| GuardError::Log {
        decision: rec.decision.clone(),
        reason: rec.reason.clone(),
        source,
    })
}

#[cfg(test)]
mod tests;
