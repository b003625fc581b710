//! The publisher's encoders are parallel but deterministic: a static delta and a chunk
//! store are byte-identical whatever the thread count, and deltas made at any zstd level
//! rebuild the new image exactly through the device's `apply_static`.

mod delta_support;

use delta_support::*;
use patchd::delta::{self, ChunkIndex, Control, LocalImage, TargetImage};

fn encode(f: &Files, out: &str, level: i32, threads: usize) -> (delta::EncodeStats, Vec<u8>) {
    let opts = delta::EncodeOptions {
        level,
        threads,
        ..Default::default()
    };
    let s =
        delta::encode_static(&f.path("v1.img"), &f.path("v2.img"), &f.path(out), &opts).unwrap();
    (s, std::fs::read(f.path(out)).unwrap())
}

fn apply(f: &Files, delta_file: &str) -> Vec<u8> {
    let _ = std::fs::remove_file(f.path("b.img"));
    let _ = std::fs::remove_dir_all(f.path("state"));
    let d = std::fs::File::open(f.path(delta_file)).unwrap();
    let len = d.metadata().unwrap().len();
    let old = std::fs::File::open(f.path("v1.img")).unwrap();
    let base = LocalImage {
        size: old.metadata().unwrap().len(),
        file: old,
        sha256: Some(sha(&v1())),
    };
    let slot = f.slot();
    let want = sha(&v2());
    let t = TargetImage {
        slot: &slot,
        version: "2.0.0",
        size: SIZE as u64,
        sha256: &want,
    };
    delta::apply_static(&d, len, &base, &t, &Control::none()).unwrap();
    std::fs::read(f.path("b.img")).unwrap()
}

#[test]
fn static_delta_is_the_same_for_any_thread_count() {
    let f = Files::new();
    let (s1, one) = encode(&f, "d1", 3, 1);
    let (s4, four) = encode(&f, "d4", 3, 4);
    let (s0, auto) = encode(&f, "d0", 3, 0);
    assert_eq!(s1, s4);
    assert_eq!(s1, s0);
    assert!(
        one == four && one == auto,
        "deltas differ between thread counts"
    );
    // the test images exercise every kind of piece that matters: copies and based ones
    assert!(s1.copies > 0 && s1.with_base > 0, "{s1:?}");
    assert_eq!(apply(&f, "d4"), v2());
}

#[test]
fn chunk_store_is_the_same_for_any_thread_count() {
    let f = Files::new();
    let a = delta::build_chunk_store_on(&f.path("v2.img"), &f.path("s1"), delta::DYNAMIC_CDC, 3, 1)
        .unwrap();
    let b = delta::build_chunk_store_on(&f.path("v2.img"), &f.path("s3"), delta::DYNAMIC_CDC, 3, 3)
        .unwrap();
    assert_eq!(a.encode(), b.encode());
    assert_eq!(
        std::fs::read(f.path("s1")).unwrap(),
        std::fs::read(f.path("s3")).unwrap()
    );
    // the index still describes the image and the store it was written with
    let idx = ChunkIndex::parse(&a.encode()).unwrap();
    assert_eq!(idx.image_size, SIZE as u64);
    assert_eq!(hex::encode(idx.image_sha256), sha(&v2()));
    assert_eq!(
        idx.store_size,
        std::fs::metadata(f.path("s1")).unwrap().len()
    );
}

#[test]
fn every_level_round_trips_and_higher_levels_are_not_larger() {
    let f = Files::new();
    let mut sizes = Vec::new();
    for level in [1, 3, delta::DEFAULT_LEVEL] {
        let name = format!("d{level}");
        let (s, _) = encode(&f, &name, level, 0);
        assert_eq!(apply(&f, &name), v2(), "level {level}");
        sizes.push((level, s.len));
    }
    let (_, fastest) = sizes[0];
    let (_, default) = sizes[2];
    assert!(default <= fastest, "{sizes:?}");
    // a delta is a small share of the image it rebuilds
    assert!(default * 10 < SIZE as u64, "{sizes:?}");
}
