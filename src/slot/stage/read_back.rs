//! Read-back: the content hash taken from the medium right behind the writer, and the
//! check of a slot's whole content against a hash after the fact.

use std::time::{Duration, Instant};

use super::hashes::{ContentHash, Digests};
use super::msg::{Stop, Written};
use super::request::{emit, slot_io, CancelToken, Phase, ProgressFn, StageError, StageRequest};
use super::RawSlot;
use crate::slot::direct::SlotReader;
use crate::slot::SlotError;

/// Read-back request size (aligned for O_DIRECT).
pub(super) const READ_BACK_CHUNK: usize = 512 << 10;

/// The read-back: reads what the writer wrote from the medium (O_DIRECT, right behind
/// the writer; without O_DIRECT only after the final sync and a page-cache drop) and
/// hashes it.
///
/// Reading each window as soon as its write completed is as strong as one pass after the
/// whole write: a window is only requested once the writer's write of it returned (a
/// direct write returns when the device accepted it; a buffered one is written back by
/// the kernel before a direct read of the same range), so the read returns what the
/// device holds for those blocks — exactly what a later pass would read. The final fsync,
/// done before the slot is recorded `verified`, only makes the device's volatile cache
/// durable; it does not change what a read sees, and the old read-back after the fsync
/// also could only see what the device returned.
#[allow(clippy::too_many_arguments)]
pub(super) fn read_back_thread(
    slot: &dyn RawSlot,
    req: &StageRequest,
    mut rd: SlotReader,
    start: u64,
    rx: std::sync::mpsc::Receiver<Written>,
    mut hash: ContentHash,
    progress: Option<ProgressFn>,
    cancel: &CancelToken,
) -> Result<Option<Digests>, Stop> {
    let started = Instant::now();
    let mut last_emit = Instant::now();
    let mut pos = start;
    let mut avail = start;
    let mut done = false;
    if !rd.is_direct() {
        loop {
            match rx.recv() {
                Ok(Written::UpTo(_)) => {}
                Ok(Written::Final) => break,
                Err(_) => return Err(Stop::PeerGone),
            }
        }
        done = true;
        avail = req.size;
        slot.drop_cache(rd.file(), req.size)
            .map_err(|e| slot_io(slot, "dropping page cache of", e))?;
    }
    while pos < req.size {
        let want = (pos + READ_BACK_CHUNK as u64).min(req.size);
        while avail < want && !done {
            match rx.recv() {
                Ok(Written::UpTo(n)) => avail = n,
                Ok(Written::Final) => {
                    done = true;
                    avail = req.size;
                }
                Err(_) => return Err(Stop::PeerGone),
            }
        }
        if cancel.is_cancelled() {
            return Err(Stop::Failed(StageError::Cancelled {
                path: req.path.clone(),
            }));
        }
        rd.read_range(pos, want - pos, |d| hash.update(d))
            .map_err(|e| slot_io(slot, "reading back", e))?;
        pos = want;
        if last_emit.elapsed() >= Duration::from_millis(250) {
            emit(&progress, Phase::ReadBack, pos, req.size, started);
            last_emit = Instant::now();
        }
    }
    emit(&progress, Phase::ReadBack, pos, req.size, started);
    Ok(Some(hash.finish()))
}

/// Whether the read-back of `slot` bypasses the page cache with `O_DIRECT` (otherwise it
/// uses buffered reads after dropping the cache, and logs why).
pub fn supports_direct_read(slot: &dyn RawSlot) -> Result<bool, SlotError> {
    Ok(SlotReader::open(slot)?.is_direct())
}

/// Read a slot's content back from the medium and compare it with `sha256` (for a
/// staged slot before it is switched to, or after a suspicious shutdown). Uses O_DIRECT
/// where the slot supports it, else drops the page cache first.
pub fn verify_slot_content(slot: &dyn RawSlot, size: u64, sha256: &str) -> Result<(), StageError> {
    let mut rd = SlotReader::open(slot)?;
    if !rd.is_direct() {
        slot.drop_cache(rd.file(), size)
            .map_err(|e| slot_io(slot, "dropping page cache of", e))?;
    }
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    rd.read_range(0, size, |d| h.update(d))
        .map_err(|e| slot_io(slot, "reading back", e))?;
    let got = hex::encode(h.finish());
    if got.eq_ignore_ascii_case(sha256) {
        Ok(())
    } else {
        Err(StageError::HashMismatch {
            path: format!("slot {}", slot.name()),
            which: "read-back sha256",
            expected: sha256.to_ascii_lowercase(),
            actual: got,
        })
    }
}
