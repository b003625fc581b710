//! btrfs subvolume slots: a release is a (zstd-compressed) tar archive extracted into a
//! fresh subvolume next to the running one.
//!
//! The archive is extracted into `.<name>.partial`; only after the transfer and content
//! hashes matched is it renamed to `<name>` and its status record set to `verified`, so
//! an unverified tree can never be selected. An interrupted extraction resumes from its
//! last checkpoint, a snapshot of the partial tree at an entry boundary (see
//! [`BtrfsSlots::stage_tar_report`]). Old slots beyond `keep` are pruned, never the
//! booted or the rollback one. A slot can also start as a writable snapshot of the running
//! subvolume (for package upgrades applied inside a snapshot).

mod resume;
mod subvol;
mod worker;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::extract::ExtractPolicy;
use super::stage::{ImageFormat, StageError, StageRequest};
use super::status::StatusStore;
use super::tee::DownloadTee;
use super::{
    Opener, RawSlot, Slot, SlotBackend, SlotError, SlotState, SlotStatus, SlotsConfig, StageJob,
};
use crate::fetch::BoxFuture;
use crate::fsutil;
use crate::names::SlotName;
use crate::paths::Paths;
use subvol::{snapshot_create, subvol_create, subvol_delete};
use worker::TarJob;

/// The set of subvolume slots under one directory of a btrfs filesystem.
#[derive(Debug, Clone)]
pub struct BtrfsSlots {
    root: PathBuf,
    state_dir: PathBuf,
    keep: usize,
    booted: Option<SlotName>,
    rollback: Option<SlotName>,
    policy: ExtractPolicy,
}

/// One subvolume slot of a set: `<dir>/<name>`, staged through its set.
#[derive(Debug, Clone)]
pub struct BtrfsSlot {
    name: SlotName,
    store: StatusStore,
    set: BtrfsSlots,
}

slot_recorded_in_store!(BtrfsSlot, "btrfs");

impl SlotBackend for BtrfsSlot {
    fn takes(&self) -> ImageFormat {
        ImageFormat::Tar
    }
    fn prepare(&self, req: &StageRequest) -> Result<(), StageError> {
        BtrfsSlots::check_request(req, &self.name)?;
        Ok(self.set.check_writable(&self.name)?)
    }
    fn stage<'a>(&'a self, job: StageJob<'a>) -> BoxFuture<'a, Result<SlotStatus, StageError>> {
        Box::pin(self.set.stage_tar(&self.name, job))
    }
    /// The signed hash is the archive's, which is not kept, so the tree cannot be hashed
    /// again: the record must describe verified content and the subvolume be there.
    fn verify(&self) -> Result<(), StageError> {
        let st = self.store.load()?;
        let tree = self.set.subvolume_path(&self.name);
        let why = if !(st.state.is_bootable() && st.sha256.is_some()) {
            format!("its record describes no verified content ({:?})", st.state)
        } else if !std::fs::symlink_metadata(&tree).is_ok_and(|m| m.is_dir()) {
            format!("its subvolume {} is missing", tree.display())
        } else {
            return Ok(());
        };
        Err(StageError::Slot(SlotError::refused(&self.name, why)))
    }
    fn byte_range(&self) -> Option<Arc<dyn RawSlot>> {
        None
    }
}

/// `backend = "btrfs"`: the slots are subvolumes `<dir>/<name>` of one directory on btrfs.
pub(super) struct Subvolumes;

impl Opener for Subvolumes {
    fn check(&self, cfg: &SlotsConfig) -> Result<(), String> {
        cfg.check_slots_in_dir("btrfs")
    }
    fn open(
        &self,
        cfg: &SlotsConfig,
        paths: &Paths,
        booted: &SlotName,
    ) -> Result<Vec<Arc<dyn SlotBackend>>, SlotError> {
        let dir = cfg.dir.as_ref().ok_or_else(|| SlotError::Config {
            why: "[slots] backend \"btrfs\" needs dir".into(),
        })?;
        let dir = paths.resolve(dir);
        check_btrfs_dir(&dir)?;
        let set = BtrfsSlots::new(dir, paths.state_dir()).with_booted(booted.clone());
        Ok(cfg
            .slot
            .iter()
            .map(|e| Arc::new(set.slot(&e.name)) as Arc<dyn SlotBackend>)
            .collect())
    }
}

/// The slot directory must exist on btrfs: subvolumes cannot be made elsewhere, and a
/// typo must stop the daemon at start, not at the first staging.
fn check_btrfs_dir(dir: &Path) -> Result<(), SlotError> {
    let err = |source| SlotError::Dir {
        dir: dir.to_path_buf(),
        source,
    };
    let st = nix::sys::statfs::statfs(dir).map_err(|e| err(e.into()))?;
    if st.filesystem_type() != nix::sys::statfs::BTRFS_SUPER_MAGIC {
        return Err(err(io::Error::other("not on a btrfs filesystem")));
    }
    Ok(())
}

impl BtrfsSlots {
    /// `root` is the directory holding the slot subvolumes (on btrfs); status records go
    /// to `state_dir/slots/`.
    pub fn new(root: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            state_dir: state_dir.into(),
            keep: 3,
            booted: None,
            rollback: None,
            policy: ExtractPolicy {
                allow_device_nodes: true,
            },
        }
    }
    /// Keep at most this many slots (booted and rollback always kept).
    pub fn with_keep(mut self, keep: usize) -> Self {
        self.keep = keep.max(1);
        self
    }
    pub fn with_booted(mut self, s: SlotName) -> Self {
        self.booted = Some(s);
        self
    }
    pub fn with_rollback(mut self, s: SlotName) -> Self {
        self.rollback = Some(s);
        self
    }
    pub fn with_policy(mut self, p: ExtractPolicy) -> Self {
        self.policy = p;
        self
    }

    pub fn slot(&self, name: &SlotName) -> BtrfsSlot {
        BtrfsSlot {
            name: name.clone(),
            store: StatusStore::new(&self.state_dir, name.clone()),
            set: self.clone(),
        }
    }

    pub fn subvolume_path(&self, name: &SlotName) -> PathBuf {
        self.root.join(name.as_str())
    }

    fn partial_name(name: &SlotName) -> String {
        format!(".{name}.partial")
    }

    fn check_request(req: &StageRequest, name: &SlotName) -> Result<(), StageError> {
        req.validate()?;
        if req.format != ImageFormat::Tar {
            return Err(StageError::BadRequest {
                why: format!("btrfs slot {name} takes tar archives, not raw images"),
            });
        }
        Ok(())
    }

    fn check_writable(&self, name: &SlotName) -> Result<(), SlotError> {
        for (which, s) in [("booted", &self.booted), ("rollback", &self.rollback)] {
            if s.as_ref() == Some(name) {
                return Err(SlotError::refused(name, format!("it is the {which} slot")));
            }
        }
        Ok(())
    }

    /// Writable snapshot of the running subvolume as slot `new` (status `incomplete`
    /// until whatever changes it inside is verified and recorded by the caller).
    pub fn snapshot_running(
        &self,
        running: &SlotName,
        new: &SlotName,
    ) -> Result<PathBuf, SlotError> {
        self.check_writable(new)?;
        let store = StatusStore::new(&self.state_dir, new.clone());
        store.mark_incomplete("snapshot")?;
        let dst = self.subvolume_path(new);
        if dst.exists() {
            return Err(SlotError::refused(
                new,
                format!("{} already exists", dst.display()),
            ));
        }
        snapshot_create(&self.subvolume_path(running), &self.root, new.as_str())
            .map_err(|e| SlotError::io(new, e))?;
        fsutil::fsync_dir(&self.root).map_err(|e| SlotError::io(new, e))?;
        Ok(dst)
    }

    /// Delete slot `name`'s subvolume (if there) and record it empty: what an apt
    /// snapshot that failed, or was cut off by a restart, leaves. Never the booted or
    /// the rollback slot.
    pub fn discard(&self, name: &SlotName) -> Result<(), SlotError> {
        self.check_writable(name)?;
        let store = StatusStore::new(&self.state_dir, name.clone());
        if self.subvolume_path(name).exists() {
            store.mark_incomplete("discarded")?;
            subvol_delete(&self.root, name.as_str()).map_err(|e| SlotError::io(name, e))?;
            fsutil::fsync_dir(&self.root).map_err(|e| SlotError::io(name, e))?;
        }
        store.save(&SlotStatus::empty(name.clone()))
    }

    /// Record a snapshot slot (see [`BtrfsSlots::snapshot_running`]) whose changes the
    /// caller verified: `sha256` names what was verified (for a package upgrade, the
    /// recorded package delta), so the slot may be tried.
    pub fn snapshot_verified(
        &self,
        name: &SlotName,
        version: &str,
        sha256: &str,
        size: u64,
    ) -> Result<SlotStatus, SlotError> {
        self.check_writable(name)?;
        if !self.subvolume_path(name).is_dir() {
            return Err(SlotError::refused(
                name,
                "its snapshot subvolume is missing",
            ));
        }
        subvol::sync_fs(&self.subvolume_path(name)).map_err(|e| SlotError::io(name, e))?;
        StatusStore::new(&self.state_dir, name.clone()).mark_verified(version, sha256, size)
    }

    /// The record of slot `name` (also for slots the set is not asked to stage).
    pub fn record(&self, name: &SlotName) -> Result<SlotStatus, SlotError> {
        StatusStore::new(&self.state_dir, name.clone()).load()
    }

    /// Stage a tar archive into slot `name`.
    pub async fn stage_tar(
        &self,
        name: &SlotName,
        run: StageJob<'_>,
    ) -> Result<SlotStatus, StageError> {
        self.stage_tar_report(name, run).await.map(|(st, _)| st)
    }

    /// [`BtrfsSlots::stage_tar`], also saying how much of the work this run did.
    ///
    /// Resume: every `checkpoint_every` bytes of archive, at the first entry boundary, the
    /// partial subvolume is synced and snapshotted (`.<slot>.cp.<seq>`) and the place is
    /// recorded in `.<slot>.extract.json` with the restart mark of the stream (zstd frame
    /// start and hash states, see [`super::tarstream`]). A later run for the same request
    /// and slot restores the partial tree from that snapshot — so whatever the
    /// interrupted run wrote after it, including a half-written entry, is gone — and
    /// continues the stream from the mark, replaying the kept download. Anything that
    /// does not match (other archive, slot or policy, missing snapshot, kept download too
    /// short) is deleted and the extraction starts over.
    pub async fn stage_tar_report(
        &self,
        name: &SlotName,
        run: StageJob<'_>,
    ) -> Result<(SlotStatus, TarStageReport), StageError> {
        let StageJob {
            req,
            source,
            opts,
            progress,
            cancel,
        } = run;
        Self::check_request(req, name)?;
        self.check_writable(name)?;
        let store = StatusStore::new(&self.state_dir, name.clone());
        // The slot's own subvolume is untouched until the new tree is verified, so its
        // record stays as it is until then (a failure leaves both as they were).
        let partial = Self::partial_name(name);
        let partial_path = self.root.join(&partial);
        let (tee, prefix) = DownloadTee::open(
            &self.root,
            name.as_str(),
            req,
            opts.checkpoint_every.min(16 << 20),
        )
        .map_err(|e| StageError::Io {
            what: format!(
                "keeping the download of {} in {}",
                req.path,
                self.root.display()
            ),
            source: e,
        })?;
        let resume = self.load_checkpoint(req, name, prefix);
        let io = |e| StageError::Slot(SlotError::io(name, e));
        if partial_path.exists() {
            subvol_delete(&self.root, &partial).map_err(io)?;
        }
        match &resume {
            Some(cp) => {
                self.clear_checkpoints(name, Some(&cp.snapshot));
                snapshot_create(&self.root.join(&cp.snapshot), &self.root, &partial).map_err(io)?;
                tracing::info!(slot = %name, path = %req.path, entries = cp.entries, offset = cp.boundary_offset, "resuming the extraction from its checkpoint");
            }
            None => {
                self.clear_checkpoints(name, None);
                subvol_create(&self.root, &partial).map_err(io)?;
            }
        }

        let job = TarJob {
            req,
            name,
            dest: &partial_path,
            tee,
            prefix,
            resume,
        };
        let result = self
            .extract_verified(job, source, opts, progress, cancel)
            .await;
        let report = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(slot = %name, path = %req.path, error = %e, resumable = e.is_resumable(), "btrfs staging failed");
                let _ = subvol_delete(&self.root, &partial);
                if !e.is_resumable() {
                    DownloadTee::remove(&self.root, name.as_str());
                    self.clear_checkpoints(name, None);
                }
                return Err(e);
            }
        };
        DownloadTee::remove(&self.root, name.as_str());
        self.clear_checkpoints(name, None);
        // Verified: replace any older content of this slot, then publish.
        let dst = self.subvolume_path(name);
        if dst.exists() {
            // From here until the record says verified the old content is going away.
            store.mark_incomplete(&req.version)?;
            subvol_delete(&self.root, name.as_str()).map_err(io)?;
        }
        std::fs::rename(&partial_path, &dst).map_err(io)?;
        fsutil::fsync_dir(&self.root).map_err(io)?;
        let st = store.mark_verified(
            &req.version,
            &req.content_sha256.to_ascii_lowercase(),
            req.size,
        )?;
        if let Err(e) = self.prune() {
            tracing::warn!(error = %e, "pruning old btrfs slots failed");
        }
        tracing::info!(slot = %name, path = %req.path, ?report, "btrfs slot staged");
        Ok((st, report))
    }

    /// Delete the oldest slots beyond `keep`; never the booted or the rollback one.
    pub fn prune(&self) -> Result<Vec<SlotName>, StageError> {
        let mut slots = Vec::new();
        let rd = std::fs::read_dir(&self.root).map_err(|e| StageError::Io {
            what: format!("listing {}", self.root.display()),
            source: e,
        })?;
        for ent in rd.flatten() {
            let Some(n) = ent.file_name().to_str().and_then(|s| SlotName::new(s).ok()) else {
                continue;
            };
            let st = self.slot(&n).status()?;
            if st.state == SlotState::Empty {
                continue; // not ours
            }
            slots.push((st.installed_at, n));
        }
        slots.sort(); // oldest first (None = never verified sorts first)
        let mut removed = Vec::new();
        let mut left = slots.len();
        for (_, n) in slots {
            if left <= self.keep {
                break;
            }
            if Some(&n) == self.booted.as_ref() || Some(&n) == self.rollback.as_ref() {
                continue;
            }
            subvol_delete(&self.root, n.as_str()).map_err(|e| SlotError::io(&n, e))?;
            self.slot(&n).set_state(SlotState::Empty)?;
            tracing::info!(slot = %n, "pruned old btrfs slot");
            removed.push(n);
            left -= 1;
        }
        Ok(removed)
    }
}

/// What one [`BtrfsSlots::stage_tar_report`] run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TarStageReport {
    /// Archive offset this run started extracting at (0: from the beginning).
    pub resumed_at: u64,
    /// Entries already extracted by earlier runs.
    pub entries_before: u64,
    /// Entries extracted by this run.
    pub entries_extracted: u64,
    /// Transfer bytes this run read (replayed from the kept download or fetched).
    pub transfer_read: u64,
    /// Archive bytes this run decompressed (or read, when uncompressed).
    pub content_decoded: u64,
    /// Checkpoints this run saved.
    pub checkpoints: u64,
}
