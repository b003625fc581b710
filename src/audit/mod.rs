//! Append-only, hash-chained audit log.
//!
//! One JSON object per line (`audit.log` under the state directory). Every record carries
//! the sha256 (hex) of the previous record's line, so editing, removing or reordering any
//! record breaks the chain at a line [`AuditLog::verify`] names. Each append is fsynced
//! ([`crate::fsutil::append_sync`]) and mirrored as a structured `tracing` event (target
//! `patchd::audit`) for journald.
//!
//! API for the engine:
//! ```no_run
//! use patchd::audit::{Actor, AuditLimits, AuditLog, Entry, Filter};
//! # fn main() -> Result<(), patchd::audit::AuditError> {
//! let mut log = AuditLog::open("/var/lib/patchd/audit.log", AuditLimits::default())?;
//! let now = jiff::Timestamp::now();
//! log.append(
//!     Entry::new("switch", Actor::Policy, "maintenance window open")
//!         .release("2.0.0")
//!         .slot("b")
//!         .field("window", "Sat 02:00-06:00"),
//!     now,
//! )?;
//! let report = log.verify()?;
//! assert!(report.is_intact(), "{report}");
//! let history = log.query(&Filter { release: Some("2.0.0".into()), ..Filter::default() })?;
//! # let _ = history; Ok(()) }
//! ```
//!
//! Chain rules:
//! - the first record ever (`seq` 0) has `prev` = 64 zeros;
//! - every later record has `prev` = sha256 of the previous record's line bytes (without the
//!   newline) and `seq` = previous `seq` + 1;
//! - a head file (`audit.log.head`, replaced atomically after each append) holds the last
//!   `seq` and hash, so a removed or edited *last* record is found too. A log longer than
//!   its head is never tolerated silently: each record after the one the head names is a
//!   [`ProblemKind::HeadLag`]. A power cut between the append and the head update leaves
//!   exactly one; a well-chained record appended by anyone who can write the log looks the
//!   same, so only an admin's `--allow-power-cut-lag` accepts it (and it is still named).
//!   At start-up the daemon appends an `audit_head_lag` record ([`HEAD_LAG_EVENT`]) naming
//!   each extra record's `seq` and hash ([`AuditLog::record_head_lag`]); verify keeps
//!   naming those records after the head has caught up;
//! - a record whose time is before the previous record's is a warning
//!   ([`ProblemKind::TimeBackwards`]);
//! - every record's `seq` and hash also go to the journal (fields `PATCHD_AUDIT_SEQ`,
//!   `PATCHD_AUDIT_HASH`), and [`journal::cross_check`] compares the log with them.
//!
//! Rotation: when appending would grow `audit.log` past [`AuditLimits::max_bytes`], it is
//! renamed to `audit.log.1` (older ones shift to `.2` … up to [`AuditLimits::keep`], the
//! oldest is deleted) and a fresh `audit.log` starts whose first record's `prev` is the hash
//! of the rotated file's last record. Verify walks the files oldest first, so the chain is
//! checked across rotations; the first record of the oldest file kept is the anchor (only
//! `seq` 0 can be checked against the zero hash).
//!
//! Torn last line (power cut in the middle of an append): the record was never
//! acknowledged (its fsync had not returned). [`AuditLog::open`] detects it and the next
//! append first terminates the torn line with a newline and writes an
//! `audit.torn-record` record (actor `daemon`) naming the torn line's number, length and
//! sha256, chained to the last complete record. Nothing is ever truncated or rewritten.
//! Verify accepts a torn line only when the next record documents exactly those bytes;
//! a torn line still at the end of the log is reported as [`ProblemKind::TornTail`].

mod config;
pub mod events;
pub mod journal;
mod log;
mod record;
mod verify;

pub use config::{AuditConfig, RawAudit, DEFAULT_AUDIT_PATH};
pub use log::{AuditLimits, AuditLog, Filter, HeadLag, LaggingRecord};
pub use record::{Actor, Entry, Record, GENESIS_PREV, HEAD_LAG_EVENT, TORN_RECORD_EVENT};
pub use verify::{Problem, ProblemKind, VerifyReport};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit log {path}: cannot encode record: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("audit log {path}: bad head file: {why}")]
    BadHead { path: PathBuf, why: String },
    #[error("audit log: invalid limits: {0}")]
    Limits(String),
}
