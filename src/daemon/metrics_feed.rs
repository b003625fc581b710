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

use crate::audit::{Actor, AuditLog, Filter, Record};
use crate::clock::Clock;
use crate::engine::{EngineHandle, StatusSnapshot};
use crate::manifest::PackageStanding;
use crate::metrics::{
    AvailableMetric, JobMetric, MetricsSnapshot, Outcome, PackageMetric, ReleaseOutcome,
};

/// Events that count as a failed job, and the cause used when a record has no `cause`
/// field (records written before the field existed).
const FAILURE_EVENTS: &[(&str, &str)] = &[
    ("check_failed", "check"),
    ("staging_failed", "staging"),
    ("switch_failed", "switch"),
    ("bundle_rejected", "bundle"),
    ("prune_failed", "prune"),
];

/// Key of the status warning shown while the textfile cannot be written.
pub const WARNING_KEY: &str = "metrics";

/// How often the file is rewritten when nothing changes, so that
/// `patchd_seconds_since_last_successful_check` keeps counting.
const REFRESH: Duration = Duration::from_secs(60);
/// Status changes during staging come with every progress step; write at most this
/// often.
const MIN_GAP: Duration = Duration::from_secs(1);

/// What the audit records say, counted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    pub failures: BTreeMap<String, u64>,
    pub rollbacks: BTreeMap<String, u64>,
    /// Checks by result, and the most recent one's result and time.
    pub checks: BTreeMap<String, u64>,
    pub last_check: Option<(bool, jiff::Timestamp)>,
    pub updates: u64,
    pub fetched_bytes: u64,
    pub reused_bytes: u64,
    /// Releases entered (a `switching` record) and what became of each, oldest first.
    pub outcomes: Vec<ReleaseOutcome>,
    /// Reboot lock events by name.
    pub reboot_lock: BTreeMap<String, u64>,
}

/// Releases the outcome series keep (the most recently entered): enough for the
/// rollouts a fleet watches, bounded over a device's life.
const MAX_OUTCOMES: usize = 8;

/// Records that end a successful check.
const CHECK_EVENTS: &[&str] = &["check", "update_available", "nothing_available"];

/// The device's labels for the release series.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    pub product: String,
    pub channel: String,
    /// `[fleet] group`, the failure domain (`None`: not configured).
    pub group: Option<String>,
    /// The source is package-based (apt): the patch set's package series are exported.
    pub packages: bool,
}

/// Follow one record into the per-release outcomes: `switching` enters a release (with
/// the rollout stage the record names), `committed`, `rolled_back` and a failed switch
/// end it. A record without a release (a `failed` lifecycle) ends the one on trial.
fn track_outcome(out: &mut Vec<ReleaseOutcome>, r: &Record) {
    let outcome = match r.event.as_str() {
        "switching" => {
            let Some(release) = r.release.clone() else {
                return;
            };
            let stage = r
                .extra
                .get("stage")
                .and_then(|v| v.as_u64())
                .and_then(|s| usize::try_from(s).ok());
            out.retain(|o| o.release != release);
            out.push(ReleaseOutcome {
                release,
                stage,
                outcome: Outcome::Switched,
            });
            if out.len() > MAX_OUTCOMES {
                out.remove(0);
            }
            return;
        }
        "committed" => Outcome::Committed,
        "rolled_back" => Outcome::RolledBack,
        "switch_failed" | "failed" => Outcome::Failed,
        _ => return,
    };
    let entry = match &r.release {
        Some(v) => out.iter_mut().rev().find(|o| &o.release == v),
        None => out
            .iter_mut()
            .rev()
            .find(|o| o.outcome == Outcome::Switched),
    };
    if let Some(e) = entry {
        e.outcome = outcome;
    }
}

fn cause_of(r: &Record) -> Option<&str> {
    r.extra.get("cause").and_then(|c| c.as_str())
}

/// Count `records` (a whole log, oldest first).
pub fn count(records: &[Record]) -> Counters {
    let mut c = Counters::default();
    for r in records {
        let check = if CHECK_EVENTS.contains(&r.event.as_str()) {
            Some(true)
        } else if r.event == "check_failed" {
            Some(false)
        } else {
            None
        };
        if let Some(ok) = check {
            let key = if ok { "success" } else { "failure" };
            *c.checks.entry(key.to_owned()).or_default() += 1;
            c.last_check = Some((ok, r.time));
        }
        track_outcome(&mut c.outcomes, r);
        let field = |k: &str| r.extra.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        if r.event.starts_with("reboot_slot_") || r.event == "reboot_lock_unreachable" {
            *c.reboot_lock.entry(r.event.clone()).or_default() += 1;
        }
        match r.event.as_str() {
            "committed" => c.updates += 1,
            "staged" => {
                c.fetched_bytes += field("bytes_fetched");
                c.reused_bytes += field("bytes_reused");
            }
            _ => {}
        }
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
    labels: &Labels,
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
        product: labels.product.clone(),
        channel: labels.channel.clone(),
        group: labels.group.clone(),
        outcomes: counters.outcomes.clone(),
        last_check_result: counters.last_check,
        checks: counters.checks.clone(),
        updates: counters.updates,
        fetched_bytes: counters.fetched_bytes,
        reused_bytes: counters.reused_bytes,
        holds: status.holds.len() as u64,
        reboot_slot: status
            .fleet
            .as_ref()
            .map(|f| (f.group.clone(), f.state.clone())),
        reboot_lock_events: counters.reboot_lock.clone(),
        packages: labels.packages.then(|| packages(status)),
        job: status.busy.as_ref().map(|kind| JobMetric {
            kind: kind.clone(),
            done: status.progress.as_ref().map_or(0, |p| p.done),
            total: status.progress.as_ref().and_then(|p| p.total),
        }),
    }
}

/// The available patch set's packages, counted by standing and kind.
fn packages(status: &StatusSnapshot) -> PackageMetric {
    let mut m = PackageMetric::default();
    for p in status.available.iter().flat_map(|a| &a.packages) {
        match p.standing {
            PackageStanding::Included => {
                *m.pending.entry(p.kind.as_str().to_owned()).or_default() += 1;
            }
            PackageStanding::Held => m.held += 1,
            PackageStanding::NotOffered => m.not_offered += 1,
        }
    }
    m
}

struct Feed {
    path: PathBuf,
    labels: Labels,
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
        let snap = snapshot(status, &self.labels, &self.counters, head, lag);
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

/// The running writer: [`MetricsTask::finish`] writes once more and ends it.
pub struct MetricsTask {
    handle: tokio::task::JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl MetricsTask {
    /// Write the file a last time, release the engine handle the writer holds (so the
    /// engine can stop) and wait for it, at most `limit`.
    pub async fn finish(mut self, limit: Duration) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if tokio::time::timeout(limit, &mut self.handle).await.is_err() {
            tracing::warn!("metrics writer did not finish; leaving it");
            self.handle.abort();
        }
    }
}

/// Whether `b` differs from `a` in more than download progress: such changes are
/// written at once, progress alone at most once per [`MIN_GAP`].
fn significant(a: &StatusSnapshot, b: &StatusSnapshot) -> bool {
    let strip = |s: &StatusSnapshot| {
        let mut s = s.clone();
        s.progress = None;
        s
    };
    strip(a) != strip(b)
}

/// Write `path` now and after every change of the status: lifecycle steps and job ends
/// at once, progress at most once a second, and at least once a minute; once more when
/// the engine stops or [`MetricsTask::finish`] is called.
pub fn spawn(
    path: PathBuf,
    labels: Labels,
    audit: Arc<Mutex<AuditLog>>,
    clock: Arc<dyn Clock>,
    engine: EngineHandle,
) -> MetricsTask {
    let mut rx: watch::Receiver<StatusSnapshot> = engine.subscribe();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut feed = Feed {
        path,
        labels,
        audit,
        clock,
        engine,
        counted_to: None,
        counters: Counters::default(),
        failing: None,
    };
    let handle = tokio::spawn(async move {
        let mut written: Option<(StatusSnapshot, tokio::time::Instant)> = None;
        let mut force = true;
        loop {
            let status = rx.borrow_and_update().clone();
            let due = force
                || match &written {
                    None => true,
                    Some((last, at)) => significant(last, &status) || at.elapsed() >= MIN_GAP,
                };
            force = false;
            let wait = if due {
                feed.write(&status).await;
                written = Some((status, tokio::time::Instant::now()));
                REFRESH
            } else {
                // Progress only: flush it when the gap has passed.
                written
                    .as_ref()
                    .map_or(MIN_GAP, |(_, at)| MIN_GAP.saturating_sub(at.elapsed()))
            };
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        // The engine stopped: one last write with its final state.
                        let status = rx.borrow().clone();
                        feed.write(&status).await;
                        return;
                    }
                }
                _ = &mut stop_rx => {
                    let status = rx.borrow().clone();
                    feed.write(&status).await;
                    return;
                }
                // Refresh (ages) or flush progress.
                _ = tokio::time::sleep(wait) => force = true,
            }
        }
    });
    MetricsTask {
        handle,
        stop: Some(stop_tx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(event: &str, release: &str, stage: Option<u64>) -> Record {
        let mut r = rec(event, Actor::Policy, None);
        r.release = Some(release.into());
        if let Some(s) = stage {
            r.extra.insert("stage".into(), s.into());
        }
        r
    }

    #[test]
    fn outcomes_follow_each_entered_release_to_its_end() {
        let mut failed = rec("failed", Actor::Policy, None);
        failed.release = None;
        let records = vec![
            on("staged", "1.0.0", None),
            on("switching", "1.0.0", None),
            on("committed", "1.0.0", None),
            on("switching", "1.1.0", Some(1)),
            on("rolled_back", "1.1.0", None),
            on("switching", "1.2.0", Some(2)),
            failed,
            on("switching", "1.3.0", Some(0)),
            on("rolled_back", "0.9.0", None), // never entered: ignored
        ];
        let c = count(&records);
        let got: Vec<_> = c
            .outcomes
            .iter()
            .map(|o| (o.release.as_str(), o.stage, o.outcome))
            .collect();
        assert_eq!(
            got,
            vec![
                ("1.0.0", None, Outcome::Committed),
                ("1.1.0", Some(1), Outcome::RolledBack),
                ("1.2.0", Some(2), Outcome::Failed),
                ("1.3.0", Some(0), Outcome::Switched),
            ]
        );
        let many: Vec<_> = (0..20)
            .map(|i| on("switching", &format!("2.{i}.0"), Some(0)))
            .collect();
        let c = count(&many);
        assert_eq!(c.outcomes.len(), MAX_OUTCOMES);
        assert_eq!(c.outcomes.last().unwrap().release, "2.19.0");
    }

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
            rec("bundle_rejected", Actor::Uid(0), Some("bundle")),
            rec("staged", Actor::Policy, None),
            rec("rolled_back", Actor::Policy, Some("health")),
            rec("rolled_back", Actor::Uid(0), None),
            rec("rolled_back", Actor::Policy, Some("boot")),
        ];
        let c = count(&records);
        assert_eq!(c.failures.get("slow_retrieval"), Some(&2));
        assert_eq!(c.failures.get("staging"), Some(&1));
        assert_eq!(c.failures.get("check"), Some(&1));
        assert_eq!(c.failures.get("bundle"), Some(&1));
        assert_eq!(c.failures.get("health"), Some(&1));
        assert_eq!(c.failures.get("boot"), None);
        assert_eq!(c.rollbacks.get("health"), Some(&1));
        assert_eq!(c.rollbacks.get("manual"), Some(&1));
        assert_eq!(c.rollbacks.get("boot"), Some(&1));
    }
}
