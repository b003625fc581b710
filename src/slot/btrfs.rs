//! btrfs subvolume slots: a release is a (zstd-compressed) tar archive extracted into a
//! fresh subvolume next to the running one.
//!
//! The archive is extracted into `.<name>.partial`; only after the transfer and content
//! hashes matched is it renamed to `<name>` and its status record set to `verified`, so
//! an unverified tree can never be selected. Old slots beyond `keep` are pruned, never the
//! booted or the rollback one. A slot can also start as a writable snapshot of the running
//! subvolume (for package upgrades applied inside a snapshot).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::extract::{extract, ExtractError, ExtractPolicy};
use super::stage::{
    emit, join_err, pump_source, CancelToken, ChanRead, Compression, Content, Hashes, HashingInput,
    ImageFormat, Phase, ProgressFn, StageError, StageOptions, StageRequest,
};
use super::status::StatusStore;
use super::tee::DownloadTee;
use super::{Slot, SlotError, SlotState, SlotStatus};
use crate::fetch::ByteSource;
use crate::fsutil;
use crate::names::SlotName;

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
fn subvol_create(dir: &Path, name: &str) -> io::Result<()> {
    let d = File::open(dir)?;
    let a = vol_args(0, name)?;
    // SAFETY: `a` is a valid, fully initialised btrfs_ioctl_vol_args.
    unsafe { btrfs_subvol_create(d.as_raw_fd(), &*a) }.map_err(io::Error::from)?;
    Ok(())
}

/// Writable snapshot of subvolume `src` as `dir/name`.
fn snapshot_create(src: &Path, dir: &Path, name: &str) -> io::Result<()> {
    let s = File::open(src)?;
    let d = File::open(dir)?;
    let a = vol_args(i64::from(s.as_raw_fd()), name)?;
    // SAFETY: as above; `fd` names the source subvolume, open for the call's duration.
    unsafe { btrfs_snap_create(d.as_raw_fd(), &*a) }.map_err(io::Error::from)?;
    Ok(())
}

/// Delete subvolume `dir/name` (with its content).
fn subvol_delete(dir: &Path, name: &str) -> io::Result<()> {
    let d = File::open(dir)?;
    let a = vol_args(0, name)?;
    // SAFETY: as above.
    unsafe { btrfs_snap_destroy(d.as_raw_fd(), &*a) }.map_err(io::Error::from)?;
    Ok(())
}

/// The set of subvolume slots under one directory of a btrfs filesystem.
#[derive(Debug, Clone)]
pub struct BtrfsSlots {
    root: PathBuf,
    state_dir: PathBuf,
    keep: usize,
    booted: Option<SlotName>,
    rollback: Option<SlotName>,
    policy: ExtractPolicy,
}

/// One subvolume slot as the engine sees it.
#[derive(Debug, Clone)]
pub struct BtrfsSlot {
    name: SlotName,
    store: StatusStore,
}

impl Slot for BtrfsSlot {
    fn name(&self) -> &SlotName {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "btrfs"
    }
    fn status(&self) -> Result<SlotStatus, SlotError> {
        self.store.load()
    }
    fn set_state(&self, state: SlotState) -> Result<SlotStatus, SlotError> {
        self.store.set_state(state)
    }
}

impl BtrfsSlots {
    /// `root` is the directory holding the slot subvolumes (on btrfs); status records go
    /// to `state_dir/slots/`.
    pub fn new(root: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            state_dir: state_dir.into(),
            keep: 3,
            booted: None,
            rollback: None,
            policy: ExtractPolicy {
                allow_device_nodes: true,
            },
        }
    }
    /// Keep at most this many slots (booted and rollback always kept).
    pub fn with_keep(mut self, keep: usize) -> Self {
        self.keep = keep.max(1);
        self
    }
    pub fn with_booted(mut self, s: SlotName) -> Self {
        self.booted = Some(s);
        self
    }
    pub fn with_rollback(mut self, s: SlotName) -> Self {
        self.rollback = Some(s);
        self
    }
    pub fn with_policy(mut self, p: ExtractPolicy) -> Self {
        self.policy = p;
        self
    }

    pub fn slot(&self, name: &SlotName) -> BtrfsSlot {
        BtrfsSlot {
            name: name.clone(),
            store: StatusStore::new(&self.state_dir, name.clone()),
        }
    }

    pub fn subvolume_path(&self, name: &SlotName) -> PathBuf {
        self.root.join(name.as_str())
    }

    fn partial_name(name: &SlotName) -> String {
        format!(".{name}.partial")
    }

    fn check_writable(&self, name: &SlotName) -> Result<(), SlotError> {
        for (which, s) in [("booted", &self.booted), ("rollback", &self.rollback)] {
            if s.as_ref() == Some(name) {
                return Err(SlotError::Refused {
                    slot: name.clone(),
                    why: format!("it is the {which} slot"),
                });
            }
        }
        Ok(())
    }

    fn io(name: &SlotName, source: io::Error) -> SlotError {
        SlotError::Io {
            slot: name.clone(),
            source,
        }
    }

    /// Writable snapshot of the running subvolume as slot `new` (status `incomplete`
    /// until whatever changes it inside is verified and recorded by the caller).
    pub fn snapshot_running(
        &self,
        running: &SlotName,
        new: &SlotName,
    ) -> Result<PathBuf, SlotError> {
        self.check_writable(new)?;
        let store = StatusStore::new(&self.state_dir, new.clone());
        store.mark_incomplete("snapshot")?;
        let dst = self.subvolume_path(new);
        if dst.exists() {
            return Err(SlotError::Refused {
                slot: new.clone(),
                why: format!("{} already exists", dst.display()),
            });
        }
        snapshot_create(&self.subvolume_path(running), &self.root, new.as_str())
            .map_err(|e| Self::io(new, e))?;
        fsutil::fsync_dir(&self.root).map_err(|e| Self::io(new, e))?;
        Ok(dst)
    }

    /// Stage a tar archive into slot `name`.
    pub async fn stage_tar(
        &self,
        req: &StageRequest,
        source: &dyn ByteSource,
        name: &SlotName,
        opts: &StageOptions,
        progress: Option<ProgressFn>,
        cancel: &CancelToken,
    ) -> Result<SlotStatus, StageError> {
        req.validate()?;
        if req.format != ImageFormat::Tar {
            return Err(StageError::BadRequest {
                why: format!("btrfs slot {name} takes tar archives, not raw images"),
            });
        }
        self.check_writable(name)?;
        let store = StatusStore::new(&self.state_dir, name.clone());
        // The slot's own subvolume is untouched until the new tree is verified, so its
        // record stays as it is until then (a failure leaves both as they were).
        let partial = Self::partial_name(name);
        let partial_path = self.root.join(&partial);
        if partial_path.exists() {
            subvol_delete(&self.root, &partial).map_err(|e| Self::io(name, e))?;
        }
        subvol_create(&self.root, &partial).map_err(|e| Self::io(name, e))?;

        let result = self
            .extract_verified(req, source, name, &partial_path, opts, progress, cancel)
            .await;
        if let Err(e) = result {
            tracing::warn!(slot = %name, path = %req.path, error = %e, resumable = e.is_resumable(), "btrfs staging failed");
            let _ = subvol_delete(&self.root, &partial);
            if !e.is_resumable() {
                DownloadTee::remove(&self.root, name.as_str());
            }
            return Err(e);
        }
        DownloadTee::remove(&self.root, name.as_str());
        // Verified: replace any older content of this slot, then publish.
        let io = |e| StageError::Slot(Self::io(name, e));
        let dst = self.subvolume_path(name);
        if dst.exists() {
            // From here until the record says verified the old content is going away.
            store.mark_incomplete(&req.version)?;
            subvol_delete(&self.root, name.as_str()).map_err(io)?;
        }
        std::fs::rename(&partial_path, &dst).map_err(io)?;
        fsutil::fsync_dir(&self.root).map_err(io)?;
        let st = store.mark_verified(
            &req.version,
            &req.content_sha256.to_ascii_lowercase(),
            req.size,
        )?;
        if let Err(e) = self.prune() {
            tracing::warn!(error = %e, "pruning old btrfs slots failed");
        }
        Ok(st)
    }

    #[allow(clippy::too_many_arguments)]
    async fn extract_verified(
        &self,
        req: &StageRequest,
        source: &dyn ByteSource,
        name: &SlotName,
        dest: &Path,
        opts: &StageOptions,
        progress: Option<ProgressFn>,
        cancel: &CancelToken,
    ) -> Result<(), StageError> {
        let tee_err = |e: io::Error| StageError::Io {
            what: format!(
                "keeping the download of {} in {}",
                req.path,
                self.root.display()
            ),
            source: e,
        };
        let (tee, prefix) = DownloadTee::open(
            &self.root,
            name.as_str(),
            req,
            opts.checkpoint_every.min(16 << 20),
        )
        .map_err(tee_err)?;
        let remote = source
            .open_exact(&req.path, prefix, req.length)
            .await
            .map_err(|e| StageError::Fetch {
                path: req.path.clone(),
                source: e,
            })?;
        let reader: crate::fetch::ByteReader = if prefix > 0 {
            tracing::info!(slot = %name, path = %req.path, prefix, "replaying the kept download, fetching the rest");
            let local = tokio::fs::File::from_std(tee.prefix_reader().map_err(tee_err)?);
            Box::new(tokio::io::AsyncReadExt::chain(
                tokio::io::AsyncReadExt::take(local, prefix),
                remote,
            ))
        } else {
            remote
        };
        let (full_tx, full_rx) = mpsc::channel::<(Vec<u8>, usize)>(opts.buffers.max(1));
        let (empty_tx, mut empty_rx) = mpsc::channel::<Vec<u8>>(opts.buffers.max(1) + 1);
        for _ in 0..opts.buffers.max(1) {
            let _ = empty_tx.try_send(vec![0u8; opts.buffer_size.max(4096)]);
        }
        let worker = {
            let (req, opts, dest, policy, cancel) = (
                req.clone(),
                opts.clone(),
                dest.to_path_buf(),
                self.policy.clone(),
                cancel.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let input = ChanRead {
                    rx: full_rx,
                    recycle: empty_tx,
                    cur: None,
                    pos: 0,
                };
                let mut tee = tee;
                extract_worker(
                    &req, input, &mut tee, &dest, &policy, &opts, progress, &cancel,
                )
            })
        };
        let pump = pump_source(req, reader, 0, full_tx, &mut empty_rx, cancel).await;
        let worker = worker.await.map_err(join_err)?;
        match (pump, worker) {
            (Err(e), _) => Err(e),
            (Ok(()), r) => r,
        }
    }

    /// Delete the oldest slots beyond `keep`; never the booted or the rollback one.
    pub fn prune(&self) -> Result<Vec<SlotName>, StageError> {
        let mut slots = Vec::new();
        let rd = std::fs::read_dir(&self.root).map_err(|e| StageError::Io {
            what: format!("listing {}", self.root.display()),
            source: e,
        })?;
        for ent in rd.flatten() {
            let Some(n) = ent.file_name().to_str().and_then(|s| SlotName::new(s).ok()) else {
                continue;
            };
            let st = self.slot(&n).status()?;
            if st.state == SlotState::Empty {
                continue; // not ours
            }
            slots.push((st.installed_at, n));
        }
        slots.sort(); // oldest first (None = never verified sorts first)
        let mut removed = Vec::new();
        let mut left = slots.len();
        for (_, n) in slots {
            if left <= self.keep {
                break;
            }
            if Some(&n) == self.booted.as_ref() || Some(&n) == self.rollback.as_ref() {
                continue;
            }
            subvol_delete(&self.root, n.as_str()).map_err(|e| Self::io(&n, e))?;
            self.slot(&n).set_state(SlotState::Empty)?;
            tracing::info!(slot = %n, "pruned old btrfs slot");
            removed.push(n);
            left -= 1;
        }
        Ok(removed)
    }
}

/// Hashes and bounds the decompressed archive bytes as the extractor reads them.
struct ContentReader<'a, 'b> {
    inner: &'a mut Content<'b>,
    hash: Option<Sha256>,
    count: u64,
    limit: u64,
}

impl Read for ContentReader<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::other(ContentTooLarge));
        }
        if let Some(h) = &mut self.hash {
            h.update(&out[..n]);
        }
        Ok(n)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("decompressed archive exceeds its declared size")]
struct ContentTooLarge;

#[allow(clippy::too_many_arguments)]
fn extract_worker(
    req: &StageRequest,
    input: ChanRead,
    tee: &mut DownloadTee,
    dest: &Path,
    policy: &ExtractPolicy,
    opts: &StageOptions,
    progress: Option<ProgressFn>,
    cancel: &CancelToken,
) -> Result<(), StageError> {
    let started = Instant::now();
    let mut hashes = Hashes::new(req);
    let content_hash = hashes.content.take();
    let decompress_err = |e: io::Error| StageError::Decompress {
        path: req.path.clone(),
        source: e,
    };
    let hin = HashingInput {
        input,
        hashes: Some(&mut hashes),
        count: 0,
        tee: Some(tee),
    };
    let mut content = match req.compression {
        Compression::None => Content::Plain(hin),
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::new(hin).map_err(decompress_err)?;
            d.window_log_max(opts.zstd_window_log_max)
                .map_err(decompress_err)?;
            Content::Zstd(Box::new(d))
        }
    };
    let mut cr = ContentReader {
        inner: &mut content,
        hash: content_hash,
        count: 0,
        limit: req.size,
    };
    let too_large = |e: &io::Error| e.get_ref().is_some_and(|i| i.is::<ContentTooLarge>());
    let res = extract(&mut cr, dest, policy);
    if cancel.is_cancelled() {
        return Err(StageError::Cancelled {
            path: req.path.clone(),
        });
    }
    match res {
        Ok(_) => {}
        Err(ExtractError::Io { source, .. }) if too_large(&source) => {
            return Err(StageError::DecompressedTooLarge {
                path: req.path.clone(),
                declared: req.size,
            })
        }
        Err(e) => {
            return Err(StageError::Extract {
                path: req.path.clone(),
                source: e,
            })
        }
    }
    // Hash the archive's trailing padding too: the signed hash covers every byte.
    io::copy(&mut cr, &mut io::sink()).map_err(|e| {
        if too_large(&e) {
            StageError::DecompressedTooLarge {
                path: req.path.clone(),
                declared: req.size,
            }
        } else {
            decompress_err(e)
        }
    })?;
    let (content_count, content_hash) = (cr.count, cr.hash.take());
    let transfer_count = content.transfer_count();
    drop(content);
    emit(&progress, Phase::Write, content_count, req.size, started);
    if transfer_count != req.length {
        return Err(StageError::Truncated {
            path: req.path.clone(),
            got: transfer_count,
            expected: req.length,
        });
    }
    if content_count != req.size {
        return Err(StageError::SizeMismatch {
            path: req.path.clone(),
            got: content_count,
            declared: req.size,
        });
    }
    hashes.verify(req, content_hash)?;
    // Make the extracted tree durable before it is published.
    let d = File::open(dest).map_err(|e| StageError::Io {
        what: format!("syncing {}", dest.display()),
        source: e,
    })?;
    nix::unistd::syncfs(d.as_raw_fd()).map_err(|e| StageError::Io {
        what: format!("syncing {}", dest.display()),
        source: e.into(),
    })?;
    emit(&progress, Phase::Done, req.size, req.size, started);
    Ok(())
}
