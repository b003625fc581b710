//! The list of slot backends: `[slots] backend` → the backend that checks its entries
//! and builds its slots. Adding a backend is its file under `slot/` (a type implementing
//! [`SlotBackend`] and an [`Opener`]), its [`SlotKind`] variant, and its line in
//! [`backend`].

use std::sync::Arc;

use super::{SlotBackend, SlotError, SlotKind, SlotsConfig};
use crate::names::SlotName;
use crate::paths::Paths;

/// How one backend reads its `[slots]` entries.
pub(super) trait Opener: Sync {
    /// The backend's rules for its entries, checked when the configuration loads (no
    /// filesystem access).
    fn check(&self, cfg: &SlotsConfig) -> Result<(), String>;
    /// The configured slots, each knowing whether it is `booted` (never written). Checks
    /// that need the device (a directory on the right filesystem) fail here, at start.
    fn open(
        &self,
        cfg: &SlotsConfig,
        paths: &Paths,
        booted: &SlotName,
    ) -> Result<Vec<Arc<dyn SlotBackend>>, SlotError>;
}

/// The slot backends, one line each.
pub(super) fn backend(kind: SlotKind) -> &'static dyn Opener {
    match kind {
        SlotKind::File => &super::file::Opener,
        SlotKind::Block => &super::block::Opener,
        SlotKind::Btrfs => &super::btrfs::Opener,
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
        let e = slots[0].prepare(&req).err().expect("booted");
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
