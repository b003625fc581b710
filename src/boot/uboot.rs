//! The U-Boot environment as U-Boot and `fw_printenv`/`fw_setenv` (libubootenv) store it.
//!
//! One copy is `crc32 (LE) | data`; a redundant copy is `crc32 | flag | data`. The data are
//! `name=value\0` records ended by an empty record, padded to the copy's size; the CRC
//! covers the whole data area. With two copies the valid one with the newer flag wins
//! (incrementing flags, 255 → 0 wraps), and a write goes to the other copy with the flag
//! advanced, so a power cut leaves the old copy valid.
//!
//! Variables follow the common A/B convention: `BOOT_ORDER="A B"`, `BOOT_A_LEFT`,
//! `BOOT_B_LEFT`; patchd adds `BOOT_<S>_OK=1` for a committed slot, which the shipped
//! `packaging/u-boot/boot.cmd` boots without using up attempts.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::ab::{parse_counter, parse_order, AbSlot, AbState, AbStore};
use super::config::{UbootConfig, UbootCopy};
use super::detect::Detector;
use super::grubenv::check_slot_names;
use super::BootError;
use crate::fsutil;
use crate::names::SlotName;
use crate::paths::Paths;

pub const ORDER_VAR: &str = "BOOT_ORDER";
/// Attempts written for a good slot, so a RAUC-style script that knows no `_OK` flag
/// still boots it (and userspace marks it good again, as RAUC does).
pub const GOOD_LEFT: u32 = 3;

/// A U-Boot environment's variables (sorted, as U-Boot exports them).
pub type UbootVars = BTreeMap<String, String>;

/// Parse a `fw_env.config` file: `device offset size [sector-size [sectors]]` per line.
pub fn parse_fw_env_config(what: &str, text: &str) -> Result<Vec<UbootCopy>, BootError> {
    let err = |why: String| BootError::Format {
        path: what.to_string(),
        why,
    };
    let mut copies = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            return Err(err(format!("line {}: need `device offset size`", n + 1)));
        }
        let num = |s: &str| {
            let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(h) => u64::from_str_radix(h, 16),
                None => s.parse(),
            };
            r.map_err(|_| err(format!("line {}: {s:?} is not a number", n + 1)))
        };
        copies.push(UbootCopy {
            device: PathBuf::from(f[0]),
            offset: num(f[1])?,
            size: num(f[2])?,
        });
    }
    if copies.is_empty() || copies.len() > 2 {
        return Err(err(format!(
            "need one or two environment copies, found {}",
            copies.len()
        )));
    }
    Ok(copies)
}

/// Decode one copy. `Err` carries the reason it is unusable.
pub(super) fn decode_copy(buf: &[u8], redundant: bool) -> Result<(Option<u8>, UbootVars), String> {
    let hdr = if redundant { 5 } else { 4 };
    if buf.len() <= hdr + 1 {
        return Err(format!("copy of {} bytes is too small", buf.len()));
    }
    let stored = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let data = &buf[hdr..];
    let actual = crc32fast::hash(data);
    if stored != actual {
        return Err(format!(
            "CRC mismatch (stored {stored:#010x}, computed {actual:#010x})"
        ));
    }
    let flag = redundant.then(|| buf[4]);
    let mut vars = UbootVars::new();
    let mut p = 0;
    loop {
        let Some(end) = data[p..].iter().position(|&c| c == 0) else {
            return Err("variables are not terminated".to_string());
        };
        if end == 0 {
            break;
        }
        let rec = &data[p..p + end];
        let text = std::str::from_utf8(rec).map_err(|_| format!("record at {p} is not UTF-8"))?;
        let (name, value) = text
            .split_once('=')
            .ok_or_else(|| format!("record at {p} has no '='"))?;
        vars.insert(name.to_string(), value.to_string());
        p += end + 1;
        if p >= data.len() {
            return Err("variables are not terminated".to_string());
        }
    }
    Ok((flag, vars))
}

/// Encode one copy of `size` bytes.
pub fn encode_copy(
    what: &str,
    vars: &UbootVars,
    size: usize,
    flag: Option<u8>,
) -> Result<Vec<u8>, BootError> {
    let hdr = if flag.is_some() { 5 } else { 4 };
    let mut data = Vec::new();
    for (name, value) in vars {
        if name.is_empty() || name.contains('=') || name.contains('\0') || value.contains('\0') {
            return Err(BootError::Format {
                path: what.to_string(),
                why: format!("variable {name:?} cannot be stored in a U-Boot environment"),
            });
        }
        data.extend_from_slice(name.as_bytes());
        data.push(b'=');
        data.extend_from_slice(value.as_bytes());
        data.push(0);
    }
    data.push(0);
    let room = size.saturating_sub(hdr);
    if data.len() > room {
        return Err(BootError::Format {
            path: what.to_string(),
            why: format!(
                "variables need {} bytes; the environment holds {room}",
                data.len()
            ),
        });
    }
    data.resize(room, 0);
    let mut out = crc32fast::hash(&data).to_le_bytes().to_vec();
    if let Some(f) = flag {
        out.push(f);
    }
    out.extend_from_slice(&data);
    Ok(out)
}

/// Which of two valid copies is newer (libubootenv's rule for incrementing flags).
fn newer(f0: u8, f1: u8) -> usize {
    if f0 == 255 && f1 == 0 {
        1
    } else if f1 == 255 && f0 == 0 {
        0
    } else if f1 > f0 {
        1
    } else {
        0
    }
}

/// The environment as read: its variables, which copy they came from, and its flag.
#[derive(Debug, Clone)]
pub struct LoadedEnv {
    pub vars: UbootVars,
    pub copy: usize,
    pub flag: Option<u8>,
}

#[derive(Debug, Clone)]
pub struct UbootEnv {
    /// Copies with devices resolved under the root.
    copies: Vec<UbootCopy>,
}

impl UbootEnv {
    pub fn new(copies: Vec<UbootCopy>) -> Result<Self, BootError> {
        if copies.is_empty() || copies.len() > 2 {
            return Err(BootError::Refused(format!(
                "U-Boot environment: need one or two copies, got {}",
                copies.len()
            )));
        }
        for c in &copies {
            if c.size < 16 || c.size > 16 * 1024 * 1024 {
                return Err(BootError::Refused(format!(
                    "{}: environment size {} is out of range",
                    c.device.display(),
                    c.size
                )));
            }
        }
        Ok(Self { copies })
    }

    /// From the `[boot.uboot]` config: `fw_env.config` file or inline copies.
    pub fn from_config(cfg: &UbootConfig, paths: &Paths) -> Result<Self, BootError> {
        let copies = if !cfg.copies.is_empty() {
            cfg.copies.clone()
        } else if let Some(f) = &cfg.fw_env_config {
            let path = paths.resolve(f);
            let text = std::fs::read_to_string(&path).map_err(|source| BootError::Io {
                path: path.display().to_string(),
                source,
            })?;
            parse_fw_env_config(&path.display().to_string(), &text)?
        } else {
            return Err(BootError::Refused(
                "[boot.uboot]: set fw_env_config or copies".to_string(),
            ));
        };
        Self::new(
            copies
                .into_iter()
                .map(|c| UbootCopy {
                    device: paths.resolve(&c.device),
                    ..c
                })
                .collect(),
        )
    }

    pub fn redundant(&self) -> bool {
        self.copies.len() == 2
    }

    pub fn copies(&self) -> &[UbootCopy] {
        &self.copies
    }

    pub(super) fn describe(&self, i: usize) -> String {
        let c = &self.copies[i];
        format!("{} at offset {:#x}", c.device.display(), c.offset)
    }

    pub(super) fn name(&self) -> String {
        self.copies[0].device.display().to_string()
    }

    pub(super) fn read_copy(&self, i: usize) -> Result<Vec<u8>, BootError> {
        let c = &self.copies[i];
        let io = |source| BootError::Io {
            path: c.device.display().to_string(),
            source,
        };
        let f = File::open(&c.device).map_err(io)?;
        let mut buf = vec![0u8; c.size as usize];
        f.read_exact_at(&mut buf, c.offset).map_err(io)?;
        Ok(buf)
    }

    /// Read the current environment; with two copies the newer valid one.
    pub fn load(&self) -> Result<LoadedEnv, BootError> {
        let redundant = self.redundant();
        let mut valid = Vec::new();
        let mut why = Vec::new();
        for i in 0..self.copies.len() {
            let buf = self.read_copy(i)?;
            match decode_copy(&buf, redundant) {
                Ok((flag, vars)) => valid.push((i, flag, vars)),
                Err(e) => {
                    tracing::warn!(copy = %self.describe(i), error = %e, "U-Boot environment copy unusable");
                    why.push(format!("{}: {e}", self.describe(i)));
                }
            }
        }
        let pick = match valid.len() {
            0 => {
                return Err(BootError::Format {
                    path: self.name(),
                    why: format!("no valid U-Boot environment ({})", why.join("; ")),
                })
            }
            1 => 0,
            _ => newer(valid[0].1.unwrap_or(0), valid[1].1.unwrap_or(0)),
        };
        let (copy, flag, vars) = valid.swap_remove(pick);
        Ok(LoadedEnv { vars, copy, flag })
    }

    /// The writes that replace `current` by `vars`: `(copy index, bytes)`. Exposed so the
    /// power-cut tests can apply any prefix of them.
    pub fn plan_write(
        &self,
        current: Option<&LoadedEnv>,
        vars: &UbootVars,
    ) -> Result<(usize, Vec<u8>), BootError> {
        if self.redundant() {
            let (target, flag) = match current {
                Some(cur) => (1 - cur.copy, cur.flag.unwrap_or(0).wrapping_add(1)),
                None => (0, 1),
            };
            let size = self.copies[target].size as usize;
            Ok((target, encode_copy(&self.name(), vars, size, Some(flag))?))
        } else {
            let size = self.copies[0].size as usize;
            Ok((0, encode_copy(&self.name(), vars, size, None)?))
        }
    }

    /// Store `vars` crash-safely (see the module comment). `current` is what [`load`] gave.
    pub fn store(&self, current: Option<&LoadedEnv>, vars: &UbootVars) -> Result<(), BootError> {
        let (target, bytes) = self.plan_write(current, vars)?;
        let c = &self.copies[target];
        let io = |source| BootError::Io {
            path: c.device.display().to_string(),
            source,
        };
        let whole_file = !self.redundant()
            && c.offset == 0
            && std::fs::metadata(&c.device)
                .map(|m| m.is_file() && m.len() == c.size)
                .unwrap_or(false);
        if whole_file {
            return fsutil::atomic_write_mode(&c.device, &bytes, 0o644).map_err(io);
        }
        if !self.redundant() {
            tracing::warn!(device = %c.device.display(), "single U-Boot environment rewritten in place; a power cut now can corrupt it (configure a redundant copy)");
        }
        let f = OpenOptions::new().write(true).open(&c.device).map_err(io)?;
        f.write_all_at(&bytes, c.offset).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok(())
    }

    /// Write `vars` over every copy regardless of what is there (admin reset).
    pub fn reset(&self, vars: &UbootVars) -> Result<(), BootError> {
        if !self.redundant() {
            return self.store(None, vars);
        }
        for (i, flag) in [(0usize, 1u8), (1, 0)] {
            let c = &self.copies[i];
            let bytes = encode_copy(&self.name(), vars, c.size as usize, Some(flag))?;
            let io = |source| BootError::Io {
                path: c.device.display().to_string(),
                source,
            };
            let f = OpenOptions::new().write(true).open(&c.device).map_err(io)?;
            f.write_all_at(&bytes, c.offset).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        Ok(())
    }
}

fn upper(slot: &SlotName) -> String {
    slot.as_str().to_ascii_uppercase()
}
pub fn left_var(slot: &SlotName) -> String {
    format!("BOOT_{}_LEFT", upper(slot))
}
pub fn ok_var(slot: &SlotName) -> String {
    format!("BOOT_{}_OK", upper(slot))
}

pub fn state_from_vars(
    what: &str,
    vars: &UbootVars,
    all: &[SlotName],
) -> Result<AbState, BootError> {
    let Some(order) = vars.get(ORDER_VAR) else {
        return Err(BootError::Format {
            path: what.to_string(),
            why: format!(
                "no {ORDER_VAR} variable: not set up for A/B boot (an admin can run `patchd boot reset --primary SLOT`)"
            ),
        });
    };
    let order = parse_order(what, ORDER_VAR, order, all, |w| w.to_ascii_lowercase())?;
    let mut st = AbState {
        order,
        slots: Default::default(),
    };
    for s in all {
        let left = match vars.get(&left_var(s)) {
            Some(v) => parse_counter(what, &left_var(s), v)?,
            None => 0,
        };
        let good = match vars.get(&ok_var(s)).map(String::as_str) {
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

pub fn state_into_vars(st: &AbState, vars: &mut UbootVars) {
    let order: Vec<String> = st.order.iter().map(upper).collect();
    vars.insert(ORDER_VAR.to_string(), order.join(" "));
    for (s, i) in &st.slots {
        let left = if i.good { GOOD_LEFT } else { i.left };
        vars.insert(left_var(s), left.to_string());
        vars.insert(ok_var(s), if i.good { "1" } else { "0" }.to_string());
    }
}

#[derive(Debug, Clone)]
pub struct UbootBootloader {
    env: UbootEnv,
    slots: Vec<SlotName>,
    detector: Option<Detector>,
}

impl UbootBootloader {
    pub fn new(env: UbootEnv, slots: Vec<SlotName>) -> Result<Self, BootError> {
        check_slot_names("U-Boot", &slots)?;
        Ok(Self {
            env,
            slots,
            detector: None,
        })
    }

    pub fn with_detector(mut self, detector: Detector) -> Self {
        self.detector = Some(detector);
        self
    }

    pub fn env(&self) -> &UbootEnv {
        &self.env
    }

    pub fn slot_names(&self) -> &[SlotName] {
        &self.slots
    }

    pub fn load(&self) -> Result<(LoadedEnv, AbState), BootError> {
        let cur = self.env.load()?;
        let st = state_from_vars(&self.env.name(), &cur.vars, &self.slots)?;
        Ok((cur, st))
    }
}

impl AbStore for UbootBootloader {
    const KIND: &'static str = "uboot";

    fn location(&self) -> String {
        self.env.name()
    }

    fn booted(&self) -> Result<SlotName, BootError> {
        match &self.detector {
            Some(d) => d.detect(None),
            None => Err(BootError::Detection(
                "U-Boot keeps no record of the booted slot; configure detection".to_string(),
            )),
        }
    }

    fn load_state(&self) -> Result<AbState, BootError> {
        Ok(self.load()?.1)
    }

    fn modify_state(
        &self,
        f: impl FnOnce(&mut AbState) -> Result<(), BootError>,
    ) -> Result<(), BootError> {
        let (cur, mut st) = self.load()?;
        f(&mut st)?;
        let mut vars = cur.vars.clone();
        state_into_vars(&st, &mut vars);
        self.env.store(Some(&cur), &vars)?;
        tracing::info!(env = %self.env.name(), order = ?st.order, "U-Boot environment updated");
        Ok(())
    }

    /// Keeps every other variable of the current environment. Over a blank (never
    /// written) environment it starts empty; over corrupt copies it refuses, because the
    /// board's own variables (`bootcmd`, `ethaddr`, `serial#`) would be lost without a
    /// word: [`super::uboot_reset`] is the explicit way (defaults file or force, backup).
    fn reset_state(&self, primary: &SlotName) -> Result<(), BootError> {
        let mut vars = match super::uboot_reset::base_for_plain_reset(&self.env)? {
            Some(v) => v,
            None => {
                tracing::info!(env = %self.env.name(), "initialising a blank U-Boot environment");
                UbootVars::new()
            }
        };
        let st = AbState::fresh(&self.slots, primary)?;
        state_into_vars(&st, &mut vars);
        self.env.reset(&vars)
    }
}

/// Check that a path is a usable environment location (for status output).
pub fn describe_copies(env: &UbootEnv) -> Vec<(PathBuf, u64, u64)> {
    env.copies
        .iter()
        .map(|c| (c.device.clone(), c.offset, c.size))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_round_trip_and_crc() {
        let mut vars = UbootVars::new();
        vars.insert("BOOT_ORDER".into(), "A B".into());
        vars.insert("bootcmd".into(), "run x".into());
        let b = encode_copy("t", &vars, 64, Some(7)).unwrap();
        assert_eq!(decode_copy(&b, true).unwrap(), (Some(7), vars.clone()));
        let mut bad = b.clone();
        bad[10] ^= 1;
        assert!(decode_copy(&bad, true).unwrap_err().contains("CRC"));
        assert!(encode_copy("t", &vars, 20, None).is_err());
        assert_eq!(newer(255, 0), 1);
        assert_eq!(newer(0, 255), 0);
        assert_eq!(newer(3, 4), 1);
        assert_eq!(newer(4, 4), 0);
    }

    #[test]
    fn fw_env_config_lines() {
        let c = parse_fw_env_config(
            "cfg",
            "# comment\n/dev/mmcblk0 0x3fe000 0x2000\n/dev/mmcblk0 0x400000 8192 0x200\n",
        )
        .unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].offset, 0x3fe000);
        assert_eq!(c[1].size, 8192);
        assert!(parse_fw_env_config("cfg", "/dev/x zz 1\n").is_err());
        assert!(parse_fw_env_config("cfg", "").is_err());
    }
}
