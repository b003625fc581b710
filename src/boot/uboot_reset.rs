//! `patchd boot reset` on a U-Boot environment: never drop the board's own variables
//! without a word.
//!
//! A reset rewrites both copies with a fresh A/B state. Over a readable environment every
//! other variable (`bootcmd`, `ethaddr`, `serial#`, …) is carried over. When no copy has a
//! valid CRC but at least one is not blank (not all `0x00`/`0xff`, i.e. it once held an
//! environment), those variables cannot be trusted and the reset is refused unless the
//! admin says where the rest of the environment comes from: the board's default
//! environment (`--from-defaults FILE`, `name=value` lines as `u-boot-initial-env` has
//! them) or nothing (`--force`). Before anything is written, both raw copies are saved
//! under the state directory (`/var/lib/patchd/uboot-env-backup/<time>/`), and the report
//! lists what was kept and what was lost (variable names read from corrupt copies without
//! a valid CRC, which the backup still holds).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::ab::AbState;
use super::uboot::{state_into_vars, UbootBootloader, UbootEnv, UbootVars};
use super::uboot_inspect::{corrupt_refusal, current, is_blank, read_all, salvage, Seen};
use super::BootError;
use crate::fsutil;
use crate::names::SlotName;

/// Where the variables a reset keeps come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetBase {
    /// The current environment (refused when every copy is corrupt).
    Current,
    /// The board's default environment, read from `file`.
    Defaults { file: PathBuf, vars: UbootVars },
    /// Nothing but the A/B variables (`--force`).
    Nothing,
}

/// What one copy held before the reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyState {
    /// `device at offset 0x…`.
    pub copy: String,
    /// `valid`, `blank`, or why it is corrupt.
    pub state: String,
    /// Where its raw bytes were saved.
    pub backup: PathBuf,
}

/// What a U-Boot reset did; printed by `patchd boot reset` (JSON field `reset`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResetReport {
    /// Where the kept variables came from.
    pub source: String,
    pub copies: Vec<CopyState>,
    /// Variables (other than the A/B ones) in the new environment.
    pub kept: Vec<String>,
    /// Variables of the old environment that are not in the new one (or changed value).
    /// From a corrupt copy this is what could still be read without a valid CRC.
    pub lost: Vec<String>,
    /// Whether `lost` was read from copies without a valid CRC (may be incomplete).
    pub lost_unverified: bool,
}

/// Read a default environment file: `name=value` per line (the format of U-Boot's
/// `u-boot-initial-env` and of `fw_setenv -s`), blank lines and `#` comments skipped.
pub fn read_defaults(file: &Path) -> Result<UbootVars, BootError> {
    let disp = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|source| BootError::Io {
        path: disp.clone(),
        source,
    })?;
    let mut vars = UbootVars::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (name, value) = line.split_once('=').ok_or_else(|| BootError::Format {
            path: disp.clone(),
            why: format!("line {}: expected name=value", n + 1),
        })?;
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(BootError::Format {
                path: disp.clone(),
                why: format!("line {}: bad variable name {name:?}", n + 1),
            });
        }
        vars.insert(name.to_string(), value.to_string());
    }
    if vars.is_empty() {
        return Err(BootError::Format {
            path: disp,
            why: "no variables: not a default environment".to_string(),
        });
    }
    Ok(vars)
}

/// Reset `bl`'s environment with `primary` good and first, keeping what `base` says.
/// Both raw copies are saved under `backup_root/<now>/` before anything is written.
pub fn reset(
    bl: &UbootBootloader,
    primary: &SlotName,
    base: &ResetBase,
    backup_root: &Path,
    now: jiff::Timestamp,
) -> Result<ResetReport, BootError> {
    let env = bl.env();
    let seen = read_all(env)?;
    let valid = current(env)?;
    let all_blank = seen.iter().all(|s| is_blank(&s.raw));
    if valid.is_none() && !all_blank && *base == ResetBase::Current {
        return Err(corrupt_refusal(env, &seen));
    }
    // The old variables: verified ones from the copy in use, else what corrupt copies
    // still show (newest first is unknowable without a valid flag: merge them).
    let old = match &valid {
        Some(v) => v.clone(),
        None => {
            let mut m = UbootVars::new();
            for s in seen.iter().rev() {
                m.extend(salvage(&s.raw, env.redundant()));
            }
            m
        }
    };
    let lost_unverified = valid.is_none() && !old.is_empty();
    let (mut vars, source) = match base {
        ResetBase::Current => match &valid {
            Some(v) => (v.clone(), "the current environment".to_string()),
            None => (UbootVars::new(), "nothing (blank environment)".to_string()),
        },
        ResetBase::Defaults { file, vars } => (
            vars.clone(),
            format!("the default environment {}", file.display()),
        ),
        ResetBase::Nothing => (UbootVars::new(), "nothing (--force)".to_string()),
    };
    let copies = backup(env, &seen, backup_root, now)?;
    let st = AbState::fresh(bl.slot_names(), primary)?;
    let mut ab_vars = UbootVars::new();
    state_into_vars(&st, &mut ab_vars);
    // Any BOOT_* of the A/B convention, also of slots no longer configured.
    let ab = |name: &str| ab_vars.contains_key(name) || is_ab_var(name);
    vars.extend(ab_vars.clone());
    let kept: Vec<String> = vars.keys().filter(|n| !ab(n)).cloned().collect();
    let lost: Vec<String> = old
        .iter()
        .filter(|(n, v)| !ab(n) && vars.get(*n) != Some(v))
        .map(|(n, _)| n.clone())
        .collect();
    env.reset(&vars)?;
    tracing::warn!(env = %env.name(), primary = %primary, source = %source,
        kept = kept.len(), lost = lost.len(), "U-Boot environment reset");
    Ok(ResetReport {
        source,
        copies,
        kept,
        lost,
        lost_unverified,
    })
}

fn is_ab_var(name: &str) -> bool {
    name == super::uboot::ORDER_VAR
        || (name.starts_with("BOOT_") && (name.ends_with("_LEFT") || name.ends_with("_OK")))
}

/// Save every raw copy (and what it held) under `root/<time>/`, fsynced, before a reset.
fn backup(
    env: &UbootEnv,
    seen: &[Seen],
    root: &Path,
    now: jiff::Timestamp,
) -> Result<Vec<CopyState>, BootError> {
    let stamp = now.strftime("%Y%m%dT%H%M%S%.fZ").to_string();
    let dir = root.join(stamp);
    let io = |p: &Path, source| BootError::Io {
        path: p.display().to_string(),
        source,
    };
    fsutil::ensure_dir(&dir, 0o700).map_err(|e| io(&dir, e))?;
    let mut out = Vec::new();
    for (i, s) in seen.iter().enumerate() {
        let file = dir.join(format!("copy-{i}.bin"));
        fsutil::atomic_write(&file, &s.raw).map_err(|e| io(&file, e))?;
        let state = match &s.decoded {
            Ok(_) => "valid".to_string(),
            Err(_) if is_blank(&s.raw) => "blank".to_string(),
            Err(e) => format!("corrupt: {e}"),
        };
        out.push(CopyState {
            copy: env.describe(i),
            state,
            backup: file,
        });
    }
    let index = serde_json::to_vec_pretty(&out).map_err(|e| io(&dir, std::io::Error::other(e)))?;
    let idx = dir.join("copies.json");
    fsutil::atomic_write(&idx, &index).map_err(|e| io(&idx, e))?;
    if let Some(parent) = dir.parent() {
        fsutil::fsync_dir(parent).map_err(|e| io(parent, e))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::uboot::{decode_copy, encode_copy};

    #[test]
    fn salvage_reads_records_until_garbage() {
        let mut vars = UbootVars::new();
        vars.insert("bootcmd".into(), "run x".into());
        vars.insert("ethaddr".into(), "00:11:22:33:44:55".into());
        let mut b = encode_copy("t", &vars, 128, Some(1)).unwrap();
        b[0] ^= 0xff; // CRC broken, records intact
        assert!(decode_copy(&b, true).is_err());
        assert_eq!(salvage(&b, true), vars);
        assert!(is_blank(&[0xff; 32]) && is_blank(&[0; 32]) && !is_blank(&b));
    }

    #[test]
    fn defaults_file_format() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("env.txt");
        std::fs::write(&f, "# board\nbootcmd=run a=b\n\nethaddr=00:11\n").unwrap();
        let v = read_defaults(&f).unwrap();
        assert_eq!(v["bootcmd"], "run a=b");
        assert_eq!(v.len(), 2);
        std::fs::write(&f, "bootcmd run\n").unwrap();
        assert!(read_defaults(&f)
            .unwrap_err()
            .to_string()
            .contains("line 1"));
        std::fs::write(&f, "\n").unwrap();
        assert!(read_defaults(&f).is_err());
    }
}
