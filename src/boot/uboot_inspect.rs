//! Reading what a U-Boot environment holds when its copies may be corrupt: each copy's
//! state, what can still be salvaged, the refusal that names what a reset would drop.
//! Used by a plain reset (which variables to keep) and by `patchd boot reset`.

use super::uboot_env::{decode_copy, UbootEnv, UbootVars};
use super::BootError;

/// A copy that was never written: erased flash (`0xff`) or zeroed storage.
pub(super) fn is_blank(buf: &[u8]) -> bool {
    buf.iter().all(|b| *b == 0) || buf.iter().all(|b| *b == 0xff)
}

/// Variables still readable in a copy whose CRC failed: records up to the first one that
/// does not parse. Only shown to the admin, never written back.
pub(super) fn salvage(buf: &[u8], redundant: bool) -> UbootVars {
    let hdr = if redundant { 5 } else { 4 };
    let mut vars = UbootVars::new();
    let Some(data) = buf.get(hdr..) else {
        return vars;
    };
    for rec in data.split(|b| *b == 0) {
        if rec.is_empty() {
            break;
        }
        let Ok(text) = std::str::from_utf8(rec) else {
            break;
        };
        let Some((name, value)) = text.split_once('=') else {
            break;
        };
        if name.is_empty() || name.chars().any(|c| c.is_control()) {
            break;
        }
        vars.insert(name.to_string(), value.to_string());
    }
    vars
}

pub(super) struct Seen {
    pub(super) raw: Vec<u8>,
    /// `Ok` with the flag and variables, or why the copy is unusable.
    pub(super) decoded: Result<(Option<u8>, UbootVars), String>,
}

/// Every copy's bytes; a device shorter than its configured copy gives what it has (a
/// truncated copy is corrupt, not a reason to stop).
pub(super) fn read_all(env: &UbootEnv) -> Result<Vec<Seen>, BootError> {
    (0..env.copies().len())
        .map(|i| {
            let raw = match env.read_copy(i) {
                Ok(r) => r,
                Err(BootError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    read_short(&env.copies()[i])?
                }
                Err(e) => return Err(e),
            };
            let decoded = decode_copy(&raw, env.redundant());
            Ok(Seen { raw, decoded })
        })
        .collect()
}

fn read_short(c: &super::config::UbootCopy) -> Result<Vec<u8>, BootError> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |source| BootError::Io {
        path: c.device.display().to_string(),
        source,
    };
    let mut f = std::fs::File::open(&c.device).map_err(io)?;
    f.seek(SeekFrom::Start(c.offset)).map_err(io)?;
    let mut buf = Vec::new();
    f.take(c.size).read_to_end(&mut buf).map_err(io)?;
    Ok(buf)
}

/// The newest valid copy's variables, as [`UbootEnv::load`] picks them.
pub(super) fn current(env: &UbootEnv) -> Result<Option<UbootVars>, BootError> {
    match env.load() {
        Ok(cur) => Ok(Some(cur.vars)),
        Err(BootError::Format { .. }) => Ok(None),
        Err(BootError::Io { source, .. }) if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The variables a plain [`super::Bootloader::reset`] keeps: the current environment's,
/// `None` when every copy is blank, and an error when a copy is corrupt and no copy valid.
pub(super) fn base_for_plain_reset(env: &UbootEnv) -> Result<Option<UbootVars>, BootError> {
    if let Some(vars) = current(env)? {
        return Ok(Some(vars));
    }
    let seen = read_all(env)?;
    if seen.iter().all(|s| is_blank(&s.raw)) {
        return Ok(None);
    }
    Err(corrupt_refusal(env, &seen))
}

pub(super) fn corrupt_refusal(env: &UbootEnv, seen: &[Seen]) -> BootError {
    let why: Vec<String> = seen
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let state = match &s.decoded {
                Ok(_) => "valid".to_string(),
                Err(e) => e.clone(),
            };
            format!("{}: {state}", env.describe(i))
        })
        .collect();
    let mut at_risk: Vec<String> = seen
        .iter()
        .flat_map(|s| salvage(&s.raw, env.redundant()).into_keys())
        .collect();
    at_risk.sort();
    at_risk.dedup();
    let risk = if at_risk.is_empty() {
        "the board's own variables (bootcmd, ethaddr, serial#, …)".to_string()
    } else {
        format!("variables such as {}", at_risk.join(", "))
    };
    BootError::Refused(format!(
        "{}: every copy of the U-Boot environment is corrupt ({}); a reset would drop {risk}. \
         Give the board's default environment with --from-defaults FILE, or --force to \
         write only the A/B variables (both raw copies are backed up first either way)",
        env.name(),
        why.join("; ")
    ))
}
