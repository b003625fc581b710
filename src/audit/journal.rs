//! Cross-check of the audit log against the journal's copy of each record.
//!
//! Every append also sends a structured journal entry carrying the record's `seq` and
//! line hash ([`SEQ_FIELD`], [`HASH_FIELD`]). journald stores it apart from the log file
//! (and, with Forward Secure Sealing, seals it), so a record edited, removed or appended
//! in the file by someone who can write the file — but not rewrite the journal — disagrees
//! with the journal. This module only compares; reading the journal (`journalctl -o json`)
//! is the command's job.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Journal field holding the record's `seq` (decimal).
pub const SEQ_FIELD: &str = "PATCHD_AUDIT_SEQ";
/// Journal field holding the sha256 (hex) of the record's line.
pub const HASH_FIELD: &str = "PATCHD_AUDIT_HASH";

/// One audit record as the journal saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    pub seq: u64,
    pub hash: String,
}

/// Entries of `journalctl -o json` output (one JSON object per line) that carry both
/// audit fields; the second value counts lines that are not JSON objects or carry the
/// fields in an unreadable form.
pub fn parse_json_lines(text: &str) -> (Vec<JournalRecord>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(line)
        else {
            bad += 1;
            continue;
        };
        match (o.get(SEQ_FIELD), o.get(HASH_FIELD)) {
            (None, None) => {}
            (Some(serde_json::Value::String(s)), Some(serde_json::Value::String(h)))
                if s.parse::<u64>().is_ok()
                    && h.len() == 64
                    && h.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                out.push(JournalRecord {
                    seq: s.parse().unwrap_or_default(),
                    hash: h.to_ascii_lowercase(),
                });
            }
            _ => bad += 1,
        }
    }
    (out, bad)
}

/// One disagreement between the log and the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalFinding {
    /// The log has the record, the journal (which covers its `seq`) does not: appended to
    /// the file by someone else, or journald lost it.
    Missing { seq: u64, hash: String },
    /// The journal recorded another line at this `seq`: the record was edited or replaced.
    Differs {
        seq: u64,
        log_hash: String,
        journal_hashes: Vec<String>,
    },
    /// The journal has a record past the end of the log: records removed from the end
    /// (or the log was reset since).
    NotInLog { seq: u64, hash: String },
}

impl fmt::Display for JournalFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalFinding::Missing { seq, hash } => write!(
                f,
                "seq {seq} (sha256 {hash}) is in the log but not in the journal: appended by someone else, or the journal lost it"
            ),
            JournalFinding::Differs {
                seq,
                log_hash,
                journal_hashes,
            } => write!(
                f,
                "seq {seq}: the log has sha256 {log_hash}, the journal recorded {}: the record was edited or replaced",
                journal_hashes.join(", ")
            ),
            JournalFinding::NotInLog { seq, hash } => write!(
                f,
                "seq {seq} (sha256 {hash}) is in the journal but not in the log: records removed from the end"
            ),
        }
    }
}

/// Result of [`cross_check`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalCheck {
    /// Audit entries read from the journal.
    pub journal_records: usize,
    /// Log records compared with the journal.
    pub compared: u64,
    /// Log records older than the journal's oldest audit entry (its retention): not
    /// checked.
    pub older_than_journal: u64,
    pub findings: Vec<JournalFinding>,
}

impl JournalCheck {
    pub fn agrees(&self) -> bool {
        self.findings.is_empty()
    }
}

impl fmt::Display for JournalCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.agrees() {
            write!(f, "journal agrees: {} record(s) compared", self.compared)?;
        } else {
            write!(
                f,
                "journal DISAGREES: {} finding(s), {} record(s) compared",
                self.findings.len(),
                self.compared
            )?;
        }
        if self.older_than_journal > 0 {
            write!(
                f,
                "; {} older record(s) predate the journal's retention and were not compared",
                self.older_than_journal
            )?;
        }
        for x in &self.findings {
            write!(f, "\n  journal: {x}")?;
        }
        Ok(())
    }
}

/// Compare the log's `(seq, hash)` chain (oldest first) with the journal's entries.
///
/// The journal covers the records from its oldest audit entry on (older ones went with
/// its retention); from there on every log record must be in the journal with the same
/// hash. A `seq` the journal holds several hashes for (a log reset by a reinstall) agrees
/// when one of them is the log's.
pub fn cross_check(log: &[(u64, String)], journal: &[JournalRecord]) -> JournalCheck {
    let mut by_seq: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for j in journal {
        by_seq.entry(j.seq).or_default().insert(j.hash.as_str());
    }
    let mut rep = JournalCheck {
        journal_records: journal.len(),
        ..JournalCheck::default()
    };
    let Some(first_journal) = by_seq.keys().next().copied() else {
        rep.older_than_journal = log.len() as u64;
        return rep;
    };
    for (seq, hash) in log {
        if *seq < first_journal {
            rep.older_than_journal += 1;
            continue;
        }
        rep.compared += 1;
        match by_seq.get(seq) {
            None => rep.findings.push(JournalFinding::Missing {
                seq: *seq,
                hash: hash.clone(),
            }),
            Some(hs) if !hs.contains(hash.as_str()) => rep.findings.push(JournalFinding::Differs {
                seq: *seq,
                log_hash: hash.clone(),
                journal_hashes: hs.iter().map(|h| h.to_string()).collect(),
            }),
            Some(_) => {}
        }
    }
    let last_log = log.iter().map(|(s, _)| *s).max();
    for (seq, hs) in by_seq.range(last_log.map_or(0, |l| l + 1)..) {
        for h in hs {
            rep.findings.push(JournalFinding::NotInLog {
                seq: *seq,
                hash: h.to_string(),
            });
        }
    }
    rep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    fn line(seq: u64, hash: &str) -> String {
        format!(
            "{{\"__CURSOR\":\"s=1\",\"SYSLOG_IDENTIFIER\":\"patchd\",\"MESSAGE\":\"audit\",\"{SEQ_FIELD}\":\"{seq}\",\"{HASH_FIELD}\":\"{hash}\"}}"
        )
    }

    fn chain(n: u64) -> Vec<(u64, String)> {
        (0..n).map(|i| (i, h(char::from(b'a' + i as u8)))).collect()
    }

    fn journal_of(log: &[(u64, String)]) -> String {
        log.iter()
            .map(|(s, x)| line(*s, x))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn parses_journalctl_json_and_skips_other_entries() {
        let text = format!(
            "{}\n{{\"MESSAGE\":\"engine started\"}}\nnot json\n{}\n",
            line(0, &h('a')),
            line(1, &h('B'))
        );
        let (recs, bad) = parse_json_lines(&text);
        assert_eq!(bad, 1);
        assert_eq!(
            recs,
            vec![
                JournalRecord {
                    seq: 0,
                    hash: h('a')
                },
                JournalRecord {
                    seq: 1,
                    hash: h('b')
                },
            ]
        );
    }

    #[test]
    fn field_values_that_are_not_a_seq_and_a_hash_are_counted_as_bad() {
        let text = format!(
            "{{\"{SEQ_FIELD}\":\"x\",\"{HASH_FIELD}\":\"{}\"}}\n{{\"{SEQ_FIELD}\":[1,2],\"{HASH_FIELD}\":\"{}\"}}\n{{\"{SEQ_FIELD}\":\"3\"}}",
            h('a'),
            h('a')
        );
        let (recs, bad) = parse_json_lines(&text);
        assert!(recs.is_empty());
        assert_eq!(bad, 3);
    }

    #[test]
    fn identical_log_and_journal_agree() {
        let log = chain(4);
        let (j, _) = parse_json_lines(&journal_of(&log));
        let r = cross_check(&log, &j);
        assert!(r.agrees(), "{r}");
        assert_eq!(r.compared, 4);
    }

    #[test]
    fn record_appended_to_the_file_only_is_missing_from_the_journal() {
        let mut log = chain(3);
        let (j, _) = parse_json_lines(&journal_of(&log));
        log.push((3, h('z')));
        let r = cross_check(&log, &j);
        assert_eq!(
            r.findings,
            vec![JournalFinding::Missing {
                seq: 3,
                hash: h('z')
            }]
        );
    }

    #[test]
    fn edited_record_differs_from_the_journal() {
        let mut log = chain(3);
        let (j, _) = parse_json_lines(&journal_of(&log));
        log[1].1 = h('y');
        let r = cross_check(&log, &j);
        assert!(
            matches!(&r.findings[..], [JournalFinding::Differs { seq: 1, .. }]),
            "{r}"
        );
    }

    #[test]
    fn records_removed_from_the_end_are_still_in_the_journal() {
        let log = chain(4);
        let (j, _) = parse_json_lines(&journal_of(&log));
        let r = cross_check(&log[..2], &j);
        assert_eq!(r.findings.len(), 2, "{r}");
        assert!(r
            .findings
            .iter()
            .all(|f| matches!(f, JournalFinding::NotInLog { .. })));
    }

    #[test]
    fn records_older_than_the_journal_are_not_compared() {
        let log = chain(5);
        let (j, _) = parse_json_lines(&journal_of(&log[2..]));
        let r = cross_check(&log, &j);
        assert!(r.agrees(), "{r}");
        assert_eq!(r.older_than_journal, 2);
        assert_eq!(r.compared, 3);
    }
}
