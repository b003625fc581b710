//! btrfs subvolume slots: a release is a (zstd-compressed) tar archive extracted into a
//! fresh subvolume next to the running one.
//!
//! The archive is extracted into `.<name>.partial`; only after the transfer and content
//! hashes matched is it renamed to `<name>` and its status record set to `verified`, so
//! an unverified tree can never be selected. An interrupted extraction resumes from its
//! last checkpoint, a snapshot of the partial tree at an entry boundary (see
//! [`BtrfsSlots::stage_tar_report`]). Old slots beyond `keep` are pruned, never the
//! booted or the rollback one. A slot can also start as a writable snapshot of the running
//! subvolume (for package upgrades applied inside a snapshot).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::extract::{extract_resumable, Boundary, ExtractError, ExtractPolicy};
use super::stage::{
    check_hash, emit, join_err, pump_source, CancelToken, ChanRead, ImageFormat, Phase, ProgressFn,
    StageError, StageOptions, StageRequest,
};
use super::status::StatusStore;
use super::tarstream::{ArchiveStream, ContentTooLarge, Mark};
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
        self.stage_tar_report(req, source, name, opts, progress, cancel)
            .await
            .map(|(st, _)| st)
    }

    /// [`BtrfsSlots::stage_tar`], also saying how much of the work this run did.
    ///
    /// Resume: every `checkpoint_every` bytes of archive, at the first entry boundary, the
    /// partial subvolume is synced and snapshotted (`.<slot>.cp.<seq>`) and the place is
    /// recorded in `.<slot>.extract.json` with the restart mark of the stream (zstd frame
    /// start and hash states, see [`super::tarstream`]). A later run for the same request
    /// and slot restores the partial tree from that snapshot — so whatever the
    /// interrupted run wrote after it, including a half-written entry, is gone — and
    /// continues the stream from the mark, replaying the kept download. Anything that
    /// does not match (other archive, slot or policy, missing snapshot, kept download too
    /// short) is deleted and the extraction starts over.
    pub async fn stage_tar_report(
        &self,
        req: &StageRequest,
        source: &dyn ByteSource,
        name: &SlotName,
        opts: &StageOptions,
        progress: Option<ProgressFn>,
        cancel: &CancelToken,
    ) -> Result<(SlotStatus, TarStageReport), StageError> {
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
        let (tee, prefix) = DownloadTee::open(
            &self.root,
            name.as_str(),
            req,
            opts.checkpoint_every.min(16 << 20),
        )
        .map_err(|e| StageError::Io {
            what: format!(
                "keeping the download of {} in {}",
                req.path,
                self.root.display()
            ),
            source: e,
        })?;
        let resume = self.load_checkpoint(req, name, prefix);
        let io = |e| StageError::Slot(Self::io(name, e));
        if partial_path.exists() {
            subvol_delete(&self.root, &partial).map_err(io)?;
        }
        match &resume {
            Some(cp) => {
                self.clear_checkpoints(name, Some(&cp.snapshot));
                snapshot_create(&self.root.join(&cp.snapshot), &self.root, &partial).map_err(io)?;
                tracing::info!(slot = %name, path = %req.path, entries = cp.entries, offset = cp.boundary_offset, "resuming the extraction from its checkpoint");
            }
            None => {
                self.clear_checkpoints(name, None);
                subvol_create(&self.root, &partial).map_err(io)?;
            }
        }

        let job = TarJob {
            req,
            name,
            dest: &partial_path,
            tee,
            prefix,
            resume,
        };
        let result = self
            .extract_verified(job, source, opts, progress, cancel)
            .await;
        let report = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(slot = %name, path = %req.path, error = %e, resumable = e.is_resumable(), "btrfs staging failed");
                let _ = subvol_delete(&self.root, &partial);
                if !e.is_resumable() {
                    DownloadTee::remove(&self.root, name.as_str());
                    self.clear_checkpoints(name, None);
                }
                return Err(e);
            }
        };
        DownloadTee::remove(&self.root, name.as_str());
        self.clear_checkpoints(name, None);
        // Verified: replace any older content of this slot, then publish.
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
        tracing::info!(slot = %name, path = %req.path, ?report, "btrfs slot staged");
        Ok((st, report))
    }

    fn checkpoint_path(&self, name: &SlotName) -> PathBuf {
        self.root.join(format!(".{name}.extract.json"))
    }

    fn snapshot_name(name: &SlotName, seq: u64) -> String {
        format!(".{name}.cp.{seq}")
    }

    /// The saved checkpoint for this request and slot, if it can be resumed from.
    fn load_checkpoint(
        &self,
        req: &StageRequest,
        name: &SlotName,
        kept: u64,
    ) -> Option<ExtractCheckpoint> {
        let bytes = std::fs::read(self.checkpoint_path(name)).ok()?;
        let cp: ExtractCheckpoint = match serde_json::from_slice(&bytes) {
            Ok(cp) => cp,
            Err(e) => {
                tracing::warn!(slot = %name, error = %e, "unreadable extraction checkpoint, starting over");
                return None;
            }
        };
        let snapshot = self.root.join(&cp.snapshot);
        let why = if cp.version != EXTRACT_CHECKPOINT_VERSION {
            "other version"
        } else if cp.request != *req {
            "other archive"
        } else if cp.slot != name.as_str() || cp.snapshot != Self::snapshot_name(name, cp.seq) {
            "other slot"
        } else if cp.allow_device_nodes != self.policy.allow_device_nodes
            || cp.preserve_owners != preserve_owners()
        {
            "other extraction policy"
        } else if !cp.mark.fits(req)
            || cp.mark.content_offset > cp.boundary_offset
            || cp.boundary_offset > req.size
        {
            "inconsistent offsets or hash states"
        } else if cp.mark.transfer_offset > kept {
            "the kept download is shorter than the checkpoint"
        } else if !std::fs::symlink_metadata(&snapshot).is_ok_and(|m| m.is_dir()) {
            "its snapshot is missing"
        } else {
            return Some(cp);
        };
        tracing::warn!(slot = %name, why, "extraction checkpoint does not fit, starting over");
        None
    }

    /// Delete the checkpoint snapshots of `name` other than `keep`; without `keep` also
    /// the checkpoint record.
    fn clear_checkpoints(&self, name: &SlotName, keep: Option<&str>) {
        let prefix = format!(".{name}.cp.");
        if let Ok(rd) = std::fs::read_dir(&self.root) {
            for ent in rd.flatten() {
                let Some(n) = ent.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let ours = n
                    .strip_prefix(&prefix)
                    .is_some_and(|seq| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()));
                if ours && Some(n.as_str()) != keep {
                    if let Err(e) = subvol_delete(&self.root, &n) {
                        tracing::warn!(slot = %name, snapshot = %n, error = %e, "deleting a checkpoint snapshot failed");
                    }
                }
            }
        }
        if keep.is_none() {
            let _ = std::fs::remove_file(self.checkpoint_path(name));
        }
    }

    async fn extract_verified(
        &self,
        job: TarJob<'_>,
        source: &dyn ByteSource,
        opts: &StageOptions,
        progress: Option<ProgressFn>,
        cancel: &CancelToken,
    ) -> Result<TarStageReport, StageError> {
        let TarJob {
            req,
            name,
            dest,
            tee,
            prefix,
            resume,
        } = job;
        let start = resume.as_ref().map_or(0, |cp| cp.mark.transfer_offset);
        let remote = source
            .open_exact(&req.path, prefix, req.length)
            .await
            .map_err(|e| StageError::Fetch {
                path: req.path.clone(),
                source: e,
            })?;
        let reader: crate::fetch::ByteReader = if prefix > start {
            tracing::info!(slot = %name, path = %req.path, from = start, prefix, "replaying the kept download, fetching the rest");
            let mut local = tee.prefix_reader().map_err(|e| StageError::Io {
                what: format!("replaying the kept download of {}", req.path),
                source: e,
            })?;
            local
                .seek(SeekFrom::Start(start))
                .map_err(|e| StageError::Io {
                    what: format!("replaying the kept download of {}", req.path),
                    source: e,
                })?;
            let local = tokio::fs::File::from_std(local);
            Box::new(tokio::io::AsyncReadExt::chain(
                tokio::io::AsyncReadExt::take(local, prefix - start),
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
            let ctx = WorkerCtx {
                req: req.clone(),
                name: name.clone(),
                root: self.root.clone(),
                dest: dest.to_path_buf(),
                policy: self.policy.clone(),
                opts: opts.clone(),
                progress,
                cancel: cancel.clone(),
            };
            tokio::task::spawn_blocking(move || {
                let input = ChanRead {
                    rx: full_rx,
                    recycle: empty_tx,
                    cur: None,
                    pos: 0,
                };
                extract_worker(&ctx, input, tee, resume)
            })
        };
        let pump = pump_source(req, reader, start, full_tx, &mut empty_rx, cancel).await;
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

fn preserve_owners() -> bool {
    nix::unistd::geteuid().is_root()
}

const EXTRACT_CHECKPOINT_VERSION: u32 = 1;

/// Where an interrupted extraction can continue: `<slots dir>/.<slot>.extract.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtractCheckpoint {
    version: u32,
    request: StageRequest,
    slot: String,
    allow_device_nodes: bool,
    preserve_owners: bool,
    /// Snapshot of the partial tree taken at the boundary (`.<slot>.cp.<seq>`).
    snapshot: String,
    seq: u64,
    /// Archive offset of the next entry's first header.
    boundary_offset: u64,
    /// Entries extracted before the boundary.
    entries: u64,
    /// Where the stream restarts (at or before the boundary).
    mark: Mark,
}

/// What one [`BtrfsSlots::stage_tar_report`] run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TarStageReport {
    /// Archive offset this run started extracting at (0: from the beginning).
    pub resumed_at: u64,
    /// Entries already extracted by earlier runs.
    pub entries_before: u64,
    /// Entries extracted by this run.
    pub entries_extracted: u64,
    /// Transfer bytes this run read (replayed from the kept download or fetched).
    pub transfer_read: u64,
    /// Archive bytes this run decompressed (or read, when uncompressed).
    pub content_decoded: u64,
    /// Checkpoints this run saved.
    pub checkpoints: u64,
}

struct TarJob<'a> {
    req: &'a StageRequest,
    name: &'a SlotName,
    dest: &'a Path,
    tee: DownloadTee,
    prefix: u64,
    resume: Option<ExtractCheckpoint>,
}

struct WorkerCtx {
    req: StageRequest,
    name: SlotName,
    root: PathBuf,
    dest: PathBuf,
    policy: ExtractPolicy,
    opts: StageOptions,
    progress: Option<ProgressFn>,
    cancel: CancelToken,
}

/// Crash-test hook: `PATCHD_FAILPOINT=NAME[#N]` aborts the process the Nth time NAME is
/// reached (feature `failpoints` only, see `crate::failpoint`).
#[cfg(feature = "failpoints")]
fn failpoint(name: &str) {
    static FP: std::sync::OnceLock<crate::failpoint::FailPoints> = std::sync::OnceLock::new();
    FP.get_or_init(crate::failpoint::FailPoints::from_env)
        .hit(name);
}

#[cfg(not(feature = "failpoints"))]
fn failpoint(_name: &str) {}

fn sync_fs(path: &Path) -> io::Result<()> {
    let d = File::open(path)?;
    nix::unistd::syncfs(d.as_raw_fd()).map_err(io::Error::from)
}

/// Saves extraction checkpoints at entry boundaries.
struct Checkpointer<'a, R> {
    ctx: &'a WorkerCtx,
    stream: ArchiveStream<R>,
    seq: u64,
    last: u64,
    saved: u64,
    started: Instant,
    /// Why a checkpoint failed (the extractor only carries an `io::Error`).
    failed: Option<StageError>,
}

impl<R: Read> Checkpointer<'_, R> {
    fn at_boundary(&mut self, b: Boundary) -> io::Result<()> {
        failpoint("tar.entry");
        if b.offset.saturating_sub(self.last) < self.ctx.opts.checkpoint_every {
            return Ok(());
        }
        let Some(mark) = self.stream.mark_at_or_before(b.offset) else {
            return Ok(());
        };
        if let Err(e) = self.save(b, mark) {
            let what = format!(
                "checkpointing the extraction into {}",
                self.ctx.dest.display()
            );
            let msg = e.to_string();
            self.failed = Some(StageError::Io { what, source: e });
            return Err(io::Error::other(msg));
        }
        emit(
            &self.ctx.progress,
            Phase::Write,
            b.offset,
            self.ctx.req.size,
            self.started,
        );
        Ok(())
    }

    fn save(&mut self, b: Boundary, mark: Mark) -> io::Result<()> {
        let ctx = self.ctx;
        // Durable order: the transfer up to the mark, the tree, its snapshot, then the
        // record naming them; the previous snapshot goes only once nothing refers to it.
        self.stream.sync_download()?;
        sync_fs(&ctx.dest)?;
        let seq = self.seq + 1;
        let snap = BtrfsSlots::snapshot_name(&ctx.name, seq);
        if ctx.root.join(&snap).exists() {
            subvol_delete(&ctx.root, &snap)?; // left by a run that died before its record
        }
        snapshot_create(&ctx.dest, &ctx.root, &snap)?;
        sync_fs(&ctx.root)?;
        failpoint("tar.checkpoint.snapshot");
        let cp = ExtractCheckpoint {
            version: EXTRACT_CHECKPOINT_VERSION,
            request: ctx.req.clone(),
            slot: ctx.name.to_string(),
            allow_device_nodes: ctx.policy.allow_device_nodes,
            preserve_owners: preserve_owners(),
            snapshot: snap,
            seq,
            boundary_offset: b.offset,
            entries: b.entries,
            mark,
        };
        let bytes = serde_json::to_vec(&cp).map_err(io::Error::other)?;
        fsutil::atomic_write(
            &ctx.root.join(format!(".{}.extract.json", ctx.name)),
            &bytes,
        )?;
        failpoint("tar.checkpoint.saved");
        if self.seq > 0 {
            let old = BtrfsSlots::snapshot_name(&ctx.name, self.seq);
            if let Err(e) = subvol_delete(&ctx.root, &old) {
                tracing::warn!(slot = %ctx.name, snapshot = %old, error = %e, "deleting an old checkpoint snapshot failed");
            }
        }
        tracing::debug!(slot = %ctx.name, seq, offset = b.offset, entries = b.entries, "extraction checkpoint saved");
        self.seq = seq;
        self.last = b.offset;
        self.saved += 1;
        Ok(())
    }
}

fn extract_worker(
    ctx: &WorkerCtx,
    input: ChanRead,
    tee: DownloadTee,
    resume: Option<ExtractCheckpoint>,
) -> Result<TarStageReport, StageError> {
    let req = &ctx.req;
    let started = Instant::now();
    let decompress_err = |e: io::Error| StageError::Decompress {
        path: req.path.clone(),
        source: e,
    };
    let too_large = |e: &io::Error| e.get_ref().is_some_and(|i| i.is::<ContentTooLarge>());
    let stream_err = |e: io::Error| {
        if too_large(&e) {
            StageError::DecompressedTooLarge {
                path: req.path.clone(),
                declared: req.size,
            }
        } else {
            decompress_err(e)
        }
    };
    let (mark, from, seq) = match resume {
        Some(cp) => (
            cp.mark,
            Boundary {
                offset: cp.boundary_offset,
                entries: cp.entries,
            },
            cp.seq,
        ),
        None => (Mark::start(req), Boundary::default(), 0),
    };
    let mut stream =
        ArchiveStream::new(input, tee, req, ctx.opts.zstd_window_log_max, mark.clone())
            .map_err(decompress_err)?;
    // From the restart mark to the boundary: decoded and hashed, not extracted again.
    stream
        .skip(from.offset - mark.content_offset)
        .map_err(stream_err)?;
    let mut ck = Checkpointer {
        ctx,
        stream: stream.clone(),
        seq,
        last: from.offset,
        saved: 0,
        started,
        failed: None,
    };
    let res = extract_resumable(stream.clone(), &ctx.dest, &ctx.policy, from, |b| {
        ck.at_boundary(b)
    });
    if ctx.cancel.is_cancelled() {
        return Err(StageError::Cancelled {
            path: req.path.clone(),
        });
    }
    if let Some(e) = ck.failed.take() {
        return Err(e);
    }
    let extracted = match res {
        Ok(n) => n,
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
    };
    // Hash the archive's trailing padding too: the signed hash covers every byte.
    io::copy(&mut stream, &mut io::sink()).map_err(stream_err)?;
    let (transfer, content) = stream.offsets();
    emit(&ctx.progress, Phase::Write, content, req.size, started);
    if transfer != req.length {
        return Err(StageError::Truncated {
            path: req.path.clone(),
            got: transfer,
            expected: req.length,
        });
    }
    if stream.in_frame() {
        return Err(decompress_err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the transfer ends inside a zstd frame",
        )));
    }
    if content != req.size {
        return Err(StageError::SizeMismatch {
            path: req.path.clone(),
            got: content,
            declared: req.size,
        });
    }
    let (sha256, sha512, content_sha256) = stream.digests();
    check_hash(req, "transfer sha256", &req.sha256, &sha256)?;
    if let (Some(want), Some(got)) = (&req.sha512, &sha512) {
        check_hash(req, "transfer sha512", want, got)?;
    }
    if let Some(got) = &content_sha256 {
        check_hash(req, "content sha256", &req.content_sha256, got)?;
    }
    // Make the extracted tree durable before it is published.
    sync_fs(&ctx.dest).map_err(|e| StageError::Io {
        what: format!("syncing {}", ctx.dest.display()),
        source: e,
    })?;
    emit(&ctx.progress, Phase::Done, req.size, req.size, started);
    let counts = stream.counts();
    Ok(TarStageReport {
        resumed_at: from.offset,
        entries_before: from.entries,
        entries_extracted: extracted,
        transfer_read: counts.transfer,
        content_decoded: counts.content,
        checkpoints: ck.saved,
    })
}
