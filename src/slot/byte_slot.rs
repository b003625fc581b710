//! The [`SlotBackend`](super::SlotBackend) steps every backend whose content is one byte
//! range ([`RawSlot`]) shares: the raw staging pipeline, its checks, its read-back.

use std::sync::Arc;

use super::raw::RawSlot;
use super::stage::{
    stage_image, verify_slot_content, CancelToken, ImageFormat, ProgressFn, StageError,
    StageOptions, StageRequest,
};
use super::{SlotError, SlotStatus};
use crate::fetch::{BoxFuture, ByteSource};

/// [`SlotBackend::prepare`](super::SlotBackend::prepare) of a byte-range slot: a raw
/// image, and the backend's checks of `open_for_write` (the descriptor is closed again;
/// the pipeline opens its own).
pub(super) fn prepare(slot: &dyn RawSlot, req: &StageRequest) -> Result<(), StageError> {
    req.validate()?;
    if req.format != ImageFormat::Raw {
        return Err(StageError::BadRequest {
            why: format!("slot {} takes raw images, not tar archives", slot.name()),
        });
    }
    slot.open_for_write(req.size)?;
    Ok(())
}

/// [`SlotBackend::verify`](super::SlotBackend::verify) of a byte-range slot: its record
/// must describe verified content, which is read back from the medium and hashed.
pub(super) fn verify(slot: &dyn RawSlot) -> Result<(), StageError> {
    let st = slot.store().load()?;
    let (Some(sha256), Some(size), true) = (&st.sha256, st.size, st.state.is_bootable()) else {
        return Err(StageError::Slot(SlotError::Refused {
            slot: slot.name().clone(),
            why: format!("its record describes no verified content ({:?})", st.state),
        }));
    };
    verify_slot_content(slot, size, sha256)
}

/// [`SlotBackend::stage`](super::SlotBackend::stage) of a byte-range slot: the raw
/// staging pipeline (it needs an owned handle, the threads outlive the borrow).
pub(super) fn stage<'a, S: RawSlot + Clone + 'static>(
    slot: &S,
    req: &'a StageRequest,
    source: &'a dyn ByteSource,
    opts: &'a StageOptions,
    progress: Option<ProgressFn>,
    cancel: &'a CancelToken,
) -> BoxFuture<'a, Result<SlotStatus, StageError>> {
    let slot: Arc<dyn RawSlot> = Arc::new(slot.clone());
    Box::pin(stage_image(req, source, slot, opts, progress, cancel))
}
