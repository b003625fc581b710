//! Slots: where images land (block device A/B, image file, btrfs subvolume).
//!
//! Contract the engine relies on (see `shared/DESIGN.md`):
//! - a slot whose status is not `Verified` or `Good` is never selected for boot;
//! - the booted slot is never written;
//! - a slot becomes `Verified` only after its full content matched the signed hash.

use jiff::Timestamp;

mod block;
mod btrfs;
mod cache;
mod config;
mod direct;
pub mod extract;
mod file;
mod raw;
pub mod sha;
pub mod stage;
mod status;
mod tarstream;
mod tee;

pub use block::BlockSlot;
pub use btrfs::{BtrfsSlot, BtrfsSlots, TarStageReport};
pub use cache::{stage_image_cached, DownloadCache};
pub use config::{SlotBackend, SlotEntry, SlotsConfig};
pub use file::ImageFileSlot;
use serde::{Deserialize, Serialize};
pub use stage::{
    stage_image, supports_direct_read, verify_slot_content, CancelToken, Compression, ImageFormat,
    Phase, ProgressFn, RawSlot, StageError, StageOptions, StageProgress, StageRequest,
};
pub use status::StatusStore;

use crate::names::SlotName;

/// Life of a slot's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotState {
    /// Nothing installed (or content unknown).
    Empty,
    /// A write started and did not finish verification; never bootable.
    Incomplete,
    /// Full content verified against the signed manifest; may be tried once.
    Verified,
    /// Booted and passed health checks.
    Good,
    /// Failed to boot or failed health checks; never chosen again until reinstalled.
    Bad,
}

impl SlotState {
    pub fn is_bootable(self) -> bool {
        matches!(self, SlotState::Verified | SlotState::Good)
    }
}

/// The small per-slot status record, stored atomically next to the patchd state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotStatus {
    pub slot: SlotName,
    pub state: SlotState,
    pub version: Option<String>,
    /// sha256 (hex) of the slot content as installed (uncompressed image or tar archive).
    pub sha256: Option<String>,
    pub size: Option<u64>,
    pub installed_at: Option<Timestamp>,
}

impl SlotStatus {
    pub fn empty(slot: SlotName) -> Self {
        Self {
            slot,
            state: SlotState::Empty,
            version: None,
            sha256: None,
            size: None,
            installed_at: None,
        }
    }
}

/// One slot backend as the engine sees it. Writing images is done by the staging pipeline
/// in this module; these methods only describe and flag a slot.
pub trait Slot: Send + Sync {
    fn name(&self) -> &SlotName;
    /// Backend kind for inventory and logs: `block`, `file`, `btrfs`.
    fn kind(&self) -> &'static str;
    fn status(&self) -> Result<SlotStatus, SlotError>;
    /// Change the recorded state (e.g. `Good` after commit, `Bad` after a failed boot).
    /// Moving to `Verified`/`Good` is refused unless the content was verified.
    fn set_state(&self, state: SlotState) -> Result<SlotStatus, SlotError>;
}

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("slot {slot}: {source}")]
    Io {
        slot: SlotName,
        #[source]
        source: std::io::Error,
    },
    #[error("slot {slot}: status record {path}: {why}")]
    BadStatus {
        slot: SlotName,
        path: String,
        why: String,
    },
    #[error("slot {slot}: cannot change state from {from:?} to {to:?}")]
    IllegalState {
        slot: SlotName,
        from: SlotState,
        to: SlotState,
    },
    #[error("slot {slot}: {why}")]
    Refused { slot: SlotName, why: String },
}
