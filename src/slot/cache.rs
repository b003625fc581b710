//! Download-to-cache mode: fetch the whole transfer into `/var/cache/patchd` before the
//! slot is touched (devices that want the image complete first, flaky links, compressed
//! images that must resume across restarts).
//!
//! The cache holds bytes, not trust: staging from the cache runs the normal pipeline over
//! the cached file, which hashes every byte it consumes, so a damaged cache file fails
//! verification (and is then deleted) instead of being believed. The cache is bounded
//! (configured maximum and free space checked up front, `ENOSPC` reported as such) and
//! emptied after commit with [`DownloadCache::clean`].

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::stage::{
    stage_image, CancelToken, ProgressFn, RawSlot, StageError, StageOptions, StageRequest,
};
use super::SlotStatus;
use crate::fetch::{ByteSource, FetchError, FileSource};
use crate::fsutil;

/// A bounded download cache directory (root-owned, e.g. `/var/cache/patchd`).
#[derive(Debug, Clone)]
pub struct DownloadCache {
    dir: PathBuf,
    max_bytes: u64,
    checkpoint_every: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartRecord {
    length: u64,
    offset: u64,
}

impl DownloadCache {
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self {
            dir: dir.into(),
            max_bytes,
            checkpoint_every: 16 << 20,
        }
    }

    pub fn with_checkpoint_every(mut self, bytes: u64) -> Self {
        self.checkpoint_every = bytes.max(64 << 10);
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn full(&self, why: String) -> StageError {
        StageError::CacheFull {
            dir: self.dir.display().to_string(),
            why,
        }
    }

    fn io(&self, what: &str, e: io::Error) -> StageError {
        if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
            return self.full(format!("no space left while {what}"));
        }
        StageError::Io {
            what: format!("{what} in {}", self.dir.display()),
            source: e,
        }
    }

    /// Cache file name for a transfer: its signed sha256 (validated hex), never a name
    /// from the repository.
    fn names(req: &StageRequest) -> (String, String, String) {
        let h = req.sha256.to_ascii_lowercase();
        (
            format!("{h}.img"),
            format!("{h}.part"),
            format!("{h}.part.json"),
        )
    }

    /// Download `req`'s transfer into the cache, resuming a previous partial download.
    /// Returns the cache file name (relative to [`DownloadCache::dir`]).
    pub async fn fetch(
        &self,
        req: &StageRequest,
        source: &dyn ByteSource,
        cancel: &CancelToken,
    ) -> Result<String, StageError> {
        req.validate()?;
        let (done, part, rec) = Self::names(req);
        fsutil::ensure_dir(&self.dir, 0o700).map_err(|e| self.io("creating", e))?;
        let done_path = self.dir.join(&done);
        if std::fs::metadata(&done_path).is_ok_and(|m| m.len() == req.length) {
            return Ok(done);
        }
        if req.length > self.max_bytes {
            return Err(self.full(format!(
                "image of {} bytes exceeds the cache limit of {} bytes",
                req.length, self.max_bytes
            )));
        }
        let part_path = self.dir.join(&part);
        let rec_path = self.dir.join(&rec);
        let offset = std::fs::read(&rec_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<PartRecord>(&b).ok())
            .filter(|r| r.length == req.length && r.offset <= req.length)
            .map_or(0, |r| r.offset);
        let free = nix::sys::statvfs::statvfs(&self.dir)
            .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
            .map_err(|e| self.io("checking free space", e.into()))?;
        if free < req.length - offset {
            return Err(self.full(format!(
                "{} bytes needed, {free} bytes free",
                req.length - offset
            )));
        }

        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&part_path)
            .map_err(|e| self.io("opening partial download", e))?;
        // Bytes past the last checkpoint may be torn: drop them.
        f.set_len(offset)
            .map_err(|e| self.io("truncating partial download", e))?;
        use std::io::Seek;
        f.seek(io::SeekFrom::Start(offset))
            .map_err(|e| self.io("seeking partial download", e))?;

        let mut af = tokio::fs::File::from_std(f);
        let result = self
            .download(req, source, cancel, &mut af, offset, &rec_path)
            .await;
        match result {
            Ok(()) => {
                af.sync_all().await.map_err(|e| self.io("syncing", e))?;
                drop(af);
                std::fs::rename(&part_path, &done_path).map_err(|e| self.io("renaming", e))?;
                let _ = std::fs::remove_file(&rec_path);
                fsutil::fsync_dir(&self.dir).map_err(|e| self.io("syncing", e))?;
                Ok(done)
            }
            Err(e) => {
                if matches!(e, StageError::CacheFull { .. }) {
                    // Give the space back; a later attempt starts over.
                    let _ = std::fs::remove_file(&part_path);
                    let _ = std::fs::remove_file(&rec_path);
                }
                Err(e)
            }
        }
    }

    async fn download(
        &self,
        req: &StageRequest,
        source: &dyn ByteSource,
        cancel: &CancelToken,
        f: &mut tokio::fs::File,
        mut offset: u64,
        rec_path: &Path,
    ) -> Result<(), StageError> {
        let fetch_err = |e: FetchError| StageError::Fetch {
            path: req.path.clone(),
            source: e,
        };
        let mut reader = source
            .open_exact(&req.path, offset, req.length)
            .await
            .map_err(fetch_err)?;
        let mut buf = vec![0u8; 256 << 10];
        let mut since = 0u64;
        loop {
            if cancel.is_cancelled() {
                return Err(StageError::Cancelled {
                    path: req.path.clone(),
                });
            }
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|e| fetch_err(FetchError::from_io(&req.path, e)))?;
            if n == 0 {
                break;
            }
            if offset + n as u64 > req.length {
                return Err(StageError::TooLong {
                    path: req.path.clone(),
                    expected: req.length,
                });
            }
            f.write_all(&buf[..n])
                .await
                .map_err(|e| self.io("writing", e))?;
            offset += n as u64;
            since += n as u64;
            if since >= self.checkpoint_every {
                since = 0;
                f.sync_data().await.map_err(|e| self.io("syncing", e))?;
                let rec = serde_json::to_vec(&PartRecord {
                    length: req.length,
                    offset,
                })
                .map_err(|e| self.io("encoding checkpoint", io::Error::other(e)))?;
                let rec_path = rec_path.to_path_buf();
                tokio::task::spawn_blocking(move || fsutil::atomic_write(&rec_path, &rec))
                    .await
                    .map_err(|e| self.io("checkpointing", io::Error::other(e)))?
                    .map_err(|e| self.io("checkpointing", e))?;
            }
        }
        f.flush().await.map_err(|e| self.io("writing", e))?;
        if offset != req.length {
            return Err(StageError::Truncated {
                path: req.path.clone(),
                got: offset,
                expected: req.length,
            });
        }
        Ok(())
    }

    /// Remove one cached transfer (after commit, or when it failed verification).
    pub fn remove(&self, req: &StageRequest) {
        let (done, part, rec) = Self::names(req);
        for n in [done, part, rec] {
            let _ = std::fs::remove_file(self.dir.join(n));
        }
    }

    /// Empty the cache (after commit).
    pub fn clean(&self) -> Result<(), StageError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io("listing", e)),
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let ours = name.to_str().is_some_and(|n| {
                n.ends_with(".img") || n.ends_with(".part") || n.ends_with(".part.json")
            });
            if ours {
                std::fs::remove_file(e.path()).map_err(|err| self.io("cleaning", err))?;
            }
        }
        Ok(())
    }
}

/// Cache mode: download into `cache` first (resumable, also for compressed images), then
/// stage from the cached file through the verifying pipeline. The target slot is not
/// touched until the whole transfer is on local disk.
pub async fn stage_image_cached(
    req: &StageRequest,
    source: &dyn ByteSource,
    slot: Arc<dyn RawSlot>,
    cache: &DownloadCache,
    opts: &StageOptions,
    progress: Option<ProgressFn>,
    cancel: &CancelToken,
) -> Result<SlotStatus, StageError> {
    let name = cache.fetch(req, source, cancel).await?;
    let local = FileSource::new(cache.dir());
    let mut cached_req = req.clone();
    cached_req.path = name;
    let r = stage_image(&cached_req, &local, slot, opts, progress, cancel).await;
    if let Err(e) = &r {
        if matches!(
            e,
            StageError::HashMismatch { .. } | StageError::Truncated { .. }
        ) {
            cache.remove(req); // a bad cached copy must not be retried
        }
    }
    r
}
