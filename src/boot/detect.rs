//! Booted-slot detection from independent sources: the kernel command line, the root
//! device in `/proc/self/mountinfo`, and the bootloader's own record. Every source that is
//! available must name the same slot; a disagreement is an error, never a guess.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::config::DetectConfig;
use super::BootError;
use crate::names::SlotName;
use crate::paths::Paths;

#[derive(Debug, Clone)]
pub struct Detector {
    paths: Paths,
    slots: Vec<SlotName>,
    cmdline_keys: Vec<String>,
    root_devices: BTreeMap<SlotName, PathBuf>,
}

impl Detector {
    pub fn new(paths: &Paths, slots: &[SlotName], cfg: &DetectConfig) -> Self {
        Self {
            paths: paths.clone(),
            slots: slots.to_vec(),
            cmdline_keys: cfg.cmdline_keys.clone(),
            root_devices: cfg.root_devices.clone(),
        }
    }

    /// A file under /proc (resolved under the root); `None` where it does not exist, as
    /// in a test root or a container without it.
    fn read_proc(&self, file: &str) -> Result<Option<String>, BootError> {
        let path = self.paths.resolve(file);
        match std::fs::read_to_string(&path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(BootError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// The slot named on the kernel command line, if any configured key is present.
    pub fn from_cmdline(&self) -> Result<Option<(String, SlotName)>, BootError> {
        let Some(text) = self.read_proc("/proc/cmdline")? else {
            return Ok(None);
        };
        let mut found: Option<(String, SlotName)> = None;
        for word in text.split_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            if !self.cmdline_keys.iter().any(|k| k == key) {
                continue;
            }
            // RAUC names slots by boot name (`A`, `B`); patchd slot names are lowercase.
            let slot = SlotName::new(value.to_ascii_lowercase())
                .ok()
                .filter(|s| self.slots.contains(s))
                .ok_or_else(|| {
                    BootError::Detection(format!(
                        "kernel command line {key}={value} names no configured slot"
                    ))
                })?;
            if let Some((prev_key, prev)) = &found {
                if *prev != slot {
                    return Err(BootError::Detection(format!(
                        "kernel command line disagrees with itself: {prev_key}={prev} but {key}={slot}"
                    )));
                }
            }
            found = Some((format!("kernel command line {key}"), slot));
        }
        Ok(found)
    }

    /// The slot whose configured root device is mounted on `/`.
    pub fn from_mountinfo(&self) -> Result<Option<(String, SlotName)>, BootError> {
        if self.root_devices.is_empty() {
            return Ok(None);
        }
        let Some(text) = self.read_proc("/proc/self/mountinfo")? else {
            return Ok(None);
        };
        // Later lines mount over earlier ones: the last `/` entry is the visible root.
        let Some((majmin, source)) = text.lines().filter_map(parse_root_line).next_back() else {
            return Ok(None);
        };
        let source_canon = self.canonical(&source);
        let mut matches = Vec::new();
        for (slot, dev) in &self.root_devices {
            let same_path = *dev == source || self.canonical(dev) == source_canon;
            let same_dev = self.device_number(dev).is_some_and(|n| n == majmin);
            if same_path || same_dev {
                matches.push(slot.clone());
            }
        }
        match matches.as_slice() {
            [] => Err(BootError::Detection(format!(
                "root device {} ({}) matches no configured slot device",
                source.display(),
                majmin
            ))),
            [one] => Ok(Some((
                format!("root device {}", source.display()),
                one.clone(),
            ))),
            _ => Err(BootError::Detection(format!(
                "root device {} matches several slots",
                source.display()
            ))),
        }
    }

    fn canonical(&self, dev: &Path) -> PathBuf {
        let resolved = self.paths.resolve(dev);
        match std::fs::canonicalize(&resolved) {
            Ok(p) => p,
            Err(_) => resolved,
        }
    }

    fn device_number(&self, dev: &Path) -> Option<String> {
        let meta = std::fs::metadata(self.paths.resolve(dev)).ok()?;
        let rdev = meta.rdev();
        if rdev == 0 {
            return None;
        }
        Some(format!("{}:{}", libc::major(rdev), libc::minor(rdev)))
    }

    /// Combine every source with the bootloader's own record (`bootloader`, if it has one).
    pub fn detect(&self, bootloader: Option<(&str, SlotName)>) -> Result<SlotName, BootError> {
        let mut sources: Vec<(String, SlotName)> = Vec::new();
        if let Some(s) = self.from_cmdline()? {
            sources.push(s);
        }
        if let Some(s) = self.from_mountinfo()? {
            sources.push(s);
        }
        if let Some((what, slot)) = bootloader {
            sources.push((what.to_string(), slot));
        }
        let Some((first_src, first)) = sources.first().cloned() else {
            return Err(BootError::Detection(format!(
                "no source names the booted slot (kernel command line keys {}, root devices, bootloader)",
                self.cmdline_keys.join(", ")
            )));
        };
        for (src, slot) in &sources[1..] {
            if *slot != first {
                return Err(BootError::Detection(format!(
                    "sources disagree: {first_src} says {first}, {src} says {slot}"
                )));
            }
        }
        tracing::debug!(slot = %first, sources = sources.len(), "booted slot detected");
        Ok(first)
    }
}

/// `(maj:min, mount source)` of a mountinfo line whose mount point is `/`.
fn parse_root_line(line: &str) -> Option<(String, PathBuf)> {
    let (left, right) = line.split_once(" - ")?;
    let fields: Vec<&str> = left.split(' ').collect();
    if fields.get(4) != Some(&"/") {
        return None;
    }
    let majmin = fields.get(2)?.to_string();
    let source = right.split(' ').nth(1)?;
    Some((
        majmin,
        PathBuf::from(crate::fsutil::unescape_mountinfo(source)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: &str) -> SlotName {
        SlotName::new(n).unwrap()
    }

    fn fake_root(cmdline: &str, root_dev: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/self")).unwrap();
        std::fs::write(dir.path().join("proc/cmdline"), cmdline).unwrap();
        std::fs::write(
            dir.path().join("proc/self/mountinfo"),
            format!(
                "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
                 25 1 254:3 / / rw,relatime shared:1 - ext4 {root_dev} rw\n"
            ),
        )
        .unwrap();
        dir
    }

    fn detector(root: &Path) -> Detector {
        let mut cfg = DetectConfig::default();
        cfg.root_devices.insert(s("a"), PathBuf::from("/dev/vda2"));
        cfg.root_devices.insert(s("b"), PathBuf::from("/dev/vda3"));
        Detector::new(&Paths::new(root), &[s("a"), s("b")], &cfg)
    }

    #[test]
    fn sources_agree_or_error() {
        let r = fake_root("quiet patchd.slot=b root=/dev/vda3\n", "/dev/vda3");
        assert_eq!(detector(r.path()).detect(None).unwrap(), s("b"));
        let r = fake_root("quiet rauc.slot=A\n", "/dev/vda2");
        assert_eq!(
            detector(r.path()).detect(Some(("x", s("a")))).unwrap(),
            s("a")
        );
        let r = fake_root("patchd.slot=a\n", "/dev/vda3");
        let e = detector(r.path()).detect(None).unwrap_err().to_string();
        assert!(e.contains("disagree"), "{e}");
        let r = fake_root("patchd.slot=c\n", "/dev/vda2");
        assert!(detector(r.path()).detect(None).is_err());
        let r = fake_root("quiet\n", "/dev/sda9");
        assert!(detector(r.path()).detect(None).is_err());
        let empty = tempfile::tempdir().unwrap();
        assert!(detector(empty.path()).detect(None).is_err());
        assert_eq!(
            detector(empty.path()).detect(Some(("bl", s("b")))).unwrap(),
            s("b")
        );
    }
}
