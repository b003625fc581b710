//! A delta header or chunk index that lies about hashes is caught before anything is
//! marked verified: a wrong piece hash, a wrong base hash, a target other than the
//! manifest's, or a chunk hash that the fetched bytes do not have. (Lying lengths are
//! refused by the parsers; see the unit tests in src/delta/format.rs and index.rs.)

mod delta_support;

use delta_support::*;
use patchd::delta::format::{ENTRY_LEN, HEADER_LEN};
use patchd::delta::{self, ChunkIndex, Control, DeltaError, LocalImage, TargetImage};
use patchd::slot::{Slot, SlotState};

fn base(f: &Files) -> LocalImage {
    let file = std::fs::File::open(f.path("v1.img")).unwrap();
    LocalImage {
        size: SIZE as u64,
        file,
        sha256: Some(sha(&v1())),
    }
}

fn encode(f: &Files) -> std::path::PathBuf {
    let opts = delta::EncodeOptions {
        level: 3,
        ..Default::default()
    };
    let p = f.path("d");
    delta::encode_static(&f.path("v1.img"), &f.path("v2.img"), &p, &opts).unwrap();
    p
}

fn apply(f: &Files, d: &std::path::Path, want: &str) -> Result<delta::ApplyReport, DeltaError> {
    let slot = f.slot();
    let t = TargetImage {
        slot: &slot,
        version: "2.0.0",
        size: SIZE as u64,
        sha256: want,
    };
    let file = std::fs::File::open(d).unwrap();
    let len = file.metadata().unwrap().len();
    let r = delta::apply_static(&file, len, &base(f), &t, &Control::none());
    if r.is_err() {
        assert!(
            !slot.status().unwrap().state.is_bootable(),
            "slot became bootable"
        );
    }
    r
}

#[test]
fn static_delta_with_honest_header_applies() {
    let f = Files::new();
    let d = encode(&f);
    apply(&f, &d, &sha(&v2())).unwrap();
    assert_eq!(f.slot().status().unwrap().state, SlotState::Verified);
}

#[test]
fn wrong_piece_hash_is_rejected() {
    let f = Files::new();
    let d = encode(&f);
    // Entry 3's out_sha256 (offset 24 inside the entry).
    patch(&d, HEADER_LEN + 3 * ENTRY_LEN + 24, &[0xee; 32]);
    let e = apply(&f, &d, &sha(&v2())).unwrap_err();
    assert!(
        matches!(e, DeltaError::PieceCorrupt { index: 3, .. }),
        "{e}"
    );
}

#[test]
fn wrong_base_hash_is_rejected() {
    let f = Files::new();
    let d = encode(&f);
    for i in 0..4 {
        patch(&d, HEADER_LEN + i * ENTRY_LEN + 56, &[0xee; 32]);
    }
    let e = apply(&f, &d, &sha(&v2())).unwrap_err();
    // A copy's base hash must equal its output hash (parser) or fails as a base.
    assert!(
        matches!(
            e,
            DeltaError::BaseCorrupt { .. } | DeltaError::Format { .. }
        ),
        "{e}"
    );
}

#[test]
fn target_other_than_the_manifests_is_rejected() {
    let f = Files::new();
    let d = encode(&f);
    let e = apply(&f, &d, &sha(b"another image")).unwrap_err();
    assert!(matches!(e, DeltaError::Format { .. }), "{e}");
    // Header target hash changed to match a lying manifest: the final check catches it.
    let other = sha(b"another image");
    let mut raw = [0u8; 32];
    hex::decode_to_slice(&other, &mut raw).unwrap();
    patch(&d, 64, &raw);
    let e = apply(&f, &d, &other).unwrap_err();
    assert!(matches!(e, DeltaError::FinalHash { .. }), "{e}");
}

#[test]
fn wrong_source_is_rejected() {
    let f = Files::new();
    let d = encode(&f);
    let slot = f.slot();
    let want = sha(&v2());
    let t = TargetImage {
        slot: &slot,
        version: "2.0.0",
        size: SIZE as u64,
        sha256: &want,
    };
    let mut b = base(&f);
    b.sha256 = Some(sha(b"not v1"));
    let file = std::fs::File::open(&d).unwrap();
    let len = file.metadata().unwrap().len();
    let e = delta::apply_static(&file, len, &b, &t, &Control::none()).unwrap_err();
    assert!(matches!(e, DeltaError::SourceMismatch { .. }), "{e}");
}

#[test]
fn chunk_index_with_a_wrong_chunk_hash_is_rejected() {
    let f = Files::new();
    let idx = delta::build_chunk_store(&f.path("v2.img"), &f.path("store"), delta::DYNAMIC_CDC, 3)
        .unwrap();
    let mut bytes = idx.encode();
    // Chunk 0's sha256 (index header 80 bytes, entry 40 bytes, sha at +8).
    bytes[80 + 8..80 + 40].fill(0xee);
    let idx = ChunkIndex::parse(&bytes).unwrap();
    let store = std::fs::File::open(f.path("store")).unwrap();
    let slot = f.slot();
    let want = sha(&v2());
    let t = TargetImage {
        slot: &slot,
        version: "2.0.0",
        size: SIZE as u64,
        sha256: &want,
    };
    let mut fetch = |off, len| read_range(&store, off, len);
    let e = delta::apply_dynamic(&idx, &mut fetch, &[], &t, &Control::none()).unwrap_err();
    assert!(
        matches!(e, DeltaError::PieceCorrupt { index: 0, .. }),
        "{e}"
    );
    assert!(!slot.status().unwrap().state.is_bootable());
    // A lying length is refused by the parser.
    let mut bytes = idx.encode();
    bytes[80..84].copy_from_slice(&1u32.to_le_bytes());
    assert!(ChunkIndex::parse(&bytes).is_err());
}
