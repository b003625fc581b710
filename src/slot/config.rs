//! `[slots]` in patchd.toml: which backend holds the A/B slots and where each one lives.
//!
//! ```toml
//! [slots]
//! backend = "block"       # "file" (image files), "block" (partitions) or "btrfs"
//! [[slots.slot]]
//! name = "a"
//! path = "/dev/disk/by-partlabel/root-a"
//! ```
//!
//! btrfs snapshot slots are subvolumes `<dir>/<name>` of one directory on a btrfs
//! filesystem; their entries take no `path`:
//!
//! ```toml
//! [slots]
//! backend = "btrfs"
//! dir = "/.slots"
//! [[slots.slot]]
//! name = "a"
//! [[slots.slot]]
//! name = "b"
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::names::SlotName;

/// `[slots] backend`: which backend holds the slots. Each variant has its line in
/// [`super::open`]'s list of backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotKind {
    /// Each slot is an image file (tests, VMs, loop-mounted roots).
    File,
    /// Each slot is a block device (partition); refused while mounted.
    Block,
    /// Each slot is a btrfs subvolume `<dir>/<name>`, filled from a tar archive.
    Btrfs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotEntry {
    pub name: SlotName,
    /// Image file or block device, resolved under the device root (`file` and `block`;
    /// btrfs slots live at `<dir>/<name>` and take no path).
    #[serde(default)]
    pub path: Option<PathBuf>,
}

/// `[slots]`. Checked by `SlotsConfig::validate` (in `open.rs`, next to the list of
/// backends whose rules it applies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotsConfig {
    /// Which backend holds the slots.
    pub backend: SlotKind,
    /// `btrfs` only: the directory (on btrfs) holding the slot subvolumes.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Bytes staged between two durable checkpoints (raw images); an interrupted
    /// staging resumes from the last one. Default 64 MiB; at least 1 MiB.
    #[serde(default)]
    pub checkpoint_every: Option<u64>,
    #[serde(default)]
    pub slot: Vec<SlotEntry>,
}

impl SlotsConfig {
    /// The entry rules of a backend whose slots each live at their own `path` (an image
    /// file, a partition): every entry has a path, and `dir` is not used.
    pub(super) fn check_path_per_slot(&self) -> Result<(), String> {
        if self.dir.is_some() {
            return Err("dir is only for backend \"btrfs\"".into());
        }
        match self.slot.iter().find(|s| s.path.is_none()) {
            Some(s) => Err(format!("slot {}: path is missing", s.name)),
            None => Ok(()),
        }
    }

    /// The entry rules of a backend whose slots are `<dir>/<name>`: an absolute `dir`,
    /// and no entry has a path.
    pub(super) fn check_slots_in_dir(&self, backend: &str) -> Result<(), String> {
        match &self.dir {
            None => {
                return Err(format!(
                    "backend \"{backend}\" needs dir (the directory holding the slot subvolumes)"
                ))
            }
            Some(d) if !d.is_absolute() => {
                return Err(format!("dir {} must be absolute", d.display()))
            }
            Some(_) => {}
        }
        match self.slot.iter().find_map(|s| Some((s, s.path.as_ref()?))) {
            Some((s, p)) => Err(format!(
                "slot {}: {backend} slots take no path (they are {{dir}}/{}; got {})",
                s.name,
                s.name,
                p.display()
            )),
            None => Ok(()),
        }
    }
}

/// The staging pipeline's floor for the checkpoint interval.
pub(super) const MIN_CHECKPOINT: u64 = 1 << 20;

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
        assert_eq!(c.backend, SlotKind::Block);
        assert_eq!(c.slot.len(), 2);
        assert_eq!(parse("backend = \"file\"").unwrap().slot, vec![]);
        assert_eq!(
            c.slot[0].path.as_deref(),
            Some(std::path::Path::new("/dev/sda2"))
        );
        assert_eq!(c.checkpoint_every, None);
    }

    #[test]
    fn slots_config_parses_btrfs_and_checkpoint_interval() {
        let c = parse(
            "backend = \"btrfs\"\ndir = \"/.slots\"\ncheckpoint_every = 8388608\n\
             [[slot]]\nname = \"a\"\n[[slot]]\nname = \"b\"\n",
        )
        .unwrap();
        assert_eq!(c.backend, SlotKind::Btrfs);
        assert_eq!(c.dir.as_deref(), Some(std::path::Path::new("/.slots")));
        assert_eq!(c.checkpoint_every, Some(8 << 20));
        assert_eq!(c.slot.len(), 2);
        assert!(c.slot.iter().all(|s| s.path.is_none()));
    }

    #[test]
    fn slots_config_refuses_inconsistent_btrfs_and_file_entries() {
        let e = parse("backend = \"btrfs\"\n[[slot]]\nname = \"a\"\n").unwrap_err();
        assert!(e.contains("needs dir"), "{e}");
        let e = parse("backend = \"btrfs\"\ndir = \"rel\"\n").unwrap_err();
        assert!(e.contains("absolute"), "{e}");
        let e =
            parse("backend = \"btrfs\"\ndir = \"/s\"\n[[slot]]\nname = \"a\"\npath = \"/s/a\"\n")
                .unwrap_err();
        assert!(e.contains("take no path"), "{e}");
        let e = parse("backend = \"file\"\ndir = \"/s\"\n").unwrap_err();
        assert!(e.contains("only for"), "{e}");
        let e = parse("backend = \"file\"\n[[slot]]\nname = \"a\"\n").unwrap_err();
        assert!(e.contains("path is missing"), "{e}");
        let e = parse("backend = \"file\"\ncheckpoint_every = 4096\n").unwrap_err();
        assert!(e.contains("at least"), "{e}");
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
