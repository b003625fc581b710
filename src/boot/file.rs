//! The file backend: the A/B state as a small JSON document, for the simulated device, the
//! demo and the engine's tests. [`simulate_reboot`] plays the bootloader: it consults the
//! file exactly as the GRUB snippet and the U-Boot script do (take one attempt from a
//! trial slot, fall back to the primary when attempts are exhausted, never pick a bad slot)
//! and records which slot "booted".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ab::{AbSlot, AbState, AbStore, MAX_ATTEMPTS};
use super::detect::Detector;
use super::BootError;
use crate::fsutil;
use crate::names::SlotName;

const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    version: u32,
    /// Boot order, preferred first; a slot missing from it is bad.
    order: Vec<SlotName>,
    slots: BTreeMap<SlotName, AbSlot>,
    /// The slot the last (simulated) boot chose; the "bootloader's own variable".
    booted: Option<SlotName>,
}

/// The JSON-file bootloader.
#[derive(Debug, Clone)]
pub struct FileBootloader {
    path: PathBuf,
    slots: Vec<SlotName>,
    detector: Option<Detector>,
}

impl FileBootloader {
    /// Use the state file at `path` (already resolved under the root) for `slots`.
    pub fn new(path: impl Into<PathBuf>, slots: Vec<SlotName>) -> Self {
        Self {
            path: path.into(),
            slots,
            detector: None,
        }
    }

    /// Also consult the kernel command line / mountinfo sources when asked for the booted
    /// slot (all sources must agree with the file's record).
    pub fn with_detector(mut self, detector: Detector) -> Self {
        self.detector = Some(detector);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Create (or reset) the file: `primary` good and booted, every other slot unused
    /// (after it in the order, no attempts left; see [`AbState::fresh`]).
    pub fn init(&self, primary: &SlotName) -> Result<(), BootError> {
        let st = AbState::fresh(&self.slots, primary)?;
        self.save(&st, Some(primary.clone()))
    }

    fn disp(&self) -> String {
        self.path.display().to_string()
    }

    fn format_err(&self, why: impl Into<String>) -> BootError {
        BootError::Format {
            path: self.disp(),
            why: why.into(),
        }
    }

    fn load(&self) -> Result<(AbState, Option<SlotName>), BootError> {
        let bytes = std::fs::read(&self.path).map_err(|source| BootError::Io {
            path: self.disp(),
            source,
        })?;
        let doc: FileDoc = serde_json::from_slice(&bytes)
            .map_err(|e| self.format_err(format!("not a patchd boot state file: {e}")))?;
        if doc.version != VERSION {
            return Err(self.format_err(format!(
                "unsupported version {} (expected {VERSION})",
                doc.version
            )));
        }
        for s in doc.slots.keys() {
            if !self.slots.contains(s) {
                return Err(self.format_err(format!("unknown slot {s} (not configured)")));
            }
        }
        for s in &self.slots {
            if !doc.slots.contains_key(s) {
                return Err(self.format_err(format!("configured slot {s} is missing")));
            }
        }
        for (s, i) in &doc.slots {
            if i.left > MAX_ATTEMPTS {
                return Err(self.format_err(format!(
                    "slot {s}: {} attempts left is out of range 0..={MAX_ATTEMPTS}",
                    i.left
                )));
            }
        }
        let mut seen = Vec::new();
        for s in &doc.order {
            if !doc.slots.contains_key(s) || seen.contains(s) {
                return Err(self.format_err(format!("order names slot {s} twice or unknown")));
            }
            seen.push(s.clone());
        }
        if let Some(b) = &doc.booted {
            if !doc.slots.contains_key(b) {
                return Err(self.format_err(format!("booted slot {b} is unknown")));
            }
        }
        Ok((
            AbState {
                order: doc.order,
                slots: doc.slots,
            },
            doc.booted,
        ))
    }

    fn save(&self, st: &AbState, booted: Option<SlotName>) -> Result<(), BootError> {
        let doc = FileDoc {
            version: VERSION,
            order: st.order.clone(),
            slots: st.slots.clone(),
            booted,
        };
        let mut bytes = serde_json::to_vec_pretty(&doc)
            .map_err(|e| self.format_err(format!("cannot encode: {e}")))?;
        bytes.push(b'\n');
        if let Some(dir) = self.path.parent() {
            fsutil::ensure_dir(dir, 0o755).map_err(|source| BootError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        fsutil::atomic_write_mode(&self.path, &bytes, 0o644).map_err(|source| BootError::Io {
            path: self.disp(),
            source,
        })
    }

    /// Simulated power-on: the bootloader's decision, persisted like `save_env`/`saveenv`.
    /// Returns the slot that booted.
    pub fn simulate_reboot(&self) -> Result<SlotName, BootError> {
        let (mut st, _) = self.load()?;
        let Some(chosen) = st.boot_decision() else {
            return Err(self.format_err("no bootable slot: every slot is bad or exhausted"));
        };
        tracing::info!(slot = %chosen, path = %self.disp(), "simulated boot");
        self.save(&st, Some(chosen.clone()))?;
        Ok(chosen)
    }
}

/// Simulated reboot of the file bootloader at `path` (resolved) with `slots` configured.
pub fn simulate_reboot(path: &Path, slots: &[SlotName]) -> Result<SlotName, BootError> {
    FileBootloader::new(path, slots.to_vec()).simulate_reboot()
}

impl AbStore for FileBootloader {
    const KIND: &'static str = "file";

    fn location(&self) -> String {
        self.disp()
    }

    fn booted(&self) -> Result<SlotName, BootError> {
        let (_, booted) = self.load()?;
        match &self.detector {
            Some(d) => d.detect(booted.map(|b| ("boot state file", b))),
            None => booted.ok_or_else(|| {
                BootError::Detection(format!("{}: no boot recorded yet", self.disp()))
            }),
        }
    }

    type Rest = Option<SlotName>;

    fn read_store(&self) -> Result<(AbState, Option<SlotName>), BootError> {
        self.load()
    }

    fn write_store(&self, st: &AbState, booted: Option<SlotName>) -> Result<(), BootError> {
        self.save(st, booted)
    }

    fn reset_state(&self, primary: &SlotName) -> Result<(), BootError> {
        self.init(primary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::Bootloader;

    fn s(n: &str) -> SlotName {
        SlotName::new(n).unwrap()
    }

    #[test]
    fn fallback_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bl = FileBootloader::new(dir.path().join("boot.json"), vec![s("a"), s("b")]);
        assert!(bl.slots().is_err(), "missing file must be an error");
        bl.init(&s("a")).unwrap();
        assert_eq!(bl.booted_slot().unwrap(), s("a"));
        bl.try_slot(&s("b"), 1).unwrap();
        assert_eq!(bl.simulate_reboot().unwrap(), s("b"));
        assert_eq!(bl.booted_slot().unwrap(), s("b"));
        assert_eq!(bl.simulate_reboot().unwrap(), s("a"));
        assert_eq!(bl.primary_slot().unwrap(), s("a"));
    }

    #[test]
    fn rejects_bad_documents() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("boot.json");
        let bl = FileBootloader::new(&p, vec![s("a"), s("b")]);
        for (doc, want) in [
            ("garbage", "not a patchd boot state file"),
            (
                r#"{"version":1,"order":["a"],"slots":{"a":{"left":0,"good":true},"b":{"left":10,"good":false}},"booted":null}"#,
                "out of range",
            ),
            (
                r#"{"version":1,"order":["c"],"slots":{"a":{"left":0,"good":true},"b":{"left":0,"good":false},"c":{"left":0,"good":false}},"booted":null}"#,
                "unknown slot c",
            ),
        ] {
            std::fs::write(&p, doc).unwrap();
            let err = bl.try_slot(&s("b"), 1).unwrap_err().to_string();
            assert!(err.contains(want) && err.contains("boot.json"), "{err}");
            assert_eq!(std::fs::read_to_string(&p).unwrap(), doc, "rewritten");
        }
    }
}
