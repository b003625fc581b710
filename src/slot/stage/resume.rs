//! Resume: the checkpoint record of a raw staging run, and the preparation that checks a
//! previous run's written prefix segment by segment before continuing after it.

use std::fs::File;
use std::io;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::hashes::{ContentHash, TransferHash};
use super::request::{
    emit, slot_io, CancelToken, Compression, Phase, ProgressFn, StageError, StageOptions,
    StageRequest,
};
use super::RawSlot;
use crate::fsutil;
use crate::slot::direct::SlotReader;
use crate::slot::status::StatusStore;

/// Resume record: `<state_dir>/slots/<slot>.stage.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Checkpoint {
    pub(super) version: u32,
    pub(super) request: StageRequest,
    /// Content bytes covered by `segments` (for people and tests reading the file).
    pub(super) content_offset: u64,
    pub(super) segments: Vec<Segment>,
}

/// One durable piece of content: written, synced, and where the transfer stood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Segment {
    /// Content offset at the end of this segment.
    pub(super) content_end: u64,
    /// Transfer offset at the end (equal to `content_end` for uncompressed images; a zstd
    /// frame boundary for compressed ones).
    pub(super) transfer_end: u64,
    /// CRC32 of the content bytes of this segment, to find damage before resuming.
    pub(super) crc: u32,
    /// Compressed images: the transfer hashes over `0..transfer_end`.
    pub(super) transfer_hash: Option<TransferHash>,
}

pub(super) const CHECKPOINT_VERSION: u32 = 2;

impl Checkpoint {
    pub(super) fn new(req: &StageRequest) -> Self {
        Self {
            version: CHECKPOINT_VERSION,
            request: req.clone(),
            content_offset: 0,
            segments: Vec::new(),
        }
    }
}

/// Where a run starts: after the last good segment of a previous run, or at 0.
#[derive(Debug, Clone, Default)]
pub(super) struct ResumePoint {
    pub(super) content_end: u64,
    pub(super) transfer_end: u64,
}

pub(super) struct Prepared {
    pub(super) file: File,
    /// `None` when read-back is off.
    pub(super) reader: Option<SlotReader>,
    pub(super) resume: ResumePoint,
    pub(super) transfer_hash: Option<TransferHash>,
    pub(super) content_hash: ContentHash,
    pub(super) checkpoint: Checkpoint,
}

pub(super) fn prepare(
    req: &StageRequest,
    slot: &dyn RawSlot,
    opts: &StageOptions,
    progress: Option<ProgressFn>,
    cancel: &CancelToken,
) -> Result<Prepared, StageError> {
    let store = slot.store();
    let cp_path = store.checkpoint_path();
    let previous: Option<Checkpoint> = std::fs::read(&cp_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|c: &Checkpoint| c.version == CHECKPOINT_VERSION && c.request == *req);
    let current = store.load()?;
    // The backend's safety checks (booted, mounted, capacity) before anything else.
    let file = slot.open_for_write(req.size)?;
    let compressed = req.compression != Compression::None;
    let mut transfer_hash = compressed.then(|| TransferHash::new(req));
    let mut content_hash = ContentHash::new(req);
    let mut checkpoint = Checkpoint::new(req);
    let mut resume = ResumePoint::default();
    let previous = previous.filter(|_| current.state == crate::slot::SlotState::Incomplete);
    let mut reader = if opts.read_back || previous.is_some() {
        Some(SlotReader::open(slot)?)
    } else {
        None
    };
    if let (Some(prev), Some(rd)) = (previous, reader.as_mut()) {
        // Re-read what was written before the interruption (from the medium), check it
        // against the segment CRCs and rebuild the content hash from it.
        if !rd.is_direct() {
            slot.drop_cache(rd.file(), req.size)
                .map_err(|e| slot_io(slot, "dropping page cache of", e))?;
        }
        let started = Instant::now();
        for (i, seg) in prev.segments.iter().enumerate() {
            if cancel.is_cancelled() {
                return Err(StageError::Cancelled {
                    path: req.path.clone(),
                });
            }
            let sane = seg.content_end > resume.content_end
                && seg.content_end <= req.size
                && seg.transfer_end > resume.transfer_end
                && seg.transfer_end <= req.length
                && match &seg.transfer_hash {
                    Some(h) => compressed && h.fits(req, seg.transfer_end),
                    None => !compressed && seg.transfer_end == seg.content_end,
                };
            if !sane {
                tracing::warn!(slot = %slot.name(), segment = i, "checkpoint segment is inconsistent, resuming before it");
                break;
            }
            let mut crc = crc32fast::Hasher::new();
            let mut h = content_hash.clone();
            rd.read_range(
                resume.content_end,
                seg.content_end - resume.content_end,
                |d| {
                    crc.update(d);
                    h.update(d);
                },
            )
            .map_err(|e| slot_io(slot, "re-reading", e))?;
            if crc.finalize() != seg.crc {
                tracing::warn!(slot = %slot.name(), segment = i, "written content does not match its checkpoint, resuming before it");
                break;
            }
            content_hash = h;
            resume = ResumePoint {
                content_end: seg.content_end,
                transfer_end: seg.transfer_end,
            };
            if let Some(t) = &seg.transfer_hash {
                transfer_hash = Some(t.clone());
            }
            checkpoint.segments.push(seg.clone());
            checkpoint.content_offset = seg.content_end;
            emit(
                &progress,
                Phase::Resume,
                resume.content_end,
                req.size,
                started,
            );
        }
        tracing::info!(slot = %slot.name(), content = resume.content_end, transfer = resume.transfer_end, "resuming interrupted staging");
    } else {
        let _ = std::fs::remove_file(&cp_path);
    }
    if !opts.read_back {
        reader = None;
    }
    Ok(Prepared {
        file,
        reader,
        resume,
        transfer_hash,
        content_hash,
        checkpoint,
    })
}

pub(super) fn save_checkpoint(store: &StatusStore, cp: &Checkpoint) -> Result<(), StageError> {
    let bytes = serde_json::to_vec(cp).map_err(|e| StageError::Io {
        what: "encoding checkpoint".into(),
        source: io::Error::other(e),
    })?;
    fsutil::atomic_write(&store.checkpoint_path(), &bytes).map_err(|e| StageError::Io {
        what: format!("writing checkpoint {}", store.checkpoint_path().display()),
        source: e,
    })
}
