//! Carrying the admin's `/etc` changes into an upgraded snapshot at switch time.
//!
//! The snapshot was taken some time before the switch; an admin who edited `/etc` on
//! the running system since must not lose the edit. Three trees, per path: the base
//! (the snapshot's `/etc` when it was taken, kept as a list of hashes — its content is
//! never needed, only whether a file changed), the running `/etc`, and the upgraded
//! one (the snapshot's after apt). A path the admin did not change stays as the upgrade
//! left it; a path only the admin changed (edited, added, deleted) takes the admin's
//! state; a path both changed differently is a conflict: the admin's version is kept
//! and the package's saved as `<path>.dpkg-new` (a deletion on either side counts as a
//! change). Directories are containers: created as the admin's files need them.
//! Planning is pure ([`plan`]); [`scan`] and [`apply`] touch the filesystem.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One path of a tree, by what makes two versions the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Entry {
    File {
        sha256: String,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Link {
        target: String,
    },
    Dir {
        mode: u32,
    },
}

/// Paths relative to `/etc`, with what is there.
pub type Tree = BTreeMap<String, Entry>;

/// What to do with one path of the upgraded tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The admin's version (edited or added) replaces the upgraded one.
    TakeRunning(String),
    /// The admin deleted it and the package did not change it: delete.
    Delete(String),
    /// Both changed it differently: the admin's state is kept; the package's version,
    /// if it has one, moves to `<path>.dpkg-new`.
    Conflict(String),
}

/// The carry-over as recorded (in the staged release record and the audit log).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarryReport {
    /// The admin's versions carried in.
    pub carried: Vec<String>,
    /// Deleted because the admin deleted them.
    pub deleted: Vec<String>,
    /// Both changed: the admin's kept, the package's as `.dpkg-new` where it had one.
    pub conflicts: Vec<String>,
}

impl CarryReport {
    pub fn is_empty(&self) -> bool {
        self.carried.is_empty() && self.deleted.is_empty() && self.conflicts.is_empty()
    }
}

/// Decide, per path, from the three trees.
pub fn plan(base: &Tree, running: &Tree, upgraded: &Tree) -> Vec<Change> {
    let paths: BTreeSet<&String> = base
        .keys()
        .chain(running.keys())
        .chain(upgraded.keys())
        .collect();
    let mut out = Vec::new();
    for p in paths {
        let (b, r, u) = (base.get(p), running.get(p), upgraded.get(p));
        let is_dir = |e: Option<&Entry>| matches!(e, Some(Entry::Dir { .. }));
        if r == b || r == u {
            continue; // the admin changed nothing, or made the upgrade's change
        }
        if is_dir(r) || (r.is_none() && (is_dir(b) || is_dir(u))) {
            continue; // directories follow their files
        }
        if u == b {
            out.push(match r {
                Some(_) => Change::TakeRunning(p.clone()),
                None => Change::Delete(p.clone()),
            });
        } else {
            out.push(Change::Conflict(p.clone()));
        }
    }
    out
}

/// The tree under `dir` (empty when `dir` does not exist).
pub fn scan(dir: &Path) -> std::io::Result<Tree> {
    let mut out = Tree::new();
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(out);
    }
    walk(dir, dir, &mut out)?;
    Ok(out)
}

fn walk(top: &Path, dir: &Path, out: &mut Tree) -> std::io::Result<()> {
    for ent in std::fs::read_dir(dir)? {
        let ent = ent?;
        let path = ent.path();
        let rel = path
            .strip_prefix(top)
            .map_err(std::io::Error::other)?
            .to_string_lossy()
            .into_owned();
        let md = std::fs::symlink_metadata(&path)?;
        let ft = md.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(&path)?.to_string_lossy().into_owned();
            out.insert(rel, Entry::Link { target });
        } else if ft.is_dir() {
            out.insert(
                rel,
                Entry::Dir {
                    mode: md.mode() & 0o7777,
                },
            );
            walk(top, &path, out)?;
        } else if ft.is_file() {
            out.insert(
                rel,
                Entry::File {
                    sha256: sha256_file(&path)?,
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                },
            );
        }
        // Sockets, fifos and device nodes do not belong in /etc; left alone.
    }
    Ok(())
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Carry out `changes` from `running` (the live `/etc`) into `upgraded` (the new root's).
/// Each file lands atomically (a temporary name in its directory, then renamed).
pub fn apply(changes: &[Change], running: &Path, upgraded: &Path) -> std::io::Result<CarryReport> {
    let mut report = CarryReport::default();
    for c in changes {
        let p = match c {
            Change::TakeRunning(p) | Change::Delete(p) | Change::Conflict(p) => p,
        };
        // The path in the error: "Operation not permitted" alone does not say which
        // file the admin must look at.
        apply_one(c, running, upgraded, &mut report)
            .map_err(|e| std::io::Error::new(e.kind(), format!("/etc/{p} in the new root: {e}")))?;
    }
    if !report.is_empty() {
        crate::fsutil::syncfs_dir(upgraded)?;
    }
    Ok(report)
}

fn apply_one(
    c: &Change,
    running: &Path,
    upgraded: &Path,
    report: &mut CarryReport,
) -> std::io::Result<()> {
    match c {
        Change::TakeRunning(p) => {
            copy_in(&running.join(p), &upgraded.join(p))?;
            report.carried.push(p.clone());
        }
        Change::Delete(p) => {
            remove(&upgraded.join(p))?;
            report.deleted.push(p.clone());
        }
        Change::Conflict(p) => {
            let dst = upgraded.join(p);
            if std::fs::symlink_metadata(&dst).is_ok() {
                let saved = upgraded.join(format!("{p}.dpkg-new"));
                remove(&saved)?;
                std::fs::rename(&dst, &saved)?;
            }
            let src = running.join(p);
            if std::fs::symlink_metadata(&src).is_ok() {
                copy_in(&src, &dst)?;
            }
            report.conflicts.push(p.clone());
        }
    }
    Ok(())
}

fn remove(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copy the file or symlink `src` to `dst` (owner and mode kept), creating missing
/// parent directories with the modes they have under the running tree.
fn copy_in(src: &Path, dst: &Path) -> std::io::Result<()> {
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dst.with_file_name(format!(".{name}.patchd-carry"));
    remove(&tmp)?;
    let md = std::fs::symlink_metadata(src)?;
    if md.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, &tmp)?;
    } else {
        std::fs::copy(src, &tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
        std::fs::File::open(&tmp)?.sync_all()?;
    }
    std::os::unix::fs::lchown(&tmp, Some(md.uid()), Some(md.gid()))?;
    if let Ok(m) = std::fs::symlink_metadata(dst) {
        if m.is_dir() {
            std::fs::remove_dir_all(dst)?;
        }
    }
    std::fs::rename(&tmp, dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(h: &str) -> Entry {
        Entry::File {
            sha256: h.into(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        }
    }

    fn tree(items: &[(&str, Entry)]) -> Tree {
        items
            .iter()
            .map(|(p, e)| (p.to_string(), e.clone()))
            .collect()
    }

    #[test]
    fn each_side_alone_wins_and_both_is_a_conflict() {
        let base = tree(&[
            ("same", file("1")),
            ("admin-edit", file("1")),
            ("pkg-edit", file("1")),
            ("both", file("1")),
            ("both-same", file("1")),
            ("admin-del", file("1")),
            ("admin-del-pkg-edit", file("1")),
            ("pkg-del", file("1")),
            ("pkg-del-admin-edit", file("1")),
            ("d", Entry::Dir { mode: 0o755 }),
        ]);
        let running = tree(&[
            ("same", file("1")),
            ("admin-edit", file("2")),
            ("pkg-edit", file("1")),
            ("both", file("2")),
            ("both-same", file("3")),
            ("pkg-del", file("1")),
            ("pkg-del-admin-edit", file("2")),
            ("admin-new", file("9")),
            ("d", Entry::Dir { mode: 0o700 }),
            ("d/new", file("8")),
        ]);
        let upgraded = tree(&[
            ("same", file("1")),
            ("admin-edit", file("1")),
            ("pkg-edit", file("2")),
            ("both", file("3")),
            ("both-same", file("3")),
            ("admin-del", file("1")),
            ("admin-del-pkg-edit", file("2")),
            ("pkg-new", file("7")),
            ("d", Entry::Dir { mode: 0o755 }),
        ]);
        let got = plan(&base, &running, &upgraded);
        assert_eq!(
            got,
            vec![
                Change::Delete("admin-del".into()),
                Change::Conflict("admin-del-pkg-edit".into()),
                Change::TakeRunning("admin-edit".into()),
                Change::TakeRunning("admin-new".into()),
                Change::Conflict("both".into()),
                Change::TakeRunning("d/new".into()),
                Change::Conflict("pkg-del-admin-edit".into()),
            ]
        );
    }

    #[test]
    fn a_mode_or_owner_change_is_a_change_and_links_compare_by_target() {
        let base = tree(&[("f", file("1")), ("l", Entry::Link { target: "a".into() })]);
        let mut running = base.clone();
        running.insert(
            "f".into(),
            Entry::File {
                sha256: "1".into(),
                mode: 0o600,
                uid: 0,
                gid: 0,
            },
        );
        running.insert("l".into(), Entry::Link { target: "b".into() });
        let got = plan(&base, &running, &base);
        assert_eq!(
            got,
            vec![
                Change::TakeRunning("f".into()),
                Change::TakeRunning("l".into())
            ]
        );
        assert!(plan(&base, &base, &running).is_empty());
    }

    #[test]
    fn applying_twice_changes_nothing_more() {
        let t = tempfile::tempdir().unwrap();
        let (base_dir, run, up) = (t.path().join("b"), t.path().join("r"), t.path().join("u"));
        for d in [&base_dir, &run, &up] {
            std::fs::create_dir_all(d.join("sub")).unwrap();
            std::fs::write(d.join("conf"), "base\n").unwrap();
            std::fs::write(d.join("gone"), "x\n").unwrap();
        }
        std::fs::write(run.join("conf"), "admin\n").unwrap();
        std::fs::write(up.join("conf"), "package\n").unwrap();
        std::fs::remove_file(run.join("gone")).unwrap();
        std::fs::create_dir_all(run.join("newdir")).unwrap();
        std::fs::write(run.join("newdir/added"), "admin added\n").unwrap();
        let base = scan(&base_dir).unwrap();
        let changes = plan(&base, &scan(&run).unwrap(), &scan(&up).unwrap());
        let r = apply(&changes, &run, &up).unwrap();
        assert_eq!(r.conflicts, vec!["conf".to_string()]);
        assert_eq!(r.deleted, vec!["gone".to_string()]);
        assert_eq!(r.carried, vec!["newdir/added".to_string()]);
        assert_eq!(std::fs::read_to_string(up.join("conf")).unwrap(), "admin\n");
        assert_eq!(
            std::fs::read_to_string(up.join("conf.dpkg-new")).unwrap(),
            "package\n"
        );
        assert!(!up.join("gone").exists());
        assert_eq!(
            std::fs::read_to_string(up.join("newdir/added")).unwrap(),
            "admin added\n"
        );
        let again = plan(&base, &scan(&run).unwrap(), &scan(&up).unwrap());
        assert!(again.is_empty(), "{again:?}");
    }
}
