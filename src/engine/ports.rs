//! What the engine needs from the other rooms, as small object-safe traits.
//!
//! The engine sees only these traits plus `slot::Slot`, `boot::Bootloader` and
//! `clock::Clock`. `source` (TUF client + manifest discovery + staging into the slot backends) and
//! `daemon::health` (health runner) implement them over the real rooms, the daemon
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
/// The reasons are the switch decision's (`policy`); named here for the engine's users.
pub use crate::policy::WhyNot;
use crate::policy::{Hold, ReleaseFacts};

/// One release the repository offers, as a check found it: its signed summary and,
/// once its manifest verified, its rollout plan (the facts policy decides on).
/// (`manifest::Candidate` is the listing entry with the manifest's own verdict.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offered {
    /// Release id, signed summary (version, categorization, CVEs, size) and rollout plan.
    pub facts: ReleaseFacts,
    pub published: Option<Timestamp>,
    /// Why the release's manifest could not be downloaded or verified, if so.
    pub manifest_problem: Option<String>,
    /// The publisher's one-line summary, from the verified manifest.
    pub summary: Option<String>,
    /// The release's components (verified manifest, schema 2; none for schema 1).
    pub components: Vec<crate::manifest::Component>,
    /// A package patch set's packages (the `apt` source); empty for an image release.
    pub packages: Vec<crate::manifest::PackageChange>,
}

impl Offered {
    pub fn version(&self) -> &semver::Version {
        self.facts.version()
    }
    /// Is this the release `version` (as the lifecycle and the state file name it)?
    pub fn is(&self, version: &str) -> bool {
        self.version().to_string() == version
    }
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
/// releases the last `discover` returned into `slot`, verifying every byte. A release is
/// named by the version its signed summary carries (parsed once, at discovery).
pub trait Updates: Send + Sync {
    fn discover(&self) -> BoxFuture<'_, Result<Vec<Offered>, PortError>>;
    fn stage<'a>(
        &'a self,
        version: &'a semver::Version,
        slot: &'a SlotName,
        progress: ProgressSink,
    ) -> BoxFuture<'a, Result<StageReport, PortError>>;

    /// More fields for the `staged` audit record of what `stage` just wrote into
    /// `slot` (an apt patch set: the package delta read back from the snapshot).
    fn staged_fields(&self, _slot: &SlotName) -> Vec<(&'static str, serde_json::Value)> {
        Vec::new()
    }

    /// The packages of release `version` as they stand now (a patch set after staging:
    /// with the versions in the snapshot); `None`: nothing to update.
    fn release_packages(&self, _version: &str) -> Option<Vec<crate::manifest::PackageChange>> {
        None
    }

    /// The packages installed on the running system, for the inventory (package-based
    /// sources).
    fn installed_packages(&self) -> Option<Vec<crate::inventory::InstalledPackage>> {
        None
    }

    /// Just before the boot backend makes the staged `slot` the next root: the source's
    /// last work on it (an apt snapshot takes in the admin's `/etc` changes made on the
    /// running root since it was taken). Its fields, when there are any, go to the audit
    /// log as `etc_carried`; an error stops the switch (`switch_failed`).
    fn before_switch<'a>(
        &'a self,
        _slot: &'a SlotName,
    ) -> BoxFuture<'a, Result<Vec<(&'static str, serde_json::Value)>, PortError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Whether the previous root stays on disk once the new one is steady (committed,
    /// probation over). `false` (an apt source with `keep = 1`): the engine takes the
    /// previous slot out of the boot order, then has [`Updates::prune`] delete it.
    fn keeps_previous(&self) -> bool {
        true
    }

    /// Delete what `slot` holds; the engine has taken it out of the boot order first.
    /// Idempotent (a restart repeats it after a crash). Its fields go to the audit log as
    /// `snapshot_pruned`.
    fn prune<'a>(
        &'a self,
        _slot: &'a SlotName,
    ) -> BoxFuture<'a, Result<Vec<(&'static str, serde_json::Value)>, PortError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
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

/// A release an offline bundle lists but does not carry (its manifest or images are not
/// on the medium): not offered, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotCarried {
    pub version: String,
    pub why: String,
}

/// An offline bundle that verified: the releases it carries (as a check would list
/// them), a source that stages them from the bundle's own bytes, what it lists but does
/// not carry, and the expired metadata the device's offline policy accepted.
pub struct OpenedBundle {
    pub updates: std::sync::Arc<dyn Updates>,
    pub offered: Vec<Offered>,
    pub not_carried: Vec<NotCarried>,
    /// One line per role accepted although expired (`timestamp v7 expired 2026-…`).
    pub expired: Vec<String>,
}

/// Offline bundles: read one from a descriptor the caller opened (the daemon never opens
/// a caller's path), copy it into the daemon's own directory and verify it against the
/// device's trusted root like the online repository.
pub trait Bundles: Send + Sync {
    fn open(&self, bundle: std::os::fd::OwnedFd) -> BoxFuture<'_, Result<OpenedBundle, PortError>>;
}

/// The fleet reboot lock as the engine uses it: the backend's client and the `[fleet]`
/// settings (group, fail-safe, backoff).
#[derive(Clone)]
pub struct RebootSlots {
    pub lock: std::sync::Arc<dyn crate::fleet::RebootLock>,
    /// The backend's name (`fleetlock`, …), for status and the audit trail.
    pub backend: String,
    pub config: crate::fleet::config::FleetConfig,
}

impl fmt::Debug for RebootSlots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RebootSlots")
            .field("backend", &self.backend)
            .field("group", &self.config.group)
            .finish()
    }
}

/// The device's component installers and where their files live: built once by the
/// daemon from `[components]` (`component::installers_for`), by the demo and tests from
/// their twins. The engine drives them only through `component::apply` and its verdict
/// functions, which see each method as an `Installer`.
#[derive(Clone)]
pub struct DeviceComponents {
    pub installers: crate::component::Installers,
    /// App bundles' directory (`[components] apps_dir`, under the root), for status and
    /// the inventory.
    pub apps_dir: std::path::PathBuf,
    /// The component journal (`component::Journal::path`).
    pub journal: std::path::PathBuf,
    /// Staged payloads (`component::staged_dir`).
    pub staged: std::path::PathBuf,
}

impl DeviceComponents {
    /// No install method offered (a release with components then fails to stage).
    pub fn none(paths: &crate::paths::Paths) -> Self {
        Self::with(crate::component::Installers::new(), paths)
    }

    /// `installers`, with the default directories under `paths`' root.
    pub fn with(installers: crate::component::Installers, paths: &crate::paths::Paths) -> Self {
        Self {
            installers,
            apps_dir: paths.resolve("/var/lib/patchd/apps"),
            journal: crate::component::Journal::path(paths),
            staged: crate::component::staged_dir(paths),
        }
    }
}
