//! Resume of an interrupted extraction: the checkpoint record, the snapshots of the
//! partial tree it names, and the checkpointer that saves them at entry boundaries.

use std::io::{self, Read};
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::subvol::{snapshot_create, subvol_delete, sync_fs};
use super::worker::WorkerCtx;
use super::BtrfsSlots;
use crate::fsutil;
use crate::names::SlotName;
use crate::slot::extract::Boundary;
use crate::slot::stage::{emit, Phase, StageError, StageRequest};
use crate::slot::tarstream::{ArchiveStream, Mark};

impl BtrfsSlots {
    pub(super) fn checkpoint_path(&self, name: &SlotName) -> PathBuf {
        self.root.join(format!(".{name}.extract.json"))
    }

    pub(super) fn snapshot_name(name: &SlotName, seq: u64) -> String {
        format!(".{name}.cp.{seq}")
    }

    /// The saved checkpoint for this request and slot, if it can be resumed from.
    pub(super) fn load_checkpoint(
        &self,
        req: &StageRequest,
        name: &SlotName,
        kept: u64,
    ) -> Option<ExtractCheckpoint> {
        let bytes = std::fs::read(self.checkpoint_path(name)).ok()?;
        let cp: ExtractCheckpoint = match serde_json::from_slice(&bytes) {
            Ok(cp) => cp,
            Err(e) => {
                tracing::warn!(slot = %name, error = %e, "unreadable extraction checkpoint, starting over");
                return None;
            }
        };
        let snapshot = self.root.join(&cp.snapshot);
        let why = if cp.version != EXTRACT_CHECKPOINT_VERSION {
            "other version"
        } else if cp.request != *req {
            "other archive"
        } else if cp.slot != name.as_str() || cp.snapshot != Self::snapshot_name(name, cp.seq) {
            "other slot"
        } else if cp.allow_device_nodes != self.policy.allow_device_nodes
            || cp.preserve_owners != preserve_owners()
        {
            "other extraction policy"
        } else if !cp.mark.fits(req)
            || cp.mark.content_offset > cp.boundary_offset
            || cp.boundary_offset > req.size
        {
            "inconsistent offsets or hash states"
        } else if cp.mark.transfer_offset > kept {
            "the kept download is shorter than the checkpoint"
        } else if !std::fs::symlink_metadata(&snapshot).is_ok_and(|m| m.is_dir()) {
            "its snapshot is missing"
        } else {
            return Some(cp);
        };
        tracing::warn!(slot = %name, why, "extraction checkpoint does not fit, starting over");
        None
    }

    /// Delete the checkpoint snapshots of `name` other than `keep`; without `keep` also
    /// the checkpoint record.
    pub(super) fn clear_checkpoints(&self, name: &SlotName, keep: Option<&str>) {
        let prefix = format!(".{name}.cp.");
        if let Ok(rd) = std::fs::read_dir(&self.root) {
            for ent in rd.flatten() {
                let Some(n) = ent.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let ours = n
                    .strip_prefix(&prefix)
                    .is_some_and(|seq| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()));
                if ours && Some(n.as_str()) != keep {
                    if let Err(e) = subvol_delete(&self.root, &n) {
                        tracing::warn!(slot = %name, snapshot = %n, error = %e, "deleting a checkpoint snapshot failed");
                    }
                }
            }
        }
        if keep.is_none() {
            let _ = std::fs::remove_file(self.checkpoint_path(name));
        }
    }
}

pub(super) fn preserve_owners() -> bool {
    nix::unistd::geteuid().is_root()
}

pub(super) const EXTRACT_CHECKPOINT_VERSION: u32 = 1;

/// Where an interrupted extraction can continue: `<slots dir>/.<slot>.extract.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExtractCheckpoint {
    pub(super) version: u32,
    pub(super) request: StageRequest,
    pub(super) slot: String,
    pub(super) allow_device_nodes: bool,
    pub(super) preserve_owners: bool,
    /// Snapshot of the partial tree taken at the boundary (`.<slot>.cp.<seq>`).
    pub(super) snapshot: String,
    pub(super) seq: u64,
    /// Archive offset of the next entry's first header.
    pub(super) boundary_offset: u64,
    /// Entries extracted before the boundary.
    pub(super) entries: u64,
    /// Where the stream restarts (at or before the boundary).
    pub(super) mark: Mark,
}

/// Crash-test hook: `PATCHD_FAILPOINT=NAME[#N]` aborts the process the Nth time NAME is
/// reached (feature `failpoints` only, see `crate::failpoint`).
#[cfg(feature = "failpoints")]
pub(super) fn failpoint(name: &str) {
    static FP: std::sync::OnceLock<crate::failpoint::FailPoints> = std::sync::OnceLock::new();
    FP.get_or_init(crate::failpoint::FailPoints::from_env)
        .hit(name);
}

#[cfg(not(feature = "failpoints"))]
pub(super) fn failpoint(_name: &str) {}

/// Saves extraction checkpoints at entry boundaries.
pub(super) struct Checkpointer<'a, R> {
    pub(super) ctx: &'a WorkerCtx,
    pub(super) stream: ArchiveStream<R>,
    pub(super) seq: u64,
    pub(super) last: u64,
    pub(super) saved: u64,
    pub(super) started: Instant,
    /// Why a checkpoint failed (the extractor only carries an `io::Error`).
    pub(super) failed: Option<StageError>,
}

impl<R: Read> Checkpointer<'_, R> {
    pub(super) fn at_boundary(&mut self, b: Boundary) -> io::Result<()> {
        failpoint("tar.entry");
        if b.offset.saturating_sub(self.last) < self.ctx.opts.checkpoint_every {
            return Ok(());
        }
        let Some(mark) = self.stream.mark_at_or_before(b.offset) else {
            return Ok(());
        };
        if let Err(e) = self.save(b, mark) {
            let what = format!(
                "checkpointing the extraction into {}",
                self.ctx.dest.display()
            );
            let msg = e.to_string();
            self.failed = Some(StageError::Io { what, source: e });
            return Err(io::Error::other(msg));
        }
        emit(
            &self.ctx.progress,
            Phase::Write,
            b.offset,
            self.ctx.req.size,
            self.started,
        );
        Ok(())
    }

    pub(super) fn save(&mut self, b: Boundary, mark: Mark) -> io::Result<()> {
        let ctx = self.ctx;
        // Durable order: the transfer up to the mark, the tree, its snapshot, then the
        // record naming them; the previous snapshot goes only once nothing refers to it.
        self.stream.sync_download()?;
        sync_fs(&ctx.dest)?;
        let seq = self.seq + 1;
        let snap = BtrfsSlots::snapshot_name(&ctx.name, seq);
        if ctx.root.join(&snap).exists() {
            subvol_delete(&ctx.root, &snap)?; // left by a run that died before its record
        }
        snapshot_create(&ctx.dest, &ctx.root, &snap)?;
        sync_fs(&ctx.root)?;
        failpoint("tar.checkpoint.snapshot");
        let cp = ExtractCheckpoint {
            version: EXTRACT_CHECKPOINT_VERSION,
            request: ctx.req.clone(),
            slot: ctx.name.to_string(),
            allow_device_nodes: ctx.policy.allow_device_nodes,
            preserve_owners: preserve_owners(),
            snapshot: snap,
            seq,
            boundary_offset: b.offset,
            entries: b.entries,
            mark,
        };
        let bytes = serde_json::to_vec(&cp).map_err(io::Error::other)?;
        fsutil::atomic_write(
            &ctx.root.join(format!(".{}.extract.json", ctx.name)),
            &bytes,
        )?;
        failpoint("tar.checkpoint.saved");
        if self.seq > 0 {
            let old = BtrfsSlots::snapshot_name(&ctx.name, self.seq);
            if let Err(e) = subvol_delete(&ctx.root, &old) {
                tracing::warn!(slot = %ctx.name, snapshot = %old, error = %e, "deleting an old checkpoint snapshot failed");
            }
        }
        tracing::debug!(slot = %ctx.name, seq, offset = b.offset, entries = b.entries, "extraction checkpoint saved");
        self.seq = seq;
        self.last = b.offset;
        self.saved += 1;
        Ok(())
    }
}
