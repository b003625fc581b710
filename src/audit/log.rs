//! The log file itself: open (finding the chain's tail), append, rotate, query.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::record::{
    line_hash, Actor, Entry, Record, GENESIS_PREV, HEAD_LAG_EVENT, TORN_RECORD_EVENT,
};
use super::AuditError;
use crate::fsutil;

/// Size bound of the live file and how many rotated files are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditLimits {
    /// Rotate before the live file would grow past this many bytes (at least 4096).
    pub max_bytes: u64,
    /// Rotated files kept (`audit.log.1` … `audit.log.N`, at least 1).
    pub keep: u32,
}

impl Default for AuditLimits {
    fn default() -> Self {
        Self {
            max_bytes: 8 * 1024 * 1024,
            keep: 4,
        }
    }
}

impl AuditLimits {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_bytes < 4096 {
            return Err(format!("max_bytes {} is below 4096", self.max_bytes));
        }
        if self.keep == 0 || self.keep > 1000 {
            return Err(format!("keep {} must be between 1 and 1000", self.keep));
        }
        Ok(())
    }
}

/// History filter; every `Some` field must match. `limit` keeps the most recent N.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub event: Option<String>,
    pub release: Option<String>,
    pub slot: Option<String>,
    pub actor: Option<Actor>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub limit: Option<usize>,
}

impl Filter {
    pub fn matches(&self, r: &Record) -> bool {
        self.event.as_ref().is_none_or(|e| *e == r.event)
            && self
                .release
                .as_ref()
                .is_none_or(|v| r.release.as_ref() == Some(v))
            && self
                .slot
                .as_ref()
                .is_none_or(|s| r.slot.as_ref() == Some(s))
            && self.actor.is_none_or(|a| a == r.actor)
            && self.since.is_none_or(|t| r.time >= t)
            && self.until.is_none_or(|t| r.time < t)
    }
}

/// Last `seq` and hash, kept atomically next to the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Head {
    pub seq: u64,
    pub hash: String,
    /// Where the retained chain starts once rotation has deleted older files: without
    /// it, removing records from the start of the log would look like a rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<Anchor>,
}

/// `seq` and `prev` of the oldest record kept after rotation deleted older files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Anchor {
    pub seq: u64,
    pub prev: String,
}

/// Records in the live file after the record the head file names. A power cut between
/// an append and the head update leaves exactly one; anything else means records were
/// appended by someone other than this log's writer. Either way the head does not vouch
/// for them, so they are always named (never silently tolerated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeadLag {
    pub head_seq: u64,
    pub head_hash: String,
    pub records: Vec<LaggingRecord>,
}

/// One record the head file does not vouch for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaggingRecord {
    /// `seq` of the record (`None`: the line does not parse).
    pub seq: Option<u64>,
    /// sha256 of the record's line.
    pub hash: String,
    /// 1-based line number in the live file.
    pub line: u64,
}

impl std::fmt::Display for HeadLag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the audit log has {} record(s) after the one its head file names (seq {}):",
            self.records.len(),
            self.head_seq
        )?;
        for r in &self.records {
            let seq = r.seq.map_or("?".to_string(), |s| s.to_string());
            write!(f, " seq {seq} (line {}, sha256 {})", r.line, r.hash)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Torn {
    line: u64,
    len: u64,
    sha256: String,
}

/// The audit log. Owned by one task (the engine); appends take `&mut self`.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    limits: AuditLimits,
    next_seq: u64,
    last_hash: String,
    size: u64,
    torn: Option<Torn>,
    anchor: Option<Anchor>,
    /// What [`AuditLog::record_head_lag`] found when the daemon started.
    startup_lag: Option<HeadLag>,
}

/// Lines of a file: complete ones (newline-terminated, newline stripped) and a torn tail.
pub(crate) fn split_lines(bytes: &[u8]) -> (Vec<&[u8]>, Option<&[u8]>) {
    let mut parts: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    // `split` yields a final empty part after a trailing newline; anything else is torn.
    let last = parts.pop().filter(|p| !p.is_empty());
    (parts, last)
}

impl AuditLog {
    /// Open (or create on first append) the log at `path`, finding where the chain ends.
    pub fn open(path: impl Into<PathBuf>, limits: AuditLimits) -> Result<Self, AuditError> {
        limits.validate().map_err(AuditError::Limits)?;
        let mut log = Self {
            path: path.into(),
            limits,
            next_seq: 0,
            last_hash: GENESIS_PREV.to_string(),
            size: 0,
            torn: None,
            anchor: None,
            startup_lag: None,
        };
        log.anchor = log.read_head()?.and_then(|h| h.anchor);
        log.scan()?;
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `seq` the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// `seq` of the last complete record (`None`: the log is empty).
    pub fn last_seq(&self) -> Option<u64> {
        self.next_seq.checked_sub(1)
    }

    /// sha256 of the last complete record's line: the head of the chain, which the next
    /// record's `prev` will name (the zero hash for an empty log).
    pub fn last_hash(&self) -> &str {
        &self.last_hash
    }

    /// The lag [`AuditLog::record_head_lag`] found and recorded, if any.
    pub fn startup_lag(&self) -> Option<&HeadLag> {
        self.startup_lag.as_ref()
    }

    /// Compare the live file with the head file: the records after the one the head
    /// names. `None` when the head names the last record, when there is no head file,
    /// or when the head names no record of the live file or the end of the newest
    /// rotated one (that is a [`super::ProblemKind::HeadMismatch`] for verify).
    pub fn head_lag(&self) -> Result<Option<HeadLag>, AuditError> {
        let Some(head) = self.read_head()? else {
            return Ok(None);
        };
        let live = self.read_file(&self.path)?;
        let (lines, _) = split_lines(&live);
        let hashes: Vec<String> = lines.iter().map(|l| line_hash(l)).collect();
        let after = match hashes.iter().rposition(|h| *h == head.hash) {
            Some(i) => i + 1,
            None => {
                // A rotation, then an append whose head update was lost.
                let prev = self.read_file(&self.rotated(1))?;
                let (plines, _) = split_lines(&prev);
                if lines.is_empty()
                    || plines.last().map(|l| line_hash(l)) != Some(head.hash.clone())
                {
                    return Ok(None);
                }
                0
            }
        };
        if after >= lines.len() {
            return Ok(None);
        }
        let records = lines[after..]
            .iter()
            .zip(&hashes[after..])
            .enumerate()
            .map(|(k, (l, h))| LaggingRecord {
                seq: serde_json::from_slice::<Record>(l).ok().map(|r| r.seq),
                hash: h.clone(),
                line: (after + k) as u64 + 1,
            })
            .collect();
        Ok(Some(HeadLag {
            head_seq: head.seq,
            head_hash: head.hash,
            records,
        }))
    }

    /// At start-up: when the log is longer than its head, append an
    /// [`HEAD_LAG_EVENT`] record naming each extra record's `seq` and hash (which also
    /// brings the head up to date, so the lag is documented in the chain itself) and
    /// remember it for [`AuditLog::startup_lag`].
    pub fn record_head_lag(&mut self, now: Timestamp) -> Result<Option<HeadLag>, AuditError> {
        let Some(lag) = self.head_lag()? else {
            return Ok(None);
        };
        let seqs: Vec<serde_json::Value> = lag
            .records
            .iter()
            .map(|r| {
                r.seq
                    .map_or(serde_json::Value::Null, serde_json::Value::from)
            })
            .collect();
        let hashes: Vec<serde_json::Value> = lag
            .records
            .iter()
            .map(|r| serde_json::Value::from(r.hash.clone()))
            .collect();
        let reason = if lag.records.len() == 1 {
            "the log has one record after the one its head file names: a power cut between an append and the head update, or a record appended by someone else"
        } else {
            "the log has several records after the one its head file names: records appended by someone else (a power cut leaves at most one)"
        };
        tracing::warn!(target: "patchd::audit", head_seq = lag.head_seq,
            lagging = lag.records.len(), "audit: {lag}");
        self.append(
            Entry::new(HEAD_LAG_EVENT, Actor::Daemon, reason)
                .field("head_seq", lag.head_seq)
                .field("head_hash", lag.head_hash.clone())
                .field("lag_seqs", seqs)
                .field("lag_hashes", hashes),
            now,
        )?;
        self.startup_lag = Some(lag.clone());
        Ok(Some(lag))
    }

    /// `seq` and line hash of every complete record that parses, oldest first, across
    /// rotated files (for comparing with the journal).
    pub fn chain(&self) -> Result<Vec<(u64, String)>, AuditError> {
        let mut out = Vec::new();
        for f in self.files() {
            let bytes = self.read_file(&f)?;
            let (lines, _) = split_lines(&bytes);
            for l in lines {
                if let Ok(r) = serde_json::from_slice::<Record>(l) {
                    out.push((r.seq, line_hash(l)));
                }
            }
        }
        Ok(out)
    }

    /// Whether the live file ends in an incomplete line (documented on the next append).
    pub fn has_torn_tail(&self) -> bool {
        self.torn.is_some()
    }

    pub(crate) fn rotated(&self, k: u32) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{k}"));
        PathBuf::from(s)
    }

    pub(crate) fn head_path(&self) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(".head");
        PathBuf::from(s)
    }

    /// Every existing file of the log, oldest first (rotated ones, then the live one).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = (1..=self.limits.keep)
            .rev()
            .map(|k| self.rotated(k))
            .filter(|p| p.exists())
            .collect();
        if self.path.exists() {
            v.push(self.path.clone());
        }
        v
    }

    fn io(&self, path: &Path, source: io::Error) -> AuditError {
        AuditError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn read_opt(&self, path: &Path) -> Result<Option<Vec<u8>>, AuditError> {
        match fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(path, e)),
        }
    }

    /// Find the chain's tail: the live file's last complete line, else the newest rotated
    /// file's, else the genesis.
    fn scan(&mut self) -> Result<(), AuditError> {
        self.next_seq = 0;
        self.last_hash = GENESIS_PREV.to_string();
        self.size = 0;
        self.torn = None;
        let live = self.read_opt(&self.path.clone())?.unwrap_or_default();
        self.size = live.len() as u64;
        let (lines, tail) = split_lines(&live);
        if let Some(t) = tail {
            self.torn = Some(Torn {
                line: lines.len() as u64 + 1,
                len: t.len() as u64,
                sha256: line_hash(t),
            });
        }
        if !lines.is_empty() {
            self.set_tail_from(&lines);
            return Ok(());
        }
        if let Some(prev) = self.read_opt(&self.rotated(1))? {
            let (lines, _) = split_lines(&prev);
            if !lines.is_empty() {
                self.set_tail_from(&lines);
            }
        }
        Ok(())
    }

    fn set_tail_from(&mut self, lines: &[&[u8]]) {
        let Some(last) = lines.last() else { return };
        self.last_hash = line_hash(last);
        // A damaged line still occupies a seq; count back to the last one that parses.
        for (back, line) in lines.iter().rev().enumerate() {
            if let Ok(r) = serde_json::from_slice::<Record>(line) {
                self.next_seq = r.seq.saturating_add(1).saturating_add(back as u64);
                return;
            }
        }
        self.next_seq = lines.len() as u64;
    }

    /// Append one record (fsynced), returning it as written.
    pub fn append(&mut self, entry: Entry, now: Timestamp) -> Result<Record, AuditError> {
        let result = self.append_inner(entry, now);
        if result.is_err() {
            // We no longer know how much reached the disk: re-read the tail so the next
            // append chains onto whatever is really there.
            if let Err(e) = self.scan() {
                tracing::error!(path = %self.path.display(), error = %e, "audit log rescan failed");
            }
        }
        result
    }

    fn append_inner(&mut self, entry: Entry, now: Timestamp) -> Result<Record, AuditError> {
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsutil::ensure_dir(parent, 0o700).map_err(|e| self.io(parent, e))?;
        }
        if let Some(torn) = self.torn.clone() {
            let note = Entry::new(
                TORN_RECORD_EVENT,
                Actor::Daemon,
                "the previous append was interrupted (power cut?); its incomplete line is kept and skipped",
            )
            .field("torn_line", torn.line)
            .field("torn_bytes", torn.len)
            .field("torn_sha256", torn.sha256.clone());
            let (rec, line) = self.encode(note, now)?;
            let mut bytes = Vec::with_capacity(line.len() + 2);
            bytes.push(b'\n');
            bytes.extend_from_slice(&line);
            bytes.push(b'\n');
            self.write(&bytes, &rec, &line)?;
            self.torn = None;
            tracing::warn!(target: "patchd::audit", audit_seq = rec.seq,
                audit_hash = %self.last_hash, audit_prev = %rec.prev, event = %rec.event,
                torn_line = torn.line, torn_bytes = torn.len, "audit: documented a torn record");
        }
        let (rec, line) = self.encode(entry, now)?;
        if self.size > 0 && self.size + line.len() as u64 + 1 > self.limits.max_bytes {
            self.rotate()?;
        }
        let mut bytes = line.clone();
        bytes.push(b'\n');
        self.write(&bytes, &rec, &line)?;
        // `audit_seq`/`audit_hash` reach the journal as PATCHD_AUDIT_SEQ and
        // PATCHD_AUDIT_HASH: journald's copy is what `patchd audit verify --journal`
        // compares the log with.
        tracing::info!(
            target: "patchd::audit",
            audit_seq = rec.seq,
            audit_hash = %self.last_hash,
            audit_prev = %rec.prev,
            event = %rec.event,
            release = rec.release.as_deref().unwrap_or(""),
            slot = rec.slot.as_deref().unwrap_or(""),
            actor = %rec.actor,
            reason = %rec.reason,
            extra = %serde_json::Value::Object(rec.extra.clone()),
            "audit"
        );
        Ok(rec)
    }

    fn encode(&self, e: Entry, now: Timestamp) -> Result<(Record, Vec<u8>), AuditError> {
        let rec = Record {
            seq: self.next_seq,
            time: now,
            event: e.event,
            release: e.release,
            slot: e.slot,
            actor: e.actor,
            reason: e.reason,
            extra: e.extra,
            prev: self.last_hash.clone(),
        };
        let line = serde_json::to_vec(&rec).map_err(|source| AuditError::Encode {
            path: self.path.clone(),
            source,
        })?;
        Ok((rec, line))
    }

    fn write(&mut self, bytes: &[u8], rec: &Record, line: &[u8]) -> Result<(), AuditError> {
        fsutil::append_sync(&self.path, bytes).map_err(|e| self.io(&self.path, e))?;
        self.size += bytes.len() as u64;
        self.next_seq = rec.seq + 1;
        self.last_hash = line_hash(line);
        self.write_head(rec.seq)
    }

    fn write_head(&self, seq: u64) -> Result<(), AuditError> {
        let head = Head {
            seq,
            hash: self.last_hash.clone(),
            anchor: self.anchor.clone(),
        };
        let hp = self.head_path();
        let json = serde_json::to_vec(&head).map_err(|source| AuditError::Encode {
            path: hp.clone(),
            source,
        })?;
        fsutil::atomic_write_mode(&hp, &json, 0o600).map_err(|e| self.io(&hp, e))
    }

    /// `seq`/`prev` of the first record in `file`, if it has one.
    fn first_record(&self, file: &Path) -> Result<Option<Anchor>, AuditError> {
        let bytes = self.read_file(file)?;
        let (lines, _) = split_lines(&bytes);
        Ok(lines
            .iter()
            .find_map(|l| serde_json::from_slice::<Record>(l).ok())
            .map(|r| Anchor {
                seq: r.seq,
                prev: r.prev,
            }))
    }

    fn rotate(&mut self) -> Result<(), AuditError> {
        let keep = self.limits.keep;
        let oldest = self.rotated(keep);
        if oldest.exists() {
            // Record the new start of the chain before deleting anything, so a verifier
            // can tell this deletion from records removed by someone else.
            let next_oldest = if keep > 1 {
                self.rotated(keep - 1)
            } else {
                self.path.clone()
            };
            if let Some(a) = self.first_record(&next_oldest)? {
                self.anchor = Some(a);
                self.write_head(self.next_seq.saturating_sub(1))?;
            }
        }
        match fs::remove_file(&oldest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io(&oldest, e)),
        }
        for k in (1..keep).rev() {
            let from = self.rotated(k);
            if from.exists() {
                let to = self.rotated(k + 1);
                fs::rename(&from, &to).map_err(|e| self.io(&from, e))?;
            }
        }
        let to = self.rotated(1);
        fs::rename(&self.path, &to).map_err(|e| self.io(&self.path, e))?;
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsutil::fsync_dir(parent).map_err(|e| self.io(parent, e))?;
        }
        self.size = 0;
        tracing::info!(target: "patchd::audit", rotated_to = %to.display(), "audit log rotated");
        Ok(())
    }

    /// Records matching `filter`, oldest first, across rotated files. Lines that do not
    /// parse are skipped here (verify reports them).
    pub fn query(&self, filter: &Filter) -> Result<Vec<Record>, AuditError> {
        let mut out = Vec::new();
        for f in self.files() {
            let bytes = self.read_opt(&f)?.unwrap_or_default();
            let (lines, _) = split_lines(&bytes);
            out.extend(
                lines
                    .iter()
                    .filter_map(|l| serde_json::from_slice::<Record>(l).ok())
                    .filter(|r| filter.matches(r)),
            );
        }
        if let Some(n) = filter.limit {
            let skip = out.len().saturating_sub(n);
            out.drain(..skip);
        }
        Ok(out)
    }

    pub(crate) fn read_head(&self) -> Result<Option<Head>, AuditError> {
        let hp = self.head_path();
        match self.read_opt(&hp)? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| AuditError::BadHead {
                    path: hp,
                    why: e.to_string(),
                }),
        }
    }

    pub(crate) fn read_file(&self, p: &Path) -> Result<Vec<u8>, AuditError> {
        Ok(self.read_opt(p)?.unwrap_or_default())
    }
}
