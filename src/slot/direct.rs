//! Reading a slot back from the medium, not from the page cache.
//!
//! The descriptor from [`RawSlot::open_for_read`] is switched to `O_DIRECT` with
//! `fcntl(F_SETFL)`; reads then use one aligned buffer at aligned offsets. A direct read
//! of a range the writer still has dirty in the page cache makes the kernel write that
//! range back first, so the read-back can follow the writer closely and still read what
//! the device returns. Filesystems without direct I/O refuse the flag; the reader then
//! falls back to buffered reads (the caller drops the page cache first) and logs why.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use super::raw::RawSlot;
use super::SlotError;

/// Alignment for `O_DIRECT` buffers, offsets and lengths (covers 512 and 4096-byte
/// logical blocks).
pub(super) const ALIGN: usize = 4096;

/// A heap buffer whose usable part starts on an `ALIGN` boundary.
pub(super) struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub(super) fn new(len: usize) -> Self {
        let len = len.div_ceil(ALIGN).max(1) * ALIGN;
        let raw = vec![0u8; len + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        Self { raw, start, len }
    }
    pub(super) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
    pub(super) fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

/// Reads a slot's content from the medium.
pub(super) struct SlotReader {
    file: File,
    direct: bool,
    buf: AlignedBuf,
}

impl SlotReader {
    pub(super) fn open(slot: &dyn RawSlot) -> Result<Self, SlotError> {
        let file = slot.open_for_read()?;
        let direct = match set_direct(&file) {
            Ok(()) => true,
            Err(e) => {
                tracing::info!(slot = %slot.name(), reason = %e,
                    "O_DIRECT not supported here; read-back uses buffered reads after dropping the page cache");
                false
            }
        };
        Ok(Self {
            file,
            direct,
            buf: AlignedBuf::new(512 << 10),
        })
    }

    pub(super) fn is_direct(&self) -> bool {
        self.direct
    }

    pub(super) fn file(&self) -> &File {
        &self.file
    }

    /// Feed the bytes `off..off + len` to `sink`, in order.
    pub(super) fn read_range(
        &mut self,
        off: u64,
        len: u64,
        mut sink: impl FnMut(&[u8]),
    ) -> io::Result<()> {
        let end = off
            .checked_add(len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "range overflows"))?;
        let align = ALIGN as u64;
        // Direct reads start on a block boundary; the bytes before `off` are skipped.
        let mut pos = if self.direct {
            off / align * align
        } else {
            off
        };
        let buf = self.buf.as_mut_slice();
        while pos < end {
            let want = if self.direct {
                ((end - pos).div_ceil(align) * align).min(buf.len() as u64) as usize
            } else {
                (end - pos).min(buf.len() as u64) as usize
            };
            let n = match self.file.read_at(&mut buf[..want], pos) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let got_end = pos + n as u64;
            let lo = off.saturating_sub(pos) as usize;
            let hi = (got_end.min(end) - pos) as usize;
            if hi > lo {
                sink(&buf[lo..hi]);
            }
            if self.direct && n % ALIGN != 0 && got_end < end {
                // A short direct read that is not block-sized only happens at the end of
                // a file; the next offset would be unaligned.
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            pos = got_end;
        }
        Ok(())
    }
}

/// Switch an open descriptor to direct I/O.
fn set_direct(f: &File) -> io::Result<()> {
    set_direct_flag(f, true)
}

/// Turn `O_DIRECT` on or off for an open descriptor (the writer switches it off for the
/// unaligned head or tail of an image).
pub(super) fn set_direct_flag(f: &File, on: bool) -> io::Result<()> {
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own; no pointers involved.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    if new != flags && unsafe { libc::fcntl(fd, libc::F_SETFL, new) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes the content to the slot, with `O_DIRECT` wherever a write is block-aligned
/// (offset, length and buffer), buffered otherwise (the unaligned tail of an image, or a
/// resume that starts inside a block). Direct writes skip the copy into the page cache and
/// leave nothing dirty for the final sync to write back; a filesystem that refuses direct
/// I/O gets buffered writes throughout (logged once).
pub(super) struct DirectWriter {
    /// `Some(true)`: the descriptor has `O_DIRECT` set; `None`: direct I/O unavailable.
    direct: Option<bool>,
}

impl DirectWriter {
    pub(super) fn new() -> Self {
        Self {
            direct: Some(false),
        }
    }

    /// Write `data` at `off` (the descriptor's position is not used).
    pub(super) fn write_at(&mut self, f: &File, data: &[u8], off: u64) -> io::Result<()> {
        let aligned = off % ALIGN as u64 == 0
            && data.len() % ALIGN == 0
            && (data.as_ptr() as usize) % ALIGN == 0;
        if self.direct.is_some() {
            self.mode(f, aligned)?;
        }
        match f.write_all_at(data, off) {
            Err(e) if self.direct == Some(true) && e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::info!(reason = %e, "direct writes refused here; writing through the page cache");
                self.mode(f, false)?;
                self.direct = None;
                f.write_all_at(data, off)
            }
            r => r,
        }
    }

    fn mode(&mut self, f: &File, on: bool) -> io::Result<()> {
        if self.direct == Some(on) {
            return Ok(());
        }
        match set_direct_flag(f, on) {
            Ok(()) => self.direct = Some(on),
            Err(e) if on => {
                tracing::info!(reason = %e, "O_DIRECT not supported here; writing through the page cache");
                self.direct = None;
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffer_is_aligned() {
        for n in [1, 4096, 5000, 1 << 20] {
            let mut b = AlignedBuf::new(n);
            let s = b.as_mut_slice();
            assert_eq!(s.as_ptr() as usize % ALIGN, 0);
            assert!(s.len() >= n && s.len() % ALIGN == 0);
        }
    }

    /// Aligned pieces go direct, an unaligned head and tail through the page cache; the
    /// file ends up with exactly the bytes written, wherever direct I/O is available or not.
    #[test]
    fn direct_writer_mixes_aligned_and_unaligned_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let total = 3 * ALIGN + 1000;
        f.set_len(total as u64).unwrap();
        let data: Vec<u8> = (0..total).map(|i| (i * 7 % 251) as u8).collect();
        let mut buf = AlignedBuf::new(2 * ALIGN);
        let mut w = DirectWriter::new();
        // Unaligned head (offset 0, 100 bytes), then an unaligned middle piece up to the
        // next block, an aligned two-block piece from an aligned buffer, and the tail.
        w.write_at(&f, &data[..100], 0).unwrap();
        w.write_at(&f, &data[100..ALIGN], 100).unwrap();
        buf.as_mut_slice().copy_from_slice(&data[ALIGN..3 * ALIGN]);
        w.write_at(&f, buf.as_slice(), ALIGN as u64).unwrap();
        w.write_at(&f, &data[3 * ALIGN..], 3 * ALIGN as u64)
            .unwrap();
        f.sync_all().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }
}
