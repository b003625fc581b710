//! The GRUB environment block, read and written as `grub-editenv` does (grub
//! `lib/envblk.c`): exactly 1024 bytes, the `# GRUB Environment Block` header line,
//! `name=value` lines with `\` and newline escaped by a backslash, `#` padding to the end.
//!
//! Variables of the A/B scheme (see `docs/boot.md` and `packaging/grub/`):
//! `patchd_order` (slot names, preferred first; a slot missing from it is bad),
//! `patchd_<slot>_left` (attempts left, 0..=9) and `patchd_<slot>_ok` (`1` = good).
//!
//! Writes replace the whole block through a temporary file, fsync and rename
//! ([`crate::fsutil::atomic_write`]); GRUB finds the file's blocks anew at each boot, so
//! its in-place `save_env` keeps working on the new inode. An in-place rewrite (what
//! `grub-editenv` does) can tear across the block's two sectors on a power cut; a rename
//! on a journaling filesystem cannot.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::ab::{parse_counter, parse_order, AbSlot, AbState};
use super::detect::Detector;
use super::{BootError, Bootloader, SlotBootInfo};
use crate::fsutil;
use crate::names::SlotName;

pub const ENVBLK_SIZE: usize = 1024;
pub const SIGNATURE: &[u8] = b"# GRUB Environment Block\n";
pub const ORDER_VAR: &str = "patchd_order";

/// A parsed environment block: variables in file order (so untouched ones keep their
/// place, as `grub-editenv set` keeps them) and the block size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubEnv {
    vars: Vec<(String, String)>,
    size: usize,
}

impl Default for GrubEnv {
    fn default() -> Self {
        Self {
            vars: Vec::new(),
            size: ENVBLK_SIZE,
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

impl GrubEnv {
    /// Parse a block. `what` names the file in errors.
    pub fn parse(what: &str, buf: &[u8]) -> Result<Self, BootError> {
        let err = |why: String| BootError::Format {
            path: what.to_string(),
            why,
        };
        if buf.len() != ENVBLK_SIZE {
            return Err(err(format!(
                "is {} bytes; a GRUB environment block is {ENVBLK_SIZE}",
                buf.len()
            )));
        }
        if !buf.starts_with(SIGNATURE) {
            return Err(err(
                "missing the \"# GRUB Environment Block\" header: not a GRUB environment block"
                    .to_string(),
            ));
        }
        let mut vars: Vec<(String, String)> = Vec::new();
        let mut p = SIGNATURE.len();
        while p < buf.len() {
            if buf[p] == b'#' {
                // Comment or padding: skip to the next line, as grub does.
                match buf[p..].iter().position(|&c| c == b'\n') {
                    Some(n) => p += n + 1,
                    None => break,
                }
                continue;
            }
            let line_start = p;
            let Some(eq) = buf[p..].iter().position(|&c| c == b'=' || c == b'\n') else {
                return Err(err(format!(
                    "garbage at byte {line_start}: unterminated line"
                )));
            };
            if buf[p + eq] != b'=' {
                return Err(err(format!(
                    "garbage at byte {line_start}: line without '='"
                )));
            }
            let name = std::str::from_utf8(&buf[p..p + eq])
                .ok()
                .filter(|n| valid_name(n))
                .ok_or_else(|| {
                    err(format!(
                        "garbage at byte {line_start}: invalid variable name"
                    ))
                })?
                .to_string();
            p += eq + 1;
            let mut value = Vec::new();
            loop {
                let Some(&c) = buf.get(p) else {
                    return Err(err(format!(
                        "variable {name}: value runs past the block end"
                    )));
                };
                match c {
                    b'\n' => {
                        p += 1;
                        break;
                    }
                    b'\\' => {
                        let Some(&n) = buf.get(p + 1) else {
                            return Err(err(format!("variable {name}: dangling escape")));
                        };
                        value.push(n);
                        p += 2;
                    }
                    0 => return Err(err(format!("variable {name}: NUL byte in value"))),
                    _ => {
                        value.push(c);
                        p += 1;
                    }
                }
            }
            let value = String::from_utf8(value)
                .map_err(|_| err(format!("variable {name}: value is not UTF-8")))?;
            // grub_envblk_iterate reports every line; the last one wins in grub's context.
            vars.retain(|(n, _)| *n != name);
            vars.push((name, value));
        }
        Ok(Self {
            vars,
            size: buf.len(),
        })
    }

    /// The block as bytes, padded with `#` to its size.
    pub fn encode(&self, what: &str) -> Result<Vec<u8>, BootError> {
        let mut out = SIGNATURE.to_vec();
        for (name, value) in &self.vars {
            out.extend_from_slice(name.as_bytes());
            out.push(b'=');
            for &c in value.as_bytes() {
                if c == b'\\' || c == b'\n' {
                    out.push(b'\\');
                }
                out.push(c);
            }
            out.push(b'\n');
        }
        if out.len() > self.size {
            return Err(BootError::Format {
                path: what.to_string(),
                why: format!(
                    "variables need {} bytes; the environment block holds {}",
                    out.len(),
                    self.size
                ),
            });
        }
        out.resize(self.size, b'#');
        Ok(out)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Replace in place or append, as `grub_envblk_set` does.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.vars.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value.to_string(),
            None => self.vars.push((name.to_string(), value.to_string())),
        }
    }

    pub fn unset(&mut self, name: &str) {
        self.vars.retain(|(n, _)| n != name);
    }

    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }
}

pub fn left_var(slot: &SlotName) -> String {
    format!("patchd_{slot}_left")
}
pub fn ok_var(slot: &SlotName) -> String {
    format!("patchd_{slot}_ok")
}

/// Read the A/B state from an environment.
pub fn state_from_env(what: &str, env: &GrubEnv, all: &[SlotName]) -> Result<AbState, BootError> {
    let Some(order) = env.get(ORDER_VAR) else {
        return Err(BootError::Format {
            path: what.to_string(),
            why: format!(
                "no {ORDER_VAR} variable: not set up for patchd (an admin can run `patchd boot reset --primary SLOT`)"
            ),
        });
    };
    let order = parse_order(what, ORDER_VAR, order, all, |w| w.to_string())?;
    let mut st = AbState {
        order,
        slots: Default::default(),
    };
    for s in all {
        let left = match env.get(&left_var(s)) {
            Some(v) => parse_counter(what, &left_var(s), v)?,
            None => 0,
        };
        let good = match env.get(&ok_var(s)) {
            None | Some("0") => false,
            Some("1") => true,
            Some(v) => {
                return Err(BootError::Format {
                    path: what.to_string(),
                    why: format!("{}={v:?} is not 0 or 1", ok_var(s)),
                })
            }
        };
        st.slots.insert(s.clone(), AbSlot { left, good });
    }
    Ok(st)
}

/// Write the A/B state into an environment, leaving other variables where they are.
pub fn state_into_env(st: &AbState, env: &mut GrubEnv) {
    let order: Vec<&str> = st.order.iter().map(SlotName::as_str).collect();
    env.set(ORDER_VAR, &order.join(" "));
    for (s, i) in &st.slots {
        env.set(&left_var(s), &i.left.to_string());
        env.set(&ok_var(s), if i.good { "1" } else { "0" });
    }
}

/// Slot names must be usable inside GRUB variable names.
pub fn check_slot_names(kind: &str, slots: &[SlotName]) -> Result<(), BootError> {
    for s in slots {
        if s.as_str().contains('-') {
            return Err(BootError::Refused(format!(
                "slot name {s} cannot be part of a {kind} variable name (use a-z, 0-9, _)"
            )));
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct GrubBootloader {
    path: PathBuf,
    slots: Vec<SlotName>,
    detector: Option<Detector>,
}

impl GrubBootloader {
    /// `path`: the grubenv file, already resolved under the root.
    pub fn new(path: impl Into<PathBuf>, slots: Vec<SlotName>) -> Result<Self, BootError> {
        check_slot_names("GRUB", &slots)?;
        Ok(Self {
            path: path.into(),
            slots,
            detector: None,
        })
    }

    pub fn with_detector(mut self, detector: Detector) -> Self {
        self.detector = Some(detector);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn disp(&self) -> String {
        self.path.display().to_string()
    }

    pub fn read_env(&self) -> Result<GrubEnv, BootError> {
        let bytes = std::fs::read(&self.path).map_err(|source| BootError::Io {
            path: self.disp(),
            source,
        })?;
        GrubEnv::parse(&self.disp(), &bytes)
    }

    pub fn write_env(&self, env: &GrubEnv) -> Result<(), BootError> {
        let bytes = env.encode(&self.disp())?;
        let mode = std::fs::metadata(&self.path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644);
        fsutil::atomic_write_mode(&self.path, &bytes, mode).map_err(|source| BootError::Io {
            path: self.disp(),
            source,
        })
    }

    pub fn load(&self) -> Result<(GrubEnv, AbState), BootError> {
        let env = self.read_env()?;
        let st = state_from_env(&self.disp(), &env, &self.slots)?;
        Ok((env, st))
    }

    fn modify(
        &self,
        f: impl FnOnce(&mut AbState) -> Result<(), BootError>,
    ) -> Result<(), BootError> {
        let (mut env, mut st) = self.load()?;
        f(&mut st)?;
        state_into_env(&st, &mut env);
        self.write_env(&env)?;
        tracing::info!(path = %self.disp(), order = ?st.order, "GRUB environment updated");
        Ok(())
    }
}

impl Bootloader for GrubBootloader {
    fn kind(&self) -> &'static str {
        "grub"
    }

    fn booted_slot(&self) -> Result<SlotName, BootError> {
        match &self.detector {
            Some(d) => d.detect(None),
            None => Err(BootError::Detection(
                "GRUB keeps no record of the booted slot; configure detection".to_string(),
            )),
        }
    }

    fn primary_slot(&self) -> Result<SlotName, BootError> {
        let (_, st) = self.load()?;
        st.primary().cloned().ok_or_else(|| BootError::Format {
            path: self.disp(),
            why: "no slot is marked good".to_string(),
        })
    }

    fn try_slot(&self, slot: &SlotName, attempts: u32) -> Result<(), BootError> {
        self.modify(|st| st.try_slot(slot, attempts))
    }

    fn mark_good(&self, slot: &SlotName) -> Result<(), BootError> {
        self.modify(|st| st.mark_good(slot))
    }

    fn mark_bad(&self, slot: &SlotName) -> Result<(), BootError> {
        self.modify(|st| st.mark_bad(slot))
    }

    fn slots(&self) -> Result<Vec<SlotBootInfo>, BootError> {
        Ok(self.load()?.1.infos())
    }

    fn reset(&self, primary: &SlotName) -> Result<(), BootError> {
        // Keep unrelated variables when the block is readable; start over when not.
        let mut env = match self.read_env() {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!(path = %self.disp(), error = %e, "resetting unreadable GRUB environment");
                GrubEnv::default()
            }
        };
        let st = AbState::fresh(&self.slots, primary)?;
        state_into_env(&st, &mut env);
        self.write_env(&env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_escapes() {
        let mut env = GrubEnv::default();
        env.set("saved_entry", "x");
        env.set("weird", "a\\b\nc");
        let bytes = env.encode("t").unwrap();
        assert_eq!(bytes.len(), ENVBLK_SIZE);
        assert!(bytes.starts_with(b"# GRUB Environment Block\nsaved_entry=x\nweird=a\\\\b\\\nc\n#"));
        assert_eq!(GrubEnv::parse("t", &bytes).unwrap(), env);
        env.set("big", &"x".repeat(1000));
        assert!(env
            .encode("t")
            .unwrap_err()
            .to_string()
            .contains("holds 1024"));
    }

    #[test]
    fn rejects_bad_blocks() {
        let good = GrubEnv::default().encode("t").unwrap();
        assert!(GrubEnv::parse("f", &good[..1000]).is_err());
        assert!(GrubEnv::parse("f", &[b'#'; 1024]).is_err());
        let mut g = good.clone();
        g[25] = b'x';
        g[26] = b'\n';
        assert!(GrubEnv::parse("f", &g)
            .unwrap_err()
            .to_string()
            .contains("garbage"));
        assert!(GrubEnv::parse("f", &[0u8; 1024])
            .unwrap_err()
            .to_string()
            .contains("header"));
    }
}
