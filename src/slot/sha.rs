//! SHA-256 and SHA-512 whose running state can be written into a staging checkpoint.
//!
//! A compressed image's transfer hash covers bytes that are never stored on the device,
//! so after a power cut it cannot be rebuilt by re-reading the slot. These hashers keep
//! their state in plain fields (chaining value, pending partial block, length) so a
//! checkpoint can save it and a later run continue exactly where the interrupted one
//! stopped. The compression function is `sha2`'s (SHA-NI, assembly or portable, chosen at
//! run time), so speed and results are those of `sha2::Sha256`/`Sha512`.

use serde::{Deserialize, Serialize};
// generic-array 0.14 is what sha2 0.10's compression functions take.
#[allow(deprecated)]
use sha2::digest::generic_array::GenericArray;
use sha2::digest::typenum::{U128, U64};

const INIT256: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];
const INIT512: [u64; 8] = [
    0x6a09e667f3bcc908,
    0xbb67ae8584caa73b,
    0x3c6ef372fe94f82b,
    0xa54ff53a5f1d36f1,
    0x510e527fade682d1,
    0x9b05688c2b3e6c1f,
    0x1f83d9abfb41bd6b,
    0x5be0cd19137e2179,
];

#[allow(deprecated)]
fn compress256(state: &mut [u32; 8], data: &[u8]) {
    debug_assert_eq!(data.len() % 64, 0);
    // SAFETY: `GenericArray<u8, U64>` is `repr(C)` over `[u8; 64]` (size 64, alignment 1),
    // so a byte slice whose length is a multiple of 64 is a valid slice of blocks.
    let blocks: &[GenericArray<u8, U64>] =
        unsafe { std::slice::from_raw_parts(data.as_ptr().cast(), data.len() / 64) };
    sha2::compress256(state, blocks);
}

#[allow(deprecated)]
fn compress512(state: &mut [u64; 8], data: &[u8]) {
    debug_assert_eq!(data.len() % 128, 0);
    // SAFETY: as above, with 128-byte blocks.
    let blocks: &[GenericArray<u8, U128>] =
        unsafe { std::slice::from_raw_parts(data.as_ptr().cast(), data.len() / 128) };
    sha2::compress512(state, blocks);
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

macro_rules! resumable {
    ($name:ident, $word:ty, $init:expr, $block:expr, $lenbytes:expr, $compress:ident, $out:expr) => {
        /// A resumable hasher; see the module documentation.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            state: [$word; 8],
            /// The bytes of the unfinished block (hex; shorter than one block).
            #[serde(with = "hex_bytes")]
            pending: Vec<u8>,
            /// Total bytes hashed.
            len: u64,
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl $name {
            pub fn new() -> Self {
                Self {
                    state: $init,
                    pending: Vec::new(),
                    len: 0,
                }
            }

            /// Bytes hashed so far.
            pub fn len(&self) -> u64 {
                self.len
            }

            pub fn is_empty(&self) -> bool {
                self.len == 0
            }

            /// A state read from a checkpoint must be one this type can produce.
            pub fn is_valid(&self) -> bool {
                self.pending.len() < $block && self.len % $block as u64 == self.pending.len() as u64
            }

            pub fn update(&mut self, mut data: &[u8]) {
                self.len += data.len() as u64;
                if !self.pending.is_empty() {
                    let take = ($block - self.pending.len()).min(data.len());
                    self.pending.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.pending.len() < $block {
                        return;
                    }
                    let block = std::mem::take(&mut self.pending);
                    $compress(&mut self.state, &block);
                }
                let whole = data.len() / $block * $block;
                if whole > 0 {
                    $compress(&mut self.state, &data[..whole]);
                }
                self.pending.extend_from_slice(&data[whole..]);
            }

            /// The digest (standard padding: 0x80, zeros, big-endian bit length).
            pub fn finalize(mut self) -> [u8; $out] {
                let bits = u128::from(self.len) * 8;
                let mut tail = std::mem::take(&mut self.pending);
                tail.push(0x80);
                while tail.len() % $block != $block - $lenbytes {
                    tail.push(0);
                }
                tail.extend_from_slice(&bits.to_be_bytes()[16 - $lenbytes..]);
                $compress(&mut self.state, &tail);
                let mut out = [0u8; $out];
                for (o, w) in out.chunks_mut(std::mem::size_of::<$word>()).zip(self.state) {
                    o.copy_from_slice(&w.to_be_bytes());
                }
                out
            }
        }
    };
}

resumable!(Sha256State, u32, INIT256, 64, 8, compress256, 32);
resumable!(Sha512State, u64, INIT512, 128, 16, compress512, 64);

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256, Sha512};

    #[test]
    fn equals_sha2_across_save_and_restore() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for len in [
            0usize, 1, 55, 56, 63, 64, 111, 112, 127, 128, 129, 1000, 100_000,
        ] {
            for cut in [0, len / 3, len.saturating_sub(1), len] {
                let d = &data[..len];
                let mut a = Sha256State::new();
                let mut b = Sha512State::new();
                a.update(&d[..cut]);
                b.update(&d[..cut]);
                // Through JSON, as a checkpoint would.
                let mut a: Sha256State =
                    serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
                let mut b: Sha512State =
                    serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
                assert!(a.is_valid() && b.is_valid());
                a.update(&d[cut..]);
                b.update(&d[cut..]);
                assert_eq!(a.len(), len as u64);
                assert_eq!(
                    a.finalize()[..],
                    Sha256::digest(d)[..],
                    "len {len} cut {cut}"
                );
                assert_eq!(
                    b.finalize()[..],
                    Sha512::digest(d)[..],
                    "len {len} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn inconsistent_state_is_invalid() {
        let mut a = Sha256State::new();
        a.update(b"abc");
        let mut v = serde_json::to_value(&a).unwrap();
        v["len"] = serde_json::json!(4);
        let bad: Sha256State = serde_json::from_value(v).unwrap();
        assert!(!bad.is_valid());
    }
}
