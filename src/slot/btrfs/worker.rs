//! One extraction run: the transfer (replayed from the kept download, then fetched)
//! pumped into a blocking worker that streams it through the hashes into the extractor,
//! checkpointing at entry boundaries as it goes, and checks every signed hash and length
//! at the end.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::sync::mpsc;

use super::resume::{preserve_owners, ExtractCheckpoint, EXTRACT_CHECKPOINT_VERSION};
use super::subvol::{snapshot_create, subvol_delete, sync_fs};
use super::{BtrfsSlots, TarStageReport};
use crate::fetch::ByteSource;
use crate::fsutil;
use crate::names::SlotName;
use crate::slot::extract::{extract_resumable, Boundary, ExtractError, ExtractPolicy};
use crate::slot::stage::{
    check_hash, emit, join_err, pump_source, CancelToken, ChanRead, Phase, ProgressFn, StageError,
    StageOptions, StageRequest,
};
use crate::slot::tarstream::{ArchiveStream, ContentTooLarge, Mark};
use crate::slot::tee::DownloadTee;

impl BtrfsSlots {
    pub(super) async fn extract_verified(
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
}

pub(super) struct TarJob<'a> {
    pub(super) req: &'a StageRequest,
    pub(super) name: &'a SlotName,
    pub(super) dest: &'a Path,
    pub(super) tee: DownloadTee,
    pub(super) prefix: u64,
    pub(super) resume: Option<ExtractCheckpoint>,
}

pub(super) struct WorkerCtx {
    pub(super) req: StageRequest,
    pub(super) name: SlotName,
    pub(super) root: PathBuf,
    pub(super) dest: PathBuf,
    pub(super) policy: ExtractPolicy,
    pub(super) opts: StageOptions,
    pub(super) progress: Option<ProgressFn>,
    pub(super) cancel: CancelToken,
}

pub(super) fn extract_worker(
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

/// Crash-test hook: `PATCHD_FAILPOINT=NAME[#N]` aborts the process the Nth time NAME is
/// reached (feature `failpoints` only, see `crate::failpoint`).
#[cfg(feature = "failpoints")]
pub(super) fn failpoint(name: &str) {
    static FP: std::sync::OnceLock<crate::failpoint::FailPoints> = std::sync::OnceLock::new();
    FP.get_or_init(crate::failpoint::FailPoints::from_env)
        .hit(name);
}

#[cfg(not(feature = "failpoints"))]
pub(super) fn failpoint(_name: &str) {}

/// Saves extraction checkpoints at entry boundaries.
pub(super) struct Checkpointer<'a, R> {
    pub(super) ctx: &'a WorkerCtx,
    pub(super) stream: ArchiveStream<R>,
    pub(super) seq: u64,
    pub(super) last: u64,
    pub(super) saved: u64,
    pub(super) started: Instant,
    /// Why a checkpoint failed (the extractor only carries an `io::Error`).
    pub(super) failed: Option<StageError>,
}

impl<R: Read> Checkpointer<'_, R> {
    pub(super) fn at_boundary(&mut self, b: Boundary) -> io::Result<()> {
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

    pub(super) fn save(&mut self, b: Boundary, mark: Mark) -> io::Result<()> {
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
