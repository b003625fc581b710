//! Prometheus text-format metrics for node_exporter's textfile collector, written
//! atomically (temp file + rename) so the collector never reads a half-written file.
//! The engine owns the values; this module only renders and writes them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use jiff::Timestamp;

/// Lifecycle states, each exported as one `patchd_state{state=…}` series so dashboards
/// see a 0 for every state the device is not in.
pub const STATES: &[&str] = &[
    "idle",
    "update_available",
    "staging",
    "staged",
    "switching",
    "verifying",
    "committed",
    "rolled_back",
    "failed",
];

/// One available release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvailableMetric {
    pub version: String,
    pub kind: String,
    pub severity: String,
}

/// What became of a release this device entered (switched to), latest first wins:
/// `switched` while on trial (rebooted into it, health checks or probation pending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Switched,
    Committed,
    RolledBack,
    Failed,
}

impl Outcome {
    /// Every outcome, in the order the file shows them.
    pub const ALL: [Outcome; 4] = [
        Outcome::Switched,
        Outcome::Committed,
        Outcome::RolledBack,
        Outcome::Failed,
    ];

    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Switched => "switched",
            Outcome::Committed => "committed",
            Outcome::RolledBack => "rolled_back",
            Outcome::Failed => "failed",
        }
    }
}

/// One release this device entered, with the rollout stage it entered by (`None`:
/// unknown, e.g. switched before the audit record carried the stage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseOutcome {
    pub release: String,
    pub stage: Option<usize>,
    pub outcome: Outcome,
}

/// The running job, as far as the metrics show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobMetric {
    /// `check`, `staging`, `health checks`.
    pub kind: String,
    pub done: u64,
    pub total: Option<u64>,
}

/// The pending patch set of a package source (`[source] kind = "apt"`), counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageMetric {
    /// Upgrades in the patch set by kind (`security`, `bugfix`, `feature`).
    pub pending: BTreeMap<String, u64>,
    /// Upgrades `apt-mark hold` keeps out of the patch set.
    pub held: u64,
    /// Upgrades of kind feature left out while `offer_feature` is off.
    pub not_offered: u64,
}

/// Kinds the pending-packages series always shows, so a dashboard sees a 0.
pub const PACKAGE_KINDS: [&str; 3] = ["security", "bugfix", "feature"];

/// Values the engine reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// `[device] product` and `channel`, labels of the release series.
    pub product: String,
    pub channel: String,
    /// `[fleet] group` (the failure domain), the `group` label of the outcome series;
    /// `None`: the label is left out.
    pub group: Option<String>,
    /// Releases this device entered and what became of each, oldest first.
    pub outcomes: Vec<ReleaseOutcome>,
    pub state: String,
    pub current_version: Option<String>,
    pub staged_version: Option<String>,
    pub available: Vec<AvailableMetric>,
    pub last_successful_check: Option<Timestamp>,
    pub staged_bytes: u64,
    /// Failed jobs by reason (`download`, `verify`, `health`, …), counted since install.
    pub failures: BTreeMap<String, u64>,
    /// Rollbacks by reason (`health`, `boot`, `deadline`, `manual`).
    pub rollbacks: BTreeMap<String, u64>,
    /// `seq` and hash of the audit chain's last record, for a fleet collector to pin.
    pub audit_head: Option<(u64, String)>,
    /// Records the audit head file did not vouch for when the daemon started.
    pub audit_head_lag: u64,
    /// Whether the most recent check succeeded, and when it ended.
    pub last_check_result: Option<(bool, Timestamp)>,
    /// Checks by result (`success`, `failure`), counted since install.
    pub checks: BTreeMap<String, u64>,
    /// Releases committed on this device.
    pub updates: u64,
    /// Bytes downloaded and bytes reused from local slots by successful stagings.
    pub fetched_bytes: u64,
    pub reused_bytes: u64,
    /// Active holds.
    pub holds: u64,
    pub job: Option<JobMetric>,
    /// The fleet reboot slot: group and state (`held`, `kept`, `waiting`,
    /// `unreachable`, `free`); `None` without a reboot lock.
    pub reboot_slot: Option<(String, String)>,
    /// Reboot lock audit events (`reboot_slot_acquired`, …) counted since install.
    pub reboot_lock_events: BTreeMap<String, u64>,
    /// The pending patch set; `None` for image-based sources (the series are left out).
    pub packages: Option<PackageMetric>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write metrics file {path}: {source}")]
pub struct MetricsError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Label value escaping of the text exposition format.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A series of one sample without labels: its header and its value.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// Render the snapshot as of `now`.
///
/// Long on purpose: one series after another in the order the file shows them, so the
/// exported text can be read against this function top to bottom.
pub fn render(m: &MetricsSnapshot, now: Timestamp) -> String {
    let mut o = String::new();
    header(
        &mut o,
        "patchd_state",
        "gauge",
        "1 for the current lifecycle state, 0 for the others.",
    );
    let mut states: Vec<&str> = STATES.to_vec();
    if !states.contains(&m.state.as_str()) && !m.state.is_empty() {
        states.push(&m.state);
    }
    for s in states {
        let v = u8::from(s == m.state);
        let _ = writeln!(o, "patchd_state{{state=\"{}\"}} {v}", esc(s));
    }
    let device = format!(
        "channel=\"{}\",product=\"{}\"",
        esc(&m.channel),
        esc(&m.product)
    );
    for (name, help, version) in [
        (
            "patchd_current_release_info",
            "Release the device runs.",
            &m.current_version,
        ),
        (
            "patchd_staged_release_info",
            "Release staged in the inactive slot.",
            &m.staged_version,
        ),
    ] {
        header(&mut o, name, "gauge", help);
        if let Some(v) = version {
            let _ = writeln!(o, "{name}{{release=\"{}\",{device}}} 1", esc(v));
        }
    }
    header(
        &mut o,
        "patchd_available_release_info",
        "gauge",
        "Releases available to install, categorized.",
    );
    for a in &m.available {
        let _ = writeln!(
            o,
            "patchd_available_release_info{{release=\"{}\",kind=\"{}\",severity=\"{}\",{device}}} 1",
            esc(&a.version),
            esc(&a.kind),
            esc(&a.severity)
        );
    }
    release_outcomes(&mut o, m, &device);
    single(
        &mut o,
        "patchd_available_updates",
        "gauge",
        "Number of releases available to install.",
        m.available.len(),
    );
    if let Some(t) = m.last_successful_check {
        single(
            &mut o,
            "patchd_last_successful_check_timestamp_seconds",
            "gauge",
            "Unix time of the last successful check.",
            t.as_second(),
        );
        let age = now.duration_since(t).as_secs_f64().max(0.0);
        single(
            &mut o,
            "patchd_seconds_since_last_successful_check",
            "gauge",
            "Seconds since the last successful check.",
            format!("{age:.0}"),
        );
    }
    if let Some((ok, at)) = m.last_check_result {
        single(
            &mut o,
            "patchd_last_check_success",
            "gauge",
            "1 when the most recent check succeeded, 0 when it failed.",
            u8::from(ok),
        );
        single(
            &mut o,
            "patchd_last_check_timestamp_seconds",
            "gauge",
            "Unix time the most recent check (successful or not) ended.",
            at.as_second(),
        );
    }
    header(
        &mut o,
        "patchd_checks_total",
        "counter",
        "Checks for releases by result.",
    );
    for r in ["success", "failure"] {
        let n = m.checks.get(r).copied().unwrap_or(0);
        let _ = writeln!(o, "patchd_checks_total{{result=\"{r}\"}} {n}");
    }
    single(
        &mut o,
        "patchd_updates_total",
        "counter",
        "Releases committed on this device.",
        m.updates,
    );
    single(
        &mut o,
        "patchd_fetched_bytes_total",
        "counter",
        "Bytes downloaded by successful stagings.",
        m.fetched_bytes,
    );
    single(
        &mut o,
        "patchd_reused_bytes_total",
        "counter",
        "Bytes of new images taken from local slots instead of the network.",
        m.reused_bytes,
    );
    single(&mut o, "patchd_holds", "gauge", "Active holds.", m.holds);
    header(
        &mut o,
        "patchd_job_running",
        "gauge",
        "1 for the kind of job running now (none: no sample).",
    );
    if let Some(j) = &m.job {
        let _ = writeln!(o, "patchd_job_running{{kind=\"{}\"}} 1", esc(&j.kind));
        single(
            &mut o,
            "patchd_job_done_bytes",
            "gauge",
            "Progress of the running job.",
            j.done,
        );
        if let Some(t) = j.total {
            single(
                &mut o,
                "patchd_job_total_bytes",
                "gauge",
                "Size of the running job's work, when known.",
                t,
            );
        }
    }
    single(
        &mut o,
        "patchd_staged_bytes",
        "gauge",
        "Bytes written to the inactive slot for the staged release.",
        m.staged_bytes,
    );
    for (name, help, by_reason) in [
        (
            "patchd_failures_total",
            "Failed jobs by reason.",
            &m.failures,
        ),
        (
            "patchd_rollbacks_total",
            "Rollbacks by reason.",
            &m.rollbacks,
        ),
    ] {
        header(&mut o, name, "counter", help);
        for (r, n) in by_reason {
            let _ = writeln!(o, "{name}{{reason=\"{}\"}} {n}", esc(r));
        }
    }
    if let Some((seq, hash)) = &m.audit_head {
        header(
            &mut o,
            "patchd_audit_head_info",
            "gauge",
            "Last record of the audit hash chain (seq and sha256 of its line).",
        );
        let _ = writeln!(
            o,
            "patchd_audit_head_info{{seq=\"{seq}\",hash=\"{}\"}} 1",
            esc(hash)
        );
        single(
            &mut o,
            "patchd_audit_head_seq",
            "gauge",
            "seq of the last audit record.",
            seq,
        );
    }
    single(
        &mut o,
        "patchd_audit_head_lag_records",
        "gauge",
        "Audit records the head file did not vouch for when the daemon started (audit_head_lag).",
        m.audit_head_lag,
    );
    render_fleet(&mut o, m);
    if let Some(p) = &m.packages {
        render_packages(&mut o, p);
    }
    o
}

fn render_packages(o: &mut String, p: &PackageMetric) {
    header(
        o,
        "patchd_pending_packages",
        "gauge",
        "Package upgrades in the pending patch set, by kind (security, bugfix, feature).",
    );
    let extra = p
        .pending
        .keys()
        .filter(|k| !PACKAGE_KINDS.contains(&k.as_str()))
        .map(String::as_str);
    for kind in PACKAGE_KINDS.into_iter().chain(extra) {
        let n = p.pending.get(kind).copied().unwrap_or(0);
        let _ = writeln!(o, "patchd_pending_packages{{kind=\"{}\"}} {n}", esc(kind));
    }
    single(
        o,
        "patchd_held_packages",
        "gauge",
        "Pending package upgrades kept out of the patch set by apt-mark hold.",
        p.held,
    );
    single(
        o,
        "patchd_not_offered_packages",
        "gauge",
        "Pending upgrades of kind feature left out of the patch set ([source.apt] offer_feature = false).",
        p.not_offered,
    );
}

/// `patchd_release_outcome`: per release this device entered, 1 for its outcome and 0
/// for the others, so `sum by (release, outcome)` over a fleet counts devices in each
/// outcome and `sum by (release)` counts the devices that entered.
fn release_outcomes(o: &mut String, m: &MetricsSnapshot, device: &str) {
    header(
        o,
        "patchd_release_outcome",
        "gauge",
        "Per release this device entered (switched to): 1 for what became of it (switched: on trial; committed; rolled_back; failed), 0 for the other outcomes. stage: the rollout stage index it entered by.",
    );
    let group = m
        .group
        .as_deref()
        .map(|g| format!(",group=\"{}\"", esc(g)))
        .unwrap_or_default();
    for r in &m.outcomes {
        let stage = r
            .stage
            .map_or_else(|| "unknown".to_string(), |s| s.to_string());
        for out in Outcome::ALL {
            let v = u8::from(out == r.outcome);
            let _ = writeln!(
                o,
                "patchd_release_outcome{{release=\"{}\",{device}{group},stage=\"{stage}\",outcome=\"{}\"}} {v}",
                esc(&r.release),
                out.as_str()
            );
        }
    }
}

/// The fleet reboot slot: which state it is in, and how often each lock event happened.
fn render_fleet(o: &mut String, m: &MetricsSnapshot) {
    if let Some((group, state)) = &m.reboot_slot {
        header(
            o,
            "patchd_reboot_slot",
            "gauge",
            "1 for the state of this device's fleet reboot slot (held, kept, waiting, unreachable, free).",
        );
        let _ = writeln!(
            o,
            "patchd_reboot_slot{{group=\"{}\",state=\"{}\"}} 1",
            esc(group),
            esc(state)
        );
    }
    if !m.reboot_lock_events.is_empty() {
        header(
            o,
            "patchd_reboot_lock_events_total",
            "counter",
            "Reboot lock events by name (acquired, waiting, released, kept, unreachable), counted from the audit log.",
        );
        for (event, n) in &m.reboot_lock_events {
            let _ = writeln!(
                o,
                "patchd_reboot_lock_events_total{{event=\"{}\"}} {n}",
                esc(event)
            );
        }
    }
}

/// Write the metrics file atomically (mode 0644: node_exporter runs unprivileged).
/// `path` should end in `.prom`; the temporary file does not, so the collector skips it.
pub fn write_textfile(
    path: &Path,
    m: &MetricsSnapshot,
    now: Timestamp,
) -> Result<(), MetricsError> {
    crate::fsutil::atomic_write_mode(path, render(m, now).as_bytes(), 0o644).map_err(|source| {
        MetricsError {
            path: path.to_owned(),
            source,
        }
    })
}

/// `[metrics]` as written.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub textfile: Option<PathBuf>,
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Default)]
pub struct MetricsConfig {
    /// Prometheus node-exporter textfile to write (none = off).
    pub textfile: Option<PathBuf>,
}

impl MetricsConfig {
    pub fn from_raw(m: RawMetrics) -> Result<Self, crate::setting::InvalidSetting> {
        if let Some(t) = &m.textfile {
            crate::setting::absolute("metrics.textfile", t)?;
        }
        Ok(Self {
            textfile: m.textfile,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MetricsSnapshot {
        MetricsSnapshot {
            state: "staged".into(),
            current_version: Some("1.0.0".into()),
            staged_version: Some("1.1.0".into()),
            available: vec![AvailableMetric {
                version: "1.1.0".into(),
                kind: "security".into(),
                severity: "high".into(),
            }],
            last_successful_check: Some("2026-01-01T00:00:00Z".parse().unwrap()),
            staged_bytes: 1 << 33,
            failures: BTreeMap::from([("download".to_owned(), 2)]),
            rollbacks: BTreeMap::from([("health \"x\"".to_owned(), 1)]),
            audit_head: Some((41, "ab".repeat(32))),
            audit_head_lag: 1,
            product: "box".into(),
            channel: "stable".into(),
            group: Some("db-eu1".into()),
            outcomes: vec![
                ReleaseOutcome {
                    release: "1.0.0".into(),
                    stage: None,
                    outcome: Outcome::Committed,
                },
                ReleaseOutcome {
                    release: "1.1.0".into(),
                    stage: Some(2),
                    outcome: Outcome::RolledBack,
                },
            ],
            last_check_result: Some((false, "2026-01-01T00:01:00Z".parse().unwrap())),
            checks: BTreeMap::from([("success".to_owned(), 3), ("failure".to_owned(), 1)]),
            updates: 2,
            fetched_bytes: 100,
            reused_bytes: 50,
            holds: 1,
            job: Some(JobMetric {
                kind: "staging".into(),
                done: 10,
                total: Some(20),
            }),
            reboot_slot: Some(("db-eu1".into(), "waiting".into())),
            reboot_lock_events: BTreeMap::from([("reboot_slot_waiting".to_owned(), 3)]),
            packages: None,
        }
    }

    #[test]
    fn package_sources_export_the_patch_set_by_kind_and_the_held_packages() {
        let mut m = sample();
        assert!(!render(&m, Timestamp::now()).contains("patchd_pending_packages"));
        m.packages = Some(PackageMetric {
            pending: BTreeMap::from([("security".to_owned(), 3), ("bugfix".to_owned(), 1)]),
            held: 2,
            not_offered: 4,
        });
        let t = render(&m, Timestamp::now());
        for line in [
            "# HELP patchd_pending_packages Package upgrades in the pending patch set, by kind (security, bugfix, feature).",
            "# TYPE patchd_pending_packages gauge",
            "patchd_pending_packages{kind=\"security\"} 3",
            "patchd_pending_packages{kind=\"bugfix\"} 1",
            "patchd_pending_packages{kind=\"feature\"} 0",
            "patchd_held_packages 2",
            "patchd_not_offered_packages 4",
        ] {
            assert!(t.lines().any(|l| l == line), "{line} missing in\n{t}");
        }
    }

    #[test]
    fn the_reboot_slot_is_exported_with_its_group() {
        let t = render(&sample(), Timestamp::now());
        for line in [
            "patchd_reboot_slot{group=\"db-eu1\",state=\"waiting\"} 1",
            "patchd_reboot_lock_events_total{event=\"reboot_slot_waiting\"} 3",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        let none = MetricsSnapshot::default();
        assert!(!render(&none, Timestamp::now()).contains("patchd_reboot_slot"));
    }

    #[test]
    fn audit_head_is_exported_for_pinning() {
        let t = render(&sample(), Timestamp::now());
        let hash = "ab".repeat(32);
        for line in [
            format!("patchd_audit_head_info{{seq=\"41\",hash=\"{hash}\"}} 1"),
            "patchd_audit_head_seq 41".to_string(),
            "patchd_audit_head_lag_records 1".to_string(),
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
    }

    #[test]
    fn renders_every_series() {
        let now: Timestamp = "2026-01-01T00:01:40Z".parse().unwrap();
        let t = render(&sample(), now);
        for line in [
            "patchd_state{state=\"staged\"} 1",
            "patchd_state{state=\"idle\"} 0",
            "patchd_current_release_info{release=\"1.0.0\",channel=\"stable\",product=\"box\"} 1",
            "patchd_available_release_info{release=\"1.1.0\",kind=\"security\",severity=\"high\",channel=\"stable\",product=\"box\"} 1",
            "patchd_last_check_success 0",
            "patchd_checks_total{result=\"failure\"} 1",
            "patchd_updates_total 2",
            "patchd_fetched_bytes_total 100",
            "patchd_reused_bytes_total 50",
            "patchd_holds 1",
            "patchd_job_running{kind=\"staging\"} 1",
            "patchd_job_total_bytes 20",
            "patchd_seconds_since_last_successful_check 100",
            "patchd_staged_bytes 8589934592",
            "patchd_failures_total{reason=\"download\"} 2",
            "patchd_rollbacks_total{reason=\"health \\\"x\\\"\"} 1",
            "patchd_release_outcome{release=\"1.1.0\",channel=\"stable\",product=\"box\",group=\"db-eu1\",stage=\"2\",outcome=\"rolled_back\"} 1",
            "patchd_release_outcome{release=\"1.1.0\",channel=\"stable\",product=\"box\",group=\"db-eu1\",stage=\"2\",outcome=\"committed\"} 0",
            "patchd_release_outcome{release=\"1.0.0\",channel=\"stable\",product=\"box\",group=\"db-eu1\",stage=\"unknown\",outcome=\"committed\"} 1",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        // Every sample line is `name{labels} value` or `name value`.
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let value = l.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {l:?}");
        }
    }

    #[test]
    fn write_is_atomic_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("patchd.prom");
        write_textfile(&p, &sample(), Timestamp::now()).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("patchd_state{state=\"staged\"} 1"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "temporary files left: {names:?}");
    }
}
