//! What the pipeline's threads tell each other.

use super::request::StageError;
use super::resume::Segment;
use crate::slot::direct::AlignedBuf;
use crate::slot::SlotError;

/// Why a pipeline thread stopped without a result of its own.
pub(super) enum Stop {
    Failed(StageError),
    /// A neighbouring stage went away; its own result says why.
    PeerGone,
}

impl From<StageError> for Stop {
    fn from(e: StageError) -> Self {
        Stop::Failed(e)
    }
}

impl From<SlotError> for Stop {
    fn from(e: SlotError) -> Self {
        Stop::Failed(e.into())
    }
}

/// Content flowing from the decoder to the writer.
pub(super) enum Msg {
    Data(AlignedBuf, usize),
    /// A zstd frame ended here: a place where a checkpoint can resume decoding.
    FrameEnd(Segment),
}

/// What the writer tells the read-back thread.
pub(super) enum Written {
    /// Content bytes `0..n` are written.
    UpTo(u64),
    /// Everything written and synced.
    Final,
}
