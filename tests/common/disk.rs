//! Loop devices, file systems and mounts for root-only staging tests (each cleaned up on
//! drop), and a listing of an installed tree to compare two installs by.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loop device over a sparse file, detached on drop.
pub struct Loop {
    pub dev: PathBuf,
    pub backing: PathBuf,
}

impl Loop {
    pub fn new(dir: &Path, name: &str, bytes: u64) -> Loop {
        let backing = dir.join(name);
        std::fs::File::create(&backing)
            .unwrap()
            .set_len(bytes)
            .unwrap();
        Self::attach(backing, &[])
    }

    /// A loop device over a disk image partitioned by `sfdisk` with `table`; its
    /// partitions are [`Loop::partition`].
    pub fn partitioned(dir: &Path, name: &str, bytes: u64, table: &str) -> Loop {
        use std::io::Write;
        let backing = dir.join(name);
        std::fs::File::create(&backing)
            .unwrap()
            .set_len(bytes)
            .unwrap();
        let mut sf = Command::new("sfdisk")
            .arg("-q")
            .arg(&backing)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        sf.stdin
            .take()
            .unwrap()
            .write_all(table.as_bytes())
            .unwrap();
        assert!(sf.wait().unwrap().success(), "sfdisk failed");
        let lo = Self::attach(backing, &["-P"]);
        let part = lo.partition(1);
        // Some kernels/containers skip the partition scan at attach; ask explicitly.
        if !part.exists() {
            let _ = Command::new("partx").arg("-a").arg(&lo.dev).status();
        }
        for _ in 0..100 {
            if part.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(part.exists(), "partition {} did not appear", part.display());
        lo
    }

    fn attach(backing: PathBuf, flags: &[&str]) -> Loop {
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .args(flags)
            .arg(&backing)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        Loop { dev, backing }
    }

    /// Partition `n` (from 1) of a [`Loop::partitioned`] device.
    pub fn partition(&self, n: u32) -> PathBuf {
        PathBuf::from(format!("{}p{n}", self.dev.display()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// Make a file system of `kind` (`ext4`, `btrfs`) on `dev`, overwriting what is there.
pub fn mkfs(dev: &Path, kind: &str) {
    let force = if kind == "btrfs" { "-f" } else { "-F" };
    run(Command::new(format!("mkfs.{kind}"))
        .args(["-q", force])
        .arg(dev));
}

/// A mount, unmounted on drop (or by [`Mount::unmount`]).
pub struct Mount {
    pub dir: PathBuf,
}

impl Mount {
    /// Mount the file system on `dev` at `dir` (created if missing).
    pub fn device(dev: &Path, dir: &Path) -> Mount {
        let _ = std::fs::create_dir_all(dir);
        run(Command::new("mount").arg(dev).arg(dir));
        Mount {
            dir: dir.to_path_buf(),
        }
    }

    /// Mount a virtual file system (`ramfs`, `tmpfs`) with `options` (`-o`) at `dir`.
    pub fn virtual_fs(kind: &str, options: Option<&str>, dir: &Path) -> Mount {
        let _ = std::fs::create_dir_all(dir);
        let mut cmd = Command::new("mount");
        cmd.args(["-t", kind]);
        if let Some(o) = options {
            cmd.args(["-o", o]);
        }
        run(cmd.arg(kind).arg(dir));
        Mount {
            dir: dir.to_path_buf(),
        }
    }

    pub fn unmount(self) {}
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// A fresh 256 MiB btrfs on a loop device, mounted at `mnt` (`<dir>/mnt`).
pub struct Btrfs {
    pub mnt: PathBuf,
    // Unmounted before the loop device is detached (fields drop in order).
    _mount: Mount,
    _lo: Loop,
}

impl Btrfs {
    pub fn new(dir: &Path) -> Btrfs {
        let lo = Loop::new(dir, "btrfs.raw", 256 << 20);
        mkfs(&lo.dev, "btrfs");
        let mount = Mount::device(&lo.dev, &dir.join("mnt"));
        Btrfs {
            mnt: mount.dir.clone(),
            _mount: mount,
            _lo: lo,
        }
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
