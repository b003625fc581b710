//! A slot whose content is one contiguous byte range (block device, image file): what the
//! staging pipeline and the direct reader need from it.

use std::fs::File;
use std::io;
use std::path::Path;

use super::status::StatusStore;
use super::{Slot, SlotError};
use crate::names::SlotName;

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

/// [`RawSlot::open_for_read`] of the slot `name` whose content is the file or device at
/// `path`, opened with the extra `flags`.
pub(super) fn open_read_only(name: &SlotName, path: &Path, flags: i32) -> Result<File, SlotError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| SlotError::io(name, e))
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
