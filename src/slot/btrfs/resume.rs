//! Resume of an interrupted extraction: the checkpoint record, whether it still fits,
//! and the snapshots of the partial tree it names.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::subvol::subvol_delete;
use super::BtrfsSlots;
use crate::names::SlotName;
use crate::slot::stage::StageRequest;
use crate::slot::tarstream::Mark;

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
