//! The writer thread: content into the slot (direct I/O), durable checkpoints through a
//! sync helper thread, and the `incomplete` record just before the first byte.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::hashes::{ContentHash, Digests, TransferHash};
use super::msg::{Msg, Stop, Written};
use super::request::slot_io;
use super::request::{
    emit, CancelToken, Compression, Phase, ProgressFn, StageError, StageOptions, StageRequest,
};
use super::resume::{save_checkpoint, Checkpoint, Segment};
use super::RawSlot;
use crate::slot::direct::{AlignedBuf, DirectWriter};

pub(super) struct WriterState {
    pub(super) file: File,
    pub(super) checkpoint: Checkpoint,
    pub(super) written: u64,
    /// In-stream content hash when read-back is off.
    pub(super) content_hash: Option<ContentHash>,
}

/// The writer: content into the slot, a durable checkpoint every `checkpoint_every`
/// bytes (uncompressed) or at the next zstd frame boundary after that many (compressed).
/// The checkpoints' syncs run on a scoped helper thread, so the device flushes one
/// segment while the next is being written (a segment is recorded only after a sync
/// that started once all its writes had completed).
#[allow(clippy::too_many_arguments)]
pub(super) fn write_thread(
    req: &StageRequest,
    slot: &dyn RawSlot,
    st: WriterState,
    rx: mpsc::Receiver<Msg>,
    recycle: mpsc::Sender<AlignedBuf>,
    to_reader: Option<std::sync::mpsc::Sender<Written>>,
    opts: &StageOptions,
    progress: Option<ProgressFn>,
    cancel: &CancelToken,
    touched: &AtomicBool,
) -> Result<Option<Digests>, Stop> {
    let WriterState {
        file,
        checkpoint,
        written,
        content_hash,
    } = st;
    let io_err = |what: &str, e: io::Error| Stop::Failed(slot_io(slot, what, e));
    let sync_file = file.try_clone().map_err(|e| io_err("reopening", e))?;
    std::thread::scope(|sc| {
        let (seg_tx, seg_rx) = std::sync::mpsc::sync_channel::<Segment>(2);
        let syncer = std::thread::Builder::new()
            .name("patchd-sync".into())
            .spawn_scoped(sc, move || -> Result<(), Stop> {
                let mut checkpoint = checkpoint;
                for seg in seg_rx {
                    // Data first, then the record that vouches for it.
                    sync_file.sync_data().map_err(|e| io_err("syncing", e))?;
                    let end = seg.content_end;
                    checkpoint.segments.push(seg);
                    checkpoint.content_offset = end;
                    save_checkpoint(slot.store(), &checkpoint)?;
                    failpoint("stage-after-checkpoint", end);
                }
                Ok(())
            })
            .map_err(|e| io_err("starting the sync thread of", e))?;
        let r = write_loop(
            req,
            slot,
            (file, written, content_hash),
            rx,
            recycle,
            seg_tx,
            to_reader.as_ref(),
            opts,
            progress,
            cancel,
            touched,
        );
        let synced = syncer.join().unwrap_or_else(|_| {
            Err(Stop::Failed(StageError::Io {
                what: "staging sync thread".into(),
                source: io::Error::other("panicked"),
            }))
        });
        // A failed sync is the cause when the writer only saw the syncer vanish.
        let (file, content_hash) = match (r, synced) {
            (Err(Stop::PeerGone), Err(e)) | (Ok(_), Err(e)) => return Err(e),
            (r, _) => r?,
        };
        file.sync_all().map_err(|e| io_err("syncing", e))?;
        if let Some(t) = &to_reader {
            let _ = t.send(Written::Final);
        }
        Ok(content_hash.map(ContentHash::finish))
    })
}

/// The writer's loop; returns the file (written, not yet finally synced) and the
/// in-stream content hash.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_loop(
    req: &StageRequest,
    slot: &dyn RawSlot,
    (mut file, mut written, mut content_hash): (File, u64, Option<ContentHash>),
    mut rx: mpsc::Receiver<Msg>,
    recycle: mpsc::Sender<AlignedBuf>,
    seg_tx: std::sync::mpsc::SyncSender<Segment>,
    to_reader: Option<&std::sync::mpsc::Sender<Written>>,
    opts: &StageOptions,
    progress: Option<ProgressFn>,
    cancel: &CancelToken,
    touched: &AtomicBool,
) -> Result<(File, Option<ContentHash>), Stop> {
    let io_err = |what: &str, e: io::Error| Stop::Failed(slot_io(slot, what, e));
    let raw = req.compression == Compression::None;
    let chunk = opts.checkpoint_every.max(1 << 20);
    let started = Instant::now();
    let mut last_emit = Instant::now();
    let mut crc = crc32fast::Hasher::new();
    let mut begun = false;
    let mut dw = DirectWriter::new();
    // A read-back that already stopped (done, or failed: its result says why) does not
    // stop the writer.
    let notify = |n: Written| {
        if let Some(t) = to_reader {
            let _ = t.send(n);
        }
    };
    let save = |crc: &mut crc32fast::Hasher,
                written: u64,
                transfer_end: u64,
                transfer_hash: Option<TransferHash>|
     -> Result<(), Stop> {
        seg_tx
            .send(Segment {
                content_end: written,
                transfer_end,
                crc: std::mem::take(crc).finalize(),
                transfer_hash,
            })
            .map_err(|_| Stop::PeerGone)
    };
    while let Some(msg) = rx.blocking_recv() {
        if cancel.is_cancelled() {
            return Err(Stop::Failed(StageError::Cancelled {
                path: req.path.clone(),
            }));
        }
        match msg {
            Msg::Data(buf, len) => {
                if written + len as u64 > req.size {
                    return Err(Stop::Failed(if raw {
                        StageError::TooLong {
                            path: req.path.clone(),
                            expected: req.length,
                        }
                    } else {
                        StageError::DecompressedTooLarge {
                            path: req.path.clone(),
                            declared: req.size,
                        }
                    }));
                }
                if !begun {
                    begin_write(req, slot, &mut file, written, touched)?;
                    begun = true;
                }
                let mut rest = &buf.as_slice()[..len];
                if let Some(h) = &mut content_hash {
                    h.update(rest);
                }
                while !rest.is_empty() {
                    // Uncompressed: segments end on multiples of the interval, so a
                    // resumed run checks the same ranges.
                    let take = if raw {
                        ((chunk - written % chunk) as usize).min(rest.len())
                    } else {
                        rest.len()
                    };
                    dw.write_at(&file, &rest[..take], written)
                        .map_err(|e| io_err("writing", e))?;
                    crc.update(&rest[..take]);
                    written += take as u64;
                    rest = &rest[take..];
                    if raw && written % chunk == 0 {
                        save(&mut crc, written, written, None)?;
                    }
                }
                notify(Written::UpTo(written));
                let _ = recycle.try_send(buf);
                if last_emit.elapsed() >= Duration::from_millis(250) {
                    emit(&progress, Phase::Write, written, req.size, started);
                    last_emit = Instant::now();
                }
            }
            Msg::FrameEnd(seg) => {
                if seg.content_end != written {
                    return Err(io_err(
                        "checkpointing",
                        io::Error::other("frame boundary out of step with the writer"),
                    ));
                }
                save(&mut crc, written, seg.transfer_end, seg.transfer_hash)?;
            }
        }
    }
    emit(&progress, Phase::Write, written, req.size, started);
    if written != req.size {
        return Err(Stop::Failed(StageError::SizeMismatch {
            path: req.path.clone(),
            got: written,
            declared: req.size,
        }));
    }
    if !begun {
        // Zero-length content (or a resume that had everything): still record the write.
        begin_write(req, slot, &mut file, written, touched)?;
    }
    Ok((file, content_hash))
}

/// Just before the first byte: the record says `incomplete` (the content is no longer
/// what it described) and an image file gets its final length.
pub(super) fn begin_write(
    req: &StageRequest,
    slot: &dyn RawSlot,
    file: &mut File,
    at: u64,
    touched: &AtomicBool,
) -> Result<(), Stop> {
    touched.store(true, Ordering::SeqCst);
    let st = slot.store().load()?;
    if st.state != crate::slot::SlotState::Incomplete || st.version.as_deref() != Some(&req.version)
    {
        slot.store().mark_incomplete(&req.version)?;
    }
    let meta = file
        .metadata()
        .map_err(|e| slot_io(slot, "inspecting", e))?;
    if meta.is_file() && meta.len() != req.size {
        file.set_len(req.size)
            .map_err(|e| slot_io(slot, "sizing", e))?;
    }
    file.seek(SeekFrom::Start(at))
        .map_err(|e| slot_io(slot, "seeking in", e))?;
    Ok(())
}

/// feature, never in release packages.
/// Test-only crash injection: `PATCHD_FAILPOINT=<name>:<offset>` aborts the process
/// once `<name>` is reached at or past `<offset>`. Compiled only with the `failpoints`
#[cfg(feature = "failpoints")]
pub(super) fn failpoint(name: &str, offset: u64) {
    if let Ok(v) = std::env::var("PATCHD_FAILPOINT") {
        if let Some((n, at)) = v.split_once(':') {
            if n == name && at.parse::<u64>().is_ok_and(|at| offset >= at) {
                std::process::abort();
            }
        }
    }
}

#[cfg(not(feature = "failpoints"))]
pub(super) fn failpoint(_name: &str, _offset: u64) {}
