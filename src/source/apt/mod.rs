//! The `apt` patch source (`[source] kind = "apt"`): the pending upgrades of the
//! system's own apt, scanned with its configuration and its signed Release files, offered
//! to the engine as one release — the patch set — through the same [`Updates`] port as
//! the TUF repository.
//!
//! `discover` scans (`scan`), categorizes each package (`classify`: kind from the
//! candidate's origin, CVEs and urgency from its changelog (`changelog`) and the tracker
//! feed (`feed`), severity from the rules) and folds them into one release summary, so
//! the switch decision, holds and windows apply unchanged. `stage` upgrades exactly the
//! offered patch set inside a writable btrfs snapshot of the running root (`stage`,
//! chrooted through `jail`); `before_switch` carries the admin's `/etc` changes made
//! since into the snapshot (`etcmerge`); `record` keeps what staging knows across
//! restarts.

mod changelog;
mod classify;
mod cmd;
mod debversion;
pub mod etcmerge;
mod feed;
mod jail;
pub mod layout;
mod parse;
mod port;
pub mod record;
mod scan;
mod stage;

use std::collections::BTreeMap;
use std::path::PathBuf;

use tokio::sync::Mutex;

pub use cmd::AptError;
pub use scan::Scan;
pub use stage::{Snapshots, StagingError};

use crate::engine::ports::{Offered, PortError, ProgressSink, StageReport, Updates};
use crate::fetch::BoxFuture;
use crate::manifest::PackageChange;
use crate::names::SlotName;
use crate::policy::ReleaseFacts;
use crate::sourceconf::AptConfig;

/// What staging a patch set needs to know: the exact upgrades the scan offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchSet {
    pub version: semver::Version,
    pub packages: Vec<PackageChange>,
}

pub struct AptUpdates {
    cfg: AptConfig,
    apt: cmd::Apt,
    product: String,
    channel: String,
    /// Where candidate .debs are downloaded to read their changelogs.
    work: PathBuf,
    /// The patch set the last discovery offered, by version.
    offered: Mutex<BTreeMap<semver::Version, PatchSet>>,
    /// The day each package set was first seen, for sets without dated changelogs.
    first_seen: Mutex<BTreeMap<String, jiff::civil::Date>>,
    /// Candidates' changelogs already read (also serializes scans).
    changelogs: Mutex<scan::Changelogs>,
    /// Where patch sets are staged; `None`: staging is refused (no btrfs slots).
    snapshots: Option<Snapshots>,
    /// Held by the staging thread for its whole run: a staging started after a cancel
    /// waits until the cancelled one has deleted its snapshot.
    stage_lock: std::sync::Arc<std::sync::Mutex<()>>,
}

impl AptUpdates {
    /// `work`: a directory of patchd's own (the cache) for downloaded packages.
    pub fn new(cfg: AptConfig, product: String, channel: String, work: PathBuf) -> Self {
        Self {
            apt: cmd::Apt::new(&cfg),
            cfg,
            product,
            channel,
            work,
            offered: Mutex::new(BTreeMap::new()),
            first_seen: Mutex::new(BTreeMap::new()),
            changelogs: Mutex::new(BTreeMap::new()),
            snapshots: None,
            stage_lock: Default::default(),
        }
    }

    /// Stage patch sets as snapshots in `snaps` (the btrfs slot set of the running root).
    pub fn with_snapshots(mut self, snaps: Snapshots) -> Self {
        self.snapshots = Some(snaps);
        self
    }

    /// Delete the snapshots stagings cut off by a power cut or a kill left behind (call
    /// at start); the slots cleaned.
    pub fn recover(&self) -> Result<Vec<SlotName>, StagingError> {
        match &self.snapshots {
            Some(s) => stage::recover(s),
            None => Ok(Vec::new()),
        }
    }

    /// Fill in each package's `staged` version from the staged release record of a
    /// verified slot holding patch set `version`; whether there was one.
    fn mark_staged(&self, version: &str, packages: &mut [PackageChange]) -> bool {
        let Some(s) = &self.snapshots else {
            return false;
        };
        let recs = record::Records::new(&s.state);
        let found = recs.staged_slots().into_iter().find_map(|slot| {
            let st = s.slots.record(&slot).ok()?;
            let rec = recs.staged(&slot).ok()??;
            (st.state == crate::slot::SlotState::Verified
                && st.version.as_deref() == Some(version)
                && rec.version == version)
                .then_some(rec)
        });
        let Some(rec) = found else {
            return false;
        };
        for p in packages.iter_mut() {
            p.staged = rec
                .packages
                .iter()
                .find(|d| d.name == p.name && (p.arch.is_empty() || d.arch == p.arch))
                .map(|d| d.new.clone());
        }
        true
    }

    /// The staged release record of `slot` (the package delta), if it holds a patch set.
    pub fn staged_record(&self, slot: &SlotName) -> Option<record::StagedRecord> {
        let s = self.snapshots.as_ref()?;
        match record::Records::new(&s.state).staged(slot) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(slot = %slot, error = %e, "unreadable staged release record");
                None
            }
        }
    }

    /// Scan without offering: what `discover` categorizes.
    pub async fn scan(&self) -> Result<Scan, AptError> {
        let mut seen = self.changelogs.lock().await;
        scan::scan(&self.apt, &self.cfg, &self.work, &mut seen).await
    }

    /// The patch set of an offered release (for staging and `patchctl list`).
    pub async fn patch_set(&self, version: &semver::Version) -> Option<PatchSet> {
        self.offered.lock().await.get(version).cloned()
    }

    async fn discover_inner(&self) -> Result<Vec<Offered>, PortError> {
        let found = self.scan().await.map_err(|e| {
            let cause = if matches!(e, AptError::Refused(_)) {
                "verify"
            } else {
                "check"
            };
            PortError::new("apt scan", &e).with_cause(cause)
        })?;
        let hash = classify::content_hash(&found.packages);
        let date = match found.newest {
            Some(d) => d,
            None => *self
                .first_seen
                .lock()
                .await
                .entry(hash)
                .or_insert_with(|| jiff::Zoned::now().date()),
        };
        let mut offered = BTreeMap::new();
        let mut out = Vec::new();
        if let Some((summary, mut text)) = classify::release(
            &found.packages,
            date,
            &self.product,
            &self.channel,
            found.size,
        ) {
            if !found.notes.is_empty() {
                text.push_str(&format!("; {}", found.notes.join("; ")));
            }
            let mut packages = found.packages;
            self.mark_staged(&summary.version.to_string(), &mut packages);
            offered.insert(
                summary.version.clone(),
                PatchSet {
                    version: summary.version.clone(),
                    packages: packages.clone(),
                },
            );
            out.push(Offered {
                facts: ReleaseFacts::new(summary, None),
                published: None,
                manifest_problem: None,
                summary: Some(text),
                components: Vec::new(),
                packages,
            });
        }
        *self.offered.lock().await = offered;
        Ok(out)
    }
}

impl Updates for AptUpdates {
    fn discover(&self) -> BoxFuture<'_, Result<Vec<Offered>, PortError>> {
        Box::pin(self.discover_inner())
    }

    /// Stage the patch set `version` into `slot`: see the `stage` module.
    fn stage<'a>(
        &'a self,
        version: &'a semver::Version,
        slot: &'a SlotName,
        progress: ProgressSink,
    ) -> BoxFuture<'a, Result<StageReport, PortError>> {
        Box::pin(self.stage_inner(version, slot, progress))
    }

    fn release_packages(&self, version: &str) -> Option<Vec<PackageChange>> {
        let offered = self.offered.try_lock().ok()?;
        let set = offered
            .values()
            .find(|s| s.version.to_string() == version)?;
        let mut packages = set.packages.clone();
        self.mark_staged(version, &mut packages).then_some(packages)
    }

    fn installed_packages(&self) -> Option<Vec<crate::inventory::InstalledPackage>> {
        let root = self.cfg.root.clone().unwrap_or_else(|| PathBuf::from("/"));
        match std::fs::read_to_string(root.join("var/lib/dpkg/status")) {
            Ok(text) => Some(parse::installed_packages(&text)),
            Err(e) => {
                tracing::warn!(root = %root.display(), error = %e, "reading the dpkg status for the inventory failed");
                None
            }
        }
    }

    fn staged_fields(&self, slot: &SlotName) -> Vec<(&'static str, serde_json::Value)> {
        self.staged_record(slot)
            .and_then(|r| serde_json::to_value(&r.packages).ok())
            .map(|v| vec![("packages", v)])
            .unwrap_or_default()
    }

    fn before_switch<'a>(
        &'a self,
        slot: &'a SlotName,
    ) -> BoxFuture<'a, Result<Vec<(&'static str, serde_json::Value)>, PortError>> {
        Box::pin(self.carry_etc(slot))
    }

    fn keeps_previous(&self) -> bool {
        self.cfg.keep >= 2
    }

    fn prune<'a>(
        &'a self,
        slot: &'a SlotName,
    ) -> BoxFuture<'a, Result<Vec<(&'static str, serde_json::Value)>, PortError>> {
        Box::pin(self.prune_snapshot(slot))
    }
}
