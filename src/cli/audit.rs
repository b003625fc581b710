//! `patchd audit verify`: check the audit log's files directly (no daemon needed), and
//! with `--journal` compare them with the journal's copy of every record.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::audit::journal::{self, JournalCheck, HASH_FIELD, SEQ_FIELD};
use crate::audit::{AuditLog, ProblemKind, VerifyReport};

/// Exit statuses of `patchd audit verify`.
pub mod exit {
    /// The chain is intact (and the journal agrees, with `--journal`).
    pub const OK: u8 = 0;
    /// The log could not be read.
    pub const FAILED: u8 = 1;
    /// The chain is broken, a record is not vouched for by the head file (unless it is
    /// the one record `--allow-power-cut-lag` accepts), or the journal disagrees.
    pub const BROKEN: u8 = 8;
    /// `--journal` was asked for and the journal cannot be read or holds no audit
    /// entries of patchd: nothing was cross-checked.
    pub const JOURNAL_UNAVAILABLE: u8 = 11;
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub cmd: AuditCmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCmd {
    /// Verify the audit log's hash chain and head file; exit 0 intact, 8 broken, 11
    /// journal unavailable (with --journal), 1 the log cannot be read.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The live audit log file (default: `[audit] path` of the configuration).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Accept exactly one record appended after the last head update (what a power cut
    /// between an append and the head update leaves). The record is still named.
    #[arg(long)]
    pub allow_power_cut_lag: bool,
    /// Also compare every record with the journal's copy (`journalctl -o json`, entries
    /// of SYSLOG_IDENTIFIER=patchd carrying PATCHD_AUDIT_SEQ and PATCHD_AUDIT_HASH).
    #[arg(long)]
    pub journal: bool,
    /// With --journal: read this saved `journalctl -o json` output instead of running
    /// journalctl (a journal exported from the device).
    #[arg(long, value_name = "FILE", requires = "journal")]
    pub journal_json: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// Why nothing could be cross-checked with the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalUnavailable(pub String);

/// Run `journalctl` for patchd's audit entries, or read a saved export.
pub fn read_journal(saved: Option<&Path>) -> Result<String, JournalUnavailable> {
    if let Some(p) = saved {
        return std::fs::read_to_string(p)
            .map_err(|e| JournalUnavailable(format!("{}: {e}", p.display())));
    }
    let out = std::process::Command::new("journalctl")
        .args([
            "-o",
            "json",
            "--no-pager",
            "-q",
            &format!("--output-fields={SEQ_FIELD},{HASH_FIELD}"),
            "SYSLOG_IDENTIFIER=patchd",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| JournalUnavailable(format!("cannot run journalctl: {e}")))?;
    if !out.status.success() {
        return Err(JournalUnavailable(format!(
            "journalctl failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Parse journal text and compare; no audit entries at all means unavailable (journald
/// not running, or patchd never logged to it), never "agrees".
pub fn check_journal(
    log: &[(u64, String)],
    text: &str,
) -> Result<JournalCheck, JournalUnavailable> {
    let (records, _bad) = journal::parse_json_lines(text);
    if records.is_empty() {
        let why = if Path::new("/run/systemd/journal/socket").exists() {
            "the journal holds no patchd audit entries (patchd did not log to journald)"
        } else {
            "the journal holds no patchd audit entries (journald is not running here)"
        };
        return Err(JournalUnavailable(why.to_string()));
    }
    Ok(journal::cross_check(log, &records))
}

fn problem_json(p: &crate::audit::Problem) -> serde_json::Value {
    let mut v = json!({
        "file": p.file,
        "line": p.line,
        "message": p.to_string(),
    });
    if let ProblemKind::HeadLag {
        seq,
        hash,
        documented_by,
    } = &p.kind
    {
        v["seq"] = json!(seq);
        v["hash"] = json!(hash);
        v["documented_by"] = json!(documented_by);
    }
    v
}

/// Verify `log`, print the result to `out`, return the exit status.
pub fn run(args: &VerifyArgs, log: &AuditLog, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let report = match log.verify() {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "patchd audit verify: {e}");
            return exit::FAILED;
        }
    };
    let passes = report.passes(args.allow_power_cut_lag);
    let journal = if args.journal {
        Some(match log.chain() {
            Ok(chain) => read_journal(args.journal_json.as_deref())
                .and_then(|text| check_journal(&chain, &text)),
            Err(e) => {
                let _ = writeln!(err, "patchd audit verify: {e}");
                return exit::FAILED;
            }
        })
    } else {
        None
    };
    let code = if !passes {
        exit::BROKEN
    } else {
        match &journal {
            None => exit::OK,
            Some(Err(_)) => exit::JOURNAL_UNAVAILABLE,
            Some(Ok(j)) if j.agrees() => exit::OK,
            Some(Ok(_)) => exit::BROKEN,
        }
    };
    if args.json {
        let mut v = json!({
            "ok": code == exit::OK,
            "intact": report.is_intact(),
            "power_cut_lag_accepted": !report.is_intact() && passes,
            "records": report.records,
            "files": report.files,
            "head": { "seq": log.last_seq(), "hash": log.last_hash() },
            "problems": report.problems.iter().map(problem_json).collect::<Vec<_>>(),
            "lagging": report.lagging().map(problem_json).collect::<Vec<_>>(),
            "warnings": report.warnings.iter().map(problem_json).collect::<Vec<_>>(),
            "notes": report.notes,
        });
        if let Some(j) = &journal {
            v["journal"] = match j {
                Ok(j) => json!({
                    "available": true,
                    "agrees": j.agrees(),
                    "journal_records": j.journal_records,
                    "compared": j.compared,
                    "older_than_journal": j.older_than_journal,
                    "findings": j.findings.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
                }),
                Err(JournalUnavailable(why)) => json!({ "available": false, "error": why }),
            };
        }
        let _ = writeln!(out, "{v:#}");
    } else {
        print_text(&report, passes, out);
        let _ = writeln!(
            out,
            "head: seq {} sha256 {}",
            log.last_seq().map_or("-".to_string(), |s| s.to_string()),
            log.last_hash()
        );
        match &journal {
            None => {}
            Some(Ok(j)) => {
                let _ = writeln!(out, "{j}");
            }
            Some(Err(JournalUnavailable(why))) => {
                let _ = writeln!(out, "journal NOT checked: {why}");
            }
        }
    }
    code
}

fn print_text(r: &VerifyReport, passes: bool, out: &mut dyn Write) {
    if r.is_intact() {
        let _ = writeln!(
            out,
            "audit log intact: {} records in {} file(s)",
            r.records,
            r.files.len()
        );
    } else if passes {
        let _ = writeln!(
            out,
            "audit log intact but for one record the head file does not vouch for (accepted by --allow-power-cut-lag): {} records in {} file(s)",
            r.records,
            r.files.len()
        );
    } else {
        let _ = writeln!(out, "audit log NOT intact: {} problem(s)", r.problems.len());
    }
    for p in &r.problems {
        let label = if matches!(p.kind, ProblemKind::HeadLag { .. }) {
            "lagging"
        } else {
            "problem"
        };
        let _ = writeln!(out, "  {label}: {p}");
    }
    for w in &r.warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
    for n in &r.notes {
        let _ = writeln!(out, "  note: {n}");
    }
}
