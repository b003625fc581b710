//! What the engine needs from the other rooms, as small object-safe traits.
//!
//! The engine sees only these traits plus `slot::Slot`, `boot::Bootloader` and
//! `clock::Clock`. `engine::repo` (TUF client + manifest discovery + staging pipeline)
//! and `engine::adapters` (health runner) implement them over the real rooms, the daemon
//! room the reboot through systemd (`daemon::reboot`); tests and the simulated device
//! implement them directly.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use crate::audit::Actor;
use crate::fetch::BoxFuture;
use crate::names::SlotName;
use crate::policy::{Decision, Hold, ReleaseFacts};

/// Why a release is not going to be installed (or switched to) now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum WhyNot {
    /// The device policy's answer (window, rollout stage, pause/withdrawal, channel,
    /// hold, urgency/approval, clock sanity), with its reason.
    Policy { decision: Decision },
    /// Below the device's anti-rollback floor.
    BelowSecurityFloor { security_version: u64, floor: u64 },
    /// Failed on this device before; never retried automatically.
    FailedHere { reason: String },
    /// Not newer than what runs now.
    NotNewer { current: String },
    /// A reboot inhibitor is active.
    RebootInhibited { by: String },
    /// Something discovery reported from the manifest (e.g. not for this hardware).
    Manifest { detail: String },
}

impl WhyNot {
    /// Engine-side reasons that also stop staging (policy reasons are asked separately
    /// with `may_stage`).
    pub fn blocks_staging(&self) -> bool {
        !matches!(self, WhyNot::Policy { .. } | WhyNot::RebootInhibited { .. })
    }
}

impl fmt::Display for WhyNot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WhyNot::Policy { decision } => write!(f, "{decision}"),
            WhyNot::BelowSecurityFloor {
                security_version,
                floor,
            } => write!(
                f,
                "security version {security_version} is below the device floor {floor}"
            ),
            WhyNot::FailedHere { reason } => write!(f, "failed on this device before: {reason}"),
            WhyNot::NotNewer { current } => write!(f, "not newer than the running {current}"),
            WhyNot::RebootInhibited { by } => write!(f, "reboot inhibited by {by}"),
            WhyNot::Manifest { detail } => f.write_str(detail),
        }
    }
}

/// One release found by a check, with what the signed manifest says about it and the
/// manifest-side reasons (withdrawn, paused, channel, rollout) not to take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Version, kind, severity, release id, channels and rollout plan.
    pub facts: ReleaseFacts,
    pub security_version: u64,
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
    /// The kind of failure for the audit record's `cause` field and the metrics'
    /// `reason` label (`slow_retrieval`, `download`, `verify`, …); `None`: the step's
    /// own name is the cause.
    pub cause: Option<&'static str>,
}

impl PortError {
    pub fn new(what: impl Into<String>, detail: impl fmt::Display) -> Self {
        Self {
            what: what.into(),
            detail: detail.to_string(),
            cause: None,
        }
    }

    /// Name the kind of failure (see [`PortError::cause`]).
    pub fn with_cause(mut self, cause: &'static str) -> Self {
        self.cause = Some(cause);
        self
    }
}

/// How an image reached the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageMethod {
    /// The whole (compressed) image was downloaded.
    Full,
    /// A publisher-made delta from the running slot's image.
    StaticDelta,
    /// Chunks found locally were reused; only missing chunks were downloaded.
    DynamicDelta,
}

impl StageMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            StageMethod::Full => "full",
            StageMethod::StaticDelta => "static_delta",
            StageMethod::DynamicDelta => "dynamic_delta",
        }
    }
}

impl fmt::Display for StageMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one successful staging did: the method and how many bytes came over the network
/// versus from data already on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageReport {
    pub method: StageMethod,
    /// Bytes downloaded (metadata of the delta included).
    pub bytes_fetched: u64,
    /// Bytes of the new image taken from local slots instead of the network.
    pub bytes_reused: u64,
}

impl StageReport {
    pub fn full(bytes_fetched: u64) -> Self {
        Self {
            method: StageMethod::Full,
            bytes_fetched,
            bytes_reused: 0,
        }
    }
}

impl fmt::Display for StageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, {} bytes fetched, {} bytes reused",
            self.method, self.bytes_fetched, self.bytes_reused
        )
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
    ) -> BoxFuture<'a, Result<StageReport, PortError>>;
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

/// Rebooting the machine, and what currently forbids it.
pub trait Reboot: Send + Sync {
    /// Active reboot inhibitors (logged-in sessions, inhibitor locks, a failing command).
    fn inhibitors(&self) -> BoxFuture<'_, Vec<String>>;
    /// Ask for a reboot. Returns once it was requested; the engine stops acting after.
    fn reboot<'a>(&'a self, reason: &'a str) -> BoxFuture<'a, Result<(), PortError>>;
}

/// Holds still in force at `now`.
pub fn active_holds(holds: &[Hold], now: Timestamp) -> impl Iterator<Item = &Hold> {
    holds.iter().filter(move |h| !h.is_expired(now))
}
