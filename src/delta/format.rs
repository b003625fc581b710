//! The static delta file: a fixed header, a table of entries (one per content-defined
//! chunk of the new image, in image order), then the entries' payloads in the same order.
//!
//! ```text
//! "PATCHDSD" u32 version=1 u32 entries
//! u64 source_size [32] source_sha256 u64 target_size [32] target_sha256
//! entries × { u8 kind, [3] zero, u32 out_len, u32 payload_len, u32 base_len,
//!             u64 base_offset, [32] out_sha256, [32] base_sha256 }
//! payloads
//! ```
//! All integers little-endian. The file is a TUF target (verified before it is parsed),
//! yet every length is still checked against every other: the payloads must fill the
//! file exactly, the outputs the target image exactly, and every base must lie inside
//! the source image — so a lying header is refused before a byte is written.

use std::io::Read;

use super::error::{io, DeltaError};

pub const MAGIC: &[u8; 8] = b"PATCHDSD";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: u64 = 8 + 4 + 4 + 8 + 32 + 8 + 32;
pub const ENTRY_LEN: u64 = 1 + 3 + 4 + 4 + 4 + 8 + 32 + 32;
/// Largest output piece: bounds what a device holds at once (with its base).
pub const MAX_OUT: u32 = 4 << 20;
/// Largest base range read from the running slot for one piece.
pub const MAX_BASE: u32 = 8 << 20;
const MAX_ENTRIES: u32 = 1 << 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// The piece equals the base range (identical chunk); no payload.
    Copy = 0,
    /// zstd frame decoded with the base range as its prefix.
    ZstdWithBase = 1,
    /// Plain zstd frame (nothing similar in the old image).
    Zstd = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    pub out_len: u32,
    pub payload_len: u32,
    pub base_offset: u64,
    pub base_len: u32,
    pub out_sha256: [u8; 32],
    pub base_sha256: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub source_size: u64,
    pub source_sha256: [u8; 32],
    pub target_size: u64,
    pub target_sha256: [u8; 32],
    pub entries: Vec<Entry>,
}

fn bad(field: impl Into<String>, why: impl Into<String>) -> DeltaError {
    DeltaError::Format {
        file: "static delta",
        field: field.into(),
        why: why.into(),
    }
}

impl Header {
    /// Bytes before the first payload.
    pub fn table_len(&self) -> u64 {
        HEADER_LEN + ENTRY_LEN * self.entries.len() as u64
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.table_len() as usize);
        v.extend_from_slice(MAGIC);
        v.extend_from_slice(&VERSION.to_le_bytes());
        v.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        v.extend_from_slice(&self.source_size.to_le_bytes());
        v.extend_from_slice(&self.source_sha256);
        v.extend_from_slice(&self.target_size.to_le_bytes());
        v.extend_from_slice(&self.target_sha256);
        for e in &self.entries {
            v.push(e.kind as u8);
            v.extend_from_slice(&[0; 3]);
            v.extend_from_slice(&e.out_len.to_le_bytes());
            v.extend_from_slice(&e.payload_len.to_le_bytes());
            v.extend_from_slice(&e.base_len.to_le_bytes());
            v.extend_from_slice(&e.base_offset.to_le_bytes());
            v.extend_from_slice(&e.out_sha256);
            v.extend_from_slice(&e.base_sha256);
        }
        v
    }

    /// Read and check the header and entry table of a delta file of `file_len` bytes.
    pub fn read(r: &mut impl Read, file_len: u64) -> Result<Header, DeltaError> {
        let mut fixed = [0u8; HEADER_LEN as usize];
        if file_len < HEADER_LEN {
            return Err(bad(
                "length",
                format!("{file_len} bytes is shorter than a header"),
            ));
        }
        r.read_exact(&mut fixed)
            .map_err(io("static delta header"))?;
        let mut c = Cursor(&fixed[..]);
        if c.take::<8>() != *MAGIC {
            return Err(bad("magic", "not a patchd static delta"));
        }
        let version = c.u32();
        if version != VERSION {
            return Err(bad("version", format!("{version} is not supported")));
        }
        let n = c.u32();
        if n == 0 || n > MAX_ENTRIES {
            return Err(bad("entries", format!("{n} entries")));
        }
        let source_size = c.u64();
        let source_sha256 = c.take::<32>();
        let target_size = c.u64();
        let target_sha256 = c.take::<32>();
        let table_len = HEADER_LEN + ENTRY_LEN * u64::from(n);
        if table_len > file_len {
            return Err(bad(
                "entries",
                format!("{n} entries do not fit into {file_len} bytes"),
            ));
        }
        let mut entries = Vec::with_capacity(n as usize);
        let mut out_total = 0u64;
        let mut payload_total = 0u64;
        let mut raw = [0u8; ENTRY_LEN as usize];
        for i in 0..n as usize {
            r.read_exact(&mut raw)
                .map_err(io("static delta entry table"))?;
            let e = parse_entry(&raw, i, source_size)?;
            out_total = out_total.saturating_add(u64::from(e.out_len));
            payload_total = payload_total.saturating_add(u64::from(e.payload_len));
            entries.push(e);
        }
        if out_total != target_size {
            return Err(bad(
                "out_len",
                format!("pieces add up to {out_total} bytes, the target has {target_size}"),
            ));
        }
        if table_len.saturating_add(payload_total) != file_len {
            return Err(bad(
                "payload_len",
                format!(
                    "table {table_len} + payloads {payload_total} bytes is not the file's {file_len}"
                ),
            ));
        }
        Ok(Header {
            source_size,
            source_sha256,
            target_size,
            target_sha256,
            entries,
        })
    }
}

fn parse_entry(raw: &[u8], i: usize, source_size: u64) -> Result<Entry, DeltaError> {
    let f = |n: &str| format!("entries[{i}].{n}");
    let mut c = Cursor(raw);
    let kind = match c.take::<1>()[0] {
        0 => EntryKind::Copy,
        1 => EntryKind::ZstdWithBase,
        2 => EntryKind::Zstd,
        k => return Err(bad(f("kind"), format!("unknown kind {k}"))),
    };
    if c.take::<3>() != [0; 3] {
        return Err(bad(f("reserved"), "not zero"));
    }
    let e = Entry {
        kind,
        out_len: c.u32(),
        payload_len: c.u32(),
        base_len: c.u32(),
        base_offset: c.u64(),
        out_sha256: c.take::<32>(),
        base_sha256: c.take::<32>(),
    };
    if e.out_len == 0 || e.out_len > MAX_OUT {
        return Err(bad(
            f("out_len"),
            format!("{} is outside 1..={MAX_OUT}", e.out_len),
        ));
    }
    if e.base_len > MAX_BASE {
        return Err(bad(
            f("base_len"),
            format!("{} is above {MAX_BASE}", e.base_len),
        ));
    }
    if e.base_offset
        .checked_add(u64::from(e.base_len))
        .is_none_or(|end| end > source_size)
    {
        return Err(bad(
            f("base_offset"),
            format!(
                "{}+{} lies outside the {source_size}-byte source",
                e.base_offset, e.base_len
            ),
        ));
    }
    let bound = zstd::zstd_safe::compress_bound(e.out_len as usize) as u64;
    match kind {
        EntryKind::Copy => {
            if e.payload_len != 0 || e.base_len != e.out_len || e.base_sha256 != e.out_sha256 {
                return Err(bad(
                    f("kind"),
                    "a copy has no payload and a base equal to its output",
                ));
            }
        }
        EntryKind::ZstdWithBase | EntryKind::Zstd => {
            if e.payload_len == 0 || u64::from(e.payload_len) > bound {
                return Err(bad(
                    f("payload_len"),
                    format!("{} is outside 1..={bound}", e.payload_len),
                ));
            }
            if (kind == EntryKind::Zstd) != (e.base_len == 0) {
                return Err(bad(
                    f("base_len"),
                    "only pieces with a base have a base length",
                ));
            }
        }
    }
    Ok(e)
}

/// Little-endian reader over a buffer whose length was checked by the caller.
pub(crate) struct Cursor<'a>(pub(crate) &'a [u8]);

impl Cursor<'_> {
    pub(crate) fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let (a, b) = self.0.split_at(N.min(self.0.len()));
        out[..a.len()].copy_from_slice(a);
        self.0 = b;
        out
    }
    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take::<4>())
    }
    pub(crate) fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take::<8>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            source_size: 100,
            source_sha256: [1; 32],
            target_size: 30,
            target_sha256: [2; 32],
            entries: vec![
                Entry {
                    kind: EntryKind::Copy,
                    out_len: 10,
                    payload_len: 0,
                    base_offset: 90,
                    base_len: 10,
                    out_sha256: [3; 32],
                    base_sha256: [3; 32],
                },
                Entry {
                    kind: EntryKind::Zstd,
                    out_len: 20,
                    payload_len: 5,
                    base_offset: 0,
                    base_len: 0,
                    out_sha256: [4; 32],
                    base_sha256: [0; 32],
                },
            ],
        }
    }

    fn parse(bytes: &[u8], file_len: u64) -> Result<Header, DeltaError> {
        Header::read(&mut &bytes[..], file_len)
    }

    #[test]
    fn round_trip() {
        let h = sample();
        let b = h.encode();
        assert_eq!(b.len() as u64, h.table_len());
        assert_eq!(parse(&b, h.table_len() + 5).unwrap(), h);
    }

    #[test]
    fn lying_lengths_are_rejected() {
        let h = sample();
        let len = h.table_len() + 5;
        // payloads that do not fill the file
        assert!(parse(&h.encode(), len + 1).is_err());
        // outputs that do not make the target
        let mut h2 = h.clone();
        h2.target_size = 31;
        assert!(parse(&h2.encode(), len).is_err());
        // base outside the source
        let mut h3 = h.clone();
        h3.entries[0].base_offset = 95;
        assert!(parse(&h3.encode(), len).is_err());
        let mut h4 = h.clone();
        h4.entries[0].base_offset = u64::MAX - 2;
        assert!(parse(&h4.encode(), len).is_err());
        // a copy that claims a payload
        let mut h5 = h.clone();
        h5.entries[0].payload_len = 1;
        assert!(parse(&h5.encode(), len + 1).is_err());
        // payload larger than zstd's bound for the output
        let mut h6 = h.clone();
        h6.entries[1].payload_len = 10_000;
        assert!(parse(&h6.encode(), h.table_len() + 10_000).is_err());
        // more entries than the file holds
        let mut b = h.encode();
        b[12..16].copy_from_slice(&1000u32.to_le_bytes());
        assert!(parse(&b, len).is_err());
        // bad magic / version
        let mut b = h.encode();
        b[0] = b'X';
        assert!(parse(&b, len).is_err());
        let mut b = h.encode();
        b[8] = 9;
        assert!(parse(&b, len).is_err());
    }
}
