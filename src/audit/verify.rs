//! Chain verification across the live and rotated files.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use jiff::Timestamp;

use super::log::{split_lines, AuditLog};
use super::record::{line_hash, Record, GENESIS_PREV, HEAD_LAG_EVENT, TORN_RECORD_EVENT};
use super::AuditError;

/// What is wrong at one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// The line is not a valid record (edited into invalid JSON, or a torn line that no
    /// `audit.torn-record` documents).
    Unparsable(String),
    /// `prev` does not match the hash of the record before it: that record (on
    /// `previous_line` of the same file, or the end of the previous file) was edited, or
    /// records between them were removed or reordered.
    BrokenChain { previous_line: Option<u64> },
    /// `seq` is not the previous `seq` + 1: records removed or reordered.
    SeqGap { expected: u64, found: u64 },
    /// The first record ever must chain to the zero hash.
    BadGenesis,
    /// The log does not start at the first record and no rotation anchor in the head
    /// file vouches for where it starts: records were removed from the start.
    MissingStart { first_seq: u64 },
    /// The head file says the log ends at a record that is not the last one: the last
    /// records were removed or the last record edited.
    HeadMismatch {
        head_seq: u64,
        last_seq: Option<u64>,
    },
    /// The live file ends in an incomplete line (power cut during an append). Not a
    /// tampering sign; reported as a warning and documented by the next append.
    TornTail,
    /// The record was appended after the last head update: the head file does not vouch
    /// for it. One such record is what a power cut between an append and the head update
    /// leaves; a well-chained record appended by anyone who can write the log looks the
    /// same. `documented_by`: the `audit_head_lag` record the daemon wrote at start-up.
    HeadLag {
        seq: Option<u64>,
        hash: String,
        documented_by: Option<u64>,
    },
    /// The log has records but no head file: the head was removed, so trailing records
    /// cannot be checked.
    HeadMissing { last_seq: Option<u64> },
    /// The record's time is before the previous record's (a warning: a clock stepped
    /// back, or records written with a forged time).
    TimeBackwards {
        previous_line: Option<u64>,
        previous: Timestamp,
        time: Timestamp,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based line number in `file`.
    pub line: u64,
    pub kind: ProblemKind,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}: ", self.file.display(), self.line)?;
        match &self.kind {
            ProblemKind::Unparsable(why) => write!(f, "not a valid audit record ({why})"),
            ProblemKind::BrokenChain {
                previous_line: Some(p),
            } => write!(
                f,
                "prev hash does not match line {p}: line {p} was edited, or records between were removed or reordered"
            ),
            ProblemKind::BrokenChain {
                previous_line: None,
            } => write!(
                f,
                "prev hash does not match the last record of the previous file: records removed, reordered or edited across the rotation"
            ),
            ProblemKind::SeqGap { expected, found } => write!(
                f,
                "seq {found} where {expected} was expected: records removed or reordered"
            ),
            ProblemKind::BadGenesis => write!(f, "first record (seq 0) does not chain to the zero hash"),
            ProblemKind::MissingStart { first_seq } => write!(
                f,
                "the log starts at seq {first_seq} and no rotation anchor vouches for it: records removed from the start"
            ),
            ProblemKind::HeadMismatch { head_seq, last_seq } => write!(
                f,
                "head file records seq {head_seq} but the log ends at {}: trailing records removed or the last record edited",
                last_seq.map_or("nothing".to_string(), |s| s.to_string())
            ),
            ProblemKind::TornTail => write!(
                f,
                "incomplete last line (power cut during an append?); the next append documents it"
            ),
            ProblemKind::HeadLag {
                seq,
                hash,
                documented_by,
            } => {
                let seq = seq.map_or("?".to_string(), |s| s.to_string());
                write!(
                    f,
                    "record seq {seq} (sha256 {hash}) was appended after the last head update: a power cut between the append and the head update, or a record appended by someone else"
                )?;
                if let Some(d) = documented_by {
                    write!(f, " (found at start-up, audit_head_lag seq {d})")?;
                }
                Ok(())
            }
            ProblemKind::HeadMissing { last_seq } => write!(
                f,
                "no head file although the log ends at seq {}: the head was removed, trailing records cannot be checked",
                last_seq.map_or("?".to_string(), |s| s.to_string())
            ),
            ProblemKind::TimeBackwards {
                previous_line,
                previous,
                time,
            } => {
                write!(f, "time {time} is before the previous record's {previous}")?;
                if let Some(p) = previous_line {
                    write!(f, " (line {p})")?;
                }
                write!(f, ": the clock stepped back, or the record's time was forged")
            }
        }
    }
}

/// Result of [`AuditLog::verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub files: Vec<PathBuf>,
    /// Records that parsed and were checked.
    pub records: u64,
    /// Tampering or corruption. Empty means the chain is intact.
    pub problems: Vec<Problem>,
    /// Not tampering, but worth showing (a torn tail not yet documented).
    pub warnings: Vec<Problem>,
    /// Informational (chain anchor after rotation, documented torn lines).
    pub notes: Vec<String>,
}

impl VerifyReport {
    /// No problem at all, not even a record the head does not vouch for.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }

    /// Records appended after the last head update ([`ProblemKind::HeadLag`]).
    pub fn lagging(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| matches!(p.kind, ProblemKind::HeadLag { .. }))
    }

    /// The only problem is exactly one record appended after the last head update: what
    /// a single power cut leaves. Accepted only when an admin says so
    /// (`--allow-power-cut-lag`); the record is still named.
    pub fn only_power_cut_lag(&self) -> bool {
        self.problems.len() == 1 && self.lagging().count() == 1
    }

    /// The verdict: intact, or (with `allow_power_cut_lag`) intact but for one record.
    pub fn passes(&self, allow_power_cut_lag: bool) -> bool {
        self.is_intact() || (allow_power_cut_lag && self.only_power_cut_lag())
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_intact() {
            write!(
                f,
                "audit log intact: {} records in {} file(s)",
                self.records,
                self.files.len()
            )?;
        } else {
            write!(
                f,
                "audit log NOT intact: {} problem(s)",
                self.problems.len()
            )?;
        }
        for p in &self.problems {
            write!(f, "\n  problem: {p}")?;
        }
        for w in &self.warnings {
            write!(f, "\n  warning: {w}")?;
        }
        for n in &self.notes {
            write!(f, "\n  note: {n}")?;
        }
        Ok(())
    }
}

struct Pending {
    file: PathBuf,
    line: u64,
    hash: String,
    why: String,
}

impl AuditLog {
    /// Check the whole chain (all files, oldest first) and the head file.
    ///
    /// Long on purpose: one pass over every line of every file carries the chain state
    /// (expected seq and hash, a pending torn line, what head-lag records named) from line
    /// to line; the head check at the end needs all of it.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        let mut rep = VerifyReport {
            files: self.files(),
            ..VerifyReport::default()
        };
        let mut expected_prev: Option<String> = None;
        let mut expected_seq: Option<u64> = None;
        // The line number of the last record in the current file, for BrokenChain.
        let mut last_line_in_file: Option<u64>;
        let mut pending: Option<Pending> = None;
        // (seq, hash) of the last record, for the head check.
        let mut last: Option<(u64, String)> = None;
        let nfiles = rep.files.len();
        let head = self.read_head()?;
        let head_anchor = head.as_ref().and_then(|h| h.anchor.clone());
        // Every record seen, in order, and where, to name records an `audit_head_lag`
        // record or the head file points at.
        let mut seen: Vec<(Option<u64>, String, PathBuf, u64)> = Vec::new();
        let mut by_hash: HashMap<String, usize> = HashMap::new();
        let mut documented: Vec<String> = Vec::new();
        let mut last_time: Option<(Timestamp, PathBuf, u64)> = None;

        for (fi, file) in rep.files.clone().into_iter().enumerate() {
            let bytes = self.read_file(&file)?;
            let (lines, tail) = split_lines(&bytes);
            last_line_in_file = None;
            for (i, line) in lines.iter().enumerate() {
                let lineno = i as u64 + 1;
                let hash = line_hash(line);
                by_hash.insert(hash.clone(), seen.len());
                let parsed = serde_json::from_slice::<Record>(line);
                seen.push((
                    parsed.as_ref().ok().map(|r| r.seq),
                    hash.clone(),
                    file.clone(),
                    lineno,
                ));
                let rec = match parsed {
                    Ok(r) => r,
                    Err(e) => {
                        if let Some(p) = pending.take() {
                            rep.problems.push(unparsable(p));
                        }
                        pending = Some(Pending {
                            file: file.clone(),
                            line: lineno,
                            hash,
                            why: e.to_string(),
                        });
                        continue;
                    }
                };
                if let Some(p) = pending.take() {
                    let documents = rec.event == TORN_RECORD_EVENT
                        && rec.extra.get("torn_sha256").and_then(|v| v.as_str())
                            == Some(p.hash.as_str());
                    if documents {
                        rep.notes.push(format!(
                            "{} line {}: torn record from an interrupted append, documented by seq {}",
                            p.file.display(),
                            p.line,
                            rec.seq
                        ));
                    } else {
                        rep.problems.push(unparsable(p));
                    }
                }
                rep.records += 1;
                if let Some((prev_time, prev_file, prev_line)) = &last_time {
                    if rec.time < *prev_time {
                        rep.warnings.push(Problem {
                            file: file.clone(),
                            line: lineno,
                            kind: ProblemKind::TimeBackwards {
                                previous_line: (*prev_file == file).then_some(*prev_line),
                                previous: *prev_time,
                                time: rec.time,
                            },
                        });
                    }
                }
                last_time = Some((rec.time, file.clone(), lineno));
                if rec.event == HEAD_LAG_EVENT {
                    let named = rec
                        .extra
                        .get("lag_hashes")
                        .and_then(|v| v.as_array())
                        .cloned()
                        .unwrap_or_default();
                    for h in named.iter().filter_map(|v| v.as_str()) {
                        match by_hash.get(h).map(|&i| &seen[i]) {
                            Some((lseq, lhash, lfile, lline)) => {
                                documented.push(lhash.clone());
                                rep.problems.push(Problem {
                                    file: lfile.clone(),
                                    line: *lline,
                                    kind: ProblemKind::HeadLag {
                                        seq: *lseq,
                                        hash: lhash.clone(),
                                        documented_by: Some(rec.seq),
                                    },
                                });
                            }
                            None => rep.notes.push(format!(
                                "{} line {}: audit_head_lag seq {} names record sha256 {h}, which is not in the log",
                                file.display(),
                                lineno,
                                rec.seq
                            )),
                        }
                    }
                }
                match (&expected_prev, expected_seq) {
                    (Some(prev), Some(seq)) => {
                        if rec.seq != seq {
                            rep.problems.push(Problem {
                                file: file.clone(),
                                line: lineno,
                                kind: ProblemKind::SeqGap {
                                    expected: seq,
                                    found: rec.seq,
                                },
                            });
                        }
                        if rec.prev != *prev {
                            rep.problems.push(Problem {
                                file: file.clone(),
                                line: lineno,
                                kind: ProblemKind::BrokenChain {
                                    previous_line: last_line_in_file,
                                },
                            });
                        }
                    }
                    _ => {
                        if rec.seq == 0 {
                            if rec.prev != GENESIS_PREV {
                                rep.problems.push(Problem {
                                    file: file.clone(),
                                    line: lineno,
                                    kind: ProblemKind::BadGenesis,
                                });
                            }
                        } else if !head_anchor
                            .as_ref()
                            .is_some_and(|a| a.seq == rec.seq && a.prev == rec.prev)
                        {
                            rep.problems.push(Problem {
                                file: file.clone(),
                                line: lineno,
                                kind: ProblemKind::MissingStart { first_seq: rec.seq },
                            });
                        } else {
                            rep.notes.push(format!(
                                "chain anchored at seq {} ({} line {}): older rotated files were deleted",
                                rec.seq,
                                file.display(),
                                lineno
                            ));
                        }
                    }
                }
                expected_prev = Some(hash.clone());
                expected_seq = Some(rec.seq + 1);
                last_line_in_file = Some(lineno);
                last = Some((rec.seq, hash));
            }
            if let Some(t) = tail {
                let lineno = lines.len() as u64 + 1;
                let p = Problem {
                    file: file.clone(),
                    line: lineno,
                    kind: ProblemKind::TornTail,
                };
                if fi + 1 == nfiles && pending.is_none() {
                    rep.warnings.push(p);
                } else {
                    // A torn line can only be undocumented at the very end of the log.
                    rep.problems.push(Problem {
                        kind: ProblemKind::Unparsable(format!(
                            "incomplete line of {} bytes in the middle of the log",
                            t.len()
                        )),
                        ..p
                    });
                }
            }
        }
        if let Some(p) = pending.take() {
            rep.problems.push(unparsable(p));
        }

        match head {
            Some(head) => {
                let pos = seen.iter().rposition(|(_, h, _, _)| *h == head.hash);
                let named = pos.is_some_and(|i| seen[i].0 == Some(head.seq));
                match pos {
                    Some(i) if named => {
                        for (seq, hash, file, line) in &seen[i + 1..] {
                            if documented.contains(hash) {
                                continue;
                            }
                            rep.problems.push(Problem {
                                file: file.clone(),
                                line: *line,
                                kind: ProblemKind::HeadLag {
                                    seq: *seq,
                                    hash: hash.clone(),
                                    documented_by: None,
                                },
                            });
                        }
                    }
                    _ => {
                        let file = rep
                            .files
                            .last()
                            .cloned()
                            .unwrap_or_else(|| self.path().to_path_buf());
                        let line = last_line_in_file_of(self, &file)?;
                        rep.problems.push(Problem {
                            file,
                            line,
                            kind: ProblemKind::HeadMismatch {
                                head_seq: head.seq,
                                last_seq: last.as_ref().map(|(s, _)| *s),
                            },
                        });
                    }
                }
            }
            None if !seen.is_empty() => {
                let (file, line) = seen
                    .last()
                    .map(|(_, _, f, l)| (f.clone(), *l))
                    .unwrap_or_else(|| (self.path().to_path_buf(), 0));
                rep.problems.push(Problem {
                    file,
                    line,
                    kind: ProblemKind::HeadMissing {
                        last_seq: last.as_ref().map(|(s, _)| *s),
                    },
                });
            }
            None => {}
        }
        Ok(rep)
    }
}

fn last_line_in_file_of(log: &AuditLog, file: &std::path::Path) -> Result<u64, AuditError> {
    let bytes = log.read_file(file)?;
    Ok(split_lines(&bytes).0.len() as u64)
}

fn unparsable(p: Pending) -> Problem {
    Problem {
        file: p.file,
        line: p.line,
        kind: ProblemKind::Unparsable(p.why),
    }
}
