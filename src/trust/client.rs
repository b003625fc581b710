//! The TUF client workflow (specification 1.0, section 5) for the device side.
//!
//! Trusted metadata lives in one directory as the exact bytes once received and
//! verified: `root.json`, `timestamp.json`, `snapshot.json`, `targets.json` and
//! delegated roles as `<encoded name>.json`. Nothing is written there before it
//! verified; every write is atomic. The only other file kept there, with
//! [`Limits::clock_sanity`] on, is `last-refresh.time` (not `*.json`): the clock reading
//! at the last successful refresh, used to notice a clock that went backwards.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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

const CLOCK_FILE: &str = "last-refresh.time";
const TOP_LEVEL: [&str; 4] = ["root", "timestamp", "snapshot", "targets"];

/// Bounds on what a repository can make the client do. All on by default.
#[derive(Debug, Clone)]
pub struct Limits {
    /// New root versions accepted in one refresh.
    pub max_root_rotations: u64,
    /// Delegated targets roles visited in one target search (after the top-level one).
    pub max_delegations: usize,
    /// Size limits for metadata whose length is not signed.
    pub root_max_len: u64,
    pub timestamp_max_len: u64,
    pub snapshot_max_len: u64,
    pub targets_max_len: u64,
    /// Nesting depth accepted in a metadata file.
    pub max_json_depth: usize,
    /// Time allowed for one whole metadata file.
    pub metadata_timeout: Duration,
    /// Time a target download may go without receiving a byte.
    pub stall_timeout: Duration,
    /// Clock-sanity safeguard (a daemon policy, not part of the TUF workflow): refuse
    /// to judge expiry when the clock reads before `not_before` or before the last
    /// successful refresh (kept in `last-refresh.time`). On in `patchd`; off, the
    /// clock is taken as it is, as the specification does, and no `last-refresh.time`
    /// is written (the `tuf-client` conformance example).
    pub clock_sanity: bool,
    /// With `clock_sanity`: a clock reading before this is obviously wrong (the build
    /// time).
    pub not_before: Timestamp,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_root_rotations: 32,
            max_delegations: 32,
            root_max_len: 512_000,
            timestamp_max_len: 16_384,
            snapshot_max_len: 2_000_000,
            targets_max_len: 5_000_000,
            max_json_depth: 32,
            metadata_timeout: Duration::from_secs(120),
            stall_timeout: Duration::from_secs(60),
            clock_sanity: true,
            not_before: build_time(),
        }
    }
}

/// The build time: `SOURCE_DATE_EPOCH` at compile time if set, else the date this
/// code was last released (a floor only needs to be roughly right).
pub fn build_time() -> Timestamp {
    option_env!("SOURCE_DATE_EPOCH")
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|s| Timestamp::from_second(s).ok())
        .unwrap_or_else(|| Timestamp::constant(1_794_000_000, 0)) // 2026-11-06
}

/// A target the trusted metadata vouches for. Only this module builds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedTarget {
    path: String,
    length: u64,
    hashes: BTreeMap<String, String>,
    custom: Value,
    consistent: bool,
}

impl VerifiedTarget {
    pub fn path(&self) -> &str {
        &self.path
    }
    pub fn length(&self) -> u64 {
        self.length
    }
    /// Algorithm → lower-case hex digest; only `sha256`/`sha512`, at least one.
    pub fn hashes(&self) -> &BTreeMap<String, String> {
        &self.hashes
    }
    pub fn sha256(&self) -> Option<&str> {
        self.hashes.get("sha256").map(String::as_str)
    }
    /// The publisher's `custom` object (`Null` if absent).
    pub fn custom(&self) -> &Value {
        &self.custom
    }

    /// Path of the file in the targets directory: `dir/HASH.name` with consistent
    /// snapshots, else the target path.
    pub fn remote_path(&self) -> String {
        if !self.consistent {
            return self.path.clone();
        }
        let hash = self
            .hashes
            .get("sha256")
            .or_else(|| self.hashes.values().next())
            .map(String::as_str)
            .unwrap_or_default();
        match self.path.rsplit_once('/') {
            Some((dir, base)) => format!("{dir}/{hash}.{base}"),
            None => format!("{hash}.{}", self.path),
        }
    }

    /// A file name for this target derived only from its path (percent-encoded, one
    /// component, never `.`/`..`).
    pub fn local_file_name(&self) -> String {
        encode_name(&self.path)
    }
}

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
}

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

    fn check_expiry(role: &str, expires: Timestamp, now: Timestamp) -> Result<(), TrustError> {
        if now >= expires {
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

    /// The top-level targets role with the keys and threshold root gives it.
    fn top_targets(&self) -> Result<ToVisit, TrustError> {
        let role =
            self.root
                .meta
                .roles
                .get("targets")
                .ok_or_else(|| TrustError::RoleUndefined {
                    role: "targets".into(),
                    delegator: "root".into(),
                })?;
        Ok(ToVisit {
            role: "targets".into(),
            keys: self.root.meta.keys.clone(),
            keyids: role.keyids.clone(),
            threshold: role.threshold,
        })
    }

    /// §5.3: rotate through `N+1.root.json` … until the repository has no next version.
    /// Each new root is persisted as soon as it verified (§5.3.8); expiry of the final
    /// root is judged afterwards (§5.3.10, in [`Self::check_root_fresh`]).
    async fn update_root(&mut self, src: &dyn ByteSource) -> Result<(), TrustError> {
        for _ in 0..self.limits.max_root_rotations {
            let next = self.root.meta.common.version + 1;
            let file = format!("{next}.root.json");
            let bytes = match self.fetch(src, &file, self.limits.root_max_len).await {
                Ok(b) => b,
                Err(TrustError::Fetch {
                    source: FetchError::NotFound { .. },
                    ..
                }) => break,
                Err(e) => return Err(e),
            };
            // Signed by the trusted root's threshold …
            let old =
                self.root
                    .meta
                    .roles
                    .get("root")
                    .ok_or_else(|| TrustError::RoleUndefined {
                        role: "root".into(),
                        delegator: "root".into(),
                    })?;
            let new: Root = verify_bytes(
                &bytes,
                "root",
                &file,
                &self.root.meta.keys,
                &old.keyids,
                old.threshold,
                &self.limits,
            )?;
            if new.common.version != next {
                return Err(TrustError::VersionMismatch {
                    role: "root".into(),
                    file,
                    found: new.common.version,
                    expected: next,
                });
            }
            // … and by its own.
            let new: Root = {
                let own = new
                    .roles
                    .get("root")
                    .ok_or_else(|| TrustError::RoleUndefined {
                        role: "root".into(),
                        delegator: file.clone(),
                    })?;
                verify_bytes(
                    &bytes,
                    "root",
                    &file,
                    &new.keys,
                    &own.keyids,
                    own.threshold,
                    &self.limits,
                )?
            };
            self.persist("root.json", &bytes)?;
            tracing::info!(version = next, "root rotated");
            self.root = Trusted { meta: new };
        }
        Ok(())
    }

    /// §5.3.10: the final root must not have expired; checked before any timestamp is
    /// accepted.
    fn check_root_fresh(&self, now: Timestamp) -> Result<(), TrustError> {
        Self::check_expiry("root", self.root.meta.common.expires, now)
    }

    /// §5.4. The trusted timestamp (from the directory, verified by the current root;
    /// possibly expired) guards against rollback of the new one; a new timestamp with the
    /// same version is discarded and the trusted one kept.
    async fn load_timestamp(
        &mut self,
        src: &dyn ByteSource,
        now: Timestamp,
    ) -> Result<(), TrustError> {
        let file = "timestamp.json";
        if self.check_root_fresh(now).is_ok() && !self.snapshot_keys_rotated() {
            if let Some(bytes) = self.read_local(file) {
                match self.verify_top::<TimestampMeta>("timestamp", file, &bytes) {
                    Ok(meta) => self.timestamp = Some(Trusted { meta }),
                    Err(e) => tracing::debug!(error = %e, "trusted timestamp not usable"),
                }
            }
        }
        let bytes = self.fetch(src, file, self.limits.timestamp_max_len).await?;
        self.check_root_fresh(now)?;
        let new: TimestampMeta = self.verify_top("timestamp", file, &bytes)?;
        let new_snap = snapshot_meta(&new, file)?;
        if let Some(trusted) = &self.timestamp {
            let (tv, nv) = (trusted.meta.common.version, new.common.version);
            if nv < tv {
                return Err(TrustError::Rollback {
                    role: "timestamp".into(),
                    new: nv,
                    trusted: tv,
                });
            }
            if nv == tv {
                // Same version: keep the copy we trust (its expiry is judged with the
                // snapshot step).
                return Ok(());
            }
            let trusted_snap = snapshot_meta(&trusted.meta, file)?;
            if new_snap.version < trusted_snap.version {
                return Err(TrustError::Rollback {
                    role: "snapshot".into(),
                    new: new_snap.version,
                    trusted: trusted_snap.version,
                });
            }
        }
        Self::check_expiry("timestamp", new.common.expires, now)?;
        self.persist(file, &bytes)?;
        self.timestamp = Some(Trusted { meta: new });
        Ok(())
    }

    /// §5.3.11 (fast-forward recovery): when the trusted snapshot no longer verifies
    /// under the current root, its keys were rotated, and the trusted timestamp, which
    /// pins the snapshot version the attacker may have pushed up, is not used either.
    /// The files stay until replaced (as python-tuf keeps them); they are just not
    /// trusted.
    fn snapshot_keys_rotated(&self) -> bool {
        let Some(bytes) = self.read_local("snapshot.json") else {
            return false;
        };
        let rotated = self
            .verify_top::<Snapshot>("snapshot", "snapshot.json", &bytes)
            .is_err();
        if rotated {
            tracing::warn!("trusted snapshot no longer verifies (snapshot keys rotated): trusted timestamp and snapshot dropped");
        }
        rotated
    }

    fn final_timestamp(&self, now: Timestamp) -> Result<&Trusted<TimestampMeta>, TrustError> {
        let ts = self.timestamp.as_ref().ok_or(TrustError::NotRefreshed)?;
        Self::check_expiry("timestamp", ts.meta.common.expires, now)?;
        Ok(ts)
    }

    /// The snapshot is final when it is fresh and has the version the timestamp names.
    fn check_final_snapshot(&self, now: Timestamp) -> Result<(), TrustError> {
        let ts = self.timestamp.as_ref().ok_or(TrustError::NotRefreshed)?;
        let snap = self.snapshot.as_ref().ok_or(TrustError::NotRefreshed)?;
        Self::check_expiry("snapshot", snap.meta.common.expires, now)?;
        let want = snapshot_meta(&ts.meta, "timestamp.json")?.version;
        if snap.meta.common.version != want {
            return Err(TrustError::VersionMismatch {
                role: "snapshot".into(),
                file: "snapshot.json".into(),
                found: snap.meta.common.version,
                expected: want,
            });
        }
        Ok(())
    }

    /// §5.5. The snapshot kept in the directory is used as is when it is still the one
    /// the timestamp names; otherwise it (if it still verifies) guards the new one
    /// against rollback of any role it lists.
    async fn load_snapshot(
        &mut self,
        src: &dyn ByteSource,
        now: Timestamp,
    ) -> Result<(), TrustError> {
        let local = match self.final_timestamp(now) {
            Ok(_) => self.read_local("snapshot.json").and_then(|bytes| {
                match self.verify_top::<Snapshot>("snapshot", "snapshot.json", &bytes) {
                    Ok(meta) => Some(Trusted { meta }),
                    Err(e) => {
                        tracing::debug!(error = %e, "trusted snapshot not usable");
                        None
                    }
                }
            }),
            Err(_) => None,
        };
        if let Some(local) = local {
            self.snapshot = Some(local);
            if self.check_final_snapshot(now).is_ok() {
                return Ok(());
            }
        }
        let ts = self.timestamp.as_ref().ok_or(TrustError::NotRefreshed)?;
        let want = snapshot_meta(&ts.meta, "timestamp.json")?.clone();
        let file = if self.root.meta.consistent_snapshot {
            format!("{}.snapshot.json", want.version)
        } else {
            "snapshot.json".to_string()
        };
        let limit = want.length.unwrap_or(self.limits.snapshot_max_len);
        let bytes = self.fetch(src, &file, limit).await?;
        self.final_timestamp(now)?;
        check_bytes(&file, &bytes, want.length, want.hashes.as_ref())?;
        let new: Snapshot = self.verify_top("snapshot", &file, &bytes)?;
        if let Some(trusted) = &self.snapshot {
            for (name, old) in &trusted.meta.meta {
                let Some(n) = new.meta.get(name) else {
                    return Err(TrustError::NotListed {
                        role: name.trim_end_matches(".json").to_string(),
                        listed_in: file.clone(),
                    });
                };
                if n.version < old.version {
                    return Err(TrustError::Rollback {
                        role: name.trim_end_matches(".json").to_string(),
                        new: n.version,
                        trusted: old.version,
                    });
                }
            }
        }
        for (name, mf) in &new.meta {
            if let Some(h) = &mf.hashes {
                MultiHasher::new(name, h)?;
            }
        }
        if new.common.version != want.version {
            return Err(TrustError::VersionMismatch {
                role: "snapshot".into(),
                file,
                found: new.common.version,
                expected: want.version,
            });
        }
        Self::check_expiry("snapshot", new.common.expires, now)?;
        self.persist("snapshot.json", &bytes)?;
        self.snapshot = Some(Trusted { meta: new });
        Ok(())
    }

    /// Check `bytes` as version `want` of targets role `role` signed for `delegator`.
    fn verify_targets(
        &self,
        v: &ToVisit,
        file: &str,
        bytes: &[u8],
        want: &MetaFile,
        now: Timestamp,
    ) -> Result<Targets, TrustError> {
        check_bytes(file, bytes, want.length, want.hashes.as_ref())?;
        let meta: Targets = verify_bytes(
            bytes,
            &v.role,
            file,
            &v.keys,
            &v.keyids,
            v.threshold,
            &self.limits,
        )?;
        if meta.common.version != want.version {
            return Err(TrustError::VersionMismatch {
                role: v.role.clone(),
                file: file.to_string(),
                found: meta.common.version,
                expected: want.version,
            });
        }
        Self::check_expiry(&v.role, meta.common.expires, now)?;
        Ok(meta)
    }

    /// §5.6 for the top-level targets and each delegated role: make `v.role` trusted
    /// (already verified for this delegator in this refresh, else the copy in the
    /// directory, else `src`), exactly the version the trusted snapshot lists, signed by
    /// the keys and threshold its delegator gives it. A role fetched from `src` is
    /// persisted at once.
    async fn load_targets_role(
        &mut self,
        src: &dyn ByteSource,
        v: &ToVisit,
        delegator: &str,
        now: Timestamp,
    ) -> Result<(), TrustError> {
        let key = (delegator.to_string(), v.role.clone());
        if self.delegations.contains(&key) && self.targets.contains_key(&v.role) {
            return Ok(());
        }
        self.check_final_snapshot(now)?;
        let snapshot = self.snapshot.as_ref().ok_or(TrustError::NotRefreshed)?;
        let listed = format!("{}.json", v.role);
        let want =
            snapshot
                .meta
                .meta
                .get(&listed)
                .cloned()
                .ok_or_else(|| TrustError::NotListed {
                    role: v.role.clone(),
                    listed_in: "snapshot".into(),
                })?;
        let local_file = format!("{}.json", encode_name(&v.role));
        if let Some(bytes) = self.read_local(&local_file) {
            match self.verify_targets(v, &local_file, &bytes, &want, now) {
                Ok(meta) => {
                    self.targets.insert(v.role.clone(), Trusted { meta });
                    self.delegations.insert(key);
                    return Ok(());
                }
                Err(e) => tracing::debug!(role = %v.role, error = %e, "trusted copy not usable"),
            }
        }
        let file = if self.root.meta.consistent_snapshot {
            format!("{}.{}.json", want.version, encode_name(&v.role))
        } else {
            local_file.clone()
        };
        let limit = want.length.unwrap_or(self.limits.targets_max_len);
        let bytes = self.fetch(src, &file, limit).await?;
        self.check_final_snapshot(now)?;
        let meta = self.verify_targets(v, &file, &bytes, &want, now)?;
        self.persist(&local_file, &bytes)?;
        self.targets.insert(v.role.clone(), Trusted { meta });
        self.delegations.insert(key);
        Ok(())
    }

    /// Find `path` in the trusted targets metadata, following delegations (pre-order
    /// depth-first as python-tuf walks them, at most `max_delegations` roles after the
    /// top-level one, delegated roles fetched lazily from `src`, the metadata
    /// directory). Call after a successful [`TufClient::refresh`].
    pub async fn target(
        &mut self,
        src: &dyn ByteSource,
        path: &str,
    ) -> Result<VerifiedTarget, TrustError> {
        let (true, Some(now)) = (self.refreshed, self.now) else {
            return Err(TrustError::NotRefreshed);
        };
        validate_target_path(path)?;
        let mut stack = vec![(self.top_targets()?, "root".to_string())];
        let mut visited = std::collections::BTreeSet::new();
        while visited.len() <= self.limits.max_delegations {
            let Some((v, delegator)) = stack.pop() else {
                break;
            };
            if visited.contains(&v.role) {
                continue;
            }
            self.load_targets_role(src, &v, &delegator, now).await?;
            let Some(t) = self.targets.get(&v.role) else {
                return Err(TrustError::NotRefreshed);
            };
            if let Some(tf) = t.meta.targets.get(path) {
                return self.verified(path, tf, &v.role);
            }
            visited.insert(v.role.clone());
            let Some(d) = &t.meta.delegations else {
                continue;
            };
            let mut children = Vec::new();
            if let Some(succinct) = &d.succinct_roles {
                if let Some(bin) = succinct.role_for_target(path) {
                    validate_role_name(&bin)?;
                    children.push(ToVisit {
                        role: bin,
                        keys: d.keys.clone(),
                        keyids: succinct.keyids.clone(),
                        threshold: succinct.threshold,
                    });
                }
                // Hash bins are terminating by definition.
                stack.clear();
            } else if let Some(roles) = &d.roles {
                for r in roles {
                    if !r.matches(path) {
                        continue;
                    }
                    validate_role_name(&r.name)?;
                    children.push(ToVisit {
                        role: r.name.clone(),
                        keys: d.keys.clone(),
                        keyids: r.keyids.clone(),
                        threshold: r.threshold,
                    });
                    if r.terminating {
                        stack.clear();
                        break;
                    }
                }
            }
            children.reverse();
            stack.extend(children.into_iter().map(|c| (c, v.role.clone())));
        }
        Err(TrustError::TargetNotFound {
            path: path.to_string(),
        })
    }

    fn verified(
        &self,
        path: &str,
        tf: &super::metadata::TargetFile,
        role: &str,
    ) -> Result<VerifiedTarget, TrustError> {
        if tf.hashes.is_empty() {
            return Err(TrustError::NoHashes {
                file: format!("{path} (in {role})"),
            });
        }
        MultiHasher::new(path, &tf.hashes)?;
        Ok(VerifiedTarget {
            path: path.to_string(),
            length: tf.length,
            hashes: tf
                .hashes
                .iter()
                .map(|(k, v)| (k.clone(), v.to_ascii_lowercase()))
                .collect(),
            custom: tf.custom.clone().unwrap_or(Value::Null),
            consistent: self.root.meta.consistent_snapshot,
        })
    }

    /// Stream `target` from `src` (the targets directory) into `out`, checking length
    /// and hashes. `out` sees bytes before they are verified: on error the caller must
    /// discard what it wrote (the slot code never activates an unverified image).
    pub async fn fetch_target_to(
        &self,
        src: &dyn ByteSource,
        target: &VerifiedTarget,
        out: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), TrustError> {
        let remote = target.remote_path();
        let mut hasher = MultiHasher::new(&remote, &target.hashes)?;
        let secs = self.limits.stall_timeout.as_secs();
        let expected = target.length;
        let timeout = |file: &str, received: u64| TrustError::Timeout {
            file: file.to_string(),
            secs,
            received,
            expected: Some(expected),
            stalled: true,
        };
        let mut reader = match tokio::time::timeout(
            self.limits.stall_timeout,
            src.open(&remote, 0, target.length),
        )
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(source)) => {
                return Err(TrustError::Fetch {
                    file: remote,
                    source,
                })
            }
            Err(_) => return Err(timeout(&remote, 0)),
        };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match tokio::time::timeout(self.limits.stall_timeout, reader.read(&mut buf))
                .await
            {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    return Err(TrustError::Fetch {
                        file: remote.clone(),
                        source: FetchError::from_io(&remote, e),
                    })
                }
                Err(_) => return Err(timeout(&remote, hasher.len)),
            };
            if n == 0 {
                break;
            }
            if hasher.len + n as u64 > target.length {
                return Err(TrustError::LengthMismatch {
                    file: remote,
                    found: hasher.len + n as u64,
                    expected: target.length,
                });
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .await
                .map_err(io_err(format!("writing {}", target.path)))?;
        }
        if hasher.len != target.length {
            return Err(TrustError::LengthMismatch {
                file: remote,
                found: hasher.len,
                expected: target.length,
            });
        }
        hasher.finish(&remote)?;
        out.flush()
            .await
            .map_err(io_err(format!("writing {}", target.path)))?;
        Ok(())
    }

    /// Download a small target (a release manifest) into memory, verified.
    pub async fn fetch_target_bytes(
        &self,
        src: &dyn ByteSource,
        target: &VerifiedTarget,
    ) -> Result<Vec<u8>, TrustError> {
        let mut out = Vec::new();
        self.fetch_target_to(src, target, &mut out).await?;
        Ok(out)
    }

    /// Download `target` to `dest` atomically (temporary file in the same directory,
    /// renamed only once verified; removed on failure). If `dest` already holds the
    /// verified content nothing is fetched; returns whether a download happened.
    pub async fn download_target_file(
        &self,
        src: &dyn ByteSource,
        target: &VerifiedTarget,
        dest: &Path,
    ) -> Result<bool, TrustError> {
        if file_matches(dest, target) {
            return Ok(false);
        }
        let dir = dest.parent().unwrap_or(Path::new("."));
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.part.{}", std::process::id()));
        let result = async {
            let mut f = tokio::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .await
                .map_err(io_err(tmp.display()))?;
            self.fetch_target_to(src, target, &mut f).await?;
            f.sync_all().await.map_err(io_err(tmp.display()))?;
            drop(f);
            std::fs::rename(&tmp, dest).map_err(io_err(dest.display()))?;
            crate::fsutil::fsync_dir(dir).map_err(io_err(dir.display()))
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map(|()| true)
    }
}

/// Whether the file at `path` has exactly the target's length and hashes.
pub fn file_matches(path: &Path, target: &VerifiedTarget) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    match f.metadata() {
        Ok(m) if m.is_file() && m.len() == target.length => {}
        _ => return false,
    }
    let Ok(mut h) = MultiHasher::new(&target.path, &target.hashes) else {
        return false;
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(_) => return false,
        }
    }
    h.len == target.length && h.finish(&target.path).is_ok()
}

fn snapshot_meta<'a>(ts: &'a TimestampMeta, file: &str) -> Result<&'a MetaFile, TrustError> {
    let mf = ts
        .meta
        .get("snapshot.json")
        .ok_or_else(|| TrustError::NotListed {
            role: "snapshot".into(),
            listed_in: file.to_string(),
        })?;
    if let Some(h) = &mf.hashes {
        MultiHasher::new(file, h)?;
    }
    Ok(mf)
}

/// Envelope → threshold check → typed parse, all errors naming `role`/`file`.
fn verify_bytes<T: RoleMetadata>(
    bytes: &[u8],
    role: &str,
    file: &str,
    keys: &BTreeMap<String, PublicKey>,
    keyids: &[String],
    threshold: u64,
    limits: &Limits,
) -> Result<T, TrustError> {
    let wrap = |source: MetadataError| TrustError::Metadata {
        role: role.to_string(),
        file: file.to_string(),
        source,
    };
    let env = Envelope::parse(bytes, limits.max_json_depth).map_err(wrap)?;
    env.verify(keys, keyids, threshold).map_err(wrap)?;
    parse_signed::<T>(&env.signed).map_err(wrap)
}

/// Whether `bytes` are a root signed by its own threshold, as [`TufClient::init`] needs
/// (nothing is stored).
pub fn verify_root_bytes(bytes: &[u8], limits: &Limits) -> Result<(), TrustError> {
    verify_self_signed(bytes, "root.json", limits).map(|_| ())
}

fn verify_self_signed(bytes: &[u8], file: &str, limits: &Limits) -> Result<Root, TrustError> {
    let wrap = |source: MetadataError| TrustError::Metadata {
        role: "root".into(),
        file: file.to_string(),
        source,
    };
    let env = Envelope::parse(bytes, limits.max_json_depth).map_err(wrap)?;
    let root: Root = parse_signed(&env.signed).map_err(wrap)?;
    let rk = root
        .roles
        .get("root")
        .ok_or_else(|| TrustError::RoleUndefined {
            role: "root".into(),
            delegator: file.to_string(),
        })?;
    env.verify(&root.keys, &rk.keyids, rk.threshold)
        .map_err(wrap)?;
    Ok(root)
}

/// Target paths are repository paths: relative, `/`-separated, no `.`/`..`/empty
/// components, no control characters or backslashes.
pub fn validate_target_path(path: &str) -> Result<(), TrustError> {
    crate::fetch::validate_repo_path(path).map_err(|e| TrustError::BadTargetPath {
        path: path.to_string(),
        why: match e {
            FetchError::InvalidPath { why, .. } => why.to_string(),
            other => other.to_string(),
        },
    })
}

/// Delegated role names become file names only after [`encode_name`]; still refuse
/// names that could be confused with top-level roles, and control characters.
pub fn validate_role_name(name: &str) -> Result<(), TrustError> {
    let bad = |why| {
        Err(TrustError::BadRoleName {
            role: name.to_string(),
            why,
        })
    };
    if name.is_empty() || name.len() > 255 {
        return bad("empty or longer than 255 bytes");
    }
    if TOP_LEVEL.contains(&name) {
        return bad("a top-level role name");
    }
    if name.chars().any(char::is_control) {
        return bad("control character");
    }
    Ok(())
}
