//! Block-device slot: a partition such as `/dev/disk/by-partlabel/root_b`.
//!
//! Before the first byte is written the device is checked: it must be a block device,
//! not the device the running system's `/` lives on, not mounted anywhere, and at least
//! as large as the image. It is then opened with `O_EXCL`, which the kernel refuses for a
//! device that is mounted or otherwise claimed, closing the race with a concurrent mount.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use super::raw::{drop_page_cache, open_read_only, RawSlot};
use super::status::StatusStore;
use super::{SlotBackend, SlotError};
use crate::names::SlotName;
use crate::paths::Paths;

nix::ioctl_none!(blkflsbuf, 0x12, 97);

/// A slot on a block device.
#[derive(Debug, Clone)]
pub struct BlockSlot {
    name: SlotName,
    device: PathBuf,
    store: StatusStore,
    paths: Paths,
    booted: bool,
}

impl BlockSlot {
    /// `device` is the partition (symlinks such as `/dev/disk/by-partlabel/…` are
    /// resolved); `paths` locates `/proc/self/mountinfo` (injectable for tests).
    pub fn new(name: SlotName, device: impl Into<PathBuf>, state_dir: &Path, paths: Paths) -> Self {
        Self {
            store: StatusStore::new(state_dir, name.clone()),
            name,
            device: device.into(),
            paths,
            booted: false,
        }
    }

    /// The engine marks the slot it booted from: never written, whatever mountinfo says.
    pub fn with_booted(mut self, booted: bool) -> Self {
        self.booted = booted;
        self
    }

    pub fn device(&self) -> &Path {
        &self.device
    }

    /// Refuse the booted root and any mounted device.
    pub fn check_not_in_use(&self) -> Result<(), SlotError> {
        if self.booted {
            return Err(SlotError::refused(&self.name, "it is the booted slot"));
        }
        let dev = std::fs::canonicalize(&self.device).map_err(|e| SlotError::io(&self.name, e))?;
        let meta = std::fs::metadata(&dev).map_err(|e| SlotError::io(&self.name, e))?;
        if !meta.file_type().is_block_device() {
            return Err(SlotError::refused(
                &self.name,
                format!("{} is not a block device", dev.display()),
            ));
        }
        let rdev = meta.rdev();
        let (major, minor) = (libc::major(rdev), libc::minor(rdev));
        let mountinfo = self.paths.resolve("/proc/self/mountinfo");
        let text = std::fs::read_to_string(&mountinfo).map_err(|e| SlotError::io(&self.name, e))?;
        for m in parse_mountinfo(&text) {
            let same_number = m.major == major && m.minor == minor;
            // btrfs reports anonymous device numbers; compare the mount source as well.
            let same_source = m.source.starts_with('/')
                && std::fs::canonicalize(&m.source).is_ok_and(|s| s == dev);
            // A mounted partition of this device (the target is a whole disk).
            let parent_of_mounted = m.major != 0
                && whole_disk_of(&self.paths, m.major, m.minor) == Some((major, minor));
            if parent_of_mounted {
                return Err(SlotError::refused(
                    &self.name,
                    format!(
                        "{} contains a partition mounted on {}",
                        dev.display(),
                        m.mount_point
                    ),
                ));
            }
            if same_number || same_source {
                if m.mount_point == "/" {
                    return Err(SlotError::refused(
                        &self.name,
                        format!("{} holds the running root filesystem", dev.display()),
                    ));
                }
                return Err(SlotError::refused(
                    &self.name,
                    format!("{} is mounted on {}", dev.display(), m.mount_point),
                ));
            }
        }
        Ok(())
    }
}

/// For a partition `major:minor`, the whole disk's numbers (from sysfs).
fn whole_disk_of(paths: &Paths, major: u32, minor: u32) -> Option<(u32, u32)> {
    let sys = paths.resolve(format!("/sys/dev/block/{major}:{minor}"));
    let real = std::fs::canonicalize(&sys).ok()?;
    if !real.join("partition").exists() {
        return None;
    }
    let dev = std::fs::read_to_string(real.parent()?.join("dev")).ok()?;
    let (a, b) = dev.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

struct MountEntry {
    major: u32,
    minor: u32,
    mount_point: String,
    source: String,
}

/// The fields of `/proc/self/mountinfo` we need (see proc(5)).
fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let (maj, min) = f.get(2)?.split_once(':')?;
            let post: Vec<&str> = post.split(' ').collect();
            Some(MountEntry {
                major: maj.parse().ok()?,
                minor: min.parse().ok()?,
                mount_point: crate::fsutil::unescape_mountinfo(f.get(4)?),
                source: crate::fsutil::unescape_mountinfo(post.get(1).copied().unwrap_or("")),
            })
        })
        .collect()
}

slot_recorded_in_store!(BlockSlot, "block");

impl RawSlot for BlockSlot {
    fn store(&self) -> &StatusStore {
        &self.store
    }

    fn open_for_write(&self, size: u64) -> Result<File, SlotError> {
        self.check_not_in_use()?;
        let mut f = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
            .open(&self.device)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::EBUSY) {
                    SlotError::refused(
                        &self.name,
                        format!("{} is in use (mounted or claimed)", self.device.display()),
                    )
                } else {
                    SlotError::io(&self.name, e)
                }
            })?;
        let cap = f
            .seek(SeekFrom::End(0))
            .map_err(|e| SlotError::io(&self.name, e))?;
        if size > cap {
            return Err(SlotError::refused(
                &self.name,
                format!(
                    "image of {size} bytes does not fit into {} ({cap} bytes)",
                    self.device.display()
                ),
            ));
        }
        f.seek(SeekFrom::Start(0))
            .map_err(|e| SlotError::io(&self.name, e))?;
        Ok(f)
    }

    fn open_for_read(&self) -> Result<File, SlotError> {
        open_read_only(&self.name, &self.device, libc::O_CLOEXEC)
    }

    fn drop_cache(&self, f: &File, len: u64) -> std::io::Result<()> {
        f.sync_all()?;
        // SAFETY: BLKFLSBUF takes no argument; the descriptor is a block device we opened.
        unsafe { blkflsbuf(f.as_raw_fd()) }.map_err(std::io::Error::from)?;
        drop_page_cache(f, len)
    }
}

/// `backend = "block"`: each `[[slots.slot]]` path is a partition (symlinks resolved when
/// it is opened, so `/dev/disk/by-partlabel/…` names work).
pub(super) fn partition(
    name: &SlotName,
    path: &Path,
    paths: &Paths,
    booted: bool,
) -> Arc<dyn SlotBackend> {
    Arc::new(
        BlockSlot::new(name.clone(), path, &paths.state_dir(), paths.clone()).with_booted(booted),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_parsing() {
        let t = "22 1 7:3 / / rw,relatime shared:1 - ext4 /dev/loop3 rw\n\
                 30 22 0:45 / /mnt/my\\040dir rw - btrfs /dev/loop4 rw,space_cache\n";
        let m = parse_mountinfo(t);
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].major, m[0].minor, m[0].mount_point.as_str()),
            (7, 3, "/")
        );
        assert_eq!(m[1].mount_point, "/mnt/my dir");
        assert_eq!(m[1].source, "/dev/loop4");
    }
}
