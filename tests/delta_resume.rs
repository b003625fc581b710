//! Power cut in the middle of applying a delta (modelled by cancelling the run at a
//! piece boundary, which leaves exactly what a cut leaves: some pieces written, the slot
//! `incomplete`): the next run produces the right image and keeps the pieces already in
//! place instead of decoding or fetching them again. The same with a real process killed
//! by SIGKILL mid-stage: tests/delta_power_cut.rs.

mod delta_support;

use std::sync::atomic::{AtomicU64, Ordering};

use delta_support::*;
use patchd::delta::{self, ChunkIndex, Control, DeltaError, LocalImage, TargetImage};
use patchd::slot::{Slot, SlotState};

fn local(path: &std::path::Path, sha256: Option<String>) -> LocalImage {
    let file = std::fs::File::open(path).unwrap();
    LocalImage {
        size: file.metadata().unwrap().len(),
        file,
        sha256,
    }
}

/// Cancels once `limit` bytes of the new image are done.
fn cut_at(done: &AtomicU64, limit: u64) -> impl Fn() -> bool + Sync + '_ {
    move || done.load(Ordering::SeqCst) >= limit
}

#[test]
fn static_delta_resumes_after_a_cut() {
    let f = Files::new();
    let opts = delta::EncodeOptions {
        level: 3,
        ..Default::default()
    };
    delta::encode_static(&f.path("v1.img"), &f.path("v2.img"), &f.path("d"), &opts).unwrap();
    let d = std::fs::File::open(f.path("d")).unwrap();
    let len = d.metadata().unwrap().len();
    let slot = f.slot();
    let want = sha(&v2());
    let t = TargetImage {
        slot: &slot,
        version: "2.0.0",
        size: SIZE as u64,
        sha256: &want,
    };
    let base = || local(&f.path("v1.img"), Some(sha(&v1())));

    let done = AtomicU64::new(0);
    let progress = |d: u64, _t: u64| done.store(d, Ordering::SeqCst);
    let cancelled = cut_at(&done, SIZE as u64 / 2);
    let ctl = Control {
        progress: &progress,
        cancelled: &cancelled,
    };
    let e = delta::apply_static(&d, len, &base(), &t, &ctl).unwrap_err();
    assert!(matches!(e, DeltaError::Cancelled), "{e}");
    assert_eq!(slot.status().unwrap().state, SlotState::Incomplete);
    assert_ne!(std::fs::read(f.path("b.img")).unwrap(), v2());

    let resumed = delta::apply_static(&d, len, &base(), &t, &Control::none()).unwrap();
    assert_eq!(std::fs::read(f.path("b.img")).unwrap(), v2());
    assert_eq!(slot.status().unwrap().state, SlotState::Verified);
    // At least the first half was found in place.
    assert!(resumed.bytes_reused >= SIZE as u64 / 2, "{resumed:?}");
}

#[test]
fn dynamic_delta_resumes_without_refetching_verified_chunks() {
    let f = Files::new();
    let idx = delta::build_chunk_store(&f.path("v2.img"), &f.path("store"), delta::DYNAMIC_CDC, 3)
        .unwrap();
    let idx = ChunkIndex::parse(&idx.encode()).unwrap();
    let store = std::fs::File::open(f.path("store")).unwrap();
    let slot = f.slot();
    let want = sha(&v2());
    let t = TargetImage {
        slot: &slot,
        version: "2.0.0",
        size: SIZE as u64,
        sha256: &want,
    };
    // No local base at all: every chunk comes from the store.
    let fetched = AtomicU64::new(0);
    let mut fetch = |off: u64, len: u64| {
        fetched.fetch_add(len, Ordering::SeqCst);
        read_range(&store, off, len)
    };
    let done = AtomicU64::new(0);
    let progress = |d: u64, _t: u64| done.store(d, Ordering::SeqCst);
    let cancelled = cut_at(&done, SIZE as u64 / 2);
    let ctl = Control {
        progress: &progress,
        cancelled: &cancelled,
    };
    let e = delta::apply_dynamic(&idx, &mut fetch, &[], &t, &ctl).unwrap_err();
    assert!(matches!(e, DeltaError::Cancelled), "{e}");
    assert_eq!(slot.status().unwrap().state, SlotState::Incomplete);
    let first = fetched.swap(0, Ordering::SeqCst);
    assert!(first > 0);

    let r = delta::apply_dynamic(&idx, &mut fetch, &[], &t, &Control::none()).unwrap();
    let second = fetched.load(Ordering::SeqCst);
    assert_eq!(std::fs::read(f.path("b.img")).unwrap(), v2());
    assert_eq!(slot.status().unwrap().state, SlotState::Verified);
    assert_eq!(r.bytes_fetched, second);
    // At most the run in flight at the cut (≤ 4 MiB) is fetched twice.
    assert!(
        first + second <= idx.store_size + (4 << 20),
        "{first} + {second} vs {}",
        idx.store_size
    );
    assert!(second < idx.store_size, "{second} vs {}", idx.store_size);
    assert!(r.bytes_reused >= first.min(1), "{r:?}");
}
