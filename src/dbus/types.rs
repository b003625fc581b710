//! Plain data the service exchanges with its backend and, as JSON or D-Bus tuples, with
//! clients. Field names here are the public JSON API (see `docs/admin.md`).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Who made a call, as the bus daemon vouches for it — never taken from arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// Unix uid of the connection, from `org.freedesktop.DBus.GetConnectionUnixUser`.
    pub uid: u32,
    /// Unique bus name (`:1.42`), the polkit subject.
    pub bus_name: String,
}

/// Everything `patchctl status` shows; also the source of the D-Bus properties.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// Lifecycle state: `idle`, `update_available`, `staging`, `staged`, `switching`,
    /// `verifying`, `committed`, `rolled_back`, `failed`.
    pub state: String,
    /// Running job, if any.
    pub progress: Option<ProgressView>,
    pub booted_slot: Option<String>,
    pub slots: Vec<SlotView>,
    pub current_version: Option<String>,
    pub staged_version: Option<String>,
    pub available: Vec<AvailableView>,
    pub next_window: Option<Timestamp>,
    pub last_check: Option<Timestamp>,
    pub last_error: Option<String>,
    pub holds: Vec<HoldView>,
    /// How the last staging got its bytes: `full|static_delta|dynamic_delta, N bytes
    /// fetched, M bytes reused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_stage: Option<String>,
    /// The job started most recently, with its outcome once it ended (`null` before the
    /// first job of this daemon run).
    #[serde(default)]
    pub last_job: Option<JobView>,
    /// Conditions an admin should look at (an audit log longer than its head file at
    /// start-up).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The anti-rollback floor: the highest committed `security_version`.
    #[serde(default)]
    pub security_floor: u64,
    /// The daemon's time when this status was made; relative times count from it.
    #[serde(default)]
    pub as_of: Option<Timestamp>,
    /// The maintenance windows' time zone.
    #[serde(default)]
    pub time_zone: String,
    /// What happens next and when: the daemon's sentence (`patchctl status`' `Next:`).
    #[serde(default)]
    pub next: Option<NextView>,
    /// The last check, also a failed one: time, error, releases found.
    #[serde(default)]
    pub last_check_outcome: Option<CheckView>,
    /// The last outcome of an update with its reason.
    #[serde(default)]
    pub last_outcome: Option<String>,
    /// During a rollback whose reboot is pending: the release it goes back to
    /// (`current_version` truly runs until then).
    #[serde(default)]
    pub rolling_back_to: Option<String>,
    /// The fleet reboot slot; absent without a reboot lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetView>,
}

/// The fleet reboot slot: `state` is `held`, `kept` (after a failed update, until
/// `patchctl fleet release`), `waiting`, `unreachable` or `free`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetView {
    pub group: String,
    pub backend: String,
    pub state: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub holders: Vec<String>,
    #[serde(default)]
    pub since: Option<Timestamp>,
    #[serde(default)]
    pub retry_at: Option<Timestamp>,
}

/// What happens next: `kind` for programs, `text` for people, `at` when known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextView {
    /// `up_to_date`, `available`, `staging`, `switch_now`, `window`, `rollout`, `held`,
    /// `approval`, `paused`, `blocked`, `reboot_pending`, `trial`, `rollback_pending`,
    /// `probation`, `failed`.
    pub kind: String,
    pub text: String,
    pub at: Option<Timestamp>,
}

/// The last check: when, and its error when it failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckView {
    pub at: Option<Timestamp>,
    /// The last check that got through (`last_check`).
    #[serde(default)]
    pub last_good: Option<Timestamp>,
    pub ok: bool,
    pub error: Option<String>,
    pub found: u64,
}

/// One job and how it ended: the `LastJob` property and the `JobFinished` signal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    /// Unique within one run of the daemon, increasing from 1 (0 on the wire: no job).
    pub id: u64,
    /// `check`, `staging`, `health checks`.
    pub kind: String,
    pub release: Option<String>,
    /// `running`, `succeeded`, `failed`, `cancelled`.
    pub outcome: String,
    pub error: Option<String>,
    pub started: Option<Timestamp>,
    pub finished: Option<Timestamp>,
}

/// Progress of the running job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgressView {
    /// `download`, `write`, `verify`, `switch`, `health`…
    pub phase: String,
    pub done: u64,
    /// 0 when unknown.
    pub total: u64,
    /// Bytes (or units) per second, 0 when unknown.
    pub rate: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotView {
    pub name: String,
    /// `empty`, `incomplete`, `verified`, `good`, `bad`.
    pub state: String,
    pub version: Option<String>,
    pub booted: bool,
}

/// One release the device may install, with its categorization.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvailableView {
    pub version: String,
    /// `security`, `bugfix`, `feature`.
    pub kind: String,
    /// `critical`, `high`, `medium`, `low`.
    pub severity: String,
    pub cves: Vec<String>,
    /// Why it is not installed now, each reason once (`None`: nothing stops it); the
    /// same text as the `Available` property's last field.
    pub summary: Option<String>,
    /// `installable`, `waiting` or `not_applicable`.
    #[serde(default)]
    pub group: String,
    /// The publisher's one-line summary of the release.
    #[serde(default)]
    pub description: Option<String>,
    /// Every reason it is not installed now, each once.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// For a waiting release: when the switch decision lets it go, if known.
    #[serde(default)]
    pub until: Option<Timestamp>,
    /// For a waiting release: what it waits for and when, in the daemon's words.
    #[serde(default)]
    pub when: Option<String>,
    #[serde(default)]
    pub security_version: u64,
    /// Bytes it writes.
    #[serde(default)]
    pub size: u64,
    /// Per-component plan lines, in install order (docs/components.md).
    #[serde(default)]
    pub components: Vec<String>,
    /// A package patch set's packages (the `apt` source); empty for an image release.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<crate::manifest::PackageChange>,
}

/// A documented exception: no switching (above `max_version`, if set) until `until`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldView {
    pub reason: String,
    /// Who placed it: `uid:1000` or `policy`.
    pub by: String,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub max_version: Option<String>,
}

/// A `Hold` call's arguments, checked: why, until when (`None`: until released), and up
/// to which version (`None`: no switching at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRequest {
    pub reason: String,
    pub until: Option<Timestamp>,
    pub max_version: Option<String>,
}

/// A mutating call polkit refused, for the audit trail: `action` is the polkit action
/// id, `method` the D-Bus member, `detail` why it was refused and what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedCall {
    pub action: String,
    pub method: String,
    pub detail: String,
}

/// Filter for `GetHistory` (D-Bus `a{sv}` keys of the same names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryFilter {
    /// At most this many records, newest last.
    pub limit: Option<u32>,
    /// Only records at or after this time.
    pub since: Option<Timestamp>,
    /// Only records of this event (e.g. `install`, `rollback`, `dbus.denied`).
    pub event: Option<String>,
    /// Only records about this release.
    pub release: Option<String>,
}

/// Wire shape of the `Progress` property: (phase, done, total, rate).
pub type ProgressTuple = (String, u64, u64, f64);
/// Wire shape of one `Slots` entry: (name, state, version, booted).
pub type SlotTuple = (String, String, String, bool);
/// Wire shape of one `Available` entry: (version, kind, severity, cves, summary).
pub type AvailableTuple = (String, String, String, Vec<String>, String);
/// Wire shape of one `Holds` entry: (reason, by, since, until, max_version).
pub type HoldTuple = (String, String, String, String, String);

/// Wire shape of `LastJob`: (id, kind, release, outcome, error, started, finished).
pub type JobTuple = (u64, String, String, String, String, String, String);

pub(crate) fn ts_str(t: Option<Timestamp>) -> String {
    t.map(|t| t.to_string()).unwrap_or_default()
}

impl JobView {
    pub fn to_tuple(j: Option<&JobView>) -> JobTuple {
        match j {
            Some(j) => (
                j.id,
                j.kind.clone(),
                j.release.clone().unwrap_or_default(),
                j.outcome.clone(),
                j.error.clone().unwrap_or_default(),
                ts_str(j.started),
                ts_str(j.finished),
            ),
            None => Default::default(),
        }
    }

    /// Id 0 on the wire means "no job yet".
    pub fn from_tuple(t: JobTuple) -> Option<JobView> {
        let opt = |s: String| (!s.is_empty()).then_some(s);
        let ts = |s: String| s.parse::<Timestamp>().ok();
        (t.0 != 0).then(|| JobView {
            id: t.0,
            kind: t.1,
            release: opt(t.2),
            outcome: t.3,
            error: opt(t.4),
            started: ts(t.5),
            finished: ts(t.6),
        })
    }

    /// The job ended (in whatever way).
    pub fn is_finished(&self) -> bool {
        self.outcome != "running"
    }

    pub fn failed(&self) -> bool {
        self.outcome == "failed"
    }

    /// Failed or cancelled: the job's work was not done.
    pub fn unsuccessful(&self) -> bool {
        self.failed() || self.outcome == "cancelled"
    }
}

impl ProgressView {
    pub fn to_tuple(p: Option<&ProgressView>) -> ProgressTuple {
        match p {
            Some(p) => (p.phase.clone(), p.done, p.total, p.rate),
            None => (String::new(), 0, 0, 0.0),
        }
    }

    /// An empty phase on the wire means "no job running".
    pub fn from_tuple(t: ProgressTuple) -> Option<ProgressView> {
        if t.0.is_empty() {
            return None;
        }
        Some(ProgressView {
            phase: t.0,
            done: t.1,
            total: t.2,
            rate: t.3,
        })
    }
}

impl SlotView {
    pub fn to_tuple(&self) -> SlotTuple {
        (
            self.name.clone(),
            self.state.clone(),
            self.version.clone().unwrap_or_default(),
            self.booted,
        )
    }
}

impl AvailableView {
    pub fn to_tuple(&self) -> AvailableTuple {
        (
            self.version.clone(),
            self.kind.clone(),
            self.severity.clone(),
            self.cves.clone(),
            self.summary.clone().unwrap_or_default(),
        )
    }

    pub fn from_tuple(t: AvailableTuple) -> Self {
        Self {
            version: t.0,
            kind: t.1,
            severity: t.2,
            cves: t.3,
            summary: (!t.4.is_empty()).then_some(t.4),
            ..Self::default()
        }
    }
}

impl HoldView {
    pub fn to_tuple(&self) -> HoldTuple {
        (
            self.reason.clone(),
            self.by.clone(),
            ts_str(self.since),
            ts_str(self.until),
            self.max_version.clone().unwrap_or_default(),
        )
    }
}
