//! Device side: rebuild the new image in the inactive slot from a static delta or from
//! a chunk index, holding one piece and its base in memory at a time.
//!
//! Every piece is checked against its signed sha256 before it is written, every local
//! base range before it is used, and the whole slot against the manifest's image hash
//! at the end (only then is the slot recorded `verified`). A restart after a power cut
//! redoes the run: pieces already at their place in the target slot (hash checked) are
//! kept, so nothing verified is fetched or decoded twice.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::codec;
use super::error::{io, DeltaError};
use super::format::{EntryKind, Header};
use super::index::ChunkIndex;
use crate::fetch::ranges::{read_range, Range, RangeStream};
use crate::fetch::{ByteSource, FetchError};
use crate::slot::stage::RawSlot;

/// Bytes moved by one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub bytes_fetched: u64,
    /// Bytes of the new image taken from local data (other slots, or already in place).
    pub bytes_reused: u64,
}

/// The image to build and what it must hash to (from the verified manifest).
pub struct TargetImage<'a> {
    pub slot: &'a dyn RawSlot,
    pub version: &'a str,
    pub size: u64,
    pub sha256: &'a str,
}

/// Local data pieces may be taken from (the running slot, the other slot): trusted by
/// content only, every range is hashed before use.
pub struct LocalImage {
    pub file: File,
    pub size: u64,
    /// The image hash recorded when this slot was verified, if any.
    pub sha256: Option<String>,
}

/// Progress `(done, total)` in bytes of the new image, and a cancellation check.
pub struct Control<'a> {
    pub progress: &'a (dyn Fn(u64, u64) + Sync),
    pub cancelled: &'a (dyn Fn() -> bool + Sync),
}

impl Control<'_> {
    pub fn none() -> Control<'static> {
        Control {
            progress: &|_, _| {},
            cancelled: &|| false,
        }
    }
}

/// Data written between two `fdatasync`s.
const SYNC_EVERY: u64 = 64 << 20;

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn read_at(
    f: &File,
    off: u64,
    len: usize,
    buf: &mut Vec<u8>,
    what: &str,
) -> Result<(), DeltaError> {
    buf.resize(len, 0);
    f.read_exact_at(buf, off).map_err(io(what))
}

/// Writes pieces into the target slot; knows what is already in place.
struct SlotWriter<'a> {
    t: &'a TargetImage<'a>,
    out: File,
    back: File,
    unsynced: u64,
    scratch: Vec<u8>,
}

impl<'a> SlotWriter<'a> {
    fn open(t: &'a TargetImage<'a>) -> Result<Self, DeltaError> {
        // The backend refuses the booted or a too-small slot before anything changes.
        let out = t.slot.open_for_write(t.size)?;
        t.slot.store().mark_incomplete(t.version)?;
        // A full-image checkpoint no longer describes what the slot holds.
        let _ = std::fs::remove_file(t.slot.store().checkpoint_path());
        let back = t.slot.open_for_read()?;
        Ok(Self {
            t,
            out,
            back,
            unsynced: 0,
            scratch: Vec::new(),
        })
    }

    /// Whether the slot already holds this piece at its place (an interrupted run).
    fn in_place(&mut self, off: u64, len: u32, want: &[u8; 32]) -> bool {
        self.scratch.resize(len as usize, 0);
        self.back.read_exact_at(&mut self.scratch, off).is_ok() && sha(&self.scratch) == *want
    }

    fn write(&mut self, off: u64, data: &[u8]) -> Result<(), DeltaError> {
        let what = || format!("slot {}", self.t.slot.name());
        self.out.write_all_at(data, off).map_err(io(what()))?;
        self.unsynced += data.len() as u64;
        if self.unsynced >= SYNC_EVERY {
            self.out.sync_data().map_err(io(what()))?;
            self.unsynced = 0;
        }
        Ok(())
    }

    /// fsync, read the whole image back from the medium and record it verified.
    fn finish(self) -> Result<(), DeltaError> {
        let name = self.t.slot.name().to_string();
        self.out.sync_all().map_err(io(format!("slot {name}")))?;
        let _ = self.t.slot.drop_cache(&self.out, self.t.size);
        drop(self.out);
        let back = self.t.slot.open_for_read()?;
        let mut h = Sha256::new();
        let mut r = BufReader::with_capacity(1 << 20, back).take(self.t.size);
        let n =
            std::io::copy(&mut r, &mut HashWriter(&mut h)).map_err(io(format!("slot {name}")))?;
        let found = hex::encode(h.finalize());
        if n != self.t.size || found != self.t.sha256 {
            let _ = self.t.slot.store().mark_incomplete(self.t.version);
            return Err(DeltaError::FinalHash {
                slot: name,
                expected: self.t.sha256.to_string(),
                found,
            });
        }
        self.t
            .slot
            .store()
            .mark_verified(self.t.version, self.t.sha256, self.t.size)?;
        Ok(())
    }
}

/// Reads the target slot to find pieces already at their place.
struct InPlace {
    back: Option<File>,
    scratch: Vec<u8>,
}

impl InPlace {
    fn check(&mut self, off: u64, len: u32, want: &[u8; 32]) -> bool {
        let Some(f) = &self.back else {
            return false;
        };
        self.scratch.resize(len as usize, 0);
        f.read_exact_at(&mut self.scratch, off).is_ok() && sha(&self.scratch) == *want
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn target_mismatch(file: &'static str, what: &str) -> DeltaError {
    DeltaError::Format {
        file,
        field: "target".into(),
        why: format!("{what} differs from the signed manifest"),
    }
}

/// Apply a static delta (`delta`, already verified against its TUF target, `delta_len`
/// bytes) to `base` (the running slot), writing the new image into `t`.
pub fn apply_static(
    delta: &File,
    delta_len: u64,
    base: &LocalImage,
    t: &TargetImage<'_>,
    ctl: &Control<'_>,
) -> Result<ApplyReport, DeltaError> {
    // The caller may have hashed the descriptor already: read the header from the start.
    let mut r = delta;
    r.seek(SeekFrom::Start(0)).map_err(io("static delta"))?;
    let header = Header::read(&mut BufReader::new(r), delta_len)?;
    if header.target_size != t.size {
        return Err(target_mismatch("static delta", "target size"));
    }
    if hex::encode(header.target_sha256) != t.sha256 {
        return Err(target_mismatch("static delta", "target sha256"));
    }
    let found = base.sha256.clone().unwrap_or_else(|| "unknown".into());
    if base.sha256.as_deref() != Some(hex::encode(header.source_sha256).as_str())
        || base.size != header.source_size
    {
        return Err(DeltaError::SourceMismatch {
            expected: hex::encode(header.source_sha256),
            found,
        });
    }
    let mut w = SlotWriter::open(t)?;
    let mut report = ApplyReport::default();
    let (mut base_buf, mut payload, mut out) = (Vec::new(), Vec::new(), Vec::new());
    let mut off = 0u64;
    let mut payload_off = header.table_len();
    for (i, e) in header.entries.iter().enumerate() {
        if (ctl.cancelled)() {
            return Err(DeltaError::Cancelled);
        }
        let here = off;
        off += u64::from(e.out_len);
        let pay_at = payload_off;
        payload_off += u64::from(e.payload_len);
        if w.in_place(here, e.out_len, &e.out_sha256) {
            report.bytes_reused += u64::from(e.out_len);
            (ctl.progress)(off, t.size);
            continue;
        }
        if e.base_len > 0 {
            read_at(
                &base.file,
                e.base_offset,
                e.base_len as usize,
                &mut base_buf,
                "running slot",
            )?;
            if sha(&base_buf) != e.base_sha256 {
                return Err(DeltaError::BaseCorrupt {
                    offset: e.base_offset,
                    len: u64::from(e.base_len),
                });
            }
        }
        let data: &[u8] = match e.kind {
            EntryKind::Copy => {
                report.bytes_reused += u64::from(e.out_len);
                &base_buf
            }
            EntryKind::ZstdWithBase | EntryKind::Zstd => {
                read_at(
                    delta,
                    pay_at,
                    e.payload_len as usize,
                    &mut payload,
                    "static delta",
                )?;
                let prefix = (e.kind == EntryKind::ZstdWithBase).then_some(&base_buf[..]);
                if e.kind == EntryKind::ZstdWithBase {
                    // What the base saved: the piece minus its payload.
                    report.bytes_reused += u64::from(e.out_len.saturating_sub(e.payload_len));
                }
                codec::decompress(prefix, &payload, e.out_len as usize, &mut out).map_err(
                    |err| DeltaError::PieceCorrupt {
                        index: i,
                        offset: here,
                        why: err.to_string(),
                    },
                )?;
                &out
            }
        };
        if sha(data) != e.out_sha256 {
            return Err(DeltaError::PieceCorrupt {
                index: i,
                offset: here,
                why: "sha256 differs from the signed one".into(),
            });
        }
        w.write(here, data)?;
        (ctl.progress)(off, t.size);
    }
    w.finish()?;
    Ok(report)
}

/// Fetches `len` bytes of the chunk store from `offset` (one range request).
pub type FetchRange<'a> = dyn FnMut(u64, u64) -> Result<Vec<u8>, DeltaError> + 'a;

/// Where the missing chunks come from: ranges of the chunk store. The whole list is
/// known before the first write, so an implementation may keep several requests in
/// flight ([`crate::fetch::ranges::RangeStream`]); it must hand the bytes back in order.
pub trait StoreFetch {
    /// Called once, before any [`StoreFetch::next`], with every range the run needs, in
    /// ascending store order.
    fn start(&mut self, ranges: Vec<Range>) -> Result<(), DeltaError>;
    /// The bytes of the next range given to `start`.
    fn next(&mut self) -> Result<Vec<u8>, DeltaError>;
    /// One range outside the plan (a local chunk that changed since it was cut).
    fn one(&mut self, r: Range) -> Result<Vec<u8>, DeltaError>;
}

/// A [`StoreFetch`] that reads one range at a time through a closure.
pub struct Sequential<'f, 'a> {
    fetch: &'f mut FetchRange<'a>,
    queue: VecDeque<Range>,
}

impl<'f, 'a> Sequential<'f, 'a> {
    pub fn new(fetch: &'f mut FetchRange<'a>) -> Self {
        Self {
            fetch,
            queue: VecDeque::new(),
        }
    }
}

impl StoreFetch for Sequential<'_, '_> {
    fn start(&mut self, ranges: Vec<Range>) -> Result<(), DeltaError> {
        self.queue = ranges.into();
        Ok(())
    }
    fn next(&mut self) -> Result<Vec<u8>, DeltaError> {
        let r = self.queue.pop_front().ok_or_else(|| DeltaError::Format {
            file: "chunk store",
            field: "range".into(),
            why: "more ranges read than planned".into(),
        })?;
        (self.fetch)(r.offset, r.len)
    }
    fn one(&mut self, r: Range) -> Result<Vec<u8>, DeltaError> {
        (self.fetch)(r.offset, r.len)
    }
}

/// A [`StoreFetch`] over a [`ByteSource`] with up to `in_flight` range requests at once
/// (each bounded: nothing past a range's end is read). Used from a blocking thread; the
/// requests run on `handle`'s runtime.
pub struct Pipelined {
    handle: tokio::runtime::Handle,
    src: Arc<dyn ByteSource>,
    path: String,
    file_len: u64,
    in_flight: usize,
    stream: Option<RangeStream>,
}

impl Pipelined {
    /// `path` of `src` is the chunk store, `file_len` its signed length.
    pub fn new(
        handle: tokio::runtime::Handle,
        src: Arc<dyn ByteSource>,
        path: String,
        file_len: u64,
        in_flight: usize,
    ) -> Self {
        Self {
            handle,
            src,
            path,
            file_len,
            in_flight,
            stream: None,
        }
    }

    fn fetch_err(&self, source: FetchError) -> DeltaError {
        DeltaError::Fetch {
            path: self.path.clone(),
            source,
        }
    }
}

impl StoreFetch for Pipelined {
    fn start(&mut self, ranges: Vec<Range>) -> Result<(), DeltaError> {
        let _rt = self.handle.enter();
        self.stream = Some(RangeStream::start(
            self.src.clone(),
            self.path.clone(),
            self.file_len,
            ranges,
            self.in_flight,
        ));
        Ok(())
    }

    fn next(&mut self) -> Result<Vec<u8>, DeltaError> {
        let got = self.stream.as_mut().and_then(|s| s.blocking_next());
        match got {
            Some(Ok(b)) => Ok(b),
            Some(Err(e)) => Err(self.fetch_err(e)),
            None => Err(self.fetch_err(FetchError::Protocol {
                what: self.path.clone(),
                why: "range stream ended before the last planned range".into(),
            })),
        }
    }

    fn one(&mut self, r: Range) -> Result<Vec<u8>, DeltaError> {
        let (src, path) = (self.src.as_ref(), self.path.as_str());
        self.handle
            .block_on(read_range(src, path, r, self.file_len))
            .map_err(|e| self.fetch_err(e))
    }
}

/// How a dynamic delta groups its missing chunks into range requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DynamicOptions {
    /// Refuse with [`DeltaError::NotSmaller`], before anything is written, when the
    /// ranges to fetch add up to this many bytes or more.
    pub limit: u64,
    /// Largest range of the store fetched with one request (memory per request).
    pub max_run: u64,
    /// Stored bytes of chunks the device already has that may lie between two missing
    /// ones in the same range: fetched and thrown away, which costs less than a request.
    pub max_gap: u64,
}

impl Default for DynamicOptions {
    fn default() -> Self {
        Self {
            limit: u64::MAX,
            max_run: 2 << 20,
            max_gap: 32 << 10,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Plan {
    InPlace,
    Local { src: usize, offset: u64 },
    Fetch,
}

/// A planned request: `range` of the store covers chunks `first..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub range: Range,
    pub first: usize,
    pub end: usize,
}

/// Group the chunks to fetch (`need[i]`, stored lengths `stored[i]`, adjacent in the
/// store) into ranges: neighbours merge while the range stays within `max_run`, across
/// at most `max_gap` stored bytes of chunks not needed. A single chunk larger than
/// `max_run` is still one range of its own.
pub fn coalesce(need: &[bool], stored: &[u32], max_run: u64, max_gap: u64) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    let mut store_off = 0u64;
    // Stored bytes not needed since the last needed chunk (the gap a merge would span).
    let mut gap = 0u64;
    for (i, (&n, &len)) in need.iter().zip(stored).enumerate() {
        let len = u64::from(len);
        if n {
            match runs.last_mut() {
                Some(r) if gap <= max_gap && store_off + len - r.range.offset <= max_run => {
                    r.range.len = store_off + len - r.range.offset;
                    r.end = i + 1;
                }
                _ => runs.push(Run {
                    range: Range {
                        offset: store_off,
                        len,
                    },
                    first: i,
                    end: i + 1,
                }),
            }
            gap = 0;
        } else {
            gap += len;
        }
        store_off += len;
    }
    runs
}

/// Build the image `index` describes in `t`: chunks already in place are kept, chunks
/// found in `locals` are copied (after their hash checked out), the rest is fetched from
/// the chunk store, runs of adjacent missing chunks as one range.
pub fn apply_dynamic(
    index: &ChunkIndex,
    fetch: &mut FetchRange<'_>,
    locals: &[LocalImage],
    t: &TargetImage<'_>,
    ctl: &Control<'_>,
) -> Result<ApplyReport, DeltaError> {
    apply_dynamic_with(
        index,
        &mut Sequential::new(fetch),
        locals,
        t,
        ctl,
        &DynamicOptions::default(),
    )
}

/// [`apply_dynamic`], but refused with [`DeltaError::NotSmaller`] before anything is
/// written when the missing chunks add up to `limit` bytes or more (the full image is
/// then the smaller download).
pub fn apply_dynamic_within(
    index: &ChunkIndex,
    fetch: &mut FetchRange<'_>,
    locals: &[LocalImage],
    t: &TargetImage<'_>,
    ctl: &Control<'_>,
    limit: u64,
) -> Result<ApplyReport, DeltaError> {
    let opts = DynamicOptions {
        limit,
        ..DynamicOptions::default()
    };
    apply_dynamic_with(index, &mut Sequential::new(fetch), locals, t, ctl, &opts)
}

/// The dynamic delta with any [`StoreFetch`] (e.g. several requests in flight) and
/// explicit [`DynamicOptions`]. Chunks are written in image order; every fetched chunk
/// is decoded to exactly its signed length and checked against its signed hash first.
///
/// Long on purpose: the write loop keeps the image-order invariant (local copy, fetched
/// chunk, checkpoint) in one body, where splitting it would pass the cursor state around.
pub fn apply_dynamic_with(
    index: &ChunkIndex,
    fetch: &mut dyn StoreFetch,
    locals: &[LocalImage],
    t: &TargetImage<'_>,
    ctl: &Control<'_>,
    opts: &DynamicOptions,
) -> Result<ApplyReport, DeltaError> {
    if index.image_size != t.size {
        return Err(target_mismatch("chunk index", "image size"));
    }
    if hex::encode(index.image_sha256) != t.sha256 {
        return Err(target_mismatch("chunk index", "image sha256"));
    }
    // What the local images hold, cut the same way as the index.
    let mut have: HashMap<[u8; 32], (usize, u64)> = HashMap::new();
    let p = index.params;
    for (src, l) in locals.iter().enumerate() {
        let r = BufReader::with_capacity(1 << 20, &l.file).take(l.size);
        for c in fastcdc::v2020::StreamCDC::new(r, p.min, p.avg, p.max) {
            if (ctl.cancelled)() {
                return Err(DeltaError::Cancelled);
            }
            let c = c.map_err(|e| DeltaError::Io {
                what: "reading a local slot".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
            have.entry(sha(&c.data)).or_insert((src, c.offset));
        }
    }
    // In-place pieces (written before a power cut) are found by reading the slot before
    // it is opened for writing, so a refused run leaves the slot as it was.
    let mut probe = InPlace {
        back: t.slot.open_for_read().ok(),
        scratch: Vec::new(),
    };
    let mut plan = Vec::with_capacity(index.chunks.len());
    let mut off = 0u64;
    for c in &index.chunks {
        plan.push(if probe.check(off, c.len, &c.sha256) {
            Plan::InPlace
        } else if let Some(&(src, offset)) = have.get(&c.sha256) {
            Plan::Local { src, offset }
        } else {
            Plan::Fetch
        });
        off += u64::from(c.len);
    }
    drop(have);
    drop(probe);
    let need: Vec<bool> = plan.iter().map(|p| matches!(p, Plan::Fetch)).collect();
    let stored: Vec<u32> = index.chunks.iter().map(|c| c.stored_len).collect();
    let runs = coalesce(&need, &stored, opts.max_run, opts.max_gap);
    drop((need, stored));
    let missing: u64 = runs.iter().map(|r| r.range.len).sum();
    if missing >= opts.limit {
        return Err(DeltaError::NotSmaller {
            fetch: missing,
            limit: opts.limit,
        });
    }
    let mut w = SlotWriter::open(t)?;
    fetch.start(runs.iter().map(|r| r.range).collect())?;

    let mut report = ApplyReport::default();
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    let (mut out_off, mut store_off) = (0u64, 0u64);
    let mut next_run = 0;
    // The range in hand: its store offset and bytes.
    let mut cur: Option<(u64, Vec<u8>)> = None;
    for (i, c) in index.chunks.iter().enumerate() {
        if (ctl.cancelled)() {
            return Err(DeltaError::Cancelled);
        }
        if runs.get(next_run).is_some_and(|r| r.first == i) {
            let r = runs[next_run].range;
            drop(cur.take()); // the previous range's memory goes before the next arrives
            let bytes = fetch.next()?;
            check_fetched(&bytes, r.len, i, out_off)?;
            report.bytes_fetched += r.len;
            cur = Some((r.offset, bytes));
            next_run += 1;
        }
        let frame_range = Range {
            offset: store_off,
            len: u64::from(c.stored_len),
        };
        let here = out_off;
        out_off += u64::from(c.len);
        store_off += u64::from(c.stored_len);
        let from_store = match plan[i] {
            Plan::InPlace => {
                report.bytes_reused += u64::from(c.len);
                false
            }
            Plan::Local { src, offset } => {
                read_at(
                    &locals[src].file,
                    offset,
                    c.len as usize,
                    &mut buf,
                    "local slot",
                )?;
                if sha(&buf) == c.sha256 {
                    w.write(here, &buf)?;
                    report.bytes_reused += u64::from(c.len);
                    false
                } else {
                    // The local copy changed since it was indexed: fetch this one.
                    tracing::warn!(
                        chunk = i,
                        offset,
                        "local chunk does not match its hash; fetching it"
                    );
                    true
                }
            }
            Plan::Fetch => true,
        };
        if from_store {
            let frame = match within(&cur, frame_range) {
                Some(f) => f,
                None => {
                    let b = fetch.one(frame_range)?;
                    check_fetched(&b, frame_range.len, i, here)?;
                    report.bytes_fetched += frame_range.len;
                    buf = b;
                    &buf[..]
                }
            };
            let bad = |why: String| DeltaError::PieceCorrupt {
                index: i,
                offset: here,
                why,
            };
            codec::decompress(None, frame, c.len as usize, &mut out)
                .map_err(|e| bad(e.to_string()))?;
            if sha(&out) != c.sha256 {
                return Err(bad("sha256 differs from the signed one".into()));
            }
            w.write(here, &out)?;
        }
        (ctl.progress)(out_off, t.size);
    }
    drop(cur);
    w.finish()?;
    Ok(report)
}

/// A mirror that answers a range with more or fewer bytes than asked for has corrupted
/// the chunk at `index` (output offset `offset`).
fn check_fetched(bytes: &[u8], want: u64, index: usize, offset: u64) -> Result<(), DeltaError> {
    if bytes.len() as u64 != want {
        return Err(DeltaError::PieceCorrupt {
            index,
            offset,
            why: format!("range of {want} bytes returned {}", bytes.len()),
        });
    }
    Ok(())
}

/// The part of the range in hand that holds `r`, if it does.
fn within(cur: &Option<(u64, Vec<u8>)>, r: Range) -> Option<&[u8]> {
    let (start, bytes) = cur.as_ref()?;
    let from = usize::try_from(r.offset.checked_sub(*start)?).ok()?;
    let to = from.checked_add(usize::try_from(r.len).ok()?)?;
    bytes.get(from..to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(runs: &[Run]) -> Vec<(u64, u64, usize, usize)> {
        runs.iter()
            .map(|r| (r.range.offset, r.range.len, r.first, r.end))
            .collect()
    }

    #[test]
    fn neighbours_merge_within_run_and_gap_limits() {
        let stored = [10u32; 8];
        // adjacent missing chunks: one range
        let need = [false, true, true, true, false, false, false, false];
        assert_eq!(
            ranges(&coalesce(&need, &stored, 1000, 0)),
            vec![(10, 30, 1, 4)]
        );
        // a gap of one chunk (10 bytes) is spanned when allowed, not otherwise
        let need = [true, false, true, false, false, true, false, false];
        assert_eq!(
            ranges(&coalesce(&need, &stored, 1000, 10)),
            vec![(0, 30, 0, 3), (50, 10, 5, 6)]
        );
        assert_eq!(
            ranges(&coalesce(&need, &stored, 1000, 20)),
            vec![(0, 60, 0, 6)]
        );
        assert_eq!(
            ranges(&coalesce(&need, &stored, 1000, 0)),
            vec![(0, 10, 0, 1), (20, 10, 2, 3), (50, 10, 5, 6)]
        );
        // the run limit splits a long stretch
        let need = [true; 8];
        assert_eq!(
            ranges(&coalesce(&need, &stored, 30, 100)),
            vec![(0, 30, 0, 3), (30, 30, 3, 6), (60, 20, 6, 8)]
        );
        // a chunk larger than the limit is a range of its own
        let stored = [10u32, 50, 10];
        assert_eq!(
            ranges(&coalesce(&[true, true, true], &stored, 30, 0)),
            vec![(0, 10, 0, 1), (10, 50, 1, 2), (60, 10, 2, 3)]
        );
        // nothing needed, nothing fetched
        assert!(coalesce(&[false; 3], &stored, 30, 30).is_empty());
    }
}
