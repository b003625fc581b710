//! The device's choice of how to fetch an image (docs/delta.md): a static delta made
//! from the running slot's verified image, else a dynamic delta from the chunk index,
//! else (the caller) the full image. Each method that fails — a corrupt local base, a
//! bad piece, a network error — falls through to the next; a failed delta leaves the
//! slot `incomplete`, never bootable.

use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;

use super::ports::{Progress, ProgressSink, StageMethod, StageReport};
use crate::delta::{self, ChunkIndex, Control, DeltaError, LocalImage, TargetImage};
use crate::fetch::{ByteSource, FetchError};
use crate::manifest;
use crate::slot::stage::RawSlot;
use crate::slot::SlotStatus;
use crate::trust::{TufClient, VerifiedTarget};

pub(super) struct DeltaStage<'a> {
    pub client: &'a Mutex<TufClient>,
    pub metadata: &'a dyn ByteSource,
    pub targets: &'a Arc<dyn ByteSource>,
    pub version: &'a str,
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
                Ok(r) => return Some(r),
                Err(e) => {
                    tracing::warn!(slot = %self.slot.name(), from = %d.from_version, error = %e, "static delta not used; trying the next method")
                }
            }
        }
        if let Some(c) = &self.image.chunks {
            match self.dynamic_delta(c, &locals).await {
                Ok(r) => return Some(r),
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

    fn progress_fn(&self, phase: &'static str) -> impl Fn(u64, u64) + Sync + Send + 'static {
        let sink = self.progress.clone();
        move |done, total| {
            sink.send_replace(Some(Progress {
                phase: phase.into(),
                done,
                total: Some(total),
                rate: None,
            }));
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
        let dir = self
            .slot
            .store()
            .path()
            .parent()
            .map(|p| p.to_path_buf())
            .ok_or_else(|| other("slot status record has no directory"))?;
        let dest = dir.join(format!("{}.delta", self.slot.name()));
        let fetched = {
            let c = self.client.lock().await;
            c.download_target_file(self.targets.as_ref(), &t, &dest)
                .await
                .map_err(other)?
        };
        let (slot, running) = (self.slot.clone(), running.clone());
        let (version, size, sha) = (
            self.version.to_string(),
            self.image.size,
            self.image.sha256.clone(),
        );
        let (base_size, base_sha) = (st.size.unwrap_or(0), st.sha256.clone());
        let want = t.sha256().map(str::to_string);
        let len = t.length();
        let progress = self.progress_fn("static delta");
        let dest2 = dest.clone();
        let res = tokio::task::spawn_blocking(move || -> Result<delta::ApplyReport, Skip> {
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
            let ti = TargetImage {
                slot: slot.as_ref(),
                version: &version,
                size,
                sha256: &sha,
            };
            let ctl = Control {
                progress: &progress,
                cancelled: &|| false,
            };
            Ok(delta::apply_static(&f, len, &base, &ti, &ctl)?)
        })
        .await
        .map_err(other)
        .and_then(|r| r);
        let _ = std::fs::remove_file(&dest);
        let r = res?;
        Ok(StageReport {
            method: StageMethod::StaticDelta,
            bytes_fetched: if fetched { len } else { 0 },
            bytes_reused: r.bytes_reused,
        })
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
        let (store_path, store_len) = (stt.remote_path(), stt.length());
        let source = self.targets.clone();
        let handle = tokio::runtime::Handle::current();
        let slot = self.slot.clone();
        let (version, size, sha) = (
            self.version.to_string(),
            self.image.size,
            self.image.sha256.clone(),
        );
        let progress = self.progress_fn("dynamic delta");
        // Smallest safe method: the full image when the missing chunks (plus the index
        // already fetched) would not be less.
        let limit = self.full_len.saturating_sub(bytes.len() as u64);
        let r = tokio::task::spawn_blocking(move || -> Result<delta::ApplyReport, Skip> {
            let mut fetch = |off: u64, len: u64| -> Result<Vec<u8>, DeltaError> {
                handle.block_on(fetch_range(
                    source.as_ref(),
                    &store_path,
                    store_len,
                    off,
                    len,
                ))
            };
            let ti = TargetImage {
                slot: slot.as_ref(),
                version: &version,
                size,
                sha256: &sha,
            };
            let ctl = Control {
                progress: &progress,
                cancelled: &|| false,
            };
            Ok(delta::apply_dynamic_within(
                &index, &mut fetch, &files, &ti, &ctl, limit,
            )?)
        })
        .await
        .map_err(other)??;
        Ok(StageReport {
            method: StageMethod::DynamicDelta,
            bytes_fetched: bytes.len() as u64 + r.bytes_fetched,
            bytes_reused: r.bytes_reused,
        })
    }
}

/// `len` bytes of `path` from `off` (the source bounds the whole read by `total`).
async fn fetch_range(
    src: &dyn ByteSource,
    path: &str,
    total: u64,
    off: u64,
    len: u64,
) -> Result<Vec<u8>, DeltaError> {
    let fe = |source: FetchError| DeltaError::Fetch {
        path: path.to_string(),
        source,
    };
    let mut r = src.open(path, off, total).await.map_err(fe)?;
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
    r.read_exact(&mut buf)
        .await
        .map_err(|e| fe(FetchError::from_io(path, e)))?;
    Ok(buf)
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
