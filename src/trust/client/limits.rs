//! Bounds on what a repository can make the client do.

use std::time::Duration;

use jiff::Timestamp;

/// Bounds on what a repository can make the client do. All on by default.
#[derive(Debug, Clone)]
pub struct Limits {
    /// New root versions accepted in one refresh.
    pub max_root_rotations: u64,
    /// Delegated targets roles visited in one target search (after the top-level one).
    pub max_delegations: usize,
    /// Size limits for metadata whose length is not signed.
    pub root_max_len: u64,
    pub timestamp_max_len: u64,
    pub snapshot_max_len: u64,
    pub targets_max_len: u64,
    /// Nesting depth accepted in a metadata file.
    pub max_json_depth: usize,
    /// Time allowed for one whole metadata file.
    pub metadata_timeout: Duration,
    /// Time a target download may go without receiving a byte.
    pub stall_timeout: Duration,
    /// Clock-sanity safeguard (a daemon policy, not part of the TUF workflow): refuse
    /// to judge expiry when the clock reads before `not_before` or before the last
    /// successful refresh (kept in `last-refresh.time`). On in `patchd`; off, the
    /// clock is taken as it is, as the specification does, and no `last-refresh.time`
    /// is written (the `tuf-client` conformance example).
    pub clock_sanity: bool,
    /// With `clock_sanity`: a clock reading before this is obviously wrong (the build
    /// time).
    pub not_before: Timestamp,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_root_rotations: 32,
            max_delegations: 32,
            root_max_len: 512_000,
            timestamp_max_len: 16_384,
            snapshot_max_len: 2_000_000,
            targets_max_len: 5_000_000,
            max_json_depth: 32,
            metadata_timeout: Duration::from_secs(120),
            stall_timeout: Duration::from_secs(60),
            clock_sanity: true,
            not_before: build_time(),
        }
    }
}

/// The build time: `SOURCE_DATE_EPOCH` at compile time if set, else the date this
/// code was last released (a floor only needs to be roughly right).
pub fn build_time() -> Timestamp {
    option_env!("SOURCE_DATE_EPOCH")
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|s| Timestamp::from_second(s).ok())
        .unwrap_or_else(|| Timestamp::constant(1_794_000_000, 0)) // 2026-11-06
}
