//! The [`SlotBackend`] of every backend whose content is one byte range ([`RawSlot`]):
//! the raw staging pipeline, its checks, its read-back. A backend implements [`RawSlot`]
//! (its safety checks live in `open_for_write`) and gets the write path from here.

use std::sync::Arc;

use super::raw::RawSlot;
use super::stage::{stage_image, verify_slot_content, ImageFormat, StageError, StageRequest};
use super::{SlotBackend, SlotError, SlotStatus, StageJob};
use crate::fetch::BoxFuture;

impl<S: RawSlot + Clone + 'static> SlotBackend for S {
    fn takes(&self) -> ImageFormat {
        ImageFormat::Raw
    }

    /// A raw image, and the backend's checks of `open_for_write` (the descriptor is closed
    /// again; the pipeline opens its own).
    fn prepare(&self, req: &StageRequest) -> Result<(), StageError> {
        req.validate()?;
        if req.format != ImageFormat::Raw {
            return Err(StageError::BadRequest {
                why: format!("slot {} takes raw images, not tar archives", self.name()),
            });
        }
        self.open_for_write(req.size)?;
        Ok(())
    }

    /// The raw staging pipeline (it needs an owned handle, the threads outlive the borrow).
    fn stage<'a>(&'a self, job: StageJob<'a>) -> BoxFuture<'a, Result<SlotStatus, StageError>> {
        let slot: Arc<dyn RawSlot> = Arc::new(self.clone());
        Box::pin(stage_image(
            job.req,
            job.source,
            slot,
            job.opts,
            job.progress,
            job.cancel,
        ))
    }

    /// The record must describe verified content, which is read back from the medium and
    /// hashed.
    fn verify(&self) -> Result<(), StageError> {
        let st = self.store().load()?;
        let (Some(sha256), Some(size), true) = (&st.sha256, st.size, st.state.is_bootable()) else {
            return Err(StageError::Slot(SlotError::refused(
                self.name(),
                format!("its record describes no verified content ({:?})", st.state),
            )));
        };
        verify_slot_content(self, size, sha256)
    }

    fn byte_range(&self) -> Option<Arc<dyn RawSlot>> {
        Some(Arc::new(self.clone()))
    }
}
