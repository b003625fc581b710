//! The list of slot backends: `[slots] backend` → the backend that checks its entries
//! and builds its slots. Adding a backend is its file under `slot/` (a type implementing
//! [`SlotBackend`] and an [`Opener`], or for a path per slot a constructor for
//! [`PathPerSlot`]), its [`SlotKind`] variant, and its line in [`backend`]. `[slots]` is validated here too ([`SlotsConfig::validate`]).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use super::config::MIN_CHECKPOINT;
use super::{Opener, SlotBackend, SlotError, SlotKind, SlotsConfig};
use crate::names::SlotName;
use crate::paths::Paths;

/// The slot backends, one line each.
pub(super) fn backend(kind: SlotKind) -> &'static dyn Opener {
    match kind {
        SlotKind::File => &PathPerSlot(super::file::image_file),
        SlotKind::Block => &PathPerSlot(super::block::partition),
        SlotKind::Btrfs => &super::btrfs::Subvolumes,
    }
}

/// A backend whose every `[[slots.slot]]` entry names its slot's path (`file`, `block`),
/// and how it builds one slot from it (`booted`: never written).
pub(super) struct PathPerSlot(fn(&SlotName, &Path, &Paths, bool) -> Arc<dyn SlotBackend>);

impl Opener for PathPerSlot {
    fn check(&self, cfg: &SlotsConfig) -> Result<(), String> {
        cfg.check_path_per_slot()
    }
    fn open(
        &self,
        cfg: &SlotsConfig,
        paths: &Paths,
        booted: &SlotName,
    ) -> Result<Vec<Arc<dyn SlotBackend>>, SlotError> {
        cfg.slot
            .iter()
            .map(|e| {
                let path = e.path.as_ref().ok_or_else(|| SlotError::Config {
                    why: format!("[[slots.slot]] {}: path is missing", e.name),
                })?;
                Ok((self.0)(&e.name, path, paths, e.name == *booted))
            })
            .collect()
    }
}

/// The configured slots (`[slots]`, validated). A/B needs at least two; the booted one
/// is marked so that no backend writes it.
pub fn open(
    cfg: &SlotsConfig,
    paths: &Paths,
    booted: &SlotName,
) -> Result<Vec<Arc<dyn SlotBackend>>, SlotError> {
    if cfg.slot.len() < 2 {
        return Err(SlotError::Config {
            why: "[slots] must list at least two [[slots.slot]] entries".into(),
        });
    }
    let opener = backend(cfg.backend);
    opener.check(cfg).map_err(|why| SlotError::Config { why })?;
    opener.open(cfg, paths, booted)
}

/// Kept next to the list, since each backend checks its own entries.
impl SlotsConfig {
    /// Checks serde cannot express: distinct names, absolute and distinct paths, the
    /// checkpoint floor, and the backend's own rules for its entries (a path for every
    /// `file`/`block` slot, none for `btrfs`, whose `dir` is required).
    pub fn validate(&self) -> Result<(), String> {
        backend(self.backend).check(self)?;
        if self.checkpoint_every.is_some_and(|c| c < MIN_CHECKPOINT) {
            return Err(format!(
                "checkpoint_every must be at least {MIN_CHECKPOINT} bytes (1 MiB)"
            ));
        }
        let mut names = BTreeSet::new();
        let mut paths = BTreeSet::new();
        for s in &self.slot {
            if !names.insert(&s.name) {
                return Err(format!("slot {} is listed twice", s.name));
            }
            let Some(path) = &s.path else { continue };
            if !path.is_absolute() {
                return Err(format!(
                    "slot {}: path {} must be absolute",
                    s.name,
                    path.display()
                ));
            }
            if !paths.insert(path) {
                return Err(format!(
                    "slot {}: path {} is used by another slot",
                    s.name,
                    path.display()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::SlotState;

    fn cfg(text: &str) -> SlotsConfig {
        let c: SlotsConfig = toml::from_str(text).unwrap();
        c.validate().unwrap();
        c
    }

    #[test]
    fn open_refuses_fewer_than_two_slots() {
        let top = tempfile::tempdir().unwrap();
        let paths = Paths::new(top.path());
        let a = SlotName::new("a").unwrap();
        let one = cfg("backend = \"file\"\n[[slot]]\nname = \"a\"\npath = \"/a.img\"\n");
        let e = open(&one, &paths, &a).err().expect("one slot");
        assert!(matches!(e, SlotError::Config { .. }), "{e}");
        assert!(e.to_string().contains("at least two"), "{e}");
    }

    #[test]
    fn open_builds_file_slots_with_the_booted_one_refused() {
        let top = tempfile::tempdir().unwrap();
        let paths = Paths::new(top.path());
        let a = SlotName::new("a").unwrap();
        let c = cfg(
            "backend = \"file\"\n[[slot]]\nname = \"a\"\npath = \"/a.img\"\n\
                     [[slot]]\nname = \"b\"\npath = \"/b.img\"\n",
        );
        let slots = open(&c, &paths, &a).unwrap();
        let names: Vec<&str> = slots.iter().map(|s| s.name().as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(slots.iter().all(|s| s.kind() == "file"));
        assert!(slots.iter().all(|s| s.byte_range().is_some()));
        let req = crate::slot::StageRequest::raw("t", "1", 4096, &"0".repeat(64));
        let e = slots[0].prepare(&req).expect_err("booted");
        assert!(e.to_string().contains("booted"), "{e}");
        slots[1].prepare(&req).unwrap();
        assert_eq!(slots[1].status().unwrap().state, SlotState::Empty);
    }

    #[test]
    fn open_refuses_btrfs_slots_outside_btrfs() {
        let top = tempfile::tempdir().unwrap();
        let paths = Paths::new(top.path());
        std::fs::create_dir_all(paths.resolve("/slots")).unwrap();
        let on_btrfs = nix::sys::statfs::statfs(top.path())
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC);
        if on_btrfs {
            println!("skipped: the temporary directory is on btrfs");
            return;
        }
        let a = SlotName::new("a").unwrap();
        let c = |dir: &str| {
            cfg(&format!(
                "backend = \"btrfs\"\ndir = \"{dir}\"\n[[slot]]\nname = \"a\"\n[[slot]]\nname = \"b\"\n"
            ))
        };
        let msg = open(&c("/slots"), &paths, &a)
            .err()
            .expect("not btrfs")
            .to_string();
        assert!(msg.contains("not on a btrfs filesystem"), "{msg}");
        assert!(msg.contains("/slots"), "{msg}");
        let msg = open(&c("/missing"), &paths, &a)
            .err()
            .expect("missing dir")
            .to_string();
        assert!(msg.contains("/missing"), "{msg}");
    }
}
