//! A slot whose content is one contiguous byte range (block device, image file): what the
//! staging pipeline and the direct reader need from it, and the [`super::SlotBackend`]
//! steps every such backend shares.

use std::fs::File;
use std::io;
use std::sync::Arc;

use super::stage::{
    stage_image, verify_slot_content, CancelToken, ImageFormat, ProgressFn, StageError,
    StageOptions, StageRequest,
};
use super::status::StatusStore;
use super::{Slot, SlotError, SlotStatus};
use crate::fetch::{BoxFuture, ByteSource};

/// A slot whose content is one contiguous byte range: a block device or an image file.
pub trait RawSlot: Slot {
    fn store(&self) -> &StatusStore;
    /// Open for writing an image of `size` bytes, after the backend's safety checks
    /// (not the booted slot, not mounted, large enough).
    fn open_for_write(&self, size: u64) -> Result<File, SlotError>;
    /// Open for reading the written content back.
    fn open_for_read(&self) -> Result<File, SlotError>;
    /// Make the next reads of `0..len` come from the medium, not the page cache.
    fn drop_cache(&self, f: &File, len: u64) -> io::Result<()> {
        drop_page_cache(f, len)
    }
}

/// `posix_fadvise(DONTNEED)` after an fsync: the clean pages are dropped, so reads go to
/// the medium.
pub fn drop_page_cache(f: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    // SAFETY: plain syscall on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, len, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

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
