//! Keeps `[metrics] textfile` current while the daemon runs.
//!
//! The values come from two places: the engine's status snapshot (state, versions,
//! available releases, last check, progress) and the audit log, which is the durable
//! record the failure and rollback counters are counted from. Counting from the log
//! rather than keeping counters of our own means no second state file to keep crash-safe,
//! and the counters say exactly what `patchctl history` says, across restarts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::handle::{EngineHandle, StatusSnapshot};
use crate::audit::{Actor, AuditLog, Filter, Record};
use crate::clock::Clock;
use crate::metrics::{AvailableMetric, MetricsSnapshot};

/// Events that count as a failed job, and the cause used when a record has no `cause`
/// field (records written before the field existed).
const FAILURE_EVENTS: &[(&str, &str)] = &[
    ("check_failed", "check"),
    ("staging_failed", "staging"),
    ("switch_failed", "switch"),
];

/// Key of the status warning shown while the textfile cannot be written.
pub const WARNING_KEY: &str = "metrics";

/// How often the file is rewritten when nothing changes, so that
/// `patchd_seconds_since_last_successful_check` keeps counting.
const REFRESH: Duration = Duration::from_secs(60);
/// Status changes during staging come with every progress step; write at most this
/// often.
const MIN_GAP: Duration = Duration::from_secs(1);

/// Failures and rollbacks by cause, counted from audit records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    pub failures: BTreeMap<String, u64>,
    pub rollbacks: BTreeMap<String, u64>,
}

fn cause_of(r: &Record) -> Option<&str> {
    r.extra.get("cause").and_then(|c| c.as_str())
}

/// Count `records` (a whole log, oldest first).
pub fn count(records: &[Record]) -> Counters {
    let mut c = Counters::default();
    for r in records {
        if let Some((_, default)) = FAILURE_EVENTS.iter().find(|(e, _)| *e == r.event) {
            let cause = cause_of(r).unwrap_or(default);
            *c.failures.entry(cause.to_owned()).or_default() += 1;
        } else if r.event == "rolled_back" {
            let cause = cause_of(r).unwrap_or(if matches!(r.actor, Actor::Uid(_)) {
                "manual"
            } else {
                "health"
            });
            *c.rollbacks.entry(cause.to_owned()).or_default() += 1;
            // A rollback by a check is also a failed job of that check.
            if matches!(cause, "health" | "deadline") {
                *c.failures.entry(cause.to_owned()).or_default() += 1;
            }
        }
    }
    c
}

/// The metrics as of `status` and `counters`.
pub fn snapshot(
    status: &StatusSnapshot,
    counters: &Counters,
    head: Option<(u64, String)>,
    lag: u64,
) -> MetricsSnapshot {
    let staged_bytes = match (&status.progress, &status.staged_version, &status.last_stage) {
        (Some(p), _, _) if status.busy.as_deref() == Some("staging") => p.done,
        (_, Some(_), Some(r)) => r.bytes_fetched + r.bytes_reused,
        _ => 0,
    };
    MetricsSnapshot {
        state: status.state.as_str().to_owned(),
        current_version: status.current_version.clone(),
        staged_version: status.staged_version.clone(),
        available: status
            .available
            .iter()
            .map(|a| AvailableMetric {
                version: a.version.clone(),
                kind: a.kind.as_str().to_owned(),
                severity: a.severity.as_str().to_owned(),
            })
            .collect(),
        last_successful_check: status.last_check,
        staged_bytes,
        failures: counters.failures.clone(),
        rollbacks: counters.rollbacks.clone(),
        audit_head: head,
        audit_head_lag: lag,
    }
}

struct Feed {
    path: PathBuf,
    audit: Arc<Mutex<AuditLog>>,
    clock: Arc<dyn Clock>,
    engine: EngineHandle,
    counted_to: Option<Option<u64>>,
    counters: Counters,
    failing: Option<String>,
}

impl Feed {
    fn audit_view(&mut self) -> (Option<(u64, String)>, u64) {
        let log = self.audit.lock().unwrap_or_else(|e| e.into_inner());
        let last = log.last_seq();
        if self.counted_to != Some(last) {
            match log.query(&Filter::default()) {
                Ok(records) => {
                    self.counters = count(&records);
                    self.counted_to = Some(last);
                }
                // Keep the last counts; the next change tries again.
                Err(e) => tracing::warn!(error = %e, "metrics: cannot read the audit log"),
            }
        }
        let head = last.map(|s| (s, log.last_hash().to_owned()));
        let lag = log
            .startup_lag()
            .map(|l| l.records.len() as u64)
            .unwrap_or(0);
        (head, lag)
    }

    async fn write(&mut self, status: &StatusSnapshot) {
        let (head, lag) = self.audit_view();
        let snap = snapshot(status, &self.counters, head, lag);
        let res = crate::metrics::write_textfile(&self.path, &snap, self.clock.now());
        let now_failing = res.err().map(|e| e.to_string());
        if now_failing == self.failing {
            return;
        }
        match &now_failing {
            Some(e) => tracing::error!(error = %e, "metrics textfile not written"),
            None => tracing::info!(path = %self.path.display(), "metrics textfile written again"),
        }
        // Status and the audit log learn of the change once, not at every retry.
        if let Err(e) = self
            .engine
            .set_warning(WARNING_KEY, now_failing.clone())
            .await
        {
            tracing::warn!(error = %e, "metrics: cannot report the write failure");
        }
        self.failing = now_failing;
    }
}

/// Write `path` now and after every status change (at most once a second, and at least
/// once a minute) until the engine stops.
pub fn spawn(
    path: PathBuf,
    audit: Arc<Mutex<AuditLog>>,
    clock: Arc<dyn Clock>,
    engine: EngineHandle,
) -> tokio::task::JoinHandle<()> {
    let mut rx: watch::Receiver<StatusSnapshot> = engine.subscribe();
    let mut feed = Feed {
        path,
        audit,
        clock,
        engine,
        counted_to: None,
        counters: Counters::default(),
        failing: None,
    };
    tokio::spawn(async move {
        loop {
            let status = rx.borrow_and_update().clone();
            feed.write(&status).await;
            tokio::time::sleep(MIN_GAP).await;
            if let Ok(Err(_)) = tokio::time::timeout(REFRESH, rx.changed()).await {
                // The engine stopped: one last write with its final state.
                let status = rx.borrow().clone();
                feed.write(&status).await;
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(event: &str, actor: Actor, cause: Option<&str>) -> Record {
        let mut extra = serde_json::Map::new();
        if let Some(c) = cause {
            extra.insert("cause".into(), c.into());
        }
        Record {
            seq: 0,
            time: jiff::Timestamp::UNIX_EPOCH,
            event: event.into(),
            release: None,
            slot: None,
            actor,
            reason: String::new(),
            extra,
            prev: String::new(),
        }
    }

    #[test]
    fn counts_failures_and_rollbacks_by_cause() {
        let records = vec![
            rec("staging_failed", Actor::Policy, Some("slow_retrieval")),
            rec("staging_failed", Actor::Policy, Some("slow_retrieval")),
            rec("staging_failed", Actor::Policy, None),
            rec("check_failed", Actor::Policy, Some("check")),
            rec("staged", Actor::Policy, None),
            rec("rolled_back", Actor::Policy, Some("health")),
            rec("rolled_back", Actor::Uid(0), None),
            rec("rolled_back", Actor::Policy, Some("boot")),
        ];
        let c = count(&records);
        assert_eq!(c.failures.get("slow_retrieval"), Some(&2));
        assert_eq!(c.failures.get("staging"), Some(&1));
        assert_eq!(c.failures.get("check"), Some(&1));
        assert_eq!(c.failures.get("health"), Some(&1));
        assert_eq!(c.failures.get("boot"), None);
        assert_eq!(c.rollbacks.get("health"), Some(&1));
        assert_eq!(c.rollbacks.get("manual"), Some(&1));
        assert_eq!(c.rollbacks.get("boot"), Some(&1));
    }
}
