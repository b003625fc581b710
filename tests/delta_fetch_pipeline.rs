//! The dynamic delta's fetching: neighbouring missing chunks are coalesced into one range
//! (across small gaps of chunks the device has, up to a range limit), several range
//! requests are in flight at once but never more than configured, ranges never overlap
//! or leave the store, and the slot still ends byte-identical and verified.

mod delta_support;

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use delta_support::*;
use patchd::delta::apply::{DynamicOptions, Pipelined};
use patchd::delta::{self, ApplyReport, ChunkIndex, Control, LocalImage, TargetImage};
use patchd::fetch::{BoxFuture, ByteReader, ByteSource, FetchError, FileSource};
use patchd::slot::{Slot, SlotState};
use tokio::io::{AsyncRead, ReadBuf};

/// A file source that records every range request and how many are open at once (a
/// request counts from its start until its reader is dropped).
struct Counting {
    inner: FileSource,
    active: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    ranges: Mutex<Vec<(u64, u64)>>,
}

struct Tracked {
    inner: ByteReader,
    active: Arc<AtomicUsize>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ByteSource for Counting {
    fn describe(&self) -> String {
        "counting".into()
    }
    fn open<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        limit: u64,
    ) -> BoxFuture<'a, Result<ByteReader, FetchError>> {
        self.inner.open(path, offset, limit)
    }
    fn open_range<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        len: u64,
        file_len: u64,
    ) -> BoxFuture<'a, Result<ByteReader, FetchError>> {
        Box::pin(async move {
            self.ranges.lock().unwrap().push((offset, len));
            let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
            self.max.fetch_max(now, Ordering::SeqCst);
            // A slow link: requests overlap if the caller lets them.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let inner = match self.inner.open_range(path, offset, len, file_len).await {
                Ok(r) => r,
                Err(e) => {
                    self.active.fetch_sub(1, Ordering::SeqCst);
                    return Err(e);
                }
            };
            let r: ByteReader = Box::new(Tracked {
                inner,
                active: self.active.clone(),
            });
            Ok(r)
        })
    }
}

struct Outcome {
    report: ApplyReport,
    ranges: Vec<(u64, u64)>,
    max_in_flight: usize,
}

/// Build `new` into a fresh slot from its chunk store, with `base` as the local image.
fn run(new: &[u8], base: Option<&[u8]>, in_flight: usize, opts: DynamicOptions) -> Outcome {
    let f = Files::new();
    std::fs::write(f.path("new.img"), new).unwrap();
    let idx = delta::build_chunk_store(&f.path("new.img"), &f.path("store"), delta::DYNAMIC_CDC, 3)
        .unwrap();
    let idx = ChunkIndex::parse(&idx.encode()).unwrap();
    let locals: Vec<LocalImage> = base
        .map(|b| {
            std::fs::write(f.path("base.img"), b).unwrap();
            let file = std::fs::File::open(f.path("base.img")).unwrap();
            LocalImage {
                file,
                size: b.len() as u64,
                sha256: Some(sha(b)),
            }
        })
        .into_iter()
        .collect();
    let src = Arc::new(Counting {
        inner: FileSource::new(f.tmp.path()),
        active: Arc::default(),
        max: Arc::default(),
        ranges: Mutex::default(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut store = Pipelined::new(
        rt.handle().clone(),
        src.clone(),
        "store".into(),
        idx.store_size,
        in_flight,
    );
    let slot = f.slot();
    let want = sha(new);
    let t = TargetImage {
        slot: &slot,
        version: "2.0.0",
        size: new.len() as u64,
        sha256: &want,
    };
    let report =
        delta::apply_dynamic_with(&idx, &mut store, &locals, &t, &Control::none(), &opts).unwrap();
    assert!(
        std::fs::read(f.path("b.img")).unwrap() == new,
        "slot differs from the new image"
    );
    assert_eq!(slot.status().unwrap().state, SlotState::Verified);
    let mut ranges = src.ranges.lock().unwrap().clone();
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "overlapping ranges {w:?}");
    }
    if let Some(&(o, l)) = ranges.last() {
        assert!(o + l <= idx.store_size);
    }
    let fetched: u64 = ranges.iter().map(|r| r.1).sum();
    assert_eq!(report.bytes_fetched, fetched);
    Outcome {
        report,
        ranges,
        max_in_flight: src.max.load(Ordering::SeqCst),
    }
}

#[test]
fn adjacent_missing_chunks_come_in_few_bounded_ranges_with_bounded_concurrency() {
    // No local image: every chunk is missing and adjacent to the next.
    let opts = DynamicOptions {
        max_run: 256 << 10,
        ..DynamicOptions::default()
    };
    let o = run(&v2(), None, 3, opts);
    let chunks = SIZE / (16 << 10);
    assert!(
        o.ranges.len() * 4 < chunks,
        "{} ranges for ~{chunks} chunks",
        o.ranges.len()
    );
    assert!(o.ranges.iter().all(|r| r.1 <= 256 << 10), "{:?}", o.ranges);
    assert!(o.ranges.len() >= 8, "{:?}", o.ranges);
    assert!(o.max_in_flight <= 3, "{} requests at once", o.max_in_flight);
    assert!(o.max_in_flight >= 2, "requests never overlapped");

    // One at a time when asked for it.
    let o = run(&v2(), None, 1, opts);
    assert_eq!(o.max_in_flight, 1);
}

#[test]
fn small_gaps_of_present_chunks_are_fetched_over_instead_of_split() {
    // 4 KiB changed every 40 KiB: missing chunks with one or two present ones between.
    let base = v1();
    let mut new = base.clone();
    for (k, at) in (0..SIZE - 4096).step_by(40 << 10).enumerate() {
        new[at..at + 4096].copy_from_slice(&noise(1000 + k as u64, 4096));
    }
    let no_gap = DynamicOptions {
        max_gap: 0,
        ..DynamicOptions::default()
    };
    let gap = DynamicOptions {
        max_gap: 64 << 10,
        ..DynamicOptions::default()
    };
    let a = run(&new, Some(&base), 4, no_gap);
    let b = run(&new, Some(&base), 4, gap);
    assert!(
        b.ranges.len() * 3 < a.ranges.len(),
        "{} ranges with gaps spanned vs {} without",
        b.ranges.len(),
        a.ranges.len()
    );
    // Spanning gaps costs their bytes, never correctness.
    assert!(b.report.bytes_fetched >= a.report.bytes_fetched);
    assert!(a.report.bytes_reused > 0);
}
