//! One staging run of a raw image: prepare (blocking), open the source at the resume
//! point, start the decoder, writer and read-back threads, pump the transfer into them,
//! and judge every hash against the signed one before the slot is recorded `verified`.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::decode::decode_thread;
use super::hashes::Digests;
use super::msg::{Msg, Stop, Written};
use super::read_back::read_back_thread;
use super::request::{
    check_hash, emit, CancelToken, Compression, ImageFormat, Phase, ProgressFn, StageError,
    StageOptions, StageRequest,
};
use super::resume::{prepare, Prepared};
use super::write::{write_thread, WriterState};
use super::RawSlot;
use crate::fetch::{ByteSource, FetchError};
use crate::slot::direct::AlignedBuf;
use crate::slot::SlotStatus;

/// Stage `req` from `source` into a raw slot. On success the slot's status record says
/// `verified` with the content hash. On failure the record says `incomplete` (never
/// bootable) once any byte of the slot was written; a failure before the first write
/// (refused slot, unreachable source) leaves the record as it was, since the content
/// still is what it describes. Called again with the same request after an interruption,
/// it resumes from the last checkpoint.
pub async fn stage_image(
    req: &StageRequest,
    source: &dyn ByteSource,
    slot: Arc<dyn RawSlot>,
    opts: &StageOptions,
    progress: Option<ProgressFn>,
    cancel: &CancelToken,
) -> Result<SlotStatus, StageError> {
    req.validate()?;
    if req.format != ImageFormat::Raw {
        return Err(StageError::BadRequest {
            why: format!("slot {} takes raw images, not tar archives", slot.name()),
        });
    }
    let touched = Arc::new(AtomicBool::new(false));
    let result = stage_inner(req, source, slot.clone(), opts, progress, cancel, &touched).await;
    if let Err(e) = &result {
        tracing::warn!(slot = %slot.name(), path = %req.path, error = %e, resumable = e.is_resumable(), written = touched.load(Ordering::SeqCst), "staging failed");
        if !e.is_resumable() {
            let _ = std::fs::remove_file(slot.store().checkpoint_path());
        }
        if touched.load(Ordering::SeqCst) {
            // The writer recorded `incomplete` before its first byte; make sure of it.
            if slot
                .store()
                .load()
                .map_or(true, |st| st.state.is_bootable())
            {
                let _ = slot.store().mark_incomplete(&req.version);
            }
        }
    }
    result
}

pub(super) fn join_thread<T>(
    h: std::thread::JoinHandle<Result<T, Stop>>,
    what: &str,
) -> Result<T, Stop> {
    h.join().unwrap_or_else(|_| {
        Err(Stop::Failed(StageError::Io {
            what: format!("staging {what} thread"),
            source: io::Error::other("panicked"),
        }))
    })
}

pub(super) fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T, Stop> + Send + 'static,
) -> Result<std::thread::JoinHandle<Result<T, Stop>>, StageError> {
    std::thread::Builder::new()
        .name(format!("patchd-{name}"))
        .spawn(f)
        .map_err(|e| StageError::Io {
            what: format!("starting the {name} thread"),
            source: e,
        })
}

pub(super) async fn stage_inner(
    req: &StageRequest,
    source: &dyn ByteSource,
    slot: Arc<dyn RawSlot>,
    opts: &StageOptions,
    progress: Option<ProgressFn>,
    cancel: &CancelToken,
    touched: &Arc<AtomicBool>,
) -> Result<SlotStatus, StageError> {
    // Prepare on a blocking thread: safety checks, open, resume scan.
    let prep = {
        let (slot, req, opts, progress) =
            (slot.clone(), req.clone(), opts.clone(), progress.clone());
        let cancel = cancel.clone();
        tokio::task::spawn_blocking(move || prepare(&req, slot.as_ref(), &opts, progress, &cancel))
            .await
            .map_err(join_err)??
    };
    let resume = prep.resume.clone();
    tracing::info!(slot = %slot.name(), path = %req.path, version = %req.version,
        resume_content = resume.content_end, resume_transfer = resume.transfer_end,
        direct_read = prep.reader.as_ref().is_some_and(|r| r.is_direct()), "staging");

    let reader = source
        .open_exact(&req.path, resume.transfer_end, req.length)
        .await
        .map_err(|e| StageError::Fetch {
            path: req.path.clone(),
            source: e,
        })?;

    let nbuf = opts.buffers.max(1);
    let (full_tx, full_rx) = mpsc::channel::<(Vec<u8>, usize)>(nbuf);
    let (empty_tx, mut empty_rx) = mpsc::channel::<Vec<u8>>(nbuf + 1);
    for _ in 0..nbuf {
        let _ = empty_tx.try_send(vec![0u8; opts.buffer_size.max(4096)]);
    }
    let run = Run {
        req,
        slot: &slot,
        opts,
        progress: &progress,
        cancel,
        touched,
    };
    let threads = run.start(prep, full_rx, empty_tx)?;
    let pump = pump_source(
        req,
        reader,
        resume.transfer_end,
        full_tx,
        &mut empty_rx,
        cancel,
    )
    .await;
    drop(empty_rx);
    let joined = tokio::task::spawn_blocking(move || threads.join())
        .await
        .map_err(join_err)?;
    pump?;
    verdict(req, joined)?;

    let (slot2, req2) = (slot.clone(), req.clone());
    let st = tokio::task::spawn_blocking(move || {
        let store = slot2.store();
        let _ = std::fs::remove_file(store.checkpoint_path());
        store.mark_verified(
            &req2.version,
            &req2.content_sha256.to_ascii_lowercase(),
            req2.size,
        )
    })
    .await
    .map_err(join_err)??;
    emit(&progress, Phase::Done, req.size, req.size, Instant::now());
    tracing::info!(slot = %slot.name(), version = %req.version, size = req.size, "slot verified");
    Ok(st)
}

/// What the three threads of one run share.
struct Run<'a> {
    req: &'a StageRequest,
    slot: &'a Arc<dyn RawSlot>,
    opts: &'a StageOptions,
    progress: &'a Option<ProgressFn>,
    cancel: &'a CancelToken,
    touched: &'a Arc<AtomicBool>,
}

/// The running threads of one run; the read-back only when it is on.
struct Threads {
    decoder: std::thread::JoinHandle<Result<Option<Digests>, Stop>>,
    writer: std::thread::JoinHandle<Result<Option<Digests>, Stop>>,
    read_back: Option<std::thread::JoinHandle<Result<Option<Digests>, Stop>>>,
}

/// Each thread's result, in pipeline order.
type Joined = (
    Result<Option<Digests>, Stop>,
    Result<Option<Digests>, Stop>,
    Option<Result<Option<Digests>, Stop>>,
);

impl Threads {
    fn join(self) -> Joined {
        let d = join_thread(self.decoder, "decode");
        let w = join_thread(self.writer, "write");
        let r = self.read_back.map(|h| join_thread(h, "read-back"));
        (d, w, r)
    }
}

impl Run<'_> {
    /// Three threads so that both cores work: the decoder (transfer hash + zstd), the
    /// writer (page cache, syncs, checkpoints) and the read-back (O_DIRECT reads right
    /// behind the writer + content hash).
    fn start(
        &self,
        prep: Prepared,
        full_rx: mpsc::Receiver<(Vec<u8>, usize)>,
        empty_tx: mpsc::Sender<Vec<u8>>,
    ) -> Result<Threads, StageError> {
        let Prepared {
            file,
            reader: slot_reader,
            resume,
            transfer_hash,
            content_hash,
            checkpoint,
        } = prep;
        let (content_tx, content_rx) = mpsc::channel::<Msg>(CONTENT_BUFFERS);
        // Aligned content buffers (direct writes) that the writer hands back to the decoder.
        let (recycle_tx, recycle_rx) = mpsc::channel::<AlignedBuf>(CONTENT_BUFFERS + 1);
        for _ in 0..CONTENT_BUFFERS {
            let _ = recycle_tx.try_send(AlignedBuf::new(CONTENT_BUFFER));
        }
        let decoder = {
            let (req, opts, cancel) = (self.req.clone(), self.opts.clone(), self.cancel.clone());
            let resume = resume.clone();
            spawn("decode", move || {
                decode_thread(
                    &req,
                    &opts,
                    full_rx,
                    empty_tx,
                    content_tx,
                    recycle_rx,
                    transfer_hash,
                    &resume,
                    &cancel,
                )
            })?
        };
        let (to_reader, reader_rx) = std::sync::mpsc::channel::<Written>();
        let (content_hash_w, content_hash_r) = match &slot_reader {
            Some(_) => (None, Some(content_hash)),
            None => (Some(content_hash), None),
        };
        let read_back = match (slot_reader, content_hash_r) {
            (Some(rd), Some(h)) => {
                let (slot, req, progress, cancel) = (
                    self.slot.clone(),
                    self.req.clone(),
                    self.progress.clone(),
                    self.cancel.clone(),
                );
                let start = resume.content_end;
                Some(spawn("readback", move || {
                    read_back_thread(
                        slot.as_ref(),
                        &req,
                        rd,
                        start,
                        reader_rx,
                        h,
                        progress,
                        &cancel,
                    )
                })?)
            }
            _ => None,
        };
        let writer = {
            let (slot, req, opts, progress, cancel) = (
                self.slot.clone(),
                self.req.clone(),
                self.opts.clone(),
                self.progress.clone(),
                self.cancel.clone(),
            );
            let touched = self.touched.clone();
            let to_reader = read_back.is_some().then_some(to_reader);
            spawn("write", move || {
                write_thread(
                    &req,
                    slot.as_ref(),
                    WriterState {
                        file,
                        checkpoint,
                        written: resume.content_end,
                        content_hash: content_hash_w,
                    },
                    content_rx,
                    recycle_tx,
                    to_reader,
                    &opts,
                    progress,
                    &cancel,
                    &touched,
                )
            })?
        };
        Ok(Threads {
            decoder,
            writer,
            read_back,
        })
    }
}

/// Every hash against the signed one: the transfer first (wrong download), then what was
/// read back from (or written to) the slot. The first real failure in pipeline order is
/// the cause; later stages only saw their input end early (or their peer vanish).
fn verdict(req: &StageRequest, (transfer, written, read): Joined) -> Result<(), StageError> {
    let mut cause: Option<StageError> = None;
    let mut settle = |r: Result<Option<Digests>, Stop>| match r {
        Ok(v) => Some(v),
        Err(Stop::Failed(e)) => {
            cause.get_or_insert(e);
            None
        }
        Err(Stop::PeerGone) => None,
    };
    let transfer = settle(transfer);
    let written = settle(written);
    let read = read.map(&mut settle);
    if let Some(e) = cause {
        return Err(e);
    }
    let gone = || StageError::Io {
        what: "staging pipeline".into(),
        source: io::Error::other("a pipeline stage stopped without a result"),
    };
    let transfer = transfer.ok_or_else(gone)?;
    let written = written.ok_or_else(gone)?;
    let (content, which) = match read {
        Some(r) => (r.ok_or_else(gone)?, "read-back"),
        None => (written, "content"),
    };
    if let Some((h256, h512)) = transfer {
        check_hash(req, "transfer sha256", &req.sha256, &h256)?;
        if let (Some(want), Some(got)) = (&req.sha512, h512) {
            check_hash(req, "transfer sha512", want, &got)?;
        }
    }
    let Some((c256, c512)) = content else {
        return Err(StageError::Io {
            what: "staging pipeline".into(),
            source: io::Error::other("no content digest"),
        });
    };
    let (n256, n512) = match which {
        "read-back" => ("read-back sha256", "read-back sha512"),
        _ => ("content sha256", "content sha512"),
    };
    check_hash(req, n256, &req.content_sha256, &c256)?;
    if req.compression == Compression::None {
        if let (Some(want), Some(got)) = (&req.sha512, c512) {
            check_hash(req, n512, want, &got)?;
        }
    }
    Ok(())
}

pub(in crate::slot) fn join_err(e: tokio::task::JoinError) -> StageError {
    StageError::Io {
        what: "staging worker".into(),
        source: io::Error::other(e.to_string()),
    }
}

/// Move transfer bytes into the worker's buffers until the signed length is reached.
pub(in crate::slot) async fn pump_source(
    req: &StageRequest,
    mut reader: crate::fetch::ByteReader,
    start: u64,
    full_tx: mpsc::Sender<(Vec<u8>, usize)>,
    empty_rx: &mut mpsc::Receiver<Vec<u8>>,
    cancel: &CancelToken,
) -> Result<(), StageError> {
    let mut got = start;
    let cancelled = || StageError::Cancelled {
        path: req.path.clone(),
    };
    loop {
        let Some(mut buf) = empty_rx.recv().await else {
            return Ok(()); // worker gone; its result explains why
        };
        let mut filled = 0;
        while filled < buf.len() {
            let n = tokio::select! {
                r = reader.read(&mut buf[filled..]) => r.map_err(|e| StageError::Fetch {
                    path: req.path.clone(),
                    source: FetchError::from_io(&req.path, e),
                })?,
                _ = cancel.cancelled() => return Err(cancelled()),
            };
            if n == 0 {
                break;
            }
            filled += n;
            if got + filled as u64 > req.length {
                return Err(StageError::TooLong {
                    path: req.path.clone(),
                    expected: req.length,
                });
            }
        }
        got += filled as u64;
        if filled == 0 {
            if got < req.length {
                return Err(StageError::Truncated {
                    path: req.path.clone(),
                    got,
                    expected: req.length,
                });
            }
            return Ok(()); // dropping full_tx tells the worker the input ended
        }
        if full_tx.send((buf, filled)).await.is_err() {
            return Ok(());
        }
    }
}

/// `io::Read` over the buffers the async side fills.
pub(in crate::slot) struct ChanRead {
    pub(in crate::slot) rx: mpsc::Receiver<(Vec<u8>, usize)>,
    pub(in crate::slot) recycle: mpsc::Sender<Vec<u8>>,
    pub(in crate::slot) cur: Option<(Vec<u8>, usize)>,
    pub(in crate::slot) pos: usize,
}

impl ChanRead {
    /// Next slice of input, or `None` at the end. Consumed with [`ChanRead::consume`].
    pub(super) fn next_slice(&mut self) -> Option<&[u8]> {
        loop {
            match &self.cur {
                Some((_, len)) if self.pos < *len => break,
                Some(_) => {
                    if let Some((buf, _)) = self.cur.take() {
                        // Hand the buffer back to the async side for the next read.
                        let _ = self.recycle.try_send(buf);
                    }
                }
                None => {}
            }
            self.cur = Some(self.rx.blocking_recv()?);
            self.pos = 0;
        }
        self.cur.as_ref().map(|(b, l)| &b[self.pos..*l])
    }
    pub(super) fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

/// Archive installs read the transfer as a plain byte stream.
impl Read for ChanRead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let Some(s) = self.next_slice() else {
            return Ok(0);
        };
        let n = s.len().min(out.len());
        out[..n].copy_from_slice(&s[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Content buffers between the decoder and the writer (zstd images).
pub(super) const CONTENT_BUFFERS: usize = 2;
pub(super) const CONTENT_BUFFER: usize = 256 << 10;
