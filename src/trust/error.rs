use crate::fetch::FetchError;

use super::metadata::MetadataError;

/// Everything the TUF client can refuse, naming the role or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("no trusted root in {dir}: install the device's root.json first")]
    NoTrustedRoot { dir: String },
    #[error("trusted {role} metadata on disk ({file}) failed verification: {source}")]
    BadTrustedMetadata {
        role: String,
        file: String,
        #[source]
        source: MetadataError,
    },
    #[error("{file}: {source}")]
    Fetch {
        file: String,
        #[source]
        source: FetchError,
    },
    /// Slow retrieval (TUF 5.x "slow retrieval attack"): `stalled` when not one byte came
    /// for `secs`, else the whole file was not complete within its budget of `secs`.
    #[error("{file}: slow retrieval: {}", timeout_why(*stalled, *secs, *received, *expected))]
    Timeout {
        file: String,
        secs: u64,
        /// Bytes that had arrived when the client gave up.
        received: u64,
        /// The signed length, when known.
        expected: Option<u64>,
        stalled: bool,
    },
    #[error("{role} metadata ({file}) rejected: {source}")]
    Metadata {
        role: String,
        file: String,
        #[source]
        source: MetadataError,
    },
    #[error("{role} metadata ({file}) has version {found}, expected {expected}")]
    VersionMismatch {
        role: String,
        file: String,
        found: u64,
        expected: u64,
    },
    #[error("{role} metadata version {new} is older than trusted version {trusted} (rollback)")]
    Rollback {
        role: String,
        new: u64,
        trusted: u64,
    },
    #[error("{role} metadata expired at {expires} (now {now})")]
    Expired {
        role: String,
        expires: String,
        now: String,
    },
    #[error("{file}: length {found} differs from the signed length {expected}")]
    LengthMismatch {
        file: String,
        found: u64,
        expected: u64,
    },
    #[error("{file}: {algorithm} hash differs from the signed hash")]
    HashMismatch { file: String, algorithm: String },
    #[error("{file}: unsupported hash algorithm {algorithm:?}")]
    UnknownHashAlgorithm { file: String, algorithm: String },
    #[error("{file}: no hashes given")]
    NoHashes { file: String },
    #[error("{role} not listed in {listed_in} metadata")]
    NotListed { role: String, listed_in: String },
    #[error("role {role:?} has no keys/threshold in {delegator}")]
    RoleUndefined { role: String, delegator: String },
    #[error("invalid role name {role:?}: {why}")]
    BadRoleName { role: String, why: &'static str },
    #[error("invalid target path {path:?}: {why}")]
    BadTargetPath { path: String, why: String },
    #[error("target {path:?} not found in any trusted targets role")]
    TargetNotFound { path: String },
    #[error("root rotation: more than {cap} new root versions in one refresh")]
    TooManyRootRotations { cap: u64 },
    #[error("system clock {now} is before {floor} ({what}): refusing to judge expiry; trusted metadata kept")]
    ClockWrong {
        now: String,
        floor: String,
        what: &'static str,
    },
    #[error("refresh() has not succeeded yet; no targets metadata to search")]
    NotRefreshed,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn timeout_why(stalled: bool, secs: u64, received: u64, expected: Option<u64>) -> String {
    let of = match expected {
        Some(e) => format!("{received} of {e} bytes received"),
        None => format!("{received} bytes received"),
    };
    if stalled {
        format!("no byte at all for {secs} s ({of})")
    } else {
        let rate = crate::fetch::rate::human_rate(received as f64 / (secs.max(1) as f64));
        format!("not complete within {secs} s ({of}, average {rate})")
    }
}

impl TrustError {
    /// Whether the source was too slow (a timeout here, or the fetch room's rate rule).
    pub fn is_slow_retrieval(&self) -> bool {
        match self {
            TrustError::Timeout { .. } => true,
            TrustError::Fetch { source, .. } => source.slow_retrieval().is_some(),
            _ => false,
        }
    }
}
