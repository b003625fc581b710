//! Shared by the delta tests: reproducible images and an image-file target slot.
#![allow(dead_code)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use patchd::delta::DeltaError;
use patchd::names::SlotName;
use patchd::slot::ImageFileSlot;

pub const SIZE: usize = 3 << 20;

pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

pub fn v1() -> Vec<u8> {
    noise(1, SIZE)
}

pub fn v2() -> Vec<u8> {
    let mut v = v1();
    for k in 0..12 {
        let at = 100_000 + k * 230_000;
        v[at..at + 4096].copy_from_slice(&noise(100 + k as u64, 4096));
    }
    v.splice(1_000_000..1_000_000, noise(7, 5000));
    v.truncate(SIZE);
    v
}

pub fn sha(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(b))
}

pub struct Files {
    pub tmp: tempfile::TempDir,
}

impl Files {
    pub fn new() -> Files {
        let f = Files {
            tmp: tempfile::tempdir().unwrap(),
        };
        std::fs::write(f.path("v1.img"), v1()).unwrap();
        std::fs::write(f.path("v2.img"), v2()).unwrap();
        f
    }
    pub fn path(&self, n: &str) -> PathBuf {
        self.tmp.path().join(n)
    }
    pub fn slot(&self) -> ImageFileSlot {
        ImageFileSlot::new(
            SlotName::new("b").unwrap(),
            self.path("b.img"),
            &self.path("state"),
        )
    }
}

/// Range reads of a local chunk store, counting the bytes.
pub fn store_reader(store: &Path) -> (File, std::cell::Cell<u64>) {
    (File::open(store).unwrap(), std::cell::Cell::new(0))
}

pub fn read_range(f: &File, off: u64, len: u64) -> Result<Vec<u8>, DeltaError> {
    let mut b = vec![0u8; len as usize];
    f.read_exact_at(&mut b, off).map_err(|e| DeltaError::Io {
        what: "store".into(),
        source: e,
    })?;
    Ok(b)
}

pub fn patch(path: &Path, at: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}
