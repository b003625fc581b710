//! `[slots]` in patchd.toml: which backend holds the A/B slots and where each one lives.
//!
//! ```toml
//! [slots]
//! backend = "file"        # "file" (image files) or "block" (partitions)
//! [[slots.slot]]
//! name = "a"
//! path = "/dev/disk/by-partlabel/root-a"
//! ```

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::names::SlotName;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotBackend {
    /// Each slot is an image file (tests, VMs, loop-mounted roots).
    File,
    /// Each slot is a block device (partition); refused while mounted.
    Block,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotEntry {
    pub name: SlotName,
    /// Image file or block device, resolved under the device root.
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotsConfig {
    pub backend: SlotBackend,
    #[serde(default)]
    pub slot: Vec<SlotEntry>,
}

impl SlotsConfig {
    /// Checks serde cannot express: absolute, distinct paths and distinct names.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = BTreeSet::new();
        let mut paths = BTreeSet::new();
        for s in &self.slot {
            if !names.insert(&s.name) {
                return Err(format!("slot {} is listed twice", s.name));
            }
            if !s.path.is_absolute() {
                return Err(format!(
                    "slot {}: path {} must be absolute",
                    s.name,
                    s.path.display()
                ));
            }
            if !paths.insert(&s.path) {
                return Err(format!(
                    "slot {}: path {} is used by another slot",
                    s.name,
                    s.path.display()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<SlotsConfig, String> {
        let c: SlotsConfig = toml::from_str(s).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn slots_config_parses_file_and_block() {
        let c = parse(
            "backend = \"block\"\n[[slot]]\nname = \"a\"\npath = \"/dev/sda2\"\n\
             [[slot]]\nname = \"b\"\npath = \"/dev/sda3\"\n",
        )
        .unwrap();
        assert_eq!(c.backend, SlotBackend::Block);
        assert_eq!(c.slot.len(), 2);
        assert_eq!(parse("backend = \"file\"").unwrap().slot, vec![]);
    }

    #[test]
    fn slots_config_refuses_bad_input() {
        assert!(parse("backend = \"zfs\"").is_err());
        assert!(parse("backend = \"file\"\nextra = 1").is_err());
        assert!(parse("backend = \"file\"\n[[slot]]\nname = \"a\"\npath = \"rel\"\n").is_err());
        let dup = "backend = \"file\"\n[[slot]]\nname = \"a\"\npath = \"/x\"\n\
                   [[slot]]\nname = \"a\"\npath = \"/y\"\n";
        assert!(parse(dup).unwrap_err().contains("twice"));
        let same = "backend = \"file\"\n[[slot]]\nname = \"a\"\npath = \"/x\"\n\
                    [[slot]]\nname = \"b\"\npath = \"/x\"\n";
        assert!(parse(same).unwrap_err().contains("another slot"));
    }
}
