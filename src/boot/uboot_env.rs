//! The U-Boot environment's storage format, as U-Boot and `fw_printenv`/`fw_setenv`
//! (libubootenv) read and write it: one or two copies, CRC, redundancy flag, records.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::config::{UbootConfig, UbootCopy};
use super::BootError;
use crate::fsutil;
use crate::paths::Paths;

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
pub(super) fn newer(f0: u8, f1: u8) -> usize {
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

/// Check that a path is a usable environment location (for status output).
pub fn describe_copies(env: &UbootEnv) -> Vec<(PathBuf, u64, u64)> {
    env.copies
        .iter()
        .map(|c| (c.device.clone(), c.offset, c.size))
        .collect()
}
