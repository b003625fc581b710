//! Download-to-cache mode: resumable (also for compressed images), bounded, cleaned
//! after commit; a full disk while caching is a clear error and leaves the slot alone.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::disk::Mount;
use common::http::{FaultServer, Faults};
use common::image::sha256_hex as sha;
use common::image::zstd_request;
use patchd::fetch::{HttpOptions, HttpSource, RetryPolicy};
use patchd::names::SlotName;
use patchd::slot::{
    stage_image_cached, CancelToken, DownloadCache, ImageFileSlot, ImageFormat, RawSlot, Slot,
    SlotState, StageError, StageOptions, StageRequest,
};

const MIB: u64 = 1 << 20;

fn image() -> (StageRequest, Vec<u8>, Vec<u8>) {
    let mut content = common::noise(MIB as usize, 77);
    content.extend(std::iter::repeat_n(3u8, 2 * MIB as usize));
    let z = zstd::encode_all(&content[..], 1).unwrap();
    let req = zstd_request("targets/os.img.zst", "7", ImageFormat::Raw, &content, &z);
    (req, content, z)
}

fn http(s: &FaultServer) -> HttpSource {
    HttpSource::new(
        &s.url(),
        HttpOptions {
            retry: RetryPolicy {
                max_attempts: 2,
                initial_backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(5),
                jitter: false,
            },
            ..HttpOptions::default()
        },
    )
    .unwrap()
}

#[tokio::test]
async fn compressed_image_resumes_through_the_cache_and_cache_is_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let (req, content, z) = image();
    let server = FaultServer::start().await;
    server.add("targets/os.img.zst", z.clone());
    let slot = Arc::new(ImageFileSlot::new(
        SlotName::new("b").unwrap(),
        dir.path().join("b.img"),
        &dir.path().join("state"),
    ));
    let cache =
        DownloadCache::new(dir.path().join("cache"), 64 * MIB).with_checkpoint_every(64 << 10);
    let cut = z.len() as u64 / 2;
    server.set(Faults {
        truncate_at: Some(cut),
        truncate_times: 100,
        ..Faults::default()
    });
    let src = http(&server);
    let s: Arc<dyn RawSlot> = slot.clone();
    let err = stage_image_cached(
        &req,
        &src,
        s.clone(),
        &cache,
        &StageOptions::default(),
        None,
        &CancelToken::new(),
    )
    .await
    .unwrap_err();
    assert!(err.is_resumable(), "{err}");
    // The slot was not touched at all in the caching phase.
    assert_eq!(slot.status().unwrap().state, SlotState::Empty);
    assert!(!slot.image_path().exists());

    server.set(Faults::default());
    let st = stage_image_cached(
        &req,
        &src,
        s,
        &cache,
        &StageOptions::default(),
        None,
        &CancelToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(st.state, SlotState::Verified);
    assert_eq!(std::fs::read(slot.image_path()).unwrap(), content);
    let resumed: Vec<_> = server.seen().iter().filter_map(|r| r.range_start).collect();
    assert!(resumed.iter().any(|&o| o > 0 && o <= cut), "{resumed:?}");

    cache.clean().unwrap();
    assert_eq!(std::fs::read_dir(cache.dir()).unwrap().count(), 0);
}

#[tokio::test]
async fn cache_limit_is_enforced_before_downloading() {
    let dir = tempfile::tempdir().unwrap();
    let (req, _, z) = image();
    let server = FaultServer::start().await;
    server.add("targets/os.img.zst", z);
    let cache = DownloadCache::new(dir.path().join("cache"), 1024);
    let err = cache
        .fetch(&req, &http(&server), &CancelToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, StageError::CacheFull { .. }), "{err}");
    assert!(server.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_while_caching() {
    let t = "disk_full_while_caching";
    if !common::require_root(t) || !common::require_tools(t, &["mount", "umount"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("cache");
    let _tmpfs = Mount::virtual_fs("tmpfs", Some("size=2m"), &mnt);

    let data = common::noise(1536 << 10, 8); // 1.5 MiB fits into 2 MiB free …
    let req = StageRequest::raw("targets/img", "8", data.len() as u64, &sha(&data));
    let server = FaultServer::start().await;
    server.add("targets/img", data);
    server.set(Faults {
        chunk_delay: Some(Duration::from_millis(30)),
        ..Faults::default()
    });
    let slot = Arc::new(ImageFileSlot::new(
        SlotName::new("b").unwrap(),
        dir.path().join("b.img"),
        &dir.path().join("state"),
    ));
    let cache = DownloadCache::new(&mnt, 64 * MIB);
    // … until something else fills the disk while we download.
    let filler = mnt.join("filler");
    let part = mnt.join(format!("{}.part", req.sha256));
    let fill = tokio::spawn(async move {
        while !part.exists() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = std::fs::write(&filler, vec![0u8; 2 << 20]);
    });
    let src = http(&server);
    let s: Arc<dyn RawSlot> = slot.clone();
    let err = stage_image_cached(
        &req,
        &src,
        s,
        &cache,
        &StageOptions::default(),
        None,
        &CancelToken::new(),
    )
    .await
    .unwrap_err();
    fill.await.unwrap();
    assert!(
        matches!(&err, StageError::CacheFull { why, .. } if why.contains("no space")),
        "{err}"
    );
    assert!(
        !mnt.join(format!("{}.part", req.sha256)).exists(),
        "partial left behind"
    );
    assert_eq!(slot.status().unwrap().state, SlotState::Empty);

    // And an image larger than the free space is refused up front.
    let big = StageRequest::raw("targets/img", "8", 3 * MIB, &sha(b"x"));
    let err = cache
        .fetch(&big, &src, &CancelToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StageError::CacheFull { why, .. } if why.contains("free")),
        "{err}"
    );
}
