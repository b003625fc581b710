//! Publisher side: a static delta from an old image to a new one, and the chunk index
//! plus chunk store of an image (for dynamic deltas).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use sha2::{Digest, Sha256};

use super::codec;
use super::error::{io, DeltaError};
use super::format::{Entry, EntryKind, Header, MAX_BASE};
use super::index::{CdcParams, ChunkIndex, IndexEntry};
use super::sketch::OldIndex;

/// Static deltas: larger chunks, each compressed against a window of the old image
/// around where its content was found.
pub const STATIC_CDC: CdcParams = CdcParams {
    min: 32 << 10,
    avg: 128 << 10,
    max: 512 << 10,
};

/// Default zstd level of delta pieces and chunk frames, chosen by measurement
/// (docs/delta.md, "Choosing the level"): near level 19's size at a fraction of its time.
pub const DEFAULT_LEVEL: i32 = 9;

/// New-image bytes handed to the worker threads at a time: bounds the publisher's memory
/// (these chunks plus their compressed pieces) whatever the image size.
const BATCH_BYTES: usize = 32 << 20;

#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// zstd level of the pieces.
    pub level: i32,
    pub cdc: CdcParams,
    /// Bytes of the old image taken on each side of where a piece's content was found.
    pub margin: u32,
    /// Worker threads compressing pieces; 0 = one per available core. The output does
    /// not depend on it.
    pub threads: usize,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            level: DEFAULT_LEVEL,
            cdc: STATIC_CDC,
            margin: 256 << 10,
            threads: 0,
        }
    }
}

/// Worker threads for `requested` (0 = the cores this process may use).
pub fn worker_threads(requested: usize) -> usize {
    if requested > 0 {
        return requested;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// What an encoding produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodeStats {
    pub pieces: usize,
    pub copies: usize,
    pub with_base: usize,
    pub plain: usize,
    pub len: u64,
    pub source_sha256: String,
    pub target_sha256: String,
}

fn cdc<R: Read>(r: R, p: CdcParams) -> fastcdc::v2020::StreamCDC<R> {
    fastcdc::v2020::StreamCDC::new(r, p.min, p.avg, p.max)
}

fn cdc_err(what: &Path) -> impl Fn(fastcdc::v2020::Error) -> DeltaError + '_ {
    move |e| DeltaError::Io {
        what: what.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// `f` applied to every item on `threads` scoped threads; results in item order, so the
/// output is the same for any thread count. The first error stops the other workers.
fn par_map<T: Sync, R: Send, S>(
    items: &[T],
    threads: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &T) -> Result<R, DeltaError> + Sync,
) -> Result<Vec<R>, DeltaError> {
    let threads = threads.clamp(1, items.len().max(1));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let work = || -> Result<Vec<(usize, R)>, DeltaError> {
        let mut state = init();
        let mut done = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { break };
            match f(&mut state, item) {
                Ok(r) => done.push((i, r)),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        Ok(done)
    };
    let per_thread: Vec<Result<Vec<(usize, R)>, DeltaError>> = if threads == 1 {
        vec![work()]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(DeltaError::Zstd("an encoder thread panicked".into()))
                    })
                })
                .collect()
        })
    };
    let mut slots: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    for r in per_thread {
        for (i, v) in r? {
            slots[i] = Some(v);
        }
    }
    slots
        .into_iter()
        .map(|v| v.ok_or_else(|| DeltaError::Zstd("an encoder thread lost a piece".into())))
        .collect()
}

/// Cut `r` into chunks and hand them to `each_batch` about [`BATCH_BYTES`] at a time.
fn batches<R: Read>(
    r: R,
    p: CdcParams,
    what: &Path,
    mut each_batch: impl FnMut(&[fastcdc::v2020::ChunkData]) -> Result<(), DeltaError>,
) -> Result<(), DeltaError> {
    let mut batch = Vec::new();
    let mut bytes = 0usize;
    for c in cdc(r, p) {
        let c = c.map_err(cdc_err(what))?;
        bytes += c.length;
        batch.push(c);
        if bytes >= BATCH_BYTES {
            each_batch(&batch)?;
            batch.clear();
            bytes = 0;
        }
    }
    if !batch.is_empty() {
        each_batch(&batch)?;
    }
    Ok(())
}

/// The old image as the encoder needs it: its chunks by hash (identical new chunks
/// become copies), its sha256 and the samples for finding similar content.
struct OldImage {
    file: File,
    size: u64,
    sha256: [u8; 32],
    chunks: HashMap<[u8; 32], (u64, u32)>,
    sketch: OldIndex,
}

impl OldImage {
    fn read(path: &Path, p: CdcParams) -> Result<OldImage, DeltaError> {
        let file = File::open(path).map_err(io(path.display()))?;
        let size = file.metadata().map_err(io(path.display()))?.len();
        // The two passes read the image independently: run them side by side.
        let (chunks, sketch) = std::thread::scope(|s| {
            let sketch = s.spawn(|| -> Result<OldIndex, DeltaError> {
                let f = File::open(path).map_err(io(path.display()))?;
                OldIndex::build(BufReader::new(f)).map_err(io(path.display()))
            });
            let chunks = chunk_hashes(&file, path, p);
            let sketch = sketch
                .join()
                .unwrap_or_else(|_| Err(DeltaError::Zstd("the sketch thread panicked".into())));
            (chunks, sketch)
        });
        let (chunks, sha256) = chunks?;
        Ok(OldImage {
            file,
            size,
            sha256,
            chunks,
            sketch: sketch?,
        })
    }
}

/// The old image's chunks by sha256 (first occurrence) and the image's sha256.
type ChunkHashes = (HashMap<[u8; 32], (u64, u32)>, [u8; 32]);

fn chunk_hashes(file: &File, path: &Path, p: CdcParams) -> Result<ChunkHashes, DeltaError> {
    let mut chunks = HashMap::new();
    let mut h = Sha256::new();
    for c in cdc(BufReader::new(file), p) {
        let c = c.map_err(cdc_err(path))?;
        h.update(&c.data);
        chunks
            .entry(Sha256::digest(&c.data).into())
            .or_insert((c.offset, c.length as u32));
    }
    Ok((chunks, h.finalize().into()))
}

/// One worker's reusable buffers.
#[derive(Default)]
struct PieceScratch {
    samples: Vec<(u64, u64)>,
    base: Vec<u8>,
}

/// Encode one new chunk: a copy of an identical old chunk, zstd against the old image
/// around where its content was found, or plain zstd.
fn encode_piece(
    old: &OldImage,
    old_path: &Path,
    opts: &EncodeOptions,
    sc: &mut PieceScratch,
    data: &[u8],
) -> Result<(Entry, Vec<u8>), DeltaError> {
    let out_sha256: [u8; 32] = Sha256::digest(data).into();
    let len = data.len() as u32;
    if let Some(&(off, l)) = old.chunks.get(&out_sha256) {
        let e = Entry {
            kind: EntryKind::Copy,
            out_len: len,
            payload_len: 0,
            base_offset: off,
            base_len: l,
            out_sha256,
            base_sha256: out_sha256,
        };
        return Ok((e, Vec::new()));
    }
    let window = old.sketch.locate(data, &mut sc.samples).and_then(|at| {
        let start = at.saturating_sub(i64::from(opts.margin)).max(0) as u64;
        let end = (at
            .saturating_add(i64::from(len) + i64::from(opts.margin))
            .max(0) as u64)
            .min(old.size);
        let blen = end.saturating_sub(start).min(u64::from(MAX_BASE));
        (blen > 0).then_some((start, blen as u32))
    });
    Ok(match window {
        Some((start, blen)) => {
            sc.base.resize(blen as usize, 0);
            old.file
                .read_exact_at(&mut sc.base, start)
                .map_err(io(old_path.display()))?;
            let z = codec::compress(opts.level, Some(&sc.base), data)?;
            let e = Entry {
                kind: EntryKind::ZstdWithBase,
                out_len: len,
                payload_len: z.len() as u32,
                base_offset: start,
                base_len: blen,
                out_sha256,
                base_sha256: Sha256::digest(&sc.base).into(),
            };
            (e, z)
        }
        None => {
            let z = codec::compress(opts.level, None, data)?;
            let e = Entry {
                kind: EntryKind::Zstd,
                out_len: len,
                payload_len: z.len() as u32,
                base_offset: 0,
                base_len: 0,
                out_sha256,
                base_sha256: [0; 32],
            };
            (e, z)
        }
    })
}

/// Write a static delta from image `old` to image `new` into `out`.
///
/// Pieces are compressed on [`EncodeOptions::threads`] threads, [`BATCH_BYTES`] of the
/// new image at a time, and written in image order: the file is byte-identical for any
/// thread count.
pub fn encode_static(
    old: &Path,
    new: &Path,
    out: &Path,
    opts: &EncodeOptions,
) -> Result<EncodeStats, DeltaError> {
    let old_img = OldImage::read(old, opts.cdc)?;
    let threads = worker_threads(opts.threads);

    let dir = out.parent().unwrap_or(Path::new("."));
    let mut payloads = tempfile::tempfile_in(dir).map_err(io(dir.display()))?;
    let mut pw = BufWriter::new(&mut payloads);
    let mut entries = Vec::new();
    let mut stats = EncodeStats::default();
    let mut new_hash = Sha256::new();
    let mut target_size = 0u64;
    let new_file = File::open(new).map_err(io(new.display()))?;
    batches(BufReader::new(new_file), opts.cdc, new, |batch| {
        for c in batch {
            new_hash.update(&c.data);
            target_size += c.length as u64;
        }
        let pieces = par_map(batch, threads, PieceScratch::default, |sc, c| {
            encode_piece(&old_img, old, opts, sc, &c.data)
        })?;
        for (e, z) in pieces {
            match e.kind {
                EntryKind::Copy => stats.copies += 1,
                EntryKind::ZstdWithBase => stats.with_base += 1,
                EntryKind::Zstd => stats.plain += 1,
            }
            pw.write_all(&z).map_err(io("delta payloads"))?;
            entries.push(e);
        }
        Ok(())
    })?;
    pw.flush().map_err(io("delta payloads"))?;
    drop(pw);
    if entries.is_empty() {
        return Err(DeltaError::Format {
            file: "static delta",
            field: "target".into(),
            why: "the new image is empty".into(),
        });
    }
    let header = Header {
        source_size: old_img.size,
        source_sha256: old_img.sha256,
        target_size,
        target_sha256: new_hash.finalize().into(),
        entries,
    };
    stats.pieces = header.entries.len();
    stats.source_sha256 = hex::encode(header.source_sha256);
    stats.target_sha256 = hex::encode(header.target_sha256);
    let mut w = BufWriter::new(File::create(out).map_err(io(out.display()))?);
    w.write_all(&header.encode()).map_err(io(out.display()))?;
    payloads
        .seek(SeekFrom::Start(0))
        .map_err(io("delta payloads"))?;
    std::io::copy(&mut payloads, &mut w).map_err(io(out.display()))?;
    let f = w
        .into_inner()
        .map_err(|e| io(out.display())(e.into_error()))?;
    f.sync_all().map_err(io(out.display()))?;
    stats.len = f.metadata().map_err(io(out.display()))?.len();
    Ok(stats)
}

/// Cut `image` into chunks, write each compressed on its own into `store`, and return
/// the index that describes them (on one thread per core).
pub fn build_chunk_store(
    image: &Path,
    store: &Path,
    params: CdcParams,
    level: i32,
) -> Result<ChunkIndex, DeltaError> {
    build_chunk_store_on(image, store, params, level, 0)
}

/// [`build_chunk_store`] on `threads` threads (0 = one per core). Chunks are written in
/// image order: store and index do not depend on the thread count.
pub fn build_chunk_store_on(
    image: &Path,
    store: &Path,
    params: CdcParams,
    level: i32,
    threads: usize,
) -> Result<ChunkIndex, DeltaError> {
    let threads = worker_threads(threads);
    let f = File::open(image).map_err(io(image.display()))?;
    let mut w = BufWriter::new(File::create(store).map_err(io(store.display()))?);
    let mut chunks = Vec::new();
    let mut h = Sha256::new();
    let (mut size, mut stored) = (0u64, 0u64);
    batches(BufReader::new(f), params, image, |batch| {
        for c in batch {
            h.update(&c.data);
        }
        let frames = par_map(
            batch,
            threads,
            || (),
            |_, c| {
                let z = codec::compress(level, None, &c.data)?;
                Ok((z, <[u8; 32]>::from(Sha256::digest(&c.data))))
            },
        )?;
        for (c, (z, sha256)) in batch.iter().zip(frames) {
            w.write_all(&z).map_err(io(store.display()))?;
            size += c.length as u64;
            stored += z.len() as u64;
            chunks.push(IndexEntry {
                len: c.length as u32,
                stored_len: z.len() as u32,
                sha256,
            });
        }
        Ok(())
    })?;
    let f = w
        .into_inner()
        .map_err(|e| io(store.display())(e.into_error()))?;
    f.sync_all().map_err(io(store.display()))?;
    Ok(ChunkIndex {
        image_size: size,
        image_sha256: h.finalize().into(),
        store_size: stored,
        params,
        chunks,
    })
}
