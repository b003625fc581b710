//! The device's choice of how to fetch an image (docs/delta.md): a static delta made
//! from the running slot's verified image, else a dynamic delta from the chunk index,
//! else (the caller) the full image. Each method that fails — a corrupt local base, a
//! bad piece, a network error — falls through to the next; a failed delta leaves the
//! slot `incomplete`, never bootable.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::delta::apply::{DynamicOptions, Pipelined};
use crate::delta::{self, ApplyReport, ChunkIndex, Control, DeltaError, LocalImage, TargetImage};
use crate::engine::ports::{Progress, ProgressSink, StageMethod, StageReport};
use crate::fetch::{ByteSource, FetchError};
use crate::manifest;
use crate::slot::stage::RawSlot;
use crate::slot::SlotStatus;
use crate::trust::client::file_matches;
use crate::trust::{TufClient, VerifiedTarget};

/// Range requests of the chunk store in flight at once. With ranges of at most
/// `DynamicOptions::max_run` (2 MiB) this holds at most (4 + 2) × 2 MiB of fetched
/// bytes, far below the device's 64 MiB budget.
const IN_FLIGHT: usize = 4;
/// A partial static delta download is made durable (fsync + checkpoint) this often.
const PART_SYNC_EVERY: u64 = 1 << 20;

pub(super) struct DeltaStage<'a> {
    pub client: &'a Mutex<TufClient>,
    pub metadata: &'a dyn ByteSource,
    pub targets: &'a Arc<dyn ByteSource>,
    pub version: &'a semver::Version,
    pub image: &'a manifest::Image,
    pub slot: &'a Arc<dyn RawSlot>,
    /// The other slots (the running one among them): local data to reuse.
    pub others: Vec<Arc<dyn RawSlot>>,
    /// Stored length of the full image target.
    pub full_len: u64,
    pub progress: &'a ProgressSink,
}

/// Why a delta method was not used.
#[derive(Debug, thiserror::Error)]
enum Skip {
    #[error("{0}")]
    Delta(#[from] DeltaError),
    #[error("{0}")]
    Other(String),
}

fn other(e: impl std::fmt::Display) -> Skip {
    Skip::Other(e.to_string())
}

impl DeltaStage<'_> {
    /// Local slots holding verified content, with their records.
    fn locals(&self) -> Vec<(Arc<dyn RawSlot>, SlotStatus)> {
        self.others
            .iter()
            .filter_map(|s| {
                let st = s.store().load().ok()?;
                (st.state.is_bootable() && st.size.is_some()).then(|| (s.clone(), st))
            })
            .collect()
    }

    /// `Some` when a delta method produced the verified image.
    pub(super) async fn run(&self) -> Option<StageReport> {
        let locals = self.locals();
        if locals.is_empty() {
            tracing::info!(slot = %self.slot.name(), "no verified local image: full install");
            return None;
        }
        for (running, st) in &locals {
            let Some(d) = self
                .image
                .deltas
                .iter()
                .find(|d| Some(&d.from_sha256) == st.sha256.as_ref())
            else {
                continue;
            };
            match self.static_delta(d, running, st).await {
                Ok(r) => {
                    self.drop_partial_download();
                    return Some(r);
                }
                Err(e) => {
                    tracing::warn!(slot = %self.slot.name(), from = %d.from_version, error = %e, "static delta not used; trying the next method")
                }
            }
        }
        if let Some(c) = &self.image.chunks {
            match self.dynamic_delta(c, &locals).await {
                Ok(r) => {
                    self.drop_partial_download();
                    return Some(r);
                }
                Err(e) => {
                    tracing::warn!(slot = %self.slot.name(), error = %e, "dynamic delta not used; installing the full image")
                }
            }
        }
        None
    }

    async fn target(&self, path: &str) -> Result<VerifiedTarget, Skip> {
        let mut c = self.client.lock().await;
        c.target(self.metadata, path).await.map_err(other)
    }

    /// What both delta methods build: this stage's image in its slot.
    fn job(&self, phase: &'static str) -> Job {
        Job {
            slot: self.slot.clone(),
            version: self.version.to_string(),
            size: self.image.size,
            sha256: self.image.sha256.clone(),
            progress: self.progress.clone(),
            phase,
        }
    }

    /// Where a downloaded static delta is kept until its run ends (the slot records'
    /// directory, so a restart finds it).
    fn delta_path(&self) -> Result<PathBuf, Skip> {
        let dir = self
            .slot
            .store()
            .path()
            .parent()
            .map(|p| p.to_path_buf())
            .ok_or_else(|| other("slot status record has no directory"))?;
        Ok(dir.join(format!("{}.delta", self.slot.name())))
    }

    /// A partial static delta download is kept across failures (to resume it) but not
    /// once the slot holds the new image.
    fn drop_partial_download(&self) {
        if let Ok(dest) = self.delta_path() {
            let _ = std::fs::remove_file(dest.with_extension("delta.part"));
            let _ = std::fs::remove_file(dest.with_extension("delta.part.json"));
        }
    }

    async fn static_delta(
        &self,
        d: &manifest::DeltaRef,
        running: &Arc<dyn RawSlot>,
        st: &SlotStatus,
    ) -> Result<StageReport, Skip> {
        let t = self.target(&d.target).await?;
        if t.length() >= self.full_len {
            return Err(other(format!(
                "delta of {} bytes is not smaller than the full image ({} bytes)",
                t.length(),
                self.full_len
            )));
        }
        let dest = self.delta_path()?;
        let fetched = download_resumable(self.targets.as_ref(), &t, &dest).await?;
        let running = running.clone();
        let (base_size, base_sha) = (st.size.unwrap_or(0), st.sha256.clone());
        let want = t.sha256().map(str::to_string);
        let len = t.length();
        let dest2 = dest.clone();
        let res = self
            .job("static delta")
            .apply(move |ti, ctl| {
                // Verify and consume the same bytes: hash the open descriptor we apply from.
                let f = std::fs::File::open(&dest2).map_err(other)?;
                let got = hash_file(&f).map_err(other)?;
                if Some(got.as_str()) != want.as_deref() {
                    return Err(other("downloaded delta changed on disk"));
                }
                let base = LocalImage {
                    file: running.open_for_read().map_err(other)?,
                    size: base_size,
                    sha256: base_sha,
                };
                Ok(delta::apply_static(&f, len, &base, ti, ctl)?)
            })
            .await;
        let _ = std::fs::remove_file(&dest);
        let r = res?;
        Ok(report(StageMethod::StaticDelta, fetched, &r))
    }

    async fn dynamic_delta(
        &self,
        c: &manifest::ChunksRef,
        locals: &[(Arc<dyn RawSlot>, SlotStatus)],
    ) -> Result<StageReport, Skip> {
        let it = self.target(&c.index).await?;
        let stt = self.target(&c.store).await?;
        if it.length() > delta::index::MAX_INDEX_LEN {
            return Err(other(format!(
                "chunk index of {} bytes is too large",
                it.length()
            )));
        }
        let bytes = {
            let cl = self.client.lock().await;
            cl.fetch_target_bytes(self.targets.as_ref(), &it)
                .await
                .map_err(other)?
        };
        let index = ChunkIndex::parse(&bytes)?;
        if index.store_size != stt.length() {
            return Err(other(format!(
                "chunk store is {} bytes, its index says {}",
                stt.length(),
                index.store_size
            )));
        }
        let mut files = Vec::new();
        for (s, st) in locals {
            files.push(LocalImage {
                file: s.open_for_read().map_err(other)?,
                size: st.size.unwrap_or(0),
                sha256: st.sha256.clone(),
            });
        }
        let mut store = Pipelined::new(
            tokio::runtime::Handle::current(),
            self.targets.clone(),
            stt.remote_path(),
            stt.length(),
            IN_FLIGHT,
        );
        // Smallest safe method: the full image when the missing chunks (plus the index
        // already fetched) would not be less.
        let opts = DynamicOptions {
            limit: self.full_len.saturating_sub(bytes.len() as u64),
            ..DynamicOptions::default()
        };
        let r = self
            .job("dynamic delta")
            .apply(move |ti, ctl| {
                Ok(delta::apply_dynamic_with(
                    &index, &mut store, &files, ti, ctl, &opts,
                )?)
            })
            .await?;
        Ok(report(
            StageMethod::DynamicDelta,
            bytes.len() as u64 + r.bytes_fetched,
            &r,
        ))
    }
}

/// The image a delta run builds and where its progress goes; owned, so the run can
/// move to a blocking thread.
struct Job {
    slot: Arc<dyn RawSlot>,
    version: String,
    size: u64,
    sha256: String,
    progress: ProgressSink,
    phase: &'static str,
}

impl Job {
    /// Run `f` (the delta applier) on a blocking thread with this job's target image
    /// and a progress reporter.
    async fn apply<F>(self, f: F) -> Result<ApplyReport, Skip>
    where
        F: FnOnce(&TargetImage<'_>, &Control<'_>) -> Result<ApplyReport, Skip> + Send + 'static,
    {
        tokio::task::spawn_blocking(move || {
            let ti = TargetImage {
                slot: self.slot.as_ref(),
                version: &self.version,
                size: self.size,
                sha256: &self.sha256,
            };
            let (sink, phase) = (&self.progress, self.phase);
            let progress = move |done, total| {
                sink.send_replace(Some(Progress {
                    phase: phase.into(),
                    done,
                    total: Some(total),
                    rate: None,
                }));
            };
            let ctl = Control {
                progress: &progress,
                cancelled: &|| false,
            };
            f(&ti, &ctl)
        })
        .await
        .map_err(other)?
    }
}

fn report(method: StageMethod, bytes_fetched: u64, r: &ApplyReport) -> StageReport {
    StageReport {
        method,
        bytes_fetched,
        bytes_reused: r.bytes_reused,
    }
}

/// How far a partial download is known to be on the medium (fsynced), and of what.
#[derive(serde::Serialize, serde::Deserialize)]
struct PartCheckpoint {
    target_sha256: String,
    length: u64,
    synced: u64,
}

/// Download `t` to `dest` and return the bytes fetched by this call. A partial download
/// left by an interrupted run (`dest.part` and its checkpoint) is resumed from its last
/// synced byte with a ranged request checked against the signed length, like a full
/// image; the finished file is checked against every signed hash before it is renamed
/// into place (a resumed file that does not match is fetched once more from scratch).
async fn download_resumable(
    src: &dyn ByteSource,
    t: &VerifiedTarget,
    dest: &Path,
) -> Result<u64, Skip> {
    if matches(dest, t).await {
        return Ok(0);
    }
    let part = dest.with_extension("delta.part");
    let cp = dest.with_extension("delta.part.json");
    let sha = t.sha256().unwrap_or_default().to_string();
    let resume_at = std::fs::read(&cp)
        .ok()
        .and_then(|b| serde_json::from_slice::<PartCheckpoint>(&b).ok())
        .filter(|c| c.target_sha256 == sha && c.length == t.length() && c.synced < c.length)
        .map_or(0, |c| c.synced);
    let mut fetched = 0;
    for start in [resume_at, 0] {
        fetched += fetch_part(src, t, &part, &cp, &sha, start).await?;
        if matches(&part, t).await {
            std::fs::rename(&part, dest).map_err(other)?;
            let _ = std::fs::remove_file(&cp);
            if let Some(dir) = dest.parent() {
                crate::fsutil::fsync_dir(dir).map_err(other)?;
            }
            if start > 0 {
                tracing::info!(path = %t.path(), from = start, "static delta download resumed");
            }
            return Ok(fetched);
        }
        if start == 0 {
            break;
        }
        tracing::warn!(path = %t.path(), from = start, "resumed delta download does not match its signed hash; fetching it again");
    }
    let _ = std::fs::remove_file(&part);
    let _ = std::fs::remove_file(&cp);
    Err(other(format!(
        "{}: downloaded file does not match its signed length and hashes",
        t.path()
    )))
}

/// [`file_matches`] off the async threads (it hashes the whole file).
async fn matches(path: &Path, t: &VerifiedTarget) -> bool {
    let (path, t) = (path.to_path_buf(), t.clone());
    tokio::task::spawn_blocking(move || file_matches(&path, &t))
        .await
        .unwrap_or(false)
}

/// Write bytes `start..` of `t` into `part` (truncated to `start`), checkpointing every
/// [`PART_SYNC_EVERY`] bytes. Returns the bytes fetched.
async fn fetch_part(
    src: &dyn ByteSource,
    t: &VerifiedTarget,
    part: &Path,
    cp: &Path,
    sha: &str,
    start: u64,
) -> Result<u64, Skip> {
    let what = part.display().to_string();
    let io = |e: std::io::Error| other(format!("{what}: {e}"));
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(part)
        .await
        .map_err(io)?;
    f.set_len(start).await.map_err(io)?;
    f.seek(std::io::SeekFrom::Start(start)).await.map_err(io)?;
    let path = t.remote_path();
    let mut r = src
        .open_exact(&path, start, t.length())
        .await
        .map_err(other)?;
    let mut buf = vec![0u8; 64 << 10];
    let (mut pos, mut unsynced) = (start, 0u64);
    loop {
        let n = r
            .read(&mut buf)
            .await
            .map_err(|e| other(FetchError::from_io(&path, e)))?;
        if n == 0 {
            break;
        }
        if pos + n as u64 > t.length() {
            return Err(other(format!("{path}: more than the signed length")));
        }
        f.write_all(&buf[..n]).await.map_err(io)?;
        pos += n as u64;
        unsynced += n as u64;
        if unsynced >= PART_SYNC_EVERY {
            f.sync_data().await.map_err(io)?;
            unsynced = 0;
            let c = PartCheckpoint {
                target_sha256: sha.to_string(),
                length: t.length(),
                synced: pos,
            };
            let b = serde_json::to_vec(&c).map_err(other)?;
            crate::fsutil::atomic_write(cp, &b).map_err(io)?;
        }
    }
    f.sync_all().await.map_err(io)?;
    Ok(pos - start)
}

fn hash_file(f: &std::fs::File) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut h = Sha256::new();
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}
