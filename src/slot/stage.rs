//! The staging pipeline: source → (zstd) → hashes → slot, one pass, bounded memory.
//!
//! The async side only moves transfer bytes from the [`ByteSource`] into a small pool of
//! fixed buffers; one blocking worker thread hashes them (sha256, optionally sha512, of
//! the transfer), decompresses, hashes the content, writes it to the slot and takes
//! durable checkpoints. After the last byte the slot is fsynced, its page cache dropped,
//! and the content read back from the medium and hashed again; only when every hash
//! matched the signed ones does the status record say `verified`.
//!
//! Resume: for uncompressed images the worker fdatasyncs the slot every
//! `checkpoint_every` bytes and records the offset plus a CRC per chunk. A later call with
//! the same request re-reads the written prefix, checks it against the chunk CRCs, feeds
//! it through the hashes and continues with a range request, so a resumed install ends in
//! exactly the same verified state. Compressed images resume through the download cache
//! ([`super::cache`]), since a decompressor's state cannot be checkpointed.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, Notify};

use super::status::StatusStore;
use super::{Slot, SlotError, SlotStatus};
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

/// Resume record: `<state_dir>/slots/<slot>.stage.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Checkpoint {
    version: u32,
    request: StageRequest,
    chunk_size: u64,
    /// CRC32 of each complete chunk written and synced so far.
    chunk_crc: Vec<u32>,
}

impl Checkpoint {
    fn offset(&self) -> u64 {
        self.chunk_size * self.chunk_crc.len() as u64
    }
}

pub(super) struct Hashes {
    pub(super) transfer: Sha256,
    pub(super) transfer512: Option<Sha512>,
    pub(super) content: Option<Sha256>,
}

impl Hashes {
    /// Compare the finished digests with the signed ones: transfer sha256 (and sha512 when
    /// signed), and the content sha256 computed over the decompressed stream, if any.
    pub(super) fn verify(
        mut self,
        req: &StageRequest,
        content: Option<Sha256>,
    ) -> Result<(), StageError> {
        check_hash(
            req,
            "transfer sha256",
            &req.sha256,
            &hex::encode(self.transfer.finalize()),
        )?;
        if let (Some(want), Some(h)) = (&req.sha512, self.transfer512.take()) {
            check_hash(req, "transfer sha512", want, &hex::encode(h.finalize()))?;
        }
        if let Some(h) = content {
            check_hash(
                req,
                "content sha256",
                &req.content_sha256,
                &hex::encode(h.finalize()),
            )?;
        }
        Ok(())
    }

    pub(super) fn new(req: &StageRequest) -> Self {
        Self {
            transfer: Sha256::new(),
            transfer512: req.sha512.as_ref().map(|_| Sha512::new()),
            content: (req.compression != Compression::None).then(Sha256::new),
        }
    }
    fn empty() -> Self {
        Self {
            transfer: Sha256::new(),
            transfer512: None,
            content: None,
        }
    }
    fn transfer(&mut self, b: &[u8]) {
        self.transfer.update(b);
        if let Some(h) = &mut self.transfer512 {
            h.update(b);
        }
    }
}

/// Stage `req` from `source` into a raw slot. On success the slot's status record says
/// `verified` with the content hash; on any failure it says `incomplete` (never bootable)
/// and the error says what was wrong.
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
    let result = stage_inner(req, source, slot.clone(), opts, progress, cancel).await;
    if let Err(e) = &result {
        tracing::warn!(slot = %slot.name(), path = %req.path, error = %e, resumable = e.is_resumable(), "staging failed");
        if !e.is_resumable() {
            let _ = std::fs::remove_file(slot.store().checkpoint_path());
        }
        // The record already says incomplete unless the slot was refused up front; make
        // sure nothing half-written can be selected.
        if let Ok(st) = slot.store().load() {
            if st.state.is_bootable() && !matches!(e, StageError::Slot(SlotError::Refused { .. })) {
                let _ = slot.store().mark_incomplete(&req.version);
            }
        }
    }
    result
}

async fn stage_inner(
    req: &StageRequest,
    source: &dyn ByteSource,
    slot: Arc<dyn RawSlot>,
    opts: &StageOptions,
    progress: Option<ProgressFn>,
    cancel: &CancelToken,
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
    let start = prep.offset;
    tracing::info!(slot = %slot.name(), path = %req.path, version = %req.version, resume_from = start, "staging");

    let reader = source
        .open_exact(&req.path, start, req.length)
        .await
        .map_err(|e| StageError::Fetch {
            path: req.path.clone(),
            source: e,
        })?;

    let (full_tx, full_rx) = mpsc::channel::<(Vec<u8>, usize)>(opts.buffers.max(1));
    let (empty_tx, mut empty_rx) = mpsc::channel::<Vec<u8>>(opts.buffers.max(1) + 1);
    for _ in 0..opts.buffers.max(1) {
        let _ = empty_tx.try_send(vec![0u8; opts.buffer_size.max(4096)]);
    }
    // The transfer is hashed on its own thread, in parallel with decompression, the
    // content hash and the writes on the worker thread (two cores busy, not one).
    let mut prep = prep;
    // The content hasher stays with the worker; only the transfer hashes move.
    let content_hasher = prep.hashes.content.take();
    let transfer_hashes = std::mem::replace(&mut prep.hashes, Hashes::empty());
    prep.hashes.content = content_hasher;
    let (mid_tx, mid_rx) = mpsc::channel::<(Vec<u8>, usize)>(opts.buffers.max(1));
    let hasher = std::thread::Builder::new()
        .name("patchd-hash".into())
        .spawn(move || {
            let mut h = transfer_hashes;
            let mut rx = full_rx;
            while let Some((buf, len)) = rx.blocking_recv() {
                h.transfer(&buf[..len]);
                if mid_tx.blocking_send((buf, len)).is_err() {
                    break;
                }
            }
            h
        })
        .map_err(|e| StageError::Io {
            what: "starting the hash thread".into(),
            source: e,
        })?;
    let worker = {
        let (slot, req, opts, progress, cancel) = (
            slot.clone(),
            req.clone(),
            opts.clone(),
            progress.clone(),
            cancel.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let input = ChanRead {
                rx: mid_rx,
                recycle: empty_tx,
                cur: None,
                pos: 0,
            };
            write_worker(
                &req,
                slot.as_ref(),
                prep,
                input,
                hasher,
                &opts,
                progress,
                &cancel,
            )
        })
    };

    let pump = pump_source(req, reader, start, full_tx, &mut empty_rx, cancel).await;
    let worker_result = worker.await.map_err(join_err)?;
    // When the pump fails (network, truncation, cancel) the worker only sees the input
    // end early, so the pump's error is the real cause. When the worker fails first it
    // drops its channel and the pump ends quietly, so the worker's error stands.
    match (pump, worker_result) {
        (Err(e), _) => Err(e),
        (Ok(()), r) => r,
    }
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

/// Hashes the transfer bytes as the decompressor pulls them.
pub(super) struct HashingInput<'a> {
    pub(super) input: ChanRead,
    /// `None` when a separate hash thread already hashes the transfer.
    pub(super) hashes: Option<&'a mut Hashes>,
    pub(super) count: u64,
}

impl Read for HashingInput<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let Some(s) = self.input.next_slice() else {
            return Ok(0);
        };
        let n = s.len().min(out.len());
        out[..n].copy_from_slice(&s[..n]);
        if let Some(h) = &mut self.hashes {
            h.transfer(&out[..n]);
        }
        self.count += n as u64;
        self.input.consume(n);
        Ok(n)
    }
}

struct Prepared {
    file: File,
    offset: u64,
    hashes: Hashes,
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
        .filter(|c: &Checkpoint| {
            c.version == 1 && c.request == *req && c.request.compression == Compression::None
        });
    let current = store.load()?;
    let mut file = slot.open_for_write(req.size)?;
    let mut hashes = Hashes::new(req);
    let chunk_size = opts.checkpoint_every.max(1 << 20);

    let mut checkpoint = Checkpoint {
        version: 1,
        request: req.clone(),
        chunk_size,
        chunk_crc: Vec::new(),
    };
    if let Some(prev) = previous.filter(|_| current.state == super::SlotState::Incomplete) {
        // Re-read what was written before the interruption, check it against the chunk
        // CRCs and rebuild the hash state from it.
        let mut rd = slot.open_for_read()?;
        let mut buf = vec![0u8; 1 << 20];
        let started = Instant::now();
        for (i, want) in prev.chunk_crc.iter().enumerate() {
            if cancel.is_cancelled() {
                return Err(StageError::Cancelled {
                    path: req.path.clone(),
                });
            }
            let mut crc = crc32fast::Hasher::new();
            let mut left = prev.chunk_size;
            let mut chunk_hash = hashes.transfer.clone();
            while left > 0 {
                let n = (left as usize).min(buf.len());
                rd.read_exact(&mut buf[..n]).map_err(|e| StageError::Io {
                    what: format!("re-reading slot {}", slot.name()),
                    source: e,
                })?;
                crc.update(&buf[..n]);
                chunk_hash.update(&buf[..n]);
                left -= n as u64;
            }
            if crc.finalize() != *want {
                tracing::warn!(slot = %slot.name(), chunk = i, "written chunk does not match its checkpoint, resuming before it");
                break;
            }
            hashes.transfer = chunk_hash;
            checkpoint.chunk_crc.push(*want);
            emit(
                &progress,
                Phase::Resume,
                checkpoint.offset(),
                req.size,
                started,
            );
        }
        if let Some(h) = &mut hashes.transfer512 {
            // sha512 state is not checkpointed; rebuild it from the verified prefix.
            rd.seek(SeekFrom::Start(0)).map_err(|e| StageError::Io {
                what: format!("re-reading slot {}", slot.name()),
                source: e,
            })?;
            let mut left = checkpoint.offset();
            while left > 0 {
                let n = (left as usize).min(buf.len());
                rd.read_exact(&mut buf[..n]).map_err(|e| StageError::Io {
                    what: format!("re-reading slot {}", slot.name()),
                    source: e,
                })?;
                h.update(&buf[..n]);
                left -= n as u64;
            }
        }
        tracing::info!(slot = %slot.name(), offset = checkpoint.offset(), "resuming interrupted staging");
    } else {
        let _ = std::fs::remove_file(&cp_path);
        store.mark_incomplete(&req.version)?;
    }
    file.seek(SeekFrom::Start(checkpoint.offset()))
        .map_err(|e| StageError::Io {
            what: format!("seeking in slot {}", slot.name()),
            source: e,
        })?;
    Ok(Prepared {
        file,
        offset: checkpoint.offset(),
        hashes,
        checkpoint,
    })
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

/// The decompressed (or plain) content stream over the hashed transfer input.
pub(super) enum Content<'a> {
    Plain(HashingInput<'a>),
    Zstd(Box<zstd::stream::read::Decoder<'static, io::BufReader<HashingInput<'a>>>>),
}

impl Content<'_> {
    pub(super) fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Content::Plain(r) => r.read(out),
            Content::Zstd(d) => d.read(out),
        }
    }
    pub(super) fn transfer_count(&self) -> u64 {
        match self {
            Content::Plain(r) => r.count,
            Content::Zstd(d) => d.get_ref().get_ref().count,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn write_worker(
    req: &StageRequest,
    slot: &dyn RawSlot,
    prep: Prepared,
    input: ChanRead,
    hasher: std::thread::JoinHandle<Hashes>,
    opts: &StageOptions,
    progress: Option<ProgressFn>,
    cancel: &CancelToken,
) -> Result<SlotStatus, StageError> {
    let Prepared {
        mut file,
        offset,
        hashes: mut prep_hashes,
        mut checkpoint,
    } = prep;
    let name = slot.name().clone();
    let io_err = |what: &str, e: io::Error| StageError::Io {
        what: format!("{what} slot {name}"),
        source: e,
    };
    let decompress_err = |e: io::Error| StageError::Decompress {
        path: req.path.clone(),
        source: e,
    };
    let resumable = req.compression == Compression::None;
    let started = Instant::now();
    let mut last_emit = Instant::now();
    let mut written = offset;
    let mut chunk_crc = crc32fast::Hasher::new();
    let mut chunk_fill = 0u64;
    let mut content_hash = prep_hashes.content.take();
    let mut out = vec![0u8; 1 << 20];
    let transfer_count = {
        let hin = HashingInput {
            input,
            hashes: None,
            count: offset,
        };
        let mut content = match req.compression {
            Compression::None => Content::Plain(hin),
            Compression::Zstd => {
                let mut d = zstd::stream::read::Decoder::new(hin).map_err(decompress_err)?;
                d.window_log_max(opts.zstd_window_log_max)
                    .map_err(decompress_err)?;
                Content::Zstd(Box::new(d))
            }
        };
        loop {
            if cancel.is_cancelled() {
                return Err(StageError::Cancelled {
                    path: req.path.clone(),
                });
            }
            let n = match content.read(&mut out) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(decompress_err(e)),
            };
            if written + n as u64 > req.size {
                return Err(StageError::DecompressedTooLarge {
                    path: req.path.clone(),
                    declared: req.size,
                });
            }
            let data = &out[..n];
            if let Some(h) = &mut content_hash {
                h.update(data);
            }
            file.write_all(data).map_err(|e| io_err("writing", e))?;
            written += n as u64;
            if resumable {
                // Chunks are aligned to the checkpoint interval so a resumed run checks
                // the same ranges.
                let mut rest = data;
                while !rest.is_empty() {
                    let take = ((checkpoint.chunk_size - chunk_fill) as usize).min(rest.len());
                    chunk_crc.update(&rest[..take]);
                    chunk_fill += take as u64;
                    rest = &rest[take..];
                    if chunk_fill == checkpoint.chunk_size {
                        let crc = std::mem::take(&mut chunk_crc).finalize();
                        checkpoint.chunk_crc.push(crc);
                        chunk_fill = 0;
                        // Data first, then the record that vouches for it.
                        file.sync_data().map_err(|e| io_err("syncing", e))?;
                        save_checkpoint(slot.store(), &checkpoint)?;
                        failpoint("stage-after-checkpoint", checkpoint.offset());
                    }
                }
            }
            if last_emit.elapsed() >= Duration::from_millis(250) {
                emit(&progress, Phase::Write, written, req.size, started);
                last_emit = Instant::now();
            }
        }
        content.transfer_count()
    };
    emit(&progress, Phase::Write, written, req.size, started);
    if transfer_count != req.length {
        return Err(StageError::Truncated {
            path: req.path.clone(),
            got: transfer_count,
            expected: req.length,
        });
    }
    if written != req.size {
        return Err(StageError::SizeMismatch {
            path: req.path.clone(),
            got: written,
            declared: req.size,
        });
    }
    file.sync_all().map_err(|e| io_err("syncing", e))?;

    let hashes = hasher.join().map_err(|_| StageError::Io {
        what: "hash thread".into(),
        source: io::Error::other("panicked"),
    })?;
    hashes.verify(req, content_hash)?;

    if opts.read_back {
        let started = Instant::now();
        slot.drop_cache(&file, req.size)
            .map_err(|e| io_err("dropping page cache of", e))?;
        drop(file);
        let mut rd = slot.open_for_read()?;
        slot.drop_cache(&rd, req.size)
            .map_err(|e| io_err("dropping page cache of", e))?;
        let mut h = Sha256::new();
        let mut left = req.size;
        let mut last = Instant::now();
        while left > 0 {
            let n = (left as usize).min(out.len());
            rd.read_exact(&mut out[..n])
                .map_err(|e| io_err("reading back", e))?;
            h.update(&out[..n]);
            left -= n as u64;
            if last.elapsed() >= Duration::from_millis(250) {
                emit(
                    &progress,
                    Phase::ReadBack,
                    req.size - left,
                    req.size,
                    started,
                );
                last = Instant::now();
            }
        }
        check_hash(
            req,
            "read-back sha256",
            &req.content_sha256,
            &hex::encode(h.finalize()),
        )?;
    }

    let store = slot.store();
    let _ = std::fs::remove_file(store.checkpoint_path());
    let st = store.mark_verified(
        &req.version,
        &req.content_sha256.to_ascii_lowercase(),
        req.size,
    )?;
    emit(&progress, Phase::Done, req.size, req.size, started);
    tracing::info!(slot = %slot.name(), version = %req.version, size = req.size, "slot verified");
    Ok(st)
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
