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
