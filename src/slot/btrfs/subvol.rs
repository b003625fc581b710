//! The btrfs ioctls the slots need (create, snapshot, delete a subvolume) and `syncfs`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

nix::ioctl_write_ptr!(btrfs_snap_create, 0x94, 1, VolArgs);
nix::ioctl_write_ptr!(btrfs_subvol_create, 0x94, 14, VolArgs);
nix::ioctl_write_ptr!(btrfs_snap_destroy, 0x94, 15, VolArgs);

fn vol_args(fd: i64, name: &str) -> io::Result<Box<VolArgs>> {
    let mut a = Box::new(VolArgs {
        fd,
        name: [0; 4088],
    });
    if name.is_empty() || name.len() >= a.name.len() || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad subvolume name",
        ));
    }
    a.name[..name.len()].copy_from_slice(name.as_bytes());
    Ok(a)
}

/// Create an empty subvolume `dir/name`.
pub(super) fn subvol_create(dir: &Path, name: &str) -> io::Result<()> {
    let d = File::open(dir)?;
    let a = vol_args(0, name)?;
    // SAFETY: `a` is a valid, fully initialised btrfs_ioctl_vol_args.
    unsafe { btrfs_subvol_create(d.as_raw_fd(), &*a) }.map_err(io::Error::from)?;
    Ok(())
}

/// Writable snapshot of subvolume `src` as `dir/name`.
pub(super) fn snapshot_create(src: &Path, dir: &Path, name: &str) -> io::Result<()> {
    let s = File::open(src)?;
    let d = File::open(dir)?;
    let a = vol_args(i64::from(s.as_raw_fd()), name)?;
    // SAFETY: as above; `fd` names the source subvolume, open for the call's duration.
    unsafe { btrfs_snap_create(d.as_raw_fd(), &*a) }.map_err(io::Error::from)?;
    Ok(())
}

/// Delete subvolume `dir/name` (with its content).
pub(super) fn subvol_delete(dir: &Path, name: &str) -> io::Result<()> {
    let d = File::open(dir)?;
    let a = vol_args(0, name)?;
    // SAFETY: as above.
    unsafe { btrfs_snap_destroy(d.as_raw_fd(), &*a) }.map_err(io::Error::from)?;
    Ok(())
}

pub(super) fn sync_fs(path: &Path) -> io::Result<()> {
    let d = File::open(path)?;
    nix::unistd::syncfs(d.as_raw_fd()).map_err(io::Error::from)
}
