//! Safe tar extraction into a fresh directory tree (a new btrfs subvolume).
//!
//! Refused, each with its own error: absolute paths, `..` components, writing through a
//! symlink (a symlink entry may point anywhere — inside the new root it is resolved at
//! boot — but no later entry may be placed through it), hard links to anything that is
//! not a regular file already extracted inside the tree, and device nodes unless allowed.
//! Ownership, modes, mtimes and xattrs are preserved.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// What the archive may contain.
#[derive(Debug, Clone, Default)]
pub struct ExtractPolicy {
    /// Allow character/block device nodes and FIFOs (root filesystem images need
    /// `/dev/console` & co.).
    pub allow_device_nodes: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("archive entry {path:?}: absolute path")]
    AbsolutePath { path: String },
    #[error("archive entry {path:?}: '..' component")]
    DotDot { path: String },
    #[error("archive entry {path:?}: would be written through symlink {through:?}")]
    SymlinkEscape { path: String, through: String },
    #[error("archive entry {path:?}: hard link to {target:?} outside the extracted tree")]
    HardLinkOutside { path: String, target: String },
    #[error("archive entry {path:?}: device node not allowed")]
    DeviceNode { path: String },
    #[error("archive entry {path:?}: unsupported entry type")]
    Unsupported { path: String },
    #[error("archive entry {path:?}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Normalise an entry path: relative, no `..`, `.` dropped. Empty means the root itself.
fn clean(raw: &Path) -> Result<PathBuf, ExtractError> {
    let shown = || raw.display().to_string();
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err(ExtractError::DotDot { path: shown() }),
            Component::RootDir | Component::Prefix(_) => {
                return Err(ExtractError::AbsolutePath { path: shown() })
            }
        }
    }
    Ok(out)
}

/// Every existing ancestor of `rel` inside `dest` must be a real directory.
fn check_parents(dest: &Path, rel: &Path) -> Result<(), ExtractError> {
    let mut cur = dest.to_path_buf();
    let parent = rel.parent().unwrap_or(Path::new(""));
    for c in parent.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ExtractError::SymlinkEscape {
                    path: rel.display().to_string(),
                    through: cur.strip_prefix(dest).unwrap_or(&cur).display().to_string(),
                })
            }
            Ok(m) if !m.is_dir() => {
                return Err(ExtractError::Io {
                    path: rel.display().to_string(),
                    source: std::io::Error::other("parent is not a directory"),
                })
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(ExtractError::Io {
                    path: rel.display().to_string(),
                    source: e,
                })
            }
        }
    }
    Ok(())
}

/// Extract `archive` into the (empty, ours) directory `dest`. Returns the entry count.
pub fn extract<R: Read>(
    archive: R,
    dest: &Path,
    policy: &ExtractPolicy,
) -> Result<u64, ExtractError> {
    extract_resumable(archive, dest, policy, Boundary::default(), |_| Ok(()))
}

/// A place between two archive entries: everything before it is extracted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Boundary {
    /// Offset in the archive of the next entry's first header block.
    pub offset: u64,
    /// Entries extracted before it.
    pub entries: u64,
}

/// Extract `archive`, which starts at `from` of a whole archive, into `dest` (which holds
/// exactly what the entries before `from` produced — a resumed extraction). After each
/// extracted entry `at_boundary` is told where the next one starts, so a caller can save
/// the tree and that place. Returns the entries extracted by this call.
///
/// Every check depends only on the entry and on what is in `dest`, never on what this
/// call saw before, so an extraction resumed at a boundary decides as an uninterrupted
/// one would.
pub fn extract_resumable<R: Read>(
    archive: R,
    dest: &Path,
    policy: &ExtractPolicy,
    from: Boundary,
    mut at_boundary: impl FnMut(Boundary) -> std::io::Result<()>,
) -> Result<u64, ExtractError> {
    use tar::EntryType;
    let mut ar = tar::Archive::new(archive);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(nix::unistd::geteuid().is_root());
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(true);
    ar.set_overwrite(true);
    let io = |path: &str, source| ExtractError::Io {
        path: path.to_string(),
        source,
    };
    let mut count = 0;
    for entry in ar.entries().map_err(|e| io("<archive>", e))? {
        let mut entry = entry.map_err(|e| io("<archive>", e))?;
        let raw = entry.path().map_err(|e| io("<archive>", e))?.into_owned();
        let shown = raw.display().to_string();
        let rel = clean(&raw)?;
        let kind = entry.header().entry_type();
        // The tar reader skips the data and its padding to reach the next header there.
        let next = entry
            .raw_file_position()
            .checked_add(entry.size().div_ceil(512) * 512)
            .and_then(|o| o.checked_add(from.offset))
            .ok_or_else(|| io(&shown, std::io::Error::other("entry size overflows")))?;
        match kind {
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::Directory
            | EntryType::Symlink => {}
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| io(&shown, e))?
                    .ok_or_else(|| ExtractError::HardLinkOutside {
                        path: shown.clone(),
                        target: String::new(),
                    })?
                    .into_owned();
                let outside = || ExtractError::HardLinkOutside {
                    path: shown.clone(),
                    target: target.display().to_string(),
                };
                let t = clean(&target).map_err(|_| outside())?;
                if t.as_os_str().is_empty() {
                    return Err(outside());
                }
                check_parents(dest, &t).map_err(|_| outside())?;
                match std::fs::symlink_metadata(dest.join(&t)) {
                    Ok(m) if m.is_file() => {}
                    _ => return Err(outside()),
                }
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                if !policy.allow_device_nodes {
                    return Err(ExtractError::DeviceNode { path: shown });
                }
            }
            // Metadata records the tar crate folds into the next entry.
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => continue,
            _ => return Err(ExtractError::Unsupported { path: shown }),
        }
        if rel.as_os_str().is_empty() {
            continue; // "./" itself
        }
        check_parents(dest, &rel)?;
        // Replacing an existing symlink with a file is fine (we unlink it first); the
        // parent check above already prevents writing through one.
        let full = dest.join(&rel);
        if let Ok(m) = std::fs::symlink_metadata(&full) {
            if m.file_type().is_symlink() || (m.is_file() && kind != EntryType::Directory) {
                std::fs::remove_file(&full).map_err(|e| io(&shown, e))?;
            }
        }
        if let Some(p) = full.parent() {
            std::fs::create_dir_all(p).map_err(|e| io(&shown, e))?;
        }
        // The tar crate restores xattrs of files but not of directories: do those here.
        let dir_xattrs = if kind == EntryType::Directory {
            pax_xattrs(&mut entry).map_err(|e| io(&shown, e))?
        } else {
            Vec::new()
        };
        // unpack_in re-checks containment and refuses `..`; false means it skipped.
        let done = entry.unpack_in(dest).map_err(|e| io(&shown, e))?;
        if !done {
            return Err(ExtractError::DotDot { path: shown });
        }
        for (name, value) in &dir_xattrs {
            set_xattr(&full, name, value).map_err(|e| io(&shown, e))?;
        }
        count += 1;
        at_boundary(Boundary {
            offset: next,
            entries: from.entries + count,
        })
        .map_err(|e| io(&shown, e))?;
    }
    Ok(count)
}

/// The extended attributes a PAX header carries (`SCHILY.xattr.<name>`, as GNU tar and
/// the tar crate write them).
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<R>) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for e in exts {
            let e = e?;
            if let Some(name) = e.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                out.push((name.to_vec(), e.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

/// `lsetxattr(2)` (never follows a symlink).
fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bad = |_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in xattr name");
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(bad)?;
    let n = std::ffi::CString::new(name).map_err(bad)?;
    // SAFETY: both strings are NUL-terminated and live for the call; `value` is a valid
    // buffer of `value.len()` bytes.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        assert_eq!(clean(Path::new("./a/b")).unwrap(), PathBuf::from("a/b"));
        assert!(matches!(
            clean(Path::new("/etc")),
            Err(ExtractError::AbsolutePath { .. })
        ));
        assert!(matches!(
            clean(Path::new("a/../../b")),
            Err(ExtractError::DotDot { .. })
        ));
    }
}
