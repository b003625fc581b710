//! The disk layout staging a patch set needs, and the check `patchd --check-config`
//! runs for it: the running root is one of the `[slots]` btrfs subvolumes, `/var` is a
//! subvolume of its own (shared by both roots, never rolled back), and the dpkg
//! database lives in the root (it must be rolled back with the packages it describes).
//! See docs/apt.md ("The layout patchd expects").

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::stage::Snapshots;
use crate::names::SlotName;
use crate::paths::Paths;
use crate::slot::{BtrfsSlots, SlotKind, SlotsConfig};

/// One way the layout falls short: what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutProblem {
    pub problem: String,
    pub fix: String,
}

/// The snapshot slot set for staging patch sets, when `[slots]` is btrfs.
pub fn snapshots_for(
    slots: Option<&SlotsConfig>,
    paths: &Paths,
    booted: &SlotName,
) -> Option<Snapshots> {
    let sc = slots.filter(|s| s.backend == SlotKind::Btrfs)?;
    let dir = paths.resolve(sc.dir.as_ref()?);
    Some(Snapshots {
        slots: BtrfsSlots::new(dir, paths.state_dir()).with_booted(booted.clone()),
        running: booted.clone(),
        state: paths.state_dir().join("apt"),
        binds: shared_binds(paths),
    })
}

/// `/var` and `/boot` when they are not on the root's subvolume: bound into the
/// snapshot, so apt finds its lists and cache and a kernel upgrade its /boot.
pub fn shared_binds(paths: &Paths) -> Vec<(PathBuf, PathBuf)> {
    let Some(root) = dev(&paths.resolve("/")) else {
        return Vec::new();
    };
    ["/var", "/boot"]
        .into_iter()
        .filter_map(|d| {
            let host = paths.resolve(d);
            (dev(&host)? != root).then(|| (host, PathBuf::from(d)))
        })
        .collect()
}

/// `p`, or where it points when it is a symlink, an absolute target taken inside the
/// device root (as the running system resolves it).
fn in_root(paths: &Paths, p: &Path) -> PathBuf {
    match std::fs::read_link(p) {
        Ok(t) if t.is_absolute() => paths.resolve(t),
        Ok(t) => p.parent().map_or(t.clone(), |d| d.join(&t)),
        Err(_) => p.to_path_buf(),
    }
}

fn dev(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.dev())
}

/// The layout problems for an apt source on this machine (empty: fine).
pub fn check(slots: Option<&SlotsConfig>, paths: &Paths) -> Vec<LayoutProblem> {
    let mut out = Vec::new();
    let p = |problem: String, fix: &str| LayoutProblem {
        problem,
        fix: fix.to_string(),
    };
    let Some(sc) = slots.filter(|s| s.backend == SlotKind::Btrfs) else {
        out.push(p(
            "[slots] backend is not \"btrfs\": patch sets are staged in a btrfs snapshot of \
             the running root"
                .into(),
            "set [slots] backend = \"btrfs\", dir = the directory where the root subvolumes \
             are (the btrfs top level, e.g. mounted at /.slots), and one [[slots.slot]] per \
             root subvolume (see docs/apt.md)",
        ));
        return out;
    };
    let root = paths.resolve("/");
    let Ok(rm) = std::fs::metadata(&root) else {
        return out;
    };
    let dir = sc.dir.as_ref().map(|d| paths.resolve(d));
    let is_slot = dir.as_ref().is_some_and(|d| {
        sc.slot.iter().any(|s| {
            std::fs::metadata(d.join(s.name.as_str()))
                .is_ok_and(|m| m.dev() == rm.dev() && m.ino() == rm.ino())
        })
    });
    if !is_slot {
        out.push(p(
            format!(
                "the running root {} is none of the slot subvolumes {}/{{{}}}",
                root.display(),
                dir.as_deref().unwrap_or(Path::new("?")).display(),
                sc.slot
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            "boot the root from a subvolume <dir>/<slot> (rootflags=subvol=...) and mount the \
             btrfs top level at [slots] dir; `btrfs subvolume show /` names the root's \
             subvolume",
        ));
    }
    let var = paths.resolve("/var");
    let var_dev = dev(&var);
    if var_dev == Some(rm.dev()) {
        out.push(p(
            format!(
                "{} is inside the root subvolume: it would be rolled back with the \
                 packages (logs, databases and spool lost)",
                var.display()
            ),
            "move /var to a subvolume of its own (btrfs subvolume create <top>/@var, copy \
             /var into it, mount it at /var with subvol=@var in /etc/fstab)",
        ));
    }
    let dpkg = paths.resolve("/var/lib/dpkg");
    if let Some(real) = dev(&in_root(paths, &dpkg)) {
        if var_dev != Some(rm.dev()) && real != rm.dev() {
            out.push(p(
                format!(
                    "the dpkg database {} is on the shared /var: an upgrade in a snapshot \
                     would change the running system's package database, and a rollback \
                     would not roll it back",
                    dpkg.display()
                ),
                "keep it in the root and point /var at it: mkdir -p /usr/lib/sysimage && mv \
                 /var/lib/dpkg /usr/lib/sysimage/dpkg && ln -s /usr/lib/sysimage/dpkg \
                 /var/lib/dpkg",
            ));
        }
    }
    out
}
