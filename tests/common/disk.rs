//! Loop devices and a mounted btrfs for root-only staging tests (cleaned up on drop).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A loop device over a sparse file.
pub struct Loop {
    pub dev: String,
    pub backing: PathBuf,
}

impl Loop {
    pub fn new(dir: &Path, name: &str, bytes: u64) -> Loop {
        let backing = dir.join(name);
        std::fs::File::create(&backing)
            .unwrap()
            .set_len(bytes)
            .unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&backing)
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup failed");
        let dev = String::from_utf8(out.stdout).unwrap().trim().to_string();
        Loop { dev, backing }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// A fresh btrfs on a loop device, mounted at `mnt`.
pub struct Btrfs {
    pub mnt: PathBuf,
    lo: Option<Loop>,
}

impl Btrfs {
    pub fn new(dir: &Path) -> Btrfs {
        let lo = Loop::new(dir, "btrfs.raw", 256 << 20);
        assert!(Command::new("mkfs.btrfs")
            .args(["-q", "-f", &lo.dev])
            .status()
            .unwrap()
            .success());
        let mnt = dir.join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        assert!(Command::new("mount")
            .arg(&lo.dev)
            .arg(&mnt)
            .status()
            .unwrap()
            .success());
        Btrfs { mnt, lo: Some(lo) }
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        drop(self.lo.take());
    }
}

/// Everything an install must reproduce about the tree under `root`, one line per path:
/// type, mode, owner, and content hash and mtime (files), target (symlinks), extended
/// attributes, and hard-link group (the first path, in sorted order, of the same inode).
/// Directory mtimes are left out: later entries change them at run time.
pub fn tree_listing(root: &Path) -> std::collections::BTreeMap<String, String> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut paths = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for ent in std::fs::read_dir(root.join(&rel)).unwrap() {
            let ent = ent.unwrap();
            let r = rel.join(ent.file_name());
            if ent.file_type().unwrap().is_dir() {
                stack.push(r.clone());
            }
            paths.push(r);
        }
    }
    paths.sort();
    let mut first_of_inode = std::collections::HashMap::new();
    let mut out = std::collections::BTreeMap::new();
    for rel in paths {
        let full = root.join(&rel);
        let m = std::fs::symlink_metadata(&full).unwrap();
        let ft = m.file_type();
        let what = if ft.is_symlink() {
            format!(
                "symlink -> {}",
                std::fs::read_link(&full).unwrap().display()
            )
        } else if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_file() {
            let group = first_of_inode
                .entry(m.ino())
                .or_insert_with(|| rel.display().to_string())
                .clone();
            let data = std::fs::read(&full).unwrap();
            format!(
                "file sha256={} mtime={} links={} group={group}",
                hex::encode(Sha256::digest(&data)),
                m.mtime(),
                m.nlink()
            )
        } else if ft.is_fifo() {
            "fifo".to_string()
        } else {
            format!("special rdev={:x}", m.rdev())
        };
        let mode = if ft.is_symlink() {
            0
        } else {
            m.mode() & 0o7777
        };
        out.insert(
            rel.display().to_string(),
            format!(
                "{what} mode={mode:o} owner={}:{} xattrs={:?}",
                m.uid(),
                m.gid(),
                xattrs(&full)
            ),
        );
    }
    out
}

/// The extended attributes of `path` (not following a symlink), sorted by name.
pub fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 64 << 10];
    // SAFETY: valid NUL-terminated path and a buffer of the given length.
    let n = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "llistxattr {}", path.display());
    let mut out = Vec::new();
    for name in names[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
    {
        let cname = std::ffi::CString::new(name).unwrap();
        let mut val = vec![0u8; 64 << 10];
        // SAFETY: as above.
        let len = unsafe {
            libc::lgetxattr(
                p.as_ptr(),
                cname.as_ptr(),
                val.as_mut_ptr().cast(),
                val.len(),
            )
        };
        assert!(len >= 0, "lgetxattr {}", path.display());
        val.truncate(len as usize);
        out.push((String::from_utf8_lossy(name).into_owned(), val));
    }
    out.sort();
    out
}
