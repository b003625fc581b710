//! kill -9 at random points of a write, then resume: the install ends with exactly the
//! same verified result as an uninterrupted one, and resumes use `Range` from a
//! checkpoint instead of starting over.
//!
//! The writer runs in a child process (this test binary re-executed with
//! `PATCHD_STAGE_CHILD` set), so SIGKILL hits a real process mid-write.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{FaultServer, Faults};
use patchd::fetch::{HttpOptions, HttpSource};
use patchd::names::SlotName;
use patchd::slot::{
    stage_image, CancelToken, Compression, ImageFileSlot, ImageFormat, RawSlot, Slot, SlotState,
    StageOptions, StageRequest,
};
use rand::Rng;
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

fn slot(dir: &std::path::Path) -> Arc<ImageFileSlot> {
    Arc::new(ImageFileSlot::new(
        SlotName::new("b").unwrap(),
        dir.join("b.img"),
        &dir.join("state"),
    ))
}

fn opts() -> StageOptions {
    StageOptions {
        checkpoint_every: MIB,
        ..StageOptions::default()
    }
}

/// The child: stage the image described by the environment, then exit.
#[test]
fn child_entry() {
    let Ok(dir) = std::env::var("PATCHD_STAGE_CHILD") else {
        return; // not a child: nothing to do
    };
    let url = std::env::var("PATCHD_STAGE_URL").unwrap();
    let req: StageRequest =
        serde_json::from_str(&std::env::var("PATCHD_STAGE_REQ").unwrap()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let src = HttpSource::new(&url, HttpOptions::default()).unwrap();
        let s: Arc<dyn RawSlot> = slot(std::path::Path::new(&dir));
        stage_image(&req, &src, s, &opts(), None, &CancelToken::new())
            .await
            .unwrap();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_then_resume() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::noise(24 * MIB as usize + 4321, 42);
    let req = StageRequest::raw(
        "targets/img",
        "3.0",
        data.len() as u64,
        &hex::encode(Sha256::digest(&data)),
    );
    let server = FaultServer::start().await;
    server.add("targets/img", data.clone());
    kill_rounds(dir.path(), &server, &req).await;

    let s = finish(dir.path(), &server, &req).await;
    assert_eq!(std::fs::read(s.image_path()).unwrap(), data);
    let resumed: Vec<u64> = server.seen().iter().filter_map(|r| r.range_start).collect();
    assert!(
        resumed.iter().any(|&o| o > 0 && o % MIB == 0),
        "no run resumed from a checkpoint: {resumed:?}"
    );
}

/// A zstd image made of independent frames (as patchpub writes them) resumes in direct
/// mode from a frame boundary: the range requests start exactly at frame offsets of the
/// compressed stream, and the result is the same verified slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_compressed_direct_mode_then_resume_at_frame_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    // Half noise, half compressible, so frames differ in compressed size.
    let mut content = Vec::new();
    let mut frames = Vec::new();
    let mut boundaries = Vec::new();
    for i in 0..24u64 {
        let piece = if i % 2 == 0 {
            common::noise(MIB as usize, 100 + i)
        } else {
            vec![i as u8; MIB as usize]
        };
        frames.extend(zstd::encode_all(&piece[..], 3).unwrap());
        boundaries.push(frames.len() as u64);
        content.extend(piece);
    }
    let req = StageRequest {
        path: "targets/img.zst".into(),
        version: "3.0".into(),
        length: frames.len() as u64,
        sha256: hex::encode(Sha256::digest(&frames)),
        sha512: Some(hex::encode(sha2::Sha512::digest(&frames))),
        compression: Compression::Zstd,
        format: ImageFormat::Raw,
        size: content.len() as u64,
        content_sha256: hex::encode(Sha256::digest(&content)),
    };
    let server = FaultServer::start().await;
    server.add("targets/img.zst", frames.clone());
    kill_rounds(dir.path(), &server, &req).await;

    let s = finish(dir.path(), &server, &req).await;
    assert_eq!(std::fs::read(s.image_path()).unwrap(), content);
    let resumed: Vec<u64> = server
        .seen()
        .iter()
        .filter_map(|r| r.range_start)
        .filter(|&o| o > 0)
        .collect();
    assert!(!resumed.is_empty(), "no run resumed from a checkpoint");
    for o in &resumed {
        assert!(
            boundaries.contains(o),
            "resumed at {o}, which is not a frame boundary: {boundaries:?}"
        );
    }
}

/// Start the child three times, each killed (SIGKILL) at a random point after it passed
/// the previous checkpoint.
async fn kill_rounds(dir: &std::path::Path, server: &FaultServer, req: &StageRequest) {
    // ~64 KiB per 2 ms: a run takes long enough to be killed mid-write.
    server.set(Faults {
        chunk_delay: Some(Duration::from_millis(2)),
        ..Faults::default()
    });
    let exe = std::env::current_exe().unwrap();
    let cp = dir.join("state/slots/b.stage.json");
    let mut rng = rand::thread_rng();
    let mut kills = 0;
    for round in 0..3 {
        let mut child = Command::new(&exe)
            .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
            .env("PATCHD_STAGE_CHILD", dir)
            .env("PATCHD_STAGE_URL", server.url())
            .env("PATCHD_STAGE_REQ", serde_json::to_string(req).unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait for progress past the previous checkpoint, then a random extra delay.
        let before = checkpoint_offset(&cp);
        let t = Instant::now();
        while checkpoint_offset(&cp) <= before && t.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..150))).await;
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let _ = child.wait();
        let st = slot(dir).status().unwrap();
        assert!(
            kills == 0 || st.state == SlotState::Incomplete,
            "round {round}: killed slot must stay incomplete: {st:?}"
        );
    }
    assert!(kills > 0, "the child finished before it could be killed");
}

/// The final uninterrupted run in this process: verified, with the signed hash.
async fn finish(
    dir: &std::path::Path,
    server: &FaultServer,
    req: &StageRequest,
) -> Arc<ImageFileSlot> {
    server.set(Faults::default());
    let src = HttpSource::new(&server.url(), HttpOptions::default()).unwrap();
    let s = slot(dir);
    let st = stage_image(req, &src, s.clone(), &opts(), None, &CancelToken::new())
        .await
        .unwrap();
    assert_eq!(st.state, SlotState::Verified);
    assert_eq!(st.sha256.as_deref(), Some(req.content_sha256.as_str()));
    s
}

fn checkpoint_offset(path: &std::path::Path) -> u64 {
    let Ok(b) = std::fs::read(path) else { return 0 };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b) else {
        return 0;
    };
    v["content_offset"].as_u64().unwrap_or(0)
}
