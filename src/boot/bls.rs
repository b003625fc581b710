//! systemd-boot with Boot Loader Specification boot counting.
//!
//! Each slot is one entry: a Type #1 file `loader/entries/NAME[+LEFT[-DONE]].conf` or a
//! UKI `EFI/Linux/NAME[+LEFT[-DONE]].efi` on the ESP. The counter suffix is the state:
//! none = good (what `systemd-bless-boot good` leaves), `+LEFT` with LEFT > 0 = on trial,
//! `+0-DONE` = bad (what `systemd-bless-boot bad` writes), `+0` = unused (what a reset
//! leaves on the other slots: never picked, but nothing failed). systemd-boot itself renames
//! `+L-D` to `+(L-1)-(D+1)` before it boots an entry.
//!
//! systemd-boot honours an explicit default (`LoaderEntryDefault`) even when that entry
//! has no tries left, so the trial goes through `LoaderEntryOneShot` (consumed on the next
//! boot) while `LoaderEntryDefault` keeps naming the primary; the fallback is therefore
//! the next boot after the trial, whatever the attempt count. Both variables hold glob
//! patterns (`NAME*`) so they match the entry whatever its counter. Every state change is
//! a rename inside one directory followed by an fsync of the directory.

use std::path::{Path, PathBuf};

use super::config::SystemdBootConfig;
use super::detect::Detector;
use super::{BootError, Bootloader, SlotBootInfo};
use crate::fsutil;
use crate::names::SlotName;
use crate::paths::Paths;

/// Vendor GUID of systemd-boot's variables (the Boot Loader Interface).
pub const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
/// EFI_VARIABLE_NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS.
const ATTRS_NV_BS_RT: u32 = 0x7;

/// A parsed entry file name: `NAME[+LEFT[-DONE]].EXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryName {
    pub name: String,
    pub left: Option<u32>,
    pub done: Option<u32>,
    /// `conf` or `efi`.
    pub ext: String,
}

impl EntryName {
    /// Parse a file name as the specification describes: the counter is the last `+…`
    /// before the extension, made of digits and at most one `-`.
    pub fn parse(file: &str) -> Option<Self> {
        let (stem, ext) = file.rsplit_once('.')?;
        if ext != "conf" && ext != "efi" {
            return None;
        }
        let (name, left, done) = match stem.rsplit_once('+') {
            Some((name, counter)) => {
                let (l, d) = match counter.split_once('-') {
                    Some((l, d)) => (l, Some(d)),
                    None => (counter, None),
                };
                let num = |s: &str| {
                    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| s.parse::<u32>().ok())
                        .flatten()
                };
                match (num(l), d.map(num)) {
                    (Some(l), None) => (name, Some(l), None),
                    (Some(l), Some(Some(d))) => (name, Some(l), Some(d)),
                    // Not a counter: the `+` is part of the name.
                    _ => (stem, None, None),
                }
            }
            None => (stem, None, None),
        };
        if name.is_empty() {
            return None;
        }
        Some(Self {
            name: name.to_string(),
            left,
            done,
            ext: ext.to_string(),
        })
    }

    pub fn file_name(&self) -> String {
        match (self.left, self.done) {
            (None, _) => format!("{}.{}", self.name, self.ext),
            (Some(l), None) => format!("{}+{l}.{}", self.name, self.ext),
            (Some(l), Some(d)) => format!("{}+{l}-{d}.{}", self.name, self.ext),
        }
    }

    /// What `systemd-bless-boot good` does: drop the counter.
    pub fn blessed_good(&self) -> Self {
        Self {
            left: None,
            done: None,
            ..self.clone()
        }
    }

    /// What `systemd-bless-boot bad` does: no tries left, tries done kept.
    pub fn blessed_bad(&self) -> Self {
        Self {
            left: Some(0),
            done: Some(self.done.unwrap_or(0)),
            ..self.clone()
        }
    }

    /// A fresh reset's other slots: no tries left and none done (`+0`), so systemd-boot
    /// never picks it, and — unlike `+0-DONE`, what a failed trial or the fence before a
    /// write leaves — not bad: nothing failed there.
    pub fn unused(&self) -> Self {
        Self {
            left: Some(0),
            done: None,
            ..self.clone()
        }
    }

    /// What systemd-boot does before booting a counting entry with tries left.
    pub fn booted(&self) -> Self {
        match self.left {
            Some(l) if l > 0 => Self {
                left: Some(l - 1),
                done: Some(self.done.unwrap_or(0).saturating_add(1)),
                ..self.clone()
            },
            _ => self.clone(),
        }
    }

    pub fn with_tries(&self, left: u32) -> Self {
        Self {
            left: Some(left),
            done: None,
            ..self.clone()
        }
    }

    pub fn is_good(&self) -> bool {
        self.left.is_none()
    }
    pub fn is_bad(&self) -> bool {
        self.left == Some(0)
    }
}

/// Minimal `*`/`?` glob as systemd-boot's `efi_fnmatch` uses for entry patterns.
fn glob(pattern: &[u8], s: &[u8]) -> bool {
    match (pattern.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&pattern[1..], s) || (!s.is_empty() && glob(pattern, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &s[1..]),
        (Some(p), Some(c)) if p == c => glob(&pattern[1..], &s[1..]),
        _ => false,
    }
}

#[derive(Debug, Clone)]
struct Found {
    slot: SlotName,
    dir: PathBuf,
    entry: EntryName,
}

#[derive(Debug, Clone)]
pub struct SystemdBoot {
    esp: PathBuf,
    efivars: PathBuf,
    slots: Vec<SlotName>,
    names: Vec<(SlotName, String)>,
    detector: Option<Detector>,
}

impl SystemdBoot {
    pub fn new(
        cfg: &SystemdBootConfig,
        paths: &Paths,
        slots: Vec<SlotName>,
    ) -> Result<Self, BootError> {
        let mut names = Vec::new();
        for s in &slots {
            let name = cfg
                .entries
                .get(s)
                .cloned()
                .unwrap_or_else(|| format!("patchd-{s}"));
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
            if !ok {
                return Err(BootError::Refused(format!(
                    "[boot.systemd-boot] entry name {name:?} for slot {s}: use a-z, 0-9, '.', '_', '-'"
                )));
            }
            names.push((s.clone(), name));
        }
        for (s1, n1) in &names {
            for (s2, n2) in &names {
                if s1 != s2 && n2.starts_with(n1.as_str()) {
                    return Err(BootError::Refused(format!(
                        "[boot.systemd-boot] entry name {n1:?} (slot {s1}) is a prefix of {n2:?} (slot {s2}); the EFI variable patterns would match both"
                    )));
                }
            }
        }
        for s in cfg.entries.keys() {
            if !slots.contains(s) {
                return Err(BootError::UnknownSlot(s.clone()));
            }
        }
        Ok(Self {
            esp: paths.resolve(&cfg.esp),
            efivars: paths.resolve(&cfg.efivars),
            slots,
            names,
            detector: None,
        })
    }

    pub fn with_detector(mut self, detector: Detector) -> Self {
        self.detector = Some(detector);
        self
    }

    fn entry_dirs(&self) -> [(PathBuf, &'static str); 2] {
        [
            (self.esp.join("loader/entries"), "conf"),
            (self.esp.join("EFI/Linux"), "efi"),
        ]
    }

    fn name_of(&self, slot: &SlotName) -> Result<&str, BootError> {
        self.names
            .iter()
            .find(|(s, _)| s == slot)
            .map(|(_, n)| n.as_str())
            .ok_or_else(|| BootError::UnknownSlot(slot.clone()))
    }

    fn slot_of_name(&self, name: &str) -> Option<SlotName> {
        self.names
            .iter()
            .find(|(_, n)| n == name)
            .map(|(s, _)| s.clone())
    }

    /// Every slot's entry; exactly one per slot.
    fn scan(&self) -> Result<Vec<Found>, BootError> {
        let mut found: Vec<Found> = Vec::new();
        for (dir, ext) in self.entry_dirs() {
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(BootError::Io {
                        path: dir.display().to_string(),
                        source,
                    })
                }
            };
            for ent in rd {
                let ent = ent.map_err(|source| BootError::Io {
                    path: dir.display().to_string(),
                    source,
                })?;
                let file = ent.file_name();
                let Some(file) = file.to_str() else { continue };
                if file.starts_with('.') {
                    continue;
                }
                let Some(entry) = EntryName::parse(file).filter(|e| e.ext == ext) else {
                    continue;
                };
                let Some(slot) = self.slot_of_name(&entry.name) else {
                    continue;
                };
                if let Some(other) = found.iter().find(|f| f.slot == slot) {
                    return Err(BootError::Format {
                        path: dir.join(file).display().to_string(),
                        why: format!(
                            "second entry for slot {slot} (also {})",
                            other.dir.join(other.entry.file_name()).display()
                        ),
                    });
                }
                found.push(Found {
                    slot,
                    dir: dir.clone(),
                    entry,
                });
            }
        }
        for s in &self.slots {
            if !found.iter().any(|f| &f.slot == s) {
                return Err(BootError::Format {
                    path: self.esp.join("loader/entries").display().to_string(),
                    why: format!(
                        "no boot entry for slot {s} (expected {}.conf or EFI/Linux/{}.efi, with or without a +LEFT[-DONE] counter)",
                        self.name_of(s)?,
                        self.name_of(s)?
                    ),
                });
            }
        }
        for f in &found {
            if f.entry.left.is_some_and(|l| l > super::ab::MAX_ATTEMPTS)
                || f.entry.done.is_some_and(|d| d > 1_000_000)
            {
                return Err(BootError::Format {
                    path: f.dir.join(f.entry.file_name()).display().to_string(),
                    why: "boot counter out of range".to_string(),
                });
            }
        }
        found.sort_by_key(|f| self.slots.iter().position(|s| *s == f.slot));
        Ok(found)
    }

    fn find(&self, slot: &SlotName) -> Result<Found, BootError> {
        self.name_of(slot)?;
        self.scan()?
            .into_iter()
            .find(|f| &f.slot == slot)
            .ok_or_else(|| BootError::UnknownSlot(slot.clone()))
    }

    fn rename(&self, f: &Found, to: &EntryName) -> Result<(), BootError> {
        if f.entry == *to {
            return Ok(());
        }
        let from = f.dir.join(f.entry.file_name());
        let dest = f.dir.join(to.file_name());
        std::fs::rename(&from, &dest).map_err(|source| BootError::Io {
            path: from.display().to_string(),
            source,
        })?;
        fsutil::fsync_dir(&f.dir).map_err(|source| BootError::Io {
            path: f.dir.display().to_string(),
            source,
        })?;
        tracing::info!(from = %from.display(), to = %dest.display(), "boot entry renamed");
        Ok(())
    }

    // --- EFI variables ---------------------------------------------------------------

    pub fn has_efivars(&self) -> bool {
        self.efivars.is_dir()
    }

    fn var_path(&self, name: &str) -> PathBuf {
        self.efivars.join(format!("{name}-{LOADER_GUID}"))
    }

    /// A string variable of the loader interface (UTF-16LE after 4 attribute bytes).
    pub fn read_var(&self, name: &str) -> Result<Option<String>, BootError> {
        let path = self.var_path(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(BootError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        let bad = |why: &str| BootError::Format {
            path: path.display().to_string(),
            why: why.to_string(),
        };
        if bytes.len() < 4 || (bytes.len() - 4) % 2 != 0 {
            return Err(bad("not an EFI string variable (size)"));
        }
        let units: Vec<u16> = bytes[4..]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        String::from_utf16(&units)
            .map(Some)
            .map_err(|_| bad("not valid UTF-16"))
    }

    pub fn write_var(&self, name: &str, value: &str) -> Result<(), BootError> {
        let path = self.var_path(name);
        let mut bytes = ATTRS_NV_BS_RT.to_le_bytes().to_vec();
        for u in value.encode_utf16().chain([0]) {
            bytes.extend_from_slice(&u.to_le_bytes());
        }
        let io = |source| BootError::Io {
            path: path.display().to_string(),
            source,
        };
        if self.on_efivarfs() {
            // efivarfs takes the whole variable in one write(); renames are not supported
            // there, and the firmware makes the update atomic.
            clear_immutable(&path);
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
        } else {
            fsutil::atomic_write_mode(&path, &bytes, 0o644).map_err(io)?;
        }
        tracing::info!(var = name, value, "EFI variable set");
        Ok(())
    }

    pub fn remove_var(&self, name: &str) -> Result<(), BootError> {
        let path = self.var_path(name);
        if !path.exists() {
            return Ok(());
        }
        if self.on_efivarfs() {
            clear_immutable(&path);
        }
        std::fs::remove_file(&path).map_err(|source| BootError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    fn on_efivarfs(&self) -> bool {
        nix::sys::statfs::statfs(&self.efivars)
            // EFIVARFS_MAGIC from linux/magic.h.
            .map(|s| s.filesystem_type().0 == 0xde5e_81e4)
            .unwrap_or(false)
    }

    fn pattern(&self, slot: &SlotName) -> Result<String, BootError> {
        Ok(format!("{}*", self.name_of(slot)?))
    }

    /// The slot a pattern variable names, if it names exactly one of ours.
    fn slot_of_pattern(&self, pattern: &str, found: &[Found]) -> Option<SlotName> {
        let pat = pattern.to_ascii_lowercase();
        let hits: Vec<&Found> = found
            .iter()
            .filter(|f| glob(pat.as_bytes(), f.entry.file_name().as_bytes()))
            .collect();
        match hits.as_slice() {
            [one] => Some(one.slot.clone()),
            _ => None,
        }
    }

    fn efivars_required(&self, what: &str) -> Result<(), BootError> {
        if self.has_efivars() {
            Ok(())
        } else {
            Err(BootError::Refused(format!(
                "{what}: no efivarfs at {}; without LoaderEntryOneShot/LoaderEntryDefault systemd-boot cannot be pointed at a slot",
                self.efivars.display()
            )))
        }
    }

    fn primary_in(&self, found: &[Found]) -> Result<Option<SlotName>, BootError> {
        if let Some(p) = self.read_var("LoaderEntryDefault")? {
            if let Some(s) = self.slot_of_pattern(&p, found) {
                if found.iter().any(|f| f.slot == s && f.entry.is_good()) {
                    return Ok(Some(s));
                }
            }
        }
        Ok(found
            .iter()
            .find(|f| f.entry.is_good())
            .map(|f| f.slot.clone()))
    }

    /// Play systemd-boot's selection for tests and the demo: one-shot entry (consumed),
    /// then the default, then the first entry in its sort order (exhausted entries last);
    /// count the boot down as systemd-boot does and record `LoaderEntrySelected`.
    pub fn simulate_boot(&self) -> Result<SlotName, BootError> {
        let found = self.scan()?;
        let mut chosen = None;
        if let Some(p) = self.read_var("LoaderEntryOneShot")? {
            self.remove_var("LoaderEntryOneShot")?;
            chosen = self.slot_of_pattern(&p, &found);
        }
        if chosen.is_none() {
            if let Some(p) = self.read_var("LoaderEntryDefault")? {
                chosen = self.slot_of_pattern(&p, &found);
            }
        }
        if chosen.is_none() {
            let mut sorted = found.clone();
            sorted.sort_by(|a, b| {
                (a.entry.is_bad(), std::cmp::Reverse(a.entry.file_name()))
                    .cmp(&(b.entry.is_bad(), std::cmp::Reverse(b.entry.file_name())))
            });
            chosen = sorted.first().map(|f| f.slot.clone());
        }
        let slot = chosen.ok_or_else(|| BootError::Refused("no boot entries".to_string()))?;
        let f = found
            .iter()
            .find(|f| f.slot == slot)
            .ok_or_else(|| BootError::UnknownSlot(slot.clone()))?;
        let id = f.entry.file_name();
        self.rename(f, &f.entry.booted())?;
        if self.has_efivars() {
            self.write_var("LoaderEntrySelected", &id)?;
        }
        Ok(slot)
    }
}

fn clear_immutable(path: &Path) {
    use std::os::fd::AsRawFd;
    const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
    const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
    const FS_IMMUTABLE_FL: libc::c_int = 0x10;
    let Ok(f) = std::fs::File::open(path) else {
        return;
    };
    let mut flags: libc::c_int = 0;
    // SAFETY: both ioctls take a pointer to an int that lives for the call.
    unsafe {
        if libc::ioctl(f.as_raw_fd(), FS_IOC_GETFLAGS as _, &mut flags) == 0
            && flags & FS_IMMUTABLE_FL != 0
        {
            flags &= !FS_IMMUTABLE_FL;
            libc::ioctl(f.as_raw_fd(), FS_IOC_SETFLAGS as _, &flags);
        }
    }
}

impl Bootloader for SystemdBoot {
    fn kind(&self) -> &'static str {
        "systemd-boot"
    }

    fn booted_slot(&self) -> Result<SlotName, BootError> {
        let selected = match self.read_var("LoaderEntrySelected")? {
            Some(id) => {
                let slot = EntryName::parse(&id.to_ascii_lowercase())
                    .and_then(|e| self.slot_of_name(&e.name))
                    .ok_or_else(|| {
                        BootError::Detection(format!(
                            "LoaderEntrySelected={id} is not one of the slot entries"
                        ))
                    })?;
                Some(("LoaderEntrySelected", slot))
            }
            None => None,
        };
        match &self.detector {
            Some(d) => d.detect(selected),
            None => selected
                .map(|(_, s)| s)
                .ok_or_else(|| BootError::Detection("LoaderEntrySelected is not set".to_string())),
        }
    }

    fn primary_slot(&self) -> Result<SlotName, BootError> {
        self.primary_in(&self.scan()?)?
            .ok_or_else(|| BootError::Format {
                path: self.esp.display().to_string(),
                why: "no slot entry without a boot counter (none is good)".to_string(),
            })
    }

    fn try_slot(&self, slot: &SlotName, attempts: u32) -> Result<(), BootError> {
        if attempts == 0 || attempts > super::ab::MAX_ATTEMPTS {
            return Err(BootError::Refused(format!(
                "attempts must be 1..={}, not {attempts}",
                super::ab::MAX_ATTEMPTS
            )));
        }
        self.efivars_required("try")?;
        let found = self.scan()?;
        let primary = self.primary_in(&found)?.ok_or_else(|| {
            BootError::Refused(format!(
                "no good slot to fall back to; refusing to put slot {slot} on trial"
            ))
        })?;
        if primary == *slot {
            return Err(BootError::Refused(format!(
                "slot {slot} is the primary (good) slot; try the other slot"
            )));
        }
        let f = self.find(slot)?;
        // Default first, so a power cut between the steps never leaves the trial default.
        self.write_var("LoaderEntryDefault", &self.pattern(&primary)?)?;
        self.rename(&f, &f.entry.with_tries(attempts))?;
        self.write_var("LoaderEntryOneShot", &self.pattern(slot)?)
    }

    fn mark_good(&self, slot: &SlotName) -> Result<(), BootError> {
        let f = self.find(slot)?;
        if f.entry.is_bad() && f.entry.done.unwrap_or(0) == 0 {
            return Err(BootError::Refused(format!(
                "slot {slot} is marked bad; install and try it before marking it good"
            )));
        }
        self.rename(&f, &f.entry.blessed_good())?;
        if self.has_efivars() {
            self.write_var("LoaderEntryDefault", &self.pattern(slot)?)?;
            self.remove_var("LoaderEntryOneShot")?;
        }
        Ok(())
    }

    fn mark_bad(&self, slot: &SlotName) -> Result<(), BootError> {
        let found = self.scan()?;
        let f = self.find(slot)?;
        let other_good = found.iter().find(|o| o.slot != *slot && o.entry.is_good());
        let Some(other) = other_good else {
            return Err(BootError::Refused(format!(
                "slot {slot} is the only good slot; marking it bad would leave nothing to boot"
            )));
        };
        if self.has_efivars() {
            self.write_var("LoaderEntryDefault", &self.pattern(&other.slot)?)?;
            if let Some(p) = self.read_var("LoaderEntryOneShot")? {
                if self.slot_of_pattern(&p, &found).as_ref() == Some(slot) {
                    self.remove_var("LoaderEntryOneShot")?;
                }
            }
        }
        self.rename(&f, &f.entry.blessed_bad())
    }

    fn slots(&self) -> Result<Vec<SlotBootInfo>, BootError> {
        let found = self.scan()?;
        let primary = self.primary_in(&found)?;
        // The running trial has used its last try (`+0-DONE`) but is not bad: it may
        // still be blessed. Only the booted entry gets that reading.
        let selected = self
            .read_var("LoaderEntrySelected")?
            .and_then(|id| EntryName::parse(&id.to_ascii_lowercase()))
            .and_then(|e| self.slot_of_name(&e.name));
        Ok(found
            .iter()
            .map(|f| {
                let running_trial = selected.as_ref() == Some(&f.slot)
                    && f.entry.is_bad()
                    && f.entry.done.unwrap_or(0) > 0;
                let unused = f.entry.is_bad() && f.entry.done.is_none();
                let bad = f.entry.is_bad() && !running_trial && !unused;
                SlotBootInfo {
                    slot: f.slot.clone(),
                    tries_left: if bad { None } else { f.entry.left },
                    good: f.entry.is_good(),
                    bad,
                    primary: primary.as_ref() == Some(&f.slot),
                }
            })
            .collect())
    }

    fn reset(&self, primary: &SlotName) -> Result<(), BootError> {
        let found = self.scan()?;
        if !found.iter().any(|f| &f.slot == primary) {
            return Err(BootError::UnknownSlot(primary.clone()));
        }
        if self.has_efivars() {
            self.write_var("LoaderEntryDefault", &self.pattern(primary)?)?;
            self.remove_var("LoaderEntryOneShot")?;
        }
        for f in &found {
            let to = if &f.slot == primary {
                f.entry.blessed_good()
            } else {
                f.entry.unused()
            };
            self.rename(f, &to)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_counter_examples() {
        // The Boot Loader Specification's examples.
        let e = EntryName::parse("foo+3.conf").unwrap();
        assert_eq!((e.name.as_str(), e.left, e.done), ("foo", Some(3), None));
        let e = e.booted();
        assert_eq!(e.file_name(), "foo+2-1.conf");
        let e = e.booted().booted();
        assert_eq!(e.file_name(), "foo+0-3.conf");
        assert!(e.is_bad());
        assert_eq!(
            e.booted().file_name(),
            "foo+0-3.conf",
            "no tries: unchanged"
        );
        // systemd-bless-boot's transitions.
        let t = EntryName::parse("foo+2-1.conf").unwrap();
        assert_eq!(t.blessed_good().file_name(), "foo.conf");
        assert_eq!(t.blessed_bad().file_name(), "foo+0-1.conf");
        let t = EntryName::parse("foo+3.efi").unwrap();
        assert_eq!(t.blessed_bad().file_name(), "foo+0-0.efi");
        // Not counters.
        let e = EntryName::parse("foo+bar.conf").unwrap();
        assert_eq!((e.name.as_str(), e.left), ("foo+bar", None));
        let e = EntryName::parse("foo+1-x.conf").unwrap();
        assert_eq!(e.name, "foo+1-x");
        assert!(EntryName::parse("foo.txt").is_none());
        assert!(EntryName::parse("+3.conf").is_none());
        assert!(glob(b"patchd-a*", b"patchd-a+3-0.conf"));
        assert!(!glob(b"patchd-a*", b"patchd-b.conf"));
    }
}
