//! Device side: rebuild the new image in the inactive slot from a static delta or from
//! a chunk index, holding one piece and its base in memory at a time.
//!
//! Every piece is checked against its signed sha256 before it is written, every local
//! base range before it is used, and the whole slot against the manifest's image hash
//! at the end (only then is the slot recorded `verified`). A restart after a power cut
//! redoes the run: pieces already at their place in the target slot (hash checked) are
//! kept, so nothing verified is fetched or decoded twice.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use super::codec;
use super::error::{io, DeltaError};
use super::format::{EntryKind, Header};
use super::index::ChunkIndex;
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

/// Largest run of missing chunks fetched with one range request.
const MAX_RUN: u64 = 4 << 20;
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

enum Plan {
    InPlace,
    Local { src: usize, offset: u64 },
    Fetch,
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
    apply_dynamic_within(index, fetch, locals, t, ctl, u64::MAX)
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
    // In-place pieces are found by reading the slot before it is opened for writing,
    // so a refused run leaves the slot as it was.
    let mut probe = InPlace {
        back: t.slot.open_for_read().ok(),
        scratch: Vec::new(),
    };
    let mut plan = Vec::with_capacity(index.chunks.len());
    let mut off = 0u64;
    let mut missing = 0u64;
    for c in &index.chunks {
        plan.push(if probe.check(off, c.len, &c.sha256) {
            Plan::InPlace
        } else if let Some(&(src, offset)) = have.get(&c.sha256) {
            Plan::Local { src, offset }
        } else {
            missing += u64::from(c.stored_len);
            Plan::Fetch
        });
        off += u64::from(c.len);
    }
    drop(have);
    drop(probe);
    if missing >= limit {
        return Err(DeltaError::NotSmaller {
            fetch: missing,
            limit,
        });
    }
    let mut w = SlotWriter::open(t)?;

    let mut report = ApplyReport::default();
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    let mut outs = Vec::with_capacity(index.chunks.len());
    let (mut o, mut s) = (0u64, 0u64);
    for c in &index.chunks {
        outs.push((o, s));
        o += u64::from(c.len);
        s += u64::from(c.stored_len);
    }
    let mut i = 0;
    while i < index.chunks.len() {
        if (ctl.cancelled)() {
            return Err(DeltaError::Cancelled);
        }
        let c = &index.chunks[i];
        let (out_off, store_off) = outs[i];
        match plan[i] {
            Plan::InPlace => {
                report.bytes_reused += u64::from(c.len);
                i += 1;
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
                    w.write(out_off, &buf)?;
                    report.bytes_reused += u64::from(c.len);
                    i += 1;
                } else {
                    // The local copy changed since it was indexed: fetch this one.
                    tracing::warn!(
                        chunk = i,
                        offset,
                        "local chunk does not match its hash; fetching it"
                    );
                    plan[i] = Plan::Fetch;
                }
            }
            Plan::Fetch => {
                // A run of adjacent missing chunks is adjacent in the store too.
                let mut j = i + 1;
                let mut run = u64::from(c.stored_len);
                while j < index.chunks.len()
                    && matches!(plan[j], Plan::Fetch)
                    && run + u64::from(index.chunks[j].stored_len) <= MAX_RUN
                {
                    run += u64::from(index.chunks[j].stored_len);
                    j += 1;
                }
                let bytes = fetch(store_off, run)?;
                if bytes.len() as u64 != run {
                    return Err(DeltaError::PieceCorrupt {
                        index: i,
                        offset: out_off,
                        why: format!("range of {run} bytes returned {}", bytes.len()),
                    });
                }
                report.bytes_fetched += run;
                let mut at = 0usize;
                for (k, ck) in index.chunks.iter().enumerate().take(j).skip(i) {
                    let frame = &bytes[at..at + ck.stored_len as usize];
                    at += ck.stored_len as usize;
                    let bad = |why: String| DeltaError::PieceCorrupt {
                        index: k,
                        offset: outs[k].0,
                        why,
                    };
                    codec::decompress(None, frame, ck.len as usize, &mut out)
                        .map_err(|e| bad(e.to_string()))?;
                    if sha(&out) != ck.sha256 {
                        return Err(bad("sha256 differs from the signed one".into()));
                    }
                    w.write(outs[k].0, &out)?;
                    (ctl.progress)(outs[k].0 + u64::from(ck.len), t.size);
                    if (ctl.cancelled)() {
                        return Err(DeltaError::Cancelled);
                    }
                }
                i = j;
            }
        }
        (ctl.progress)(outs.get(i).map_or(t.size, |x| x.0), t.size);
    }
    w.finish()?;
    Ok(report)
}
