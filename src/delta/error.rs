//! Everything that can go wrong while building or applying a delta.

use crate::fetch::FetchError;
use crate::slot::SlotError;

#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A header, index or entry that does not add up (lying lengths, bad magic…).
    #[error("{file}: invalid {field}: {why}")]
    Format {
        file: &'static str,
        field: String,
        why: String,
    },
    /// The delta was made from another image than the one the device runs.
    #[error("delta source is {expected}, the running slot holds {found}")]
    SourceMismatch { expected: String, found: String },
    /// A local base range did not match its signed hash (the running slot changed or
    /// the medium is damaged).
    #[error("local base {offset}+{len} does not match its signed hash")]
    BaseCorrupt { offset: u64, len: u64 },
    /// A decoded or fetched piece did not match its signed hash.
    #[error("piece {index} (target offset {offset}): {why}")]
    PieceCorrupt {
        index: usize,
        offset: u64,
        why: String,
    },
    #[error("fetching {path}: {source}")]
    Fetch {
        path: String,
        #[source]
        source: FetchError,
    },
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error("slot {slot}: content sha256 {found} is not the signed {expected}")]
    FinalHash {
        slot: String,
        expected: String,
        found: String,
    },
    #[error("zstd: {0}")]
    Zstd(String),
    #[error("cancelled")]
    Cancelled,
    /// The delta would fetch as much as the full image or more.
    #[error("the missing pieces add up to {fetch} bytes, not less than {limit}")]
    NotSmaller { fetch: u64, limit: u64 },
}

pub(crate) fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> DeltaError {
    let what = what.to_string();
    move |source| DeltaError::Io { what, source }
}

pub(crate) fn zstd_err(code: usize) -> DeltaError {
    DeltaError::Zstd(zstd::zstd_safe::get_error_name(code).to_string())
}
