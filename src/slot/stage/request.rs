//! What to stage and how: the request taken from signed metadata, pipeline options,
//! progress events, cancellation, and the errors a staging run ends with.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::RawSlot;
use crate::fetch::FetchError;
use crate::slot::SlotError;

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

    pub(in crate::slot) fn validate(&self) -> Result<(), StageError> {
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
pub struct StageProgress {
    pub phase: Phase,
    /// Content bytes done in this phase.
    pub done: u64,
    pub total: u64,
    /// Bytes per second since the phase started.
    pub rate: u64,
}

/// Receives progress events (from the worker thread; keep it cheap).
pub type ProgressFn = Arc<dyn Fn(&StageProgress) + Send + Sync>;

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
    pub(in crate::slot) async fn cancelled(&self) {
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
        source: crate::slot::extract::ExtractError,
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

pub(in crate::slot) fn emit(
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
        p(&StageProgress {
            phase,
            done,
            total,
            rate,
        });
    }
}

pub(in crate::slot) fn check_hash(
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

pub(super) fn slot_io(slot: &dyn RawSlot, what: &str, e: io::Error) -> StageError {
    StageError::Io {
        what: format!("{what} slot {}", slot.name()),
        source: e,
    }
}
