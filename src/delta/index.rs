//! The chunk index of an image (dynamic deltas): the image cut into content-defined
//! chunks, each with its length, sha256 and the length of its zstd frame in the chunk
//! store (the chunks compressed one by one and concatenated, so any run of chunks is one
//! HTTP range).
//!
//! ```text
//! "PATCHDCI" u32 version=1 u32 chunks u64 image_size [32] image_sha256
//! u64 store_size u32 min u32 avg u32 max u32 zero
//! chunks × { u32 len, u32 stored_len, [32] sha256 }
//! ```

use std::io::Read;

use super::error::{io, DeltaError};
use super::format::Cursor;

pub const MAGIC: &[u8; 8] = b"PATCHDCI";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: u64 = 8 + 4 + 4 + 8 + 32 + 8 + 16;
pub const ENTRY_LEN: u64 = 4 + 4 + 32;
/// Largest index a device accepts (it is held in memory).
pub const MAX_INDEX_LEN: u64 = 32 << 20;
const MAX_CHUNK: u32 = 4 << 20;

/// FastCDC parameters (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CdcParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

/// Dynamic deltas: small chunks find more of the old image.
pub const DYNAMIC_CDC: CdcParams = CdcParams {
    min: 4 << 10,
    avg: 16 << 10,
    max: 64 << 10,
};

impl CdcParams {
    fn check(&self) -> Result<(), DeltaError> {
        // fastcdc's own bounds (v2020): min 64 B..1 MiB, avg 256 B..4 MiB, max 1 KiB..16 MiB.
        let ok = (64..=1 << 20).contains(&self.min)
            && (256..=4 << 20).contains(&self.avg)
            && (1024..=MAX_CHUNK).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max;
        if ok {
            Ok(())
        } else {
            Err(bad("params", format!("{self:?} out of range")))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub len: u32,
    pub stored_len: u32,
    pub sha256: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkIndex {
    pub image_size: u64,
    pub image_sha256: [u8; 32],
    pub store_size: u64,
    pub params: CdcParams,
    pub chunks: Vec<IndexEntry>,
}

fn bad(field: impl Into<String>, why: impl Into<String>) -> DeltaError {
    DeltaError::Format {
        file: "chunk index",
        field: field.into(),
        why: why.into(),
    }
}

impl ChunkIndex {
    pub fn encode(&self) -> Vec<u8> {
        let mut v =
            Vec::with_capacity((HEADER_LEN + ENTRY_LEN * self.chunks.len() as u64) as usize);
        v.extend_from_slice(MAGIC);
        v.extend_from_slice(&VERSION.to_le_bytes());
        v.extend_from_slice(&(self.chunks.len() as u32).to_le_bytes());
        v.extend_from_slice(&self.image_size.to_le_bytes());
        v.extend_from_slice(&self.image_sha256);
        v.extend_from_slice(&self.store_size.to_le_bytes());
        v.extend_from_slice(&self.params.min.to_le_bytes());
        v.extend_from_slice(&self.params.avg.to_le_bytes());
        v.extend_from_slice(&self.params.max.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        for c in &self.chunks {
            v.extend_from_slice(&c.len.to_le_bytes());
            v.extend_from_slice(&c.stored_len.to_le_bytes());
            v.extend_from_slice(&c.sha256);
        }
        v
    }

    /// Parse and check an index: every length must add up (chunks to the image, frames
    /// to the store, entries to the file).
    pub fn parse(b: &[u8]) -> Result<ChunkIndex, DeltaError> {
        if b.len() as u64 > MAX_INDEX_LEN {
            return Err(bad(
                "length",
                format!("{} bytes is above {MAX_INDEX_LEN}", b.len()),
            ));
        }
        if (b.len() as u64) < HEADER_LEN {
            return Err(bad("length", "shorter than a header"));
        }
        let mut r = b;
        let mut fixed = [0u8; HEADER_LEN as usize];
        r.read_exact(&mut fixed).map_err(io("chunk index"))?;
        let mut c = Cursor(&fixed);
        if c.take::<8>() != *MAGIC {
            return Err(bad("magic", "not a patchd chunk index"));
        }
        let version = c.u32();
        if version != VERSION {
            return Err(bad("version", format!("{version} is not supported")));
        }
        let n = c.u32();
        let image_size = c.u64();
        let image_sha256 = c.take::<32>();
        let store_size = c.u64();
        let params = CdcParams {
            min: c.u32(),
            avg: c.u32(),
            max: c.u32(),
        };
        if c.u32() != 0 {
            return Err(bad("reserved", "not zero"));
        }
        params.check()?;
        if HEADER_LEN + ENTRY_LEN * u64::from(n) != b.len() as u64 {
            return Err(bad(
                "chunks",
                format!("{n} chunks do not make {} bytes", b.len()),
            ));
        }
        let mut chunks = Vec::with_capacity(n as usize);
        let (mut img, mut store) = (0u64, 0u64);
        for i in 0..n as usize {
            let mut raw = [0u8; ENTRY_LEN as usize];
            r.read_exact(&mut raw).map_err(io("chunk index"))?;
            let mut c = Cursor(&raw);
            let e = IndexEntry {
                len: c.u32(),
                stored_len: c.u32(),
                sha256: c.take::<32>(),
            };
            if e.len == 0 || e.len > params.max {
                return Err(bad(
                    format!("chunks[{i}].len"),
                    format!("{} outside 1..={}", e.len, params.max),
                ));
            }
            let bound = zstd::zstd_safe::compress_bound(e.len as usize) as u64;
            if e.stored_len == 0 || u64::from(e.stored_len) > bound {
                return Err(bad(
                    format!("chunks[{i}].stored_len"),
                    format!("{} outside 1..={bound}", e.stored_len),
                ));
            }
            img += u64::from(e.len);
            store += u64::from(e.stored_len);
            chunks.push(e);
        }
        if img != image_size {
            return Err(bad(
                "image_size",
                format!("chunks add up to {img}, the header says {image_size}"),
            ));
        }
        if store != store_size {
            return Err(bad(
                "store_size",
                format!("frames add up to {store}, the header says {store_size}"),
            ));
        }
        Ok(ChunkIndex {
            image_size,
            image_sha256,
            store_size,
            params,
            chunks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ChunkIndex {
        ChunkIndex {
            image_size: 30_000,
            image_sha256: [7; 32],
            store_size: 300,
            params: DYNAMIC_CDC,
            chunks: vec![
                IndexEntry {
                    len: 10_000,
                    stored_len: 100,
                    sha256: [1; 32],
                },
                IndexEntry {
                    len: 20_000,
                    stored_len: 200,
                    sha256: [2; 32],
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let i = sample();
        assert_eq!(ChunkIndex::parse(&i.encode()).unwrap(), i);
    }

    #[test]
    fn lying_lengths_are_rejected() {
        let mut i = sample();
        i.image_size += 1;
        assert!(ChunkIndex::parse(&i.encode()).is_err());
        let mut i = sample();
        i.store_size -= 1;
        assert!(ChunkIndex::parse(&i.encode()).is_err());
        let mut i = sample();
        i.chunks[0].len = 1 << 20;
        i.image_size = (1 << 20) + 20_000;
        assert!(ChunkIndex::parse(&i.encode()).is_err());
        let mut i = sample();
        i.chunks[1].stored_len = 1 << 20;
        i.store_size = 100 + (1 << 20);
        assert!(ChunkIndex::parse(&i.encode()).is_err());
        let mut b = sample().encode();
        b.push(0);
        assert!(ChunkIndex::parse(&b).is_err());
        let mut b = sample().encode();
        b[12..16].copy_from_slice(&3u32.to_le_bytes());
        assert!(ChunkIndex::parse(&b).is_err());
        let mut i = sample();
        i.params.max = 1 << 30;
        assert!(ChunkIndex::parse(&i.encode()).is_err());
    }
}
