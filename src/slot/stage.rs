//! The staging pipeline: source → (zstd) → hashes → slot, one pass, bounded memory.
//!
//! The async side only moves transfer bytes from the [`ByteSource`] into a small pool of
//! fixed buffers. Three threads do the rest, so both cores of a small machine work:
//! the decoder hashes the transfer of a compressed image (resumable sha256/sha512, see
//! [`super::sha`]) and decompresses it into aligned buffers; the writer writes the
//! content to the slot with `O_DIRECT` (no page-cache copy, nothing left for the syncs to
//! write back) and hands checkpoints to a sync thread; the read-back reads the written
//! content from the medium (`O_DIRECT`, right behind the writer) and hashes it. The slot becomes `verified` only
//! when the transfer hashes and the read-back hash of every content byte matched the
//! signed ones. Uncompressed images are hashed once, by the read-back (their content hash
//! is the signed transfer hash); with `read_back` off the writer hashes the stream.
//!
//! Resume: the writer fdatasyncs the slot and records a segment (content and transfer
//! offsets, CRC32 of its content, and for compressed images the transfer hash state)
//! every `checkpoint_every` bytes (uncompressed) or at the first zstd frame boundary
//! after that many bytes (compressed; `patchpub` writes independent frames). A later call
//! with the same request re-reads the written prefix from the slot, checks it segment by
//! segment, rebuilds the content hash from it, and continues with a range request from
//! the last good segment, so a resumed install ends in exactly the same verified state.
//! A zstd stream without frame boundaries resumes from 0 (or through the download cache,
//! [`super::cache`]).

pub use super::raw::{drop_page_cache, RawSlot};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, Notify};

use super::direct::{AlignedBuf, DirectWriter, SlotReader};
use super::sha::{Sha256State, Sha512State};
use super::status::StatusStore;
use super::{SlotError, SlotStatus};
use crate::fetch::{ByteSource, FetchError};
use crate::fsutil;

/// How the transfer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Zstd,
}

/// What the (decompressed) content is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// A raw filesystem or disk image written byte for byte.
    Raw,
    /// A tar archive extracted into a filesystem slot.
    Tar,
}

/// Everything the pipeline needs to know about one image, taken from signed metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRequest {
    /// Repository path of the image target (`targets/…`).
    pub path: String,
    pub version: String,
    /// Signed length of the transfer (compressed) in bytes.
    pub length: u64,
    /// Signed sha256 (hex) of the transfer.
    pub sha256: String,
    /// Signed sha512 (hex) of the transfer, when the metadata has one.
    pub sha512: Option<String>,
    pub compression: Compression,
    pub format: ImageFormat,
    /// Size of the content after decompression.
    pub size: u64,
    /// sha256 (hex) of the content after decompression (equals `sha256` when
    /// uncompressed).
    pub content_sha256: String,
}

impl StageRequest {
    /// A plain uncompressed raw image.
    pub fn raw(path: &str, version: &str, length: u64, sha256: &str) -> Self {
        Self {
            path: path.to_string(),
            version: version.to_string(),
            length,
            sha256: sha256.to_string(),
            sha512: None,
            compression: Compression::None,
            format: ImageFormat::Raw,
            size: length,
            content_sha256: sha256.to_string(),
        }
    }

    pub(super) fn validate(&self) -> Result<(), StageError> {
        let bad = |why: String| Err(StageError::BadRequest { why });
        let hex_ok = |h: &str, n: usize| h.len() == n && h.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_ok(&self.sha256, 64) || !hex_ok(&self.content_sha256, 64) {
            return bad("sha256 must be 64 hex digits".into());
        }
        if let Some(h) = &self.sha512 {
            if !hex_ok(h, 128) {
                return bad("sha512 must be 128 hex digits".into());
            }
        }
        if self.compression == Compression::None
            && (self.length != self.size || !self.sha256.eq_ignore_ascii_case(&self.content_sha256))
        {
            return bad("uncompressed image: length/size and hashes must agree".into());
        }
        Ok(())
    }
}

/// Pipeline tuning; `Default` is what the daemon uses.
#[derive(Debug, Clone)]
pub struct StageOptions {
    /// Durable checkpoint interval (bytes of content).
    pub checkpoint_every: u64,
    /// Size of each transfer buffer; `buffers` of them are in flight.
    pub buffer_size: usize,
    pub buffers: usize,
    /// Largest zstd window accepted (log2); bounds decoder memory.
    pub zstd_window_log_max: u32,
    /// Read the slot back from the medium after writing (always on in the daemon).
    pub read_back: bool,
}

impl Default for StageOptions {
    fn default() -> Self {
        Self {
            checkpoint_every: 64 << 20,
            buffer_size: 256 << 10,
            buffers: 4,
            zstd_window_log_max: 23,
            read_back: true,
        }
    }
}

/// Phase of a staging run, for progress events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Re-reading the prefix written before an interruption.
    Resume,
    /// Downloading and writing.
    Write,
    /// Reading the slot back from the medium.
    ReadBack,
    Done,
}

/// One progress event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    pub phase: Phase,
    /// Content bytes done in this phase.
    pub done: u64,
    pub total: u64,
    /// Bytes per second since the phase started.
    pub rate: u64,
}

/// Receives progress events (from the worker thread; keep it cheap).
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Cooperative cancellation for a staging run.
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    flag: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
    async fn cancelled(&self) {
        loop {
            let n = self.notify.notified();
            if self.is_cancelled() {
                return;
            }
            n.await;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("invalid staging request: {why}")]
    BadRequest { why: String },
    #[error("fetching {path}: {source}")]
    Fetch {
        path: String,
        #[source]
        source: FetchError,
    },
    #[error("{path}: stream ended after {got} of {expected} signed bytes")]
    Truncated {
        path: String,
        got: u64,
        expected: u64,
    },
    #[error("{path}: source sent more than the signed {expected} bytes")]
    TooLong { path: String, expected: u64 },
    #[error("{path}: {which} mismatch: expected {expected}, got {actual}")]
    HashMismatch {
        path: String,
        which: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{path}: decompressed content exceeds the declared {declared} bytes")]
    DecompressedTooLarge { path: String, declared: u64 },
    #[error("{path}: decompressed content is {got} bytes, declared {declared}")]
    SizeMismatch {
        path: String,
        got: u64,
        declared: u64,
    },
    #[error("{path}: zstd: {source}")]
    Decompress {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: unsafe or unreadable archive: {source}")]
    Extract {
        path: String,
        #[source]
        source: super::extract::ExtractError,
    },
    #[error("download cache {dir}: {why}")]
    CacheFull { dir: String, why: String },
    #[error("staging {path} cancelled")]
    Cancelled { path: String },
}

impl StageError {
    /// What kind of failure this is, as the audit record's `cause` and the metrics'
    /// `reason` label name it: `slow_retrieval`, `download`, `verify`, `write`, `space`,
    /// `cancelled` or `staging`.
    pub fn cause(&self) -> &'static str {
        match self {
            StageError::Fetch { source, .. } if source.slow_retrieval().is_some() => {
                "slow_retrieval"
            }
            StageError::Fetch { .. } | StageError::Truncated { .. } => "download",
            StageError::TooLong { .. }
            | StageError::HashMismatch { .. }
            | StageError::DecompressedTooLarge { .. }
            | StageError::SizeMismatch { .. }
            | StageError::Decompress { .. }
            | StageError::Extract { .. } => "verify",
            StageError::Slot(_) | StageError::Io { .. } => "write",
            StageError::CacheFull { .. } => "space",
            StageError::Cancelled { .. } => "cancelled",
            StageError::BadRequest { .. } => "staging",
        }
    }

    /// Whether a later attempt may resume from the checkpoint (network trouble,
    /// cancellation) rather than having to start over (wrong content).
    pub fn is_resumable(&self) -> bool {
        matches!(
            self,
            StageError::Fetch { .. }
                | StageError::Truncated { .. }
                | StageError::Cancelled { .. }
                | StageError::Io { .. }
        )
    }
}

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

/// Why a pipeline thread stopped without a result of its own.
enum Stop {
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
enum Msg {
    Data(AlignedBuf, usize),
    /// A zstd frame ended here: a place where a checkpoint can resume decoding.
    FrameEnd(Segment),
}

/// What the writer tells the read-back thread.
enum Written {
    /// Content bytes `0..n` are written.
    UpTo(u64),
    /// Everything written and synced.
    Final,
}

fn join_thread<T>(h: std::thread::JoinHandle<Result<T, Stop>>, what: &str) -> Result<T, Stop> {
    h.join().unwrap_or_else(|_| {
        Err(Stop::Failed(StageError::Io {
            what: format!("staging {what} thread"),
            source: io::Error::other("panicked"),
        }))
    })
}

fn spawn<T: Send + 'static>(
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

/// Digests of the transfer (compressed images only) and of the content.
type Digests = (String, Option<String>);

async fn stage_inner(
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
    let (content_tx, content_rx) = mpsc::channel::<Msg>(CONTENT_BUFFERS);
    // Aligned content buffers (direct writes) that the writer hands back to the decoder.
    let (recycle_tx, recycle_rx) = mpsc::channel::<AlignedBuf>(CONTENT_BUFFERS + 1);
    for _ in 0..CONTENT_BUFFERS {
        let _ = recycle_tx.try_send(AlignedBuf::new(CONTENT_BUFFER));
    }

    // Three threads so that both cores work: the decoder (transfer hash + zstd), the
    // writer (page cache, syncs, checkpoints) and the read-back (O_DIRECT reads right
    // behind the writer + content hash).
    let Prepared {
        file,
        reader: slot_reader,
        resume: _,
        transfer_hash,
        content_hash,
        checkpoint,
    } = prep;
    let decoder = {
        let (req, opts, cancel) = (req.clone(), opts.clone(), cancel.clone());
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
            let (slot, req, progress, cancel) =
                (slot.clone(), req.clone(), progress.clone(), cancel.clone());
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
            slot.clone(),
            req.clone(),
            opts.clone(),
            progress.clone(),
            cancel.clone(),
        );
        let touched = touched.clone();
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
    let joined = tokio::task::spawn_blocking(move || {
        let d = join_thread(decoder, "decode");
        let w = join_thread(writer, "write");
        let r = read_back.map(|h| join_thread(h, "read-back"));
        (d, w, r)
    })
    .await
    .map_err(join_err)?;
    pump?;
    let (transfer, written, read) = joined;
    // The first real failure in pipeline order is the cause; later stages only saw their
    // input end early (or their peer vanish).
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

    // Every hash against the signed one: the transfer first (wrong download), then what
    // was read back from (or written to) the slot.
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

pub(super) fn join_err(e: tokio::task::JoinError) -> StageError {
    StageError::Io {
        what: "staging worker".into(),
        source: io::Error::other(e.to_string()),
    }
}

/// Move transfer bytes into the worker's buffers until the signed length is reached.
pub(super) async fn pump_source(
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
pub(super) struct ChanRead {
    pub(super) rx: mpsc::Receiver<(Vec<u8>, usize)>,
    pub(super) recycle: mpsc::Sender<Vec<u8>>,
    pub(super) cur: Option<(Vec<u8>, usize)>,
    pub(super) pos: usize,
}

impl ChanRead {
    /// Next slice of input, or `None` at the end. Consumed with [`ChanRead::consume`].
    fn next_slice(&mut self) -> Option<&[u8]> {
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
    fn consume(&mut self, n: usize) {
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
const CONTENT_BUFFERS: usize = 2;
const CONTENT_BUFFER: usize = 256 << 10;
/// Read-back request size (aligned for O_DIRECT).
const READ_BACK_CHUNK: usize = 512 << 10;

/// Hashes of the content, from the slot (read-back) or from the written stream.
#[derive(Clone)]
pub(super) struct ContentHash {
    sha256: ring::digest::Context,
    /// Raw images only: the signed sha512 of the transfer is the content's.
    sha512: Option<ring::digest::Context>,
}

impl ContentHash {
    fn new(req: &StageRequest) -> Self {
        Self {
            sha256: ring::digest::Context::new(&ring::digest::SHA256),
            sha512: (req.compression == Compression::None && req.sha512.is_some())
                .then(|| ring::digest::Context::new(&ring::digest::SHA512)),
        }
    }
    fn update(&mut self, b: &[u8]) {
        self.sha256.update(b);
        if let Some(h) = &mut self.sha512 {
            h.update(b);
        }
    }
    fn finish(self) -> Digests {
        (
            hex::encode(self.sha256.finish()),
            self.sha512.map(|h| hex::encode(h.finish())),
        )
    }
}

/// Resumable hashes of a compressed transfer (saved in checkpoints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferHash {
    sha256: Sha256State,
    sha512: Option<Sha512State>,
}

impl TransferHash {
    fn new(req: &StageRequest) -> Self {
        Self {
            sha256: Sha256State::new(),
            sha512: req.sha512.as_ref().map(|_| Sha512State::new()),
        }
    }
    fn update(&mut self, b: &[u8]) {
        self.sha256.update(b);
        if let Some(h) = &mut self.sha512 {
            h.update(b);
        }
    }
    fn fits(&self, req: &StageRequest, transfer_end: u64) -> bool {
        self.sha256.is_valid()
            && self.sha256.len() == transfer_end
            && self.sha512.is_some() == req.sha512.is_some()
            && self
                .sha512
                .as_ref()
                .is_none_or(|h| h.is_valid() && h.len() == transfer_end)
    }
    fn finish(self) -> Digests {
        (
            hex::encode(self.sha256.finalize()),
            self.sha512.map(|h| hex::encode(h.finalize())),
        )
    }
}

/// Resume record: `<state_dir>/slots/<slot>.stage.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Checkpoint {
    version: u32,
    request: StageRequest,
    /// Content bytes covered by `segments` (for people and tests reading the file).
    content_offset: u64,
    segments: Vec<Segment>,
}

/// One durable piece of content: written, synced, and where the transfer stood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Segment {
    /// Content offset at the end of this segment.
    content_end: u64,
    /// Transfer offset at the end (equal to `content_end` for uncompressed images; a zstd
    /// frame boundary for compressed ones).
    transfer_end: u64,
    /// CRC32 of the content bytes of this segment, to find damage before resuming.
    crc: u32,
    /// Compressed images: the transfer hashes over `0..transfer_end`.
    transfer_hash: Option<TransferHash>,
}

const CHECKPOINT_VERSION: u32 = 2;

impl Checkpoint {
    fn new(req: &StageRequest) -> Self {
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
struct ResumePoint {
    content_end: u64,
    transfer_end: u64,
}

struct Prepared {
    file: File,
    /// `None` when read-back is off.
    reader: Option<SlotReader>,
    resume: ResumePoint,
    transfer_hash: Option<TransferHash>,
    content_hash: ContentHash,
    checkpoint: Checkpoint,
}

fn prepare(
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
    let previous = previous.filter(|_| current.state == super::SlotState::Incomplete);
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

fn slot_io(slot: &dyn RawSlot, what: &str, e: io::Error) -> StageError {
    StageError::Io {
        what: format!("{what} slot {}", slot.name()),
        source: e,
    }
}

/// The decoder: hashes the transfer (compressed images), decompresses, and marks the
/// zstd frame boundaries a checkpoint may resume from. For uncompressed images it only
/// forwards the buffers (their hash is the content hash, taken by the read-back).
#[allow(clippy::too_many_arguments)]
fn decode_thread(
    req: &StageRequest,
    opts: &StageOptions,
    mut rx: mpsc::Receiver<(Vec<u8>, usize)>,
    transfer_pool: mpsc::Sender<Vec<u8>>,
    tx: mpsc::Sender<Msg>,
    mut pool: mpsc::Receiver<AlignedBuf>,
    hash: Option<TransferHash>,
    resume: &ResumePoint,
    cancel: &CancelToken,
) -> Result<Option<Digests>, Stop> {
    let cancelled = || {
        Stop::Failed(StageError::Cancelled {
            path: req.path.clone(),
        })
    };
    let Some(mut hash) = hash else {
        // Uncompressed: copy into aligned buffers for the writer's direct writes (one
        // memcpy, cheaper than the page-cache copy it saves).
        let mut out = pool.blocking_recv().ok_or(Stop::PeerGone)?;
        let mut out_pos = 0usize;
        while let Some((buf, len)) = rx.blocking_recv() {
            if cancel.is_cancelled() {
                return Err(cancelled());
            }
            let mut rest = &buf[..len];
            while !rest.is_empty() {
                let o = out.as_mut_slice();
                let n = rest.len().min(o.len() - out_pos);
                o[out_pos..out_pos + n].copy_from_slice(&rest[..n]);
                out_pos += n;
                rest = &rest[n..];
                if out_pos == o.len() {
                    tx.blocking_send(Msg::Data(out, out_pos))
                        .map_err(|_| Stop::PeerGone)?;
                    out = pool.blocking_recv().ok_or(Stop::PeerGone)?;
                    out_pos = 0;
                }
            }
            let _ = transfer_pool.try_send(buf);
        }
        if out_pos > 0 {
            tx.blocking_send(Msg::Data(out, out_pos))
                .map_err(|_| Stop::PeerGone)?;
        }
        return Ok(None);
    };
    let zerr = |e: io::Error| {
        Stop::Failed(StageError::Decompress {
            path: req.path.clone(),
            source: e,
        })
    };
    use zstd::stream::raw::Operation;
    let mut dec = zstd::stream::raw::Decoder::new().map_err(zerr)?;
    dec.set_parameter(zstd::stream::raw::DParameter::WindowLogMax(
        opts.zstd_window_log_max,
    ))
    .map_err(zerr)?;
    let mut transfer_off = resume.transfer_end;
    let mut content_off = resume.content_end;
    let mut last_mark = content_off;
    let mut out = pool.blocking_recv().ok_or(Stop::PeerGone)?;
    let mut out_pos = 0usize;
    let mut in_frame = false;
    while let Some((buf, len)) = rx.blocking_recv() {
        if cancel.is_cancelled() {
            return Err(cancelled());
        }
        let mut input = zstd::stream::raw::InBuffer::around(&buf[..len]);
        loop {
            let before = input.pos;
            let (hint, produced) = {
                let mut o = zstd::stream::raw::OutBuffer::around_pos(out.as_mut_slice(), out_pos);
                match dec.run(&mut input, &mut o) {
                    Ok(hint) => (hint, o.pos() - out_pos),
                    Err(e) => {
                        hash.update(&buf[before..len]);
                        let got = transfer_off + (len - before) as u64;
                        let _ = transfer_pool.try_send(buf);
                        return Err(undecodable(req, e, hash, got, rx, transfer_pool, cancel));
                    }
                }
            };
            hash.update(&buf[before..input.pos]);
            transfer_off += (input.pos - before) as u64;
            out_pos += produced;
            content_off += produced as u64;
            if content_off > req.size {
                return Err(Stop::Failed(StageError::DecompressedTooLarge {
                    path: req.path.clone(),
                    declared: req.size,
                }));
            }
            let full = out_pos == out.as_slice().len();
            if full {
                tx.blocking_send(Msg::Data(out, out_pos))
                    .map_err(|_| Stop::PeerGone)?;
                out = pool.blocking_recv().ok_or(Stop::PeerGone)?;
                out_pos = 0;
            }
            if input.pos > before || produced > 0 {
                // A call without progress (only asked to flush) says nothing about frames:
                // after a frame it already announces the next frame's header.
                in_frame = hint != 0;
            }
            if !in_frame && content_off - last_mark >= opts.checkpoint_every {
                // A frame ended: everything before it can be checkpointed together with
                // the transfer hash state at exactly this byte.
                if out_pos > 0 {
                    tx.blocking_send(Msg::Data(out, out_pos))
                        .map_err(|_| Stop::PeerGone)?;
                    out = pool.blocking_recv().ok_or(Stop::PeerGone)?;
                    out_pos = 0;
                }
                tx.blocking_send(Msg::FrameEnd(Segment {
                    content_end: content_off,
                    transfer_end: transfer_off,
                    crc: 0,
                    transfer_hash: Some(hash.clone()),
                }))
                .map_err(|_| Stop::PeerGone)?;
                last_mark = content_off;
            }
            if input.pos == len && !full {
                break;
            }
        }
        let _ = transfer_pool.try_send(buf);
    }
    if out_pos > 0 {
        tx.blocking_send(Msg::Data(out, out_pos))
            .map_err(|_| Stop::PeerGone)?;
    }
    if transfer_off != req.length {
        return Err(Stop::Failed(StageError::Truncated {
            path: req.path.clone(),
            got: transfer_off,
            expected: req.length,
        }));
    }
    if in_frame {
        return Err(zerr(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the transfer ends inside a zstd frame",
        )));
    }
    Ok(Some(hash.finish()))
}

/// The decompressor refused the stream. Unverified bytes must not be judged by how they
/// parse: most often they are simply not the signed bytes (a resumed download whose
/// second part differs, a corrupting mirror), and the admin should read "hash mismatch",
/// not a zstd framing error. So the rest of the transfer (bounded by the signed length)
/// is hashed, and a transfer hash that differs from the signed one is the error; only a
/// signed, matching stream that still does not decode is reported as zstd's error.
fn undecodable(
    req: &StageRequest,
    e: io::Error,
    mut hash: TransferHash,
    mut got: u64,
    mut rx: mpsc::Receiver<(Vec<u8>, usize)>,
    transfer_pool: mpsc::Sender<Vec<u8>>,
    cancel: &CancelToken,
) -> Stop {
    let zstd = || {
        Stop::Failed(StageError::Decompress {
            path: req.path.clone(),
            source: io::Error::new(e.kind(), e.to_string()),
        })
    };
    tracing::info!(path = %req.path, error = %e, at = got, "zstd refused the stream; hashing the rest of the transfer to tell a wrong download from a bad image");
    while let Some((buf, len)) = rx.blocking_recv() {
        if cancel.is_cancelled() {
            return Stop::Failed(StageError::Cancelled {
                path: req.path.clone(),
            });
        }
        hash.update(&buf[..len]);
        got += len as u64;
        let _ = transfer_pool.try_send(buf);
    }
    if got != req.length {
        return zstd();
    }
    let (h256, h512) = hash.finish();
    if let Err(mismatch) = check_hash(req, "transfer sha256", &req.sha256, &h256) {
        return Stop::Failed(mismatch);
    }
    if let (Some(want), Some(got)) = (&req.sha512, h512) {
        if let Err(mismatch) = check_hash(req, "transfer sha512", want, &got) {
            return Stop::Failed(mismatch);
        }
    }
    zstd()
}

struct WriterState {
    file: File,
    checkpoint: Checkpoint,
    written: u64,
    /// In-stream content hash when read-back is off.
    content_hash: Option<ContentHash>,
}

/// The writer: content into the slot, a durable checkpoint every `checkpoint_every`
/// bytes (uncompressed) or at the next zstd frame boundary after that many (compressed).
/// The checkpoints' syncs run on a scoped helper thread, so the device flushes one
/// segment while the next is being written (a segment is recorded only after a sync
/// that started once all its writes had completed).
#[allow(clippy::too_many_arguments)]
fn write_thread(
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
fn write_loop(
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
fn begin_write(
    req: &StageRequest,
    slot: &dyn RawSlot,
    file: &mut File,
    at: u64,
    touched: &AtomicBool,
) -> Result<(), Stop> {
    touched.store(true, Ordering::SeqCst);
    let st = slot.store().load()?;
    if st.state != super::SlotState::Incomplete || st.version.as_deref() != Some(&req.version) {
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
fn read_back_thread(
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

pub(super) fn emit(
    progress: &Option<ProgressFn>,
    phase: Phase,
    done: u64,
    total: u64,
    since: Instant,
) {
    if let Some(p) = progress {
        let secs = since.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            (done as f64 / secs) as u64
        } else {
            0
        };
        p(&Progress {
            phase,
            done,
            total,
            rate,
        });
    }
}

pub(super) fn check_hash(
    req: &StageRequest,
    which: &'static str,
    expected: &str,
    actual: &str,
) -> Result<(), StageError> {
    if expected.eq_ignore_ascii_case(actual) {
        Ok(())
    } else {
        Err(StageError::HashMismatch {
            path: req.path.clone(),
            which,
            expected: expected.to_ascii_lowercase(),
            actual: actual.to_string(),
        })
    }
}

/// Test-only crash injection: `PATCHD_FAILPOINT=<name>:<offset>` aborts the process
/// once `<name>` is reached at or past `<offset>`. Compiled only with the `failpoints`
/// feature, never in release packages.
#[cfg(feature = "failpoints")]
fn failpoint(name: &str, offset: u64) {
    if let Ok(v) = std::env::var("PATCHD_FAILPOINT") {
        if let Some((n, at)) = v.split_once(':') {
            if n == name && at.parse::<u64>().is_ok_and(|at| offset >= at) {
                std::process::abort();
            }
        }
    }
}

#[cfg(not(feature = "failpoints"))]
fn failpoint(_name: &str, _offset: u64) {}

fn save_checkpoint(store: &StatusStore, cp: &Checkpoint) -> Result<(), StageError> {
    let bytes = serde_json::to_vec(cp).map_err(|e| StageError::Io {
        what: "encoding checkpoint".into(),
        source: io::Error::other(e),
    })?;
    fsutil::atomic_write(&store.checkpoint_path(), &bytes).map_err(|e| StageError::Io {
        what: format!("writing checkpoint {}", store.checkpoint_path().display()),
        source: e,
    })
}
