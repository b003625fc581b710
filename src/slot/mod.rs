//! Slots: where images land (block device A/B, image file, btrfs subvolume).
//!
//! Contract the engine relies on (see `shared/DESIGN.md`):
//! - a slot whose status is not `Verified` or `Good` is never selected for boot;
//! - the booted slot is never written;
//! - a slot becomes `Verified` only after its full content matched the signed hash.
//!
//! Two traits: [`Slot`] describes and flags a slot (all the engine's state machine
//! needs); [`SlotBackend`] adds the whole write path of one backend — prepare, stage a
//! verified source, read back. The configured backends are built by [`open`] from the
//! list in `open.rs`.

use std::sync::Arc;

use jiff::Timestamp;

/// [`Slot`] for a backend that keeps its `name` and its status record (`store`, a
/// [`StatusStore`]) as fields: the record is the slot's state, and the store refuses
/// illegal moves.
macro_rules! slot_recorded_in_store {
    ($ty:ty, $kind:literal) => {
        impl $crate::slot::Slot for $ty {
            fn name(&self) -> &$crate::names::SlotName {
                &self.name
            }
            fn kind(&self) -> &'static str {
                $kind
            }
            fn status(&self) -> Result<$crate::slot::SlotStatus, $crate::slot::SlotError> {
                self.store.load()
            }
            fn set_state(
                &self,
                state: $crate::slot::SlotState,
            ) -> Result<$crate::slot::SlotStatus, $crate::slot::SlotError> {
                self.store.set_state(state)
            }
        }
    };
}

mod block;
mod btrfs;
mod byte_slot;
mod cache;
mod config;
mod direct;
pub mod extract;
mod file;
mod open;
mod raw;
pub mod sha;
pub mod stage;
mod status;
mod tarstream;
mod tee;

pub use block::BlockSlot;
pub use btrfs::{BtrfsSlot, BtrfsSlots, TarStageReport};
pub use cache::{stage_image_cached, DownloadCache};
pub use config::{SlotEntry, SlotKind, SlotsConfig};
pub use file::ImageFileSlot;
pub use open::open;
pub use raw::RawSlot;
use serde::{Deserialize, Serialize};
pub use stage::{
    stage_image, supports_direct_read, verify_slot_content, CancelToken, Compression, ImageFormat,
    Phase, ProgressFn, StageError, StageOptions, StageProgress, StageRequest,
};
pub use status::StatusStore;

use crate::fetch::{BoxFuture, ByteSource};
use crate::names::SlotName;
use crate::paths::Paths;

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

/// One slot as the engine's state machine sees it: it describes and flags the slot.
/// Writing is [`SlotBackend`]'s job.
pub trait Slot: Send + Sync {
    fn name(&self) -> &SlotName;
    /// Backend kind for inventory and logs: `block`, `file`, `btrfs`.
    fn kind(&self) -> &'static str;
    fn status(&self) -> Result<SlotStatus, SlotError>;
    /// Change the recorded state (e.g. `Good` after commit, `Bad` after a failed boot).
    /// Moving to `Verified`/`Good` is refused unless the content was verified.
    fn set_state(&self, state: SlotState) -> Result<SlotStatus, SlotError>;
}

/// A slot backend that owns its whole write path (block device, image file, btrfs
/// subvolume). The engine stages through this trait only.
///
/// Making a slot unbootable before its first byte changes is two steps in two rooms. The
/// bootloader's flags are the bootloader's: the engine fences the target with
/// `Bootloader::mark_bad` before staging starts (a slot cannot see or change boot
/// flags, and a fallback the bootloader still offers would boot a half-written slot).
/// The slot's own record is the backend's: it turns `incomplete` just before the first
/// byte is written (inside [`SlotBackend::stage`], or the delta writer), not in
/// [`SlotBackend::prepare`], so a failure before any write — a refused slot, an
/// unreachable source — leaves a record that still describes the content.
/// One staging run: the verified request, where its bytes come from, and how it runs.
pub struct StageJob<'a> {
    pub req: &'a StageRequest,
    pub source: &'a dyn ByteSource,
    pub opts: &'a StageOptions,
    pub progress: Option<ProgressFn>,
    pub cancel: &'a CancelToken,
}

pub trait SlotBackend: Slot {
    /// Which of a release's images this slot takes: a raw byte image or a tar tree.
    fn takes(&self) -> ImageFormat;

    /// Before anything is fetched: the request is well-formed and of the format this slot
    /// takes, and the backend's refusals (the booted or rollback slot, a mounted device,
    /// an image larger than the slot) hold. Changes nothing that describes the content.
    fn prepare(&self, req: &StageRequest) -> Result<(), StageError>;

    /// Stage `req` from `source`, verified against the signed hashes on the way; on
    /// success the record says `verified`. A failure after the first write leaves it
    /// `incomplete`; called again with the same request, an interrupted run resumes from
    /// its checkpoint.
    fn stage<'a>(&'a self, job: StageJob<'a>) -> BoxFuture<'a, Result<SlotStatus, StageError>>;

    /// Check the installed content against its record (read back from the medium where
    /// the content is bytes; a tree, whose signed hash is its archive's, is checked for
    /// being there).
    fn verify(&self) -> Result<(), StageError>;

    /// The content as one byte range, for backends that have one: a delta update writes
    /// into it and takes its base from another slot's. Tree backends return `None` and
    /// take full archives only.
    fn byte_range(&self) -> Option<Arc<dyn RawSlot>>;
}

/// How one backend reads its `[slots]` entries.
trait Opener: Sync {
    /// The backend's rules for its entries, checked when the configuration loads (no
    /// filesystem access).
    fn check(&self, cfg: &SlotsConfig) -> Result<(), String>;
    /// The configured slots, each knowing whether it is `booted` (never written). Checks
    /// that need the device (a directory on the right filesystem) fail here, at start.
    fn open(
        &self,
        cfg: &SlotsConfig,
        paths: &Paths,
        booted: &SlotName,
    ) -> Result<Vec<Arc<dyn SlotBackend>>, SlotError>;
}

/// The engine's view of a backend. (Trait upcasting would do this, but needs Rust 1.86;
/// the crate builds with 1.85.)
pub fn engine_view(backend: Arc<dyn SlotBackend>) -> Arc<dyn Slot> {
    Arc::new(EngineView(backend))
}

struct EngineView(Arc<dyn SlotBackend>);

impl Slot for EngineView {
    fn name(&self) -> &SlotName {
        self.0.name()
    }
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    fn status(&self) -> Result<SlotStatus, SlotError> {
        self.0.status()
    }
    fn set_state(&self, state: SlotState) -> Result<SlotStatus, SlotError> {
        self.0.set_state(state)
    }
}

impl SlotError {
    pub(crate) fn io(slot: &SlotName, source: std::io::Error) -> Self {
        SlotError::Io {
            slot: slot.clone(),
            source,
        }
    }

    pub(crate) fn refused(slot: &SlotName, why: impl Into<String>) -> Self {
        SlotError::Refused {
            slot: slot.clone(),
            why: why.into(),
        }
    }
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
    /// `[slots]` does not describe usable slots.
    #[error("{why}")]
    Config { why: String },
    /// The directory a backend keeps its slots in is unusable.
    #[error("[slots] dir {}: {source}", dir.display())]
    Dir {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}
