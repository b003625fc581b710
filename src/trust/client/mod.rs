//! The TUF client workflow (specification 1.0, section 5) for the device side.
//!
//! Trusted metadata lives in one directory as the exact bytes once received and
//! verified: `root.json`, `timestamp.json`, `snapshot.json`, `targets.json` and
//! delegated roles as `<encoded name>.json`. Nothing is written there before it
//! verified; every write is atomic. The only other file kept there, with
//! [`Limits::clock_sanity`] on, is `last-refresh.time` (not `*.json`): the clock reading
//! at the last successful refresh, used to notice a clock that went backwards.
//!
//! Files: this one holds the client and its refresh (§5.1–5.2, 5.7); `roles.rs` the
//! verification of each role (root rotation, timestamp, snapshot, targets, §5.3–5.6);
//! `targets.rs` the target search through delegations and target downloads;
//! `limits.rs` the bounds on what a repository can make the client do.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::hashing::{check_bytes, MultiHasher};
use super::keys::PublicKey;
use super::metadata::{
    parse_signed, Envelope, MetaFile, MetadataError, RoleMetadata, Root, Snapshot, Targets,
    TimestampMeta,
};
use super::pattern::encode_name;
use super::TrustError;
use crate::clock::Clock;
use crate::fetch::{fetch_all_into, ByteSource, FetchError};

mod limits;
mod roles;
mod targets;
pub use limits::{build_time, Limits};
pub use roles::verify_root_bytes;
use roles::{verify_bytes, verify_self_signed};
pub use targets::{
    file_matches, validate_role_name, validate_target_path, ListedTarget, Listing, VerifiedTarget,
};
const CLOCK_FILE: &str = "last-refresh.time";
const TOP_LEVEL: [&str; 4] = ["root", "timestamp", "snapshot", "targets"];

/// A role that verified (the bytes are on disk under its file name).
struct Trusted<T> {
    meta: T,
}

/// A targets role still to visit in a delegation search, with the keys its delegator
/// trusts it with.
struct ToVisit {
    role: String,
    keys: BTreeMap<String, PublicKey>,
    keyids: Vec<String>,
    threshold: u64,
}

/// The device's TUF client.
///
/// The workflow follows TUF 1.0 §5 as python-tuf's `ngclient` implements it: every
/// refresh starts from the trusted root and re-reads the other roles from the trusted
/// directory, verifying each against the (possibly just rotated) root; each role is
/// written to disk the moment it verified, so a refresh that fails half-way keeps
/// everything verified before the failure.
pub struct TufClient {
    dir: PathBuf,
    clock: Arc<dyn Clock>,
    limits: Limits,
    root: Trusted<Root>,
    timestamp: Option<Trusted<TimestampMeta>>,
    snapshot: Option<Trusted<Snapshot>>,
    /// "targets" and delegated roles trusted in the current refresh.
    targets: BTreeMap<String, Trusted<Targets>>,
    /// (delegator, role) pairs verified in the current refresh: a role reached through
    /// another delegator is verified again with that delegator's keys.
    delegations: BTreeSet<(String, String)>,
    /// The clock reading the current refresh judges expiry by.
    now: Option<Timestamp>,
    refreshed: bool,
    /// Offline use only ([`TufClient::accept_expired`]): expired timestamp, snapshot and
    /// targets roles are accepted and noted here instead of refused.
    expired: Option<ExpiredLog>,
}

/// A role accepted although it had expired (offline policy), for the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredRole {
    pub role: String,
    pub version: Option<u64>,
    pub expires: String,
}

/// Where a client that accepts expired metadata notes what it accepted.
pub type ExpiredLog = Arc<std::sync::Mutex<Vec<ExpiredRole>>>;

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> TrustError {
    let what = what.to_string();
    move |source| TrustError::Io { what, source }
}

impl TufClient {
    /// Store `root_bytes` as the initial trusted root in `dir` (no network). The root
    /// must be signed by its own root threshold; its expiry is not checked (refresh
    /// updates it).
    pub fn init(dir: &Path, root_bytes: &[u8], limits: &Limits) -> Result<(), TrustError> {
        let file = "root.json";
        let root: Root = verify_self_signed(root_bytes, file, limits)?;
        crate::fsutil::ensure_dir(dir, 0o755).map_err(io_err(dir.display()))?;
        crate::fsutil::atomic_write_mode(&dir.join(file), root_bytes, 0o644)
            .map_err(io_err(dir.join(file).display()))?;
        tracing::info!(version = root.common.version, dir = %dir.display(), "trusted root installed");
        Ok(())
    }

    /// Load and re-verify the trusted metadata in `dir`. A missing root is an error
    /// (fail closed); other roles that no longer verify are ignored (not deleted), and
    /// replaced by the next successful refresh.
    pub fn load(dir: &Path, clock: Arc<dyn Clock>, limits: Limits) -> Result<Self, TrustError> {
        let root_path = dir.join("root.json");
        let root_bytes = match std::fs::read(&root_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TrustError::NoTrustedRoot {
                    dir: dir.display().to_string(),
                })
            }
            Err(e) => return Err(io_err(root_path.display())(e)),
        };
        let root: Root =
            verify_self_signed(&root_bytes, "root.json", &limits).map_err(|e| match e {
                TrustError::Metadata { role, file, source } => {
                    TrustError::BadTrustedMetadata { role, file, source }
                }
                other => other,
            })?;
        let mut client = Self {
            dir: dir.to_path_buf(),
            clock,
            limits,
            root: Trusted { meta: root },
            timestamp: None,
            snapshot: None,
            targets: BTreeMap::new(),
            delegations: BTreeSet::new(),
            now: None,
            refreshed: false,
            expired: None,
        };
        client.load_local_view();
        Ok(client)
    }

    /// What the trusted directory holds beyond the root, for callers that look before
    /// (or after a failed) refresh. A refresh verifies these files again itself.
    fn load_local_view(&mut self) {
        self.timestamp = self.load_local_top::<TimestampMeta>("timestamp");
        self.snapshot = self.load_local_top::<Snapshot>("snapshot");
        self.targets.clear();
        self.delegations.clear();
        if let Some(t) = self.load_local_top::<Targets>("targets") {
            self.targets.insert("targets".into(), t);
        }
    }

    /// The trusted root.
    pub fn root(&self) -> &Root {
        &self.root.meta
    }

    pub fn timestamp_version(&self) -> Option<u64> {
        self.timestamp.as_ref().map(|t| t.meta.common.version)
    }

    pub fn snapshot_version(&self) -> Option<u64> {
        self.snapshot.as_ref().map(|t| t.meta.common.version)
    }

    pub fn metadata_dir(&self) -> &Path {
        &self.dir
    }

    /// The trusted top-level targets metadata (after a refresh or a load), for callers
    /// that list targets, such as release discovery.
    pub fn trusted_targets(&self) -> Option<&Targets> {
        self.targets.get("targets").map(|t| &t.meta)
    }

    /// Until when the trusted metadata vouching for a target listed by targets role
    /// `role` stays valid: the earliest expiry of the root, timestamp, snapshot, the
    /// top-level targets role, `role` and every role that delegated to it in this
    /// refresh. Past it, what that metadata says (a rollout plan, a pause, a gate) may be
    /// stale, and an attacker who blocks the repository could keep the device on it (TUF's
    /// freeze attack). `None`: not refreshed, or a client that accepts expired metadata
    /// ([`TufClient::accept_expired`], the admin's offline policy), where expiry is not
    /// enforced.
    pub fn valid_until(&self, role: &str) -> Option<Timestamp> {
        if self.expired.is_some() || !self.refreshed {
            return None;
        }
        let mut roles = BTreeSet::from(["targets".to_string(), role.to_string()]);
        // Walk up the delegations: any delegator on any path to `role` vouched for it.
        let mut todo = vec![role.to_string()];
        while let Some(r) = todo.pop() {
            for (from, to) in &self.delegations {
                if *to == r && from != "root" && roles.insert(from.clone()) {
                    todo.push(from.clone());
                }
            }
        }
        let targets = roles
            .iter()
            .filter_map(|r| self.targets.get(r))
            .map(|t| t.meta.common.expires);
        let top = [
            Some(self.root.meta.common.expires),
            self.timestamp.as_ref().map(|t| t.meta.common.expires),
            self.snapshot.as_ref().map(|t| t.meta.common.expires),
        ];
        top.into_iter().flatten().chain(targets).min()
    }

    /// The clock reading the last successful refresh judged expiry by.
    pub fn refreshed_at(&self) -> Option<Timestamp> {
        self.now.filter(|_| self.refreshed)
    }

    fn read_local(&self, file: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join(file)).ok()
    }

    fn load_local_top<T: RoleMetadata>(&self, role: &str) -> Option<Trusted<T>> {
        let file = format!("{role}.json");
        let bytes = self.read_local(&file)?;
        match self.verify_top::<T>(role, &file, &bytes) {
            Ok(meta) => Some(Trusted { meta }),
            Err(e) => {
                tracing::warn!(role, file, error = %e, "trusted metadata on disk no longer verifies; ignored");
                None
            }
        }
    }

    /// Verify a top-level role file against the trusted root's keys for `role`.
    fn verify_top<T: RoleMetadata>(
        &self,
        role: &str,
        file: &str,
        bytes: &[u8],
    ) -> Result<T, TrustError> {
        let rk = self
            .root
            .meta
            .roles
            .get(role)
            .ok_or_else(|| TrustError::RoleUndefined {
                role: role.to_string(),
                delegator: "root".into(),
            })?;
        verify_bytes::<T>(
            bytes,
            role,
            file,
            &self.root.meta.keys,
            &rk.keyids,
            rk.threshold,
            &self.limits,
        )
    }

    fn check_clock(&self) -> Result<Timestamp, TrustError> {
        let now = self.clock.now();
        if !self.limits.clock_sanity {
            return Ok(now);
        }
        if now < self.limits.not_before {
            return Err(TrustError::ClockWrong {
                now: now.to_string(),
                floor: self.limits.not_before.to_string(),
                what: "the build time",
            });
        }
        if let Some(floor) = std::fs::read_to_string(self.dir.join(CLOCK_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<Timestamp>().ok())
        {
            if now < floor {
                return Err(TrustError::ClockWrong {
                    now: now.to_string(),
                    floor: floor.to_string(),
                    what: "the last successful refresh",
                });
            }
        }
        Ok(now)
    }

    /// Accept expired timestamp, snapshot and targets (also delegated) roles, noting each
    /// in `log`: the device's offline policy (`[offline] allow_expired`) for a bundle on a
    /// medium that may be older than its expiry. Signatures, thresholds, versions and
    /// rollback checks stay as they are, and an expired root is still refused.
    pub fn accept_expired(&mut self, log: ExpiredLog) {
        self.expired = Some(log);
    }

    fn check_expiry(
        &self,
        role: &str,
        expires: Timestamp,
        now: Timestamp,
    ) -> Result<(), TrustError> {
        self.check_expiry_of(role, None, expires, now)
    }

    fn check_expiry_of(
        &self,
        role: &str,
        version: Option<u64>,
        expires: Timestamp,
        now: Timestamp,
    ) -> Result<(), TrustError> {
        if now >= expires {
            if let (Some(log), false) = (&self.expired, role == "root") {
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                let e = ExpiredRole {
                    role: role.to_string(),
                    version,
                    expires: expires.to_string(),
                };
                if !log.contains(&e) {
                    tracing::warn!(role, expires = %expires, "expired metadata accepted (offline policy)");
                    log.push(e);
                }
                return Ok(());
            }
            return Err(TrustError::Expired {
                role: role.to_string(),
                expires: expires.to_string(),
                now: now.to_string(),
            });
        }
        Ok(())
    }

    /// Write a verified role file at once (atomically: temporary file, fsync, rename,
    /// fsync of the directory).
    fn persist(&self, file: &str, bytes: &[u8]) -> Result<(), TrustError> {
        let path = self.dir.join(file);
        crate::fsutil::atomic_write_mode(&path, bytes, 0o644).map_err(io_err(path.display()))
    }

    async fn fetch(
        &self,
        src: &dyn ByteSource,
        file: &str,
        limit: u64,
    ) -> Result<Vec<u8>, TrustError> {
        let secs = self.limits.metadata_timeout.as_secs();
        let mut buf = Vec::new();
        let res = tokio::time::timeout(
            self.limits.metadata_timeout,
            fetch_all_into(src, file, limit, &mut buf),
        )
        .await;
        match res {
            Ok(Ok(())) => Ok(buf),
            Ok(Err(source)) => Err(TrustError::Fetch {
                file: file.to_string(),
                source,
            }),
            Err(_) => Err(TrustError::Timeout {
                file: file.to_string(),
                secs,
                received: buf.len() as u64,
                expected: None,
                stalled: false,
            }),
        }
    }

    /// Update all top-level metadata from `src` (which serves the metadata directory).
    ///
    /// Each role is persisted the moment it verified (TUF 1.0 §5.3.8, 5.4.5, 5.5.7,
    /// 5.6.6): when a later step fails, the roots, timestamp and snapshot verified before
    /// it stay trusted, on disk and here. Metadata that failed verification is never
    /// written.
    pub async fn refresh(&mut self, src: &dyn ByteSource) -> Result<(), TrustError> {
        self.refreshed = false;
        match self.refresh_inner(src).await {
            Ok(()) => {
                self.refreshed = true;
                tracing::info!(
                    root = self.root.meta.common.version,
                    timestamp = self.timestamp_version(),
                    snapshot = self.snapshot_version(),
                    "TUF metadata refreshed"
                );
                Ok(())
            }
            Err(e) => {
                // What stays trusted is what the directory holds now.
                self.load_local_view();
                Err(e)
            }
        }
    }

    async fn refresh_inner(&mut self, src: &dyn ByteSource) -> Result<(), TrustError> {
        let now = self.check_clock()?;
        self.now = Some(now);
        // Start from the root alone; the other roles are read back from the directory
        // and verified again against the root this refresh ends up with.
        self.timestamp = None;
        self.snapshot = None;
        self.targets.clear();
        self.delegations.clear();
        self.update_root(src).await?;
        self.load_timestamp(src, now).await?;
        self.load_snapshot(src, now).await?;
        let top = self.top_targets()?;
        self.load_targets_role(src, &top, "root", now).await?;
        if self.limits.clock_sanity {
            self.persist(CLOCK_FILE, now.to_string().as_bytes())?;
        }
        Ok(())
    }
}
