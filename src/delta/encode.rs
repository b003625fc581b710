//! Publisher side: a static delta from an old image to a new one, and the chunk index
//! plus chunk store of an image (for dynamic deltas).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

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

#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// zstd level of the pieces.
    pub level: i32,
    pub cdc: CdcParams,
    /// Bytes of the old image taken on each side of where a piece's content was found.
    pub margin: u32,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            level: 19,
            cdc: STATIC_CDC,
            margin: 256 << 10,
        }
    }
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

/// Write a static delta from image `old` to image `new` into `out`.
pub fn encode_static(
    old: &Path,
    new: &Path,
    out: &Path,
    opts: &EncodeOptions,
) -> Result<EncodeStats, DeltaError> {
    let old_file = File::open(old).map_err(io(old.display()))?;
    let old_size = old_file.metadata().map_err(io(old.display()))?.len();
    // Pass 1 over the old image: its chunks (identical chunks become copies) and hash.
    let mut old_chunks: HashMap<[u8; 32], (u64, u32)> = HashMap::new();
    let mut old_hash = Sha256::new();
    for c in cdc(BufReader::new(&old_file), opts.cdc) {
        let c = c.map_err(cdc_err(old))?;
        old_hash.update(&c.data);
        old_chunks
            .entry(Sha256::digest(&c.data).into())
            .or_insert((c.offset, c.length as u32));
    }
    let source_sha256: [u8; 32] = old_hash.finalize().into();
    // Pass 2: samples for finding similar content.
    let sketch = OldIndex::build(BufReader::new(File::open(old).map_err(io(old.display()))?))
        .map_err(io(old.display()))?;

    let dir = out.parent().unwrap_or(Path::new("."));
    let mut payloads = tempfile::tempfile_in(dir).map_err(io(dir.display()))?;
    let mut pw = BufWriter::new(&mut payloads);
    let mut entries = Vec::new();
    let mut stats = EncodeStats::default();
    let mut new_hash = Sha256::new();
    let mut scratch = Vec::new();
    let mut base = Vec::new();
    let mut target_size = 0u64;
    let new_file = File::open(new).map_err(io(new.display()))?;
    for c in cdc(BufReader::new(new_file), opts.cdc) {
        let c = c.map_err(cdc_err(new))?;
        new_hash.update(&c.data);
        target_size += c.length as u64;
        let out_sha256: [u8; 32] = Sha256::digest(&c.data).into();
        let len = c.length as u32;
        if let Some(&(off, l)) = old_chunks.get(&out_sha256) {
            entries.push(Entry {
                kind: EntryKind::Copy,
                out_len: len,
                payload_len: 0,
                base_offset: off,
                base_len: l,
                out_sha256,
                base_sha256: out_sha256,
            });
            stats.copies += 1;
            continue;
        }
        let window = sketch.locate(&c.data, &mut scratch).and_then(|at| {
            let start = at.saturating_sub(i64::from(opts.margin)).max(0) as u64;
            let end = (at
                .saturating_add(i64::from(len) + i64::from(opts.margin))
                .max(0) as u64)
                .min(old_size);
            let blen = end.saturating_sub(start).min(u64::from(MAX_BASE));
            (blen > 0).then_some((start, blen as u32))
        });
        let entry = match window {
            Some((start, blen)) => {
                base.resize(blen as usize, 0);
                old_file
                    .read_exact_at(&mut base, start)
                    .map_err(io(old.display()))?;
                let z = codec::compress(opts.level, Some(&base), &c.data)?;
                pw.write_all(&z).map_err(io("delta payloads"))?;
                stats.with_base += 1;
                Entry {
                    kind: EntryKind::ZstdWithBase,
                    out_len: len,
                    payload_len: z.len() as u32,
                    base_offset: start,
                    base_len: blen,
                    out_sha256,
                    base_sha256: Sha256::digest(&base).into(),
                }
            }
            None => {
                let z = codec::compress(opts.level, None, &c.data)?;
                pw.write_all(&z).map_err(io("delta payloads"))?;
                stats.plain += 1;
                Entry {
                    kind: EntryKind::Zstd,
                    out_len: len,
                    payload_len: z.len() as u32,
                    base_offset: 0,
                    base_len: 0,
                    out_sha256,
                    base_sha256: [0; 32],
                }
            }
        };
        entries.push(entry);
    }
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
        source_size: old_size,
        source_sha256,
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
/// the index that describes them.
pub fn build_chunk_store(
    image: &Path,
    store: &Path,
    params: CdcParams,
    level: i32,
) -> Result<ChunkIndex, DeltaError> {
    let f = File::open(image).map_err(io(image.display()))?;
    let mut w = BufWriter::new(File::create(store).map_err(io(store.display()))?);
    let mut chunks = Vec::new();
    let mut h = Sha256::new();
    let (mut size, mut stored) = (0u64, 0u64);
    for c in cdc(BufReader::new(f), params) {
        let c = c.map_err(cdc_err(image))?;
        h.update(&c.data);
        let z = codec::compress(level, None, &c.data)?;
        w.write_all(&z).map_err(io(store.display()))?;
        size += c.length as u64;
        stored += z.len() as u64;
        chunks.push(IndexEntry {
            len: c.length as u32,
            stored_len: z.len() as u32,
            sha256: Sha256::digest(&c.data).into(),
        });
    }
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
