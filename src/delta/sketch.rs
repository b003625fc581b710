//! Finding where a new chunk's content sits in the old image (publisher side).
//!
//! A gear rolling hash (64-byte window) is sampled where its top byte is zero, about
//! once every 256 bytes; the old image's samples map hash → positions. For a new chunk,
//! every sample that also occurs in the old image votes for a displacement (old position
//! minus position in the chunk); the winning displacement says where the chunk's
//! content starts in the old image, even when a file moved or grew.

use std::collections::HashMap;
use std::io::Read;

/// Positions kept per hash; hashes seen more often (zero runs, padding) carry no
/// information about where a chunk came from.
const MAX_POSITIONS: usize = 8;
/// Displacements are voted for in buckets of this many bytes.
const BUCKET: i64 = 4096;

fn gear() -> [u64; 256] {
    // splitmix64: a fixed table, so publisher runs are reproducible.
    let mut t = [0u64; 256];
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    for v in t.iter_mut() {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        *v = z ^ (z >> 31);
    }
    t
}

/// Sampled (hash, position) pairs of `data`, positions relative to its start.
pub(crate) fn samples(data: &[u8], table: &[u64; 256], out: &mut Vec<(u64, u64)>) {
    out.clear();
    let mut h = 0u64;
    for (i, &b) in data.iter().enumerate() {
        h = (h << 1).wrapping_add(table[b as usize]);
        if i >= 63 && h >> 56 == 0 {
            out.push((h, i as u64));
        }
    }
}

pub(crate) struct OldIndex {
    table: [u64; 256],
    positions: HashMap<u64, Vec<u64>>,
}

impl OldIndex {
    /// Sample the whole old image (streamed in 1 MiB blocks; windows across block
    /// edges are skipped, which loses a few samples only).
    pub(crate) fn build(mut r: impl Read) -> std::io::Result<OldIndex> {
        let table = gear();
        let mut positions: HashMap<u64, Vec<u64>> = HashMap::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut base = 0u64;
        let mut s = Vec::new();
        loop {
            let n = read_full(&mut r, &mut buf)?;
            if n == 0 {
                break;
            }
            samples(&buf[..n], &table, &mut s);
            for &(h, p) in &s {
                let v = positions.entry(h).or_default();
                if v.len() <= MAX_POSITIONS {
                    v.push(base + p);
                }
            }
            base += n as u64;
        }
        Ok(OldIndex { table, positions })
    }

    /// Where `chunk` most likely starts in the old image (may be negative or past the
    /// end when only its tail matched), or `None` when nothing matched.
    pub(crate) fn locate(&self, chunk: &[u8], scratch: &mut Vec<(u64, u64)>) -> Option<i64> {
        samples(chunk, &self.table, scratch);
        let mut votes: HashMap<i64, u32> = HashMap::new();
        for &(h, p) in scratch.iter() {
            let Some(olds) = self.positions.get(&h) else {
                continue;
            };
            if olds.len() > MAX_POSITIONS {
                continue;
            }
            for &o in olds {
                let d = o as i64 - p as i64;
                *votes.entry(d.div_euclid(BUCKET)).or_default() += 1;
            }
        }
        // Ties go to the lower displacement, so the result does not depend on hash order.
        votes
            .into_iter()
            .max_by_key(|&(b, n)| (n, std::cmp::Reverse(b)))
            .map(|(b, _)| b * BUCKET)
    }
}

pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_moved_content() {
        let mut old = vec![0u8; 1 << 20];
        let mut x = 1u32;
        for b in old.iter_mut() {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *b = (x >> 24) as u8;
        }
        let idx = OldIndex::build(&old[..]).unwrap();
        let mut chunk = old[300_000..400_000].to_vec();
        chunk[5000..5100].fill(0xaa);
        let mut s = Vec::new();
        let at = idx.locate(&chunk, &mut s).unwrap();
        assert!((at - 300_000).abs() < BUCKET, "{at}");
        assert_eq!(idx.locate(&[0u8; 10_000], &mut s), None);
    }
}
