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
    #[error("{file}: no data within {secs} s (slow retrieval)")]
    Timeout { file: String, secs: u64 },
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
