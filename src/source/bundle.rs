//! Offline bundles as the engine's [`Bundles`] port: the bundle arrives as a descriptor
//! `patchctl` opened with the caller's rights (a tar file, or a tar stream of a
//! directory through a pipe), is copied into the daemon's own directory, and is then
//! read exactly like the online repository — the same TUF client over the device's
//! trusted metadata directory (so rollback protection against what the device already
//! trusts holds), the same discovery and staging ([`RepoUpdates`]) over a
//! [`FileSource`] of the copy.
//!
//! Why a copy: the daemon never opens a caller's path (DESIGN's rule), and a descriptor
//! of a directory would let symlinks in it take the root daemon anywhere; a tar stream
//! carries only bytes. Only regular files under `metadata/` and `targets/` are taken,
//! with plain names, each once, within `[offline] max_bundle_size`; nothing in the
//! bundle is parsed before the TUF client verified it, and every file a release needs
//! is checked against its signed length and hashes before the release is offered, so a
//! damaged bundle is refused before anything on the device changes.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::repository::RepoUpdates;
use crate::clock::Clock;
use crate::engine::ports::{Bundles, NotCarried, OpenedBundle, PortError, Updates};
use crate::fetch::{BoxFuture, FileSource};
use crate::slot::stage::StageOptions;
use crate::slot::SlotBackend;
use crate::trust::{ExpiredLog, Limits, OfflineConfig, TufClient};

/// Entries one bundle may hold (metadata of every root version, a release's targets).
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a tar archive or damaged: {0}")]
    Archive(std::io::Error),
    #[error("entry {name:?} refused: {why}")]
    Entry { name: String, why: String },
    #[error("larger than [offline] max_bundle_size ({limit} bytes)")]
    TooLarge { limit: u64 },
    #[error("more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("no metadata/timestamp.json: not a patchpub bundle")]
    NoMetadata,
}

/// The device side of offline bundles: where copies go and how they are verified.
pub struct BundleOpener {
    /// The device's trusted metadata (the online repository's too).
    pub trust_dir: PathBuf,
    pub clock: Arc<dyn Clock>,
    pub limits: Limits,
    pub offline: OfflineConfig,
    /// The daemon's own directory for the copy (under /var/cache/patchd); replaced by
    /// the next bundle.
    pub work_dir: PathBuf,
    pub product: String,
    pub hardware: Option<String>,
    pub channel: String,
    pub slots: Vec<Arc<dyn SlotBackend>>,
    pub opts: StageOptions,
}

impl BundleOpener {
    async fn open_inner(&self, fd: OwnedFd) -> Result<OpenedBundle, PortError> {
        let rejected = |detail: String| PortError::new("offline bundle rejected", detail);
        let dir = self.work_dir.clone();
        let max = self.offline.max_bundle_size;
        tokio::task::spawn_blocking(move || unpack(std::fs::File::from(fd), &dir, max))
            .await
            .map_err(|e| rejected(format!("copy task failed: {e}")))?
            .map_err(|e| rejected(e.to_string()).with_cause("bundle"))?;
        let mut client = TufClient::load(&self.trust_dir, self.clock.clone(), self.limits.clone())
            .map_err(|e| rejected(format!("trusted metadata: {e}")))?;
        let expired = ExpiredLog::default();
        if self.offline.allow_expired {
            client.accept_expired(expired.clone());
        }
        let updates = RepoUpdates::new(
            client,
            Arc::new(FileSource::new(self.work_dir.join("metadata"))),
            Arc::new(FileSource::new(self.work_dir.join("targets"))),
            self.product.clone(),
            self.hardware.clone(),
            self.channel.clone(),
            self.slots.clone(),
            self.opts.clone(),
        );
        let offered = updates.discover().await.map_err(|e| {
            let hint = if !self.offline.allow_expired && e.detail.contains("expired") {
                " (a bundle older than its metadata's expiry is accepted only with \
                 [offline] allow_expired = true, or make a fresh one with `patchpub bundle \
                 --expires`)"
            } else {
                ""
            };
            rejected(format!("{}{hint}", e.detail)).with_cause("verify")
        })?;
        let mut carried = Vec::new();
        let mut not_carried = Vec::new();
        for o in offered {
            match updates.carried(o.version()).await {
                Ok(Ok(())) => carried.push(o),
                Ok(Err(why)) => not_carried.push(NotCarried {
                    version: o.version().to_string(),
                    why,
                }),
                Err(e) => return Err(rejected(e.to_string()).with_cause("verify")),
            }
        }
        let expired = expired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|e| match e.version {
                Some(v) => format!("{} v{v} expired {}", e.role, e.expires),
                None => format!("{} expired {}", e.role, e.expires),
            })
            .collect();
        Ok(OpenedBundle {
            updates: Arc::new(updates) as Arc<dyn Updates>,
            offered: carried,
            not_carried,
            expired,
        })
    }
}

impl Bundles for BundleOpener {
    fn open(&self, bundle: OwnedFd) -> BoxFuture<'_, Result<OpenedBundle, PortError>> {
        Box::pin(self.open_inner(bundle))
    }
}

/// The repository-relative name of a tar entry: `metadata/…` or `targets/…`, plain
/// components only (a leading `./` is allowed, as `tar -C dir .` writes it).
fn entry_path(raw: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(n) => {
                let ok = n.to_str().is_some_and(|s| {
                    !s.is_empty() && !s.starts_with('.') && !s.contains(['\\', '\0'])
                });
                if !ok {
                    return Err("component must be plain text not starting with '.'".into());
                }
                out.push(n);
            }
            _ => return Err("absolute or '..' paths are not bundle files".into()),
        }
    }
    let top = out.components().next().and_then(|c| c.as_os_str().to_str());
    if !matches!(top, Some("metadata" | "targets")) || out.components().count() < 2 {
        return Err("only files under metadata/ and targets/ belong in a bundle".into());
    }
    Ok(out)
}

/// Copy the tar stream `src` into a fresh `dir` (the previous bundle's copy removed),
/// refusing anything but regular files with plain names, a name given twice, and more than
/// `max` bytes in all.
pub fn unpack(src: std::fs::File, dir: &Path, max: u64) -> Result<(), BundleError> {
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |source| BundleError::Io { what, source }
    };
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(dir)(e)),
    }
    if let Some(parent) = dir.parent() {
        crate::fsutil::ensure_dir(parent, 0o755).map_err(io(parent))?;
    }
    crate::fsutil::ensure_dir(dir, 0o700).map_err(io(dir))?;
    // Headers and padding come on top of the file bytes; a stream that goes on past
    // that is refused as too large rather than read to the end.
    let slack = 1 << 20;
    let mut archive = tar::Archive::new(src.take(max.saturating_add(slack)));
    let mut total: u64 = 0;
    let mut count = 0usize;
    for entry in archive.entries().map_err(BundleError::Archive)? {
        let mut entry = entry.map_err(BundleError::Archive)?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(BundleError::TooManyEntries);
        }
        let raw = entry.path().map_err(BundleError::Archive)?.into_owned();
        let name = raw.display().to_string();
        let refuse = |why: &str| BundleError::Entry {
            name: name.clone(),
            why: why.to_string(),
        };
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(refuse("not a regular file (links and devices are refused)"));
        }
        let rel = entry_path(&raw).map_err(|why| refuse(&why))?;
        total = total.saturating_add(entry.size());
        if total > max {
            return Err(BundleError::TooLarge { limit: max });
        }
        let dst = dir.join(&rel);
        if let Some(parent) = dst.parent() {
            // Only directories this function created lie under `dir`: no links to follow.
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dst)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    refuse("appears twice")
                } else {
                    io(&dst)(e)
                }
            })?;
        let want = entry.size();
        let got = std::io::copy(&mut entry, &mut f).map_err(BundleError::Archive)?;
        if got != want {
            return Err(refuse(&format!("{got} bytes where the header says {want}")));
        }
    }
    if total > max {
        return Err(BundleError::TooLarge { limit: max });
    }
    if !dir.join("metadata/timestamp.json").is_file() {
        return Err(BundleError::NoMetadata);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8], tar::EntryType)]) -> std::fs::File {
        let mut b = tar::Builder::new(Vec::new());
        for (name, body, kind) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(if kind.is_file() { body.len() as u64 } else { 0 });
            h.set_mode(0o644);
            h.set_entry_type(*kind);
            if kind.is_symlink() {
                h.set_link_name("/etc/shadow").unwrap();
            }
            // set_path refuses `..`; write the raw name as an attacker would.
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            let data: &[u8] = if kind.is_file() { body } else { &[] };
            b.append(&h, data).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &bytes).unwrap();
        std::io::Seek::rewind(&mut f).unwrap();
        f
    }

    const FILE: tar::EntryType = tar::EntryType::Regular;

    /// Name, body, kind of each entry of a test archive.
    type Entries<'a> = Vec<(&'a str, &'a [u8], tar::EntryType)>;

    #[test]
    fn takes_plain_files_under_metadata_and_targets() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("bundle");
        let f = tar_of(&[
            ("./metadata/timestamp.json", b"{}", FILE),
            ("targets/releases/x/abc.manifest.json", b"m", FILE),
        ]);
        unpack(f, &dir, 1 << 20).unwrap();
        assert_eq!(
            std::fs::read(dir.join("metadata/timestamp.json")).unwrap(),
            b"{}"
        );
        assert!(dir.join("targets/releases/x/abc.manifest.json").is_file());
    }

    #[test]
    fn links_escapes_repeated_names_and_oversize_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("bundle");
        let cases: Vec<(Entries<'_>, &str)> = vec![
            (
                vec![("metadata/x.json", b"", tar::EntryType::Symlink)],
                "not a regular file",
            ),
            (
                vec![("metadata/x.json", b"", tar::EntryType::Link)],
                "not a regular file",
            ),
            (vec![("metadata/../../etc/x", b"a", FILE)], "'..'"),
            (vec![("/metadata/x", b"a", FILE)], "absolute"),
            (vec![("other/x", b"a", FILE)], "only files under"),
            (vec![("metadata/.hidden", b"a", FILE)], "plain text"),
            (
                vec![
                    ("metadata/a.json", b"1", FILE),
                    ("metadata/a.json", b"2", FILE),
                ],
                "appears twice",
            ),
            (vec![("targets/big", &[0u8; 2048], FILE)], "max_bundle_size"),
            (
                vec![("targets/x", b"a", FILE)],
                "no metadata/timestamp.json",
            ),
        ];
        for (entries, want) in cases {
            let e = unpack(tar_of(&entries), &dir, 1024)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{entries:?}: {e}");
        }
        // Nothing of a refused bundle leaves its directory.
        assert!(!d.path().join("etc").exists());
        let e = unpack(tempfile::tempfile().unwrap(), &dir, 1024).unwrap_err();
        assert!(matches!(e, BundleError::NoMetadata), "{e}");
    }
}
