//! What the engine needs from the other rooms, as small object-safe traits.
//!
//! The engine sees only these traits plus `slot::Slot`, `boot::Bootloader` and
//! `clock::Clock`. Adapters in `engine::adapters` implement them over the real rooms
//! (TUF client + manifest discovery + staging pipeline, policy, health runner, audit log,
//! systemd); tests and the simulated device implement them directly.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::state::StateKind;
use super::statefile::Hold;
use crate::fetch::BoxFuture;
use crate::names::SlotName;

/// Kind of change a release brings (from the signed manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseKind {
    Security,
    Bugfix,
    Feature,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// Why a release is not going to be installed (or switched to) now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum WhyNot {
    /// Switching waits for a maintenance window.
    OutsideWindow { next: Option<Timestamp> },
    /// The device's rollout stage has not been reached yet.
    RolloutStage { detail: String },
    /// The publisher paused the rollout.
    Paused,
    /// The publisher withdrew the release.
    Withdrawn,
    /// Not published to this device's channel.
    Channel { channel: String },
    /// A hold (documented exception) is in force.
    Hold { reason: String, actor: String },
    /// Below the device's anti-rollback floor.
    BelowSecurityFloor { security_version: u64, floor: u64 },
    /// Failed on this device before; never retried automatically.
    FailedHere { reason: String },
    /// Not newer than what runs now.
    NotNewer { current: String },
    /// The urgency rule says an admin must approve (e.g. feature releases).
    NeedsApproval { rule: String },
    /// A reboot inhibitor is active.
    RebootInhibited { by: String },
    /// Anything else a policy or manifest reports.
    Other { detail: String },
}

impl WhyNot {
    /// Reasons that stop staging too, not only the switch.
    pub fn blocks_staging(&self) -> bool {
        matches!(
            self,
            WhyNot::Withdrawn
                | WhyNot::Channel { .. }
                | WhyNot::BelowSecurityFloor { .. }
                | WhyNot::FailedHere { .. }
                | WhyNot::NotNewer { .. }
                | WhyNot::NeedsApproval { .. }
        )
    }
}

impl fmt::Display for WhyNot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WhyNot::OutsideWindow { next: Some(t) } => {
                write!(f, "outside the maintenance window (next opens {t})")
            }
            WhyNot::OutsideWindow { next: None } => {
                write!(f, "outside the maintenance window (none configured ahead)")
            }
            WhyNot::RolloutStage { detail } => write!(f, "rollout stage not reached: {detail}"),
            WhyNot::Paused => write!(f, "rollout paused by the publisher"),
            WhyNot::Withdrawn => write!(f, "withdrawn by the publisher"),
            WhyNot::Channel { channel } => write!(f, "not in this device's channel {channel}"),
            WhyNot::Hold { reason, actor } => write!(f, "on hold by {actor}: {reason}"),
            WhyNot::BelowSecurityFloor {
                security_version,
                floor,
            } => write!(
                f,
                "security version {security_version} is below the device floor {floor}"
            ),
            WhyNot::FailedHere { reason } => write!(f, "failed on this device before: {reason}"),
            WhyNot::NotNewer { current } => write!(f, "not newer than the running {current}"),
            WhyNot::NeedsApproval { rule } => write!(f, "needs admin approval ({rule})"),
            WhyNot::RebootInhibited { by } => write!(f, "reboot inhibited by {by}"),
            WhyNot::Other { detail } => f.write_str(detail),
        }
    }
}

/// One release found by a check, with what the signed manifest says about it and the
/// manifest-side reasons (withdrawn, paused, channel, rollout) not to take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub version: String,
    pub security_version: u64,
    pub kind: ReleaseKind,
    pub severity: Severity,
    pub cves: Vec<String>,
    /// Bytes to download/write.
    pub size: u64,
    pub published: Option<Timestamp>,
    pub manifest_reasons: Vec<WhyNot>,
}

/// Progress of a long step, published in the status snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: String,
    pub done: u64,
    pub total: Option<u64>,
    /// Bytes per second over the step so far.
    pub rate: Option<f64>,
}

/// Where a long step reports progress.
pub type ProgressSink = watch::Sender<Option<Progress>>;

/// An error from a port, already carrying its context in the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {detail}")]
pub struct PortError {
    pub what: String,
    pub detail: String,
}

impl PortError {
    pub fn new(what: impl Into<String>, detail: impl fmt::Display) -> Self {
        Self {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

/// The verified repository and the staging pipeline as one port: `discover` refreshes
/// trusted metadata and lists releases for this device; `stage` writes one of the
/// releases the last `discover` returned into `slot`, verifying every byte.
pub trait Updates: Send + Sync {
    fn discover(&self) -> BoxFuture<'_, Result<Vec<Candidate>, PortError>>;
    fn stage<'a>(
        &'a self,
        version: &'a str,
        slot: &'a SlotName,
        progress: ProgressSink,
    ) -> BoxFuture<'a, Result<(), PortError>>;
}

/// The device's switching policy (windows, rollout bucketing, urgency rules). Holds,
/// the floor and failed releases are the engine's own and not asked here.
pub trait SwitchPolicy: Send + Sync {
    /// Policy reasons not to switch to `c` at `now` (empty: allowed).
    fn why_not(&self, c: &Candidate, now: Timestamp) -> Vec<WhyNot>;
    /// When the next maintenance window opens (or `now` if inside one).
    fn next_window(&self, now: Timestamp) -> Option<Timestamp>;
}

/// Result of one health-check run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthVerdict {
    pub passed: bool,
    /// One line per failed required check.
    pub failures: Vec<String>,
    /// Failed "wanted" checks: logged, not fatal.
    pub warnings: Vec<String>,
}

/// The post-boot health checks, run within `budget`.
pub trait HealthCheck: Send + Sync {
    fn run(&self, budget: Duration) -> BoxFuture<'_, HealthVerdict>;
}

/// Who asked for a change, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    Uid(u32),
    Policy,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Uid(u) => write!(f, "uid:{u}"),
            Actor::Policy => f.write_str("policy"),
        }
    }
}

/// One audit record as the engine writes it; the audit room adds the chain hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub time: Timestamp,
    pub event: String,
    pub release: Option<String>,
    pub slot: Option<SlotName>,
    pub actor: String,
    pub reason: Option<String>,
    pub from: Option<StateKind>,
    pub to: Option<StateKind>,
}

/// Which records `history` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryFilter {
    pub release: Option<String>,
    pub event: Option<String>,
    pub since: Option<Timestamp>,
    /// Most recent `limit` records.
    pub limit: Option<usize>,
}

impl HistoryFilter {
    pub fn matches(&self, e: &AuditEvent) -> bool {
        self.release
            .as_ref()
            .map_or(true, |r| e.release.as_deref() == Some(r))
            && self.event.as_ref().map_or(true, |ev| &e.event == ev)
            && self.since.map_or(true, |s| e.time >= s)
    }
}

/// Outcome of verifying the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    pub ok: bool,
    pub records: u64,
    /// What broke the chain, with the record number.
    pub problem: Option<String>,
}

/// The append-only, hash-chained audit log.
pub trait AuditLog: Send + Sync {
    fn append(&self, e: &AuditEvent) -> Result<(), PortError>;
    fn history(&self, filter: &HistoryFilter) -> Result<Vec<AuditEvent>, PortError>;
    fn verify(&self) -> Result<AuditReport, PortError>;
}

/// Rebooting the machine, and what currently forbids it.
pub trait Reboot: Send + Sync {
    /// Active reboot inhibitors (logged-in sessions, inhibitor locks, a failing command).
    fn inhibitors(&self) -> BoxFuture<'_, Vec<String>>;
    /// Ask for a reboot. Returns once it was requested; the engine stops acting after.
    fn reboot<'a>(&'a self, reason: &'a str) -> BoxFuture<'a, Result<(), PortError>>;
}

/// Facts about the machine for the inventory (machine id, os-release, kernel, DMI…).
pub trait MachineFacts: Send + Sync {
    fn facts(&self) -> serde_json::Value;
}

/// Holds as shown in status, with expiry applied.
pub fn active_holds(holds: &[Hold], now: Timestamp) -> impl Iterator<Item = &Hold> {
    holds
        .iter()
        .filter(move |h| h.until.map_or(true, |u| u > now))
}
