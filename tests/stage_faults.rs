//! Staging into image-file slots under faults: every failure names what was wrong,
//! leaves the target slot non-bootable and the running slot untouched.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::http::{FaultServer, Faults};
use patchd::fetch::{FetchError, FileSource, HttpOptions, HttpSource, RetryPolicy};
use patchd::names::SlotName;
use patchd::slot::{
    stage_image, CancelToken, Compression, ImageFileSlot, ImageFormat, RawSlot, Slot, SlotError,
    SlotState, StageError, StageOptions, StageProgress, StageRequest,
};
use sha2::{Digest, Sha256, Sha512};

const MIB: u64 = 1 << 20;

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn raw_req(data: &[u8]) -> StageRequest {
    let mut r = StageRequest::raw("targets/img", "2.0", data.len() as u64, &sha256(data));
    r.sha512 = Some(hex::encode(Sha512::digest(data)));
    r
}

fn zstd_req(content: &[u8], compressed: &[u8]) -> StageRequest {
    StageRequest {
        path: "targets/img.zst".into(),
        version: "2.0".into(),
        length: compressed.len() as u64,
        sha256: sha256(compressed),
        sha512: None,
        compression: Compression::Zstd,
        format: ImageFormat::Raw,
        size: content.len() as u64,
        content_sha256: sha256(content),
    }
}

fn opts() -> StageOptions {
    StageOptions {
        checkpoint_every: MIB,
        ..StageOptions::default()
    }
}

fn http_opts() -> HttpOptions {
    HttpOptions {
        connect_timeout: Duration::from_secs(2),
        stall_timeout: Duration::from_millis(300),
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
            jitter: true,
        },
        ..HttpOptions::default()
    }
}

/// A running slot `a` (good, with content) and a target slot `b` in a temp dir.
struct Rig {
    dir: tempfile::TempDir,
    a: Arc<ImageFileSlot>,
    b: Arc<ImageFileSlot>,
    a_before: (Vec<u8>, String),
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let a = Arc::new(
            ImageFileSlot::new(
                SlotName::new("a").unwrap(),
                dir.path().join("a.img"),
                &state,
            )
            .with_booted(true),
        );
        let b = Arc::new(
            ImageFileSlot::new(
                SlotName::new("b").unwrap(),
                dir.path().join("b.img"),
                &state,
            )
            .with_capacity(64 * MIB),
        );
        // Give the running slot verified content the simple way: install it unbooted.
        let running = common::noise(100_000, 99);
        std::fs::write(dir.path().join("a.img"), &running).unwrap();
        let rec = format!(
            r#"{{"slot":"a","state":"good","version":"1.0","sha256":"{}","size":{},"installed_at":null}}"#,
            sha256(&running),
            running.len()
        );
        std::fs::create_dir_all(state.join("slots")).unwrap();
        std::fs::write(state.join("slots/a.json"), rec).unwrap();
        let a_before = (
            running,
            std::fs::read_to_string(state.join("slots/a.json")).unwrap(),
        );
        Rig {
            dir,
            a,
            b,
            a_before,
        }
    }

    fn slot_b(&self) -> Arc<dyn RawSlot> {
        self.b.clone()
    }

    /// The invariants every failure must keep.
    fn assert_failed_cleanly(&self) {
        let st = self.b.status().unwrap();
        assert!(!st.state.is_bootable(), "target left bootable: {st:?}");
        assert!(self.b.set_state(SlotState::Verified).is_err());
        let a_now = (
            std::fs::read(self.dir.path().join("a.img")).unwrap(),
            std::fs::read_to_string(self.dir.path().join("state/slots/a.json")).unwrap(),
        );
        assert!(a_now == self.a_before, "running slot was touched");
        assert_eq!(self.a.status().unwrap().state, SlotState::Good);
    }
}

async fn serve(data: &[u8], path: &str) -> (FaultServer, HttpSource) {
    let s = FaultServer::start().await;
    s.add(path, data.to_vec());
    let src = HttpSource::new(&s.url(), http_opts()).unwrap();
    (s, src)
}

async fn run(
    rig: &Rig,
    req: &StageRequest,
    src: &dyn patchd::fetch::ByteSource,
) -> Result<patchd::slot::SlotStatus, StageError> {
    stage_image(req, src, rig.slot_b(), &opts(), None, &CancelToken::new()).await
}

#[tokio::test]
async fn raw_image_is_written_verified_and_recorded() {
    let rig = Rig::new();
    let data = common::noise(3 * MIB as usize + 12345, 1);
    let (_s, src) = serve(&data, "targets/img").await;
    let events = Arc::new(std::sync::Mutex::new(Vec::<StageProgress>::new()));
    let ev = events.clone();
    let st = stage_image(
        &raw_req(&data),
        &src,
        rig.slot_b(),
        &opts(),
        Some(Arc::new(move |p: &StageProgress| {
            ev.lock().unwrap().push(p.clone())
        })),
        &CancelToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(st.state, SlotState::Verified);
    assert_eq!(st.sha256.as_deref(), Some(sha256(&data).as_str()));
    assert_eq!(st.size, Some(data.len() as u64));
    assert_eq!(st.version.as_deref(), Some("2.0"));
    assert_eq!(rig.b.status().unwrap(), st);
    assert_eq!(std::fs::read(rig.b.image_path()).unwrap(), data);
    let ev = events.lock().unwrap();
    assert_eq!(ev.last().unwrap().phase, patchd::slot::Phase::Done);
    assert!(!rig.dir.path().join("state/slots/b.stage.json").exists());
    // Commit path: verified -> good is allowed now.
    assert_eq!(
        rig.b.set_state(SlotState::Good).unwrap().state,
        SlotState::Good
    );
    rig.assert_failed_cleanly_except_target();
}

impl Rig {
    fn assert_failed_cleanly_except_target(&self) {
        assert_eq!(self.a.status().unwrap().state, SlotState::Good);
    }
}

#[tokio::test]
async fn zstd_image_from_a_local_directory() {
    let rig = Rig::new();
    let mut content = common::noise(MIB as usize, 2);
    content.extend(std::iter::repeat_n(7u8, 2 * MIB as usize));
    let compressed = zstd::encode_all(&content[..], 3).unwrap();
    let repo = rig.dir.path().join("repo/targets");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("img.zst"), &compressed).unwrap();
    let src = FileSource::new(rig.dir.path().join("repo"));
    let st = run(&rig, &zstd_req(&content, &compressed), &src)
        .await
        .unwrap();
    assert_eq!(st.sha256.as_deref(), Some(sha256(&content).as_str()));
    assert_eq!(std::fs::read(rig.b.image_path()).unwrap(), content);
}

#[tokio::test]
async fn truncated_stream_fails_cleanly() {
    let rig = Rig::new();
    let data = common::noise(2 * MIB as usize, 3);
    let (s, src) = serve(&data, "targets/img").await;
    s.set(Faults {
        truncate_at: Some(MIB + 77),
        truncate_times: 1000,
        ..Faults::default()
    });
    let err = run(&rig, &raw_req(&data), &src).await.unwrap_err();
    assert!(matches!(err, StageError::Fetch { .. }), "{err}");
    assert!(err.is_resumable());
    rig.assert_failed_cleanly();
}

#[tokio::test]
async fn more_bytes_than_declared_are_refused() {
    let rig = Rig::new();
    let data = common::noise(MIB as usize, 4);
    let mut longer = data.clone();
    longer.extend_from_slice(b"trailing");
    let (s, src) = serve(&longer, "targets/img").await;
    s.set(Faults {
        omit_content_length: true,
        ..Faults::default()
    });
    let err = run(&rig, &raw_req(&data), &src).await.unwrap_err();
    assert!(
        matches!(
            &err,
            StageError::TooLong { .. }
                | StageError::Fetch {
                    source: FetchError::TooLarge { .. },
                    ..
                }
        ),
        "{err}"
    );
    rig.assert_failed_cleanly();
}

#[tokio::test]
async fn content_length_disagreeing_with_signed_length() {
    let rig = Rig::new();
    let data = common::noise(MIB as usize, 5);
    let (_s, src) = serve(&data[..data.len() - 1], "targets/img").await;
    let err = run(&rig, &raw_req(&data), &src).await.unwrap_err();
    assert!(
        matches!(
            &err,
            StageError::Fetch {
                source: FetchError::LengthMismatch { .. },
                ..
            }
        ),
        "{err}"
    );
    rig.assert_failed_cleanly();
}

#[tokio::test]
async fn wrong_bytes_at_the_end_and_in_the_middle() {
    for at in [MIB - 1, MIB / 2] {
        let rig = Rig::new();
        let data = common::noise(MIB as usize, 6);
        let (s, src) = serve(&data, "targets/img").await;
        s.set(Faults {
            corrupt: vec![at],
            ..Faults::default()
        });
        let err = run(&rig, &raw_req(&data), &src).await.unwrap_err();
        assert!(
            matches!(
                &err,
                // Uncompressed: the signed hash is checked on the bytes read back from
                // the slot (one hash pass instead of two).
                StageError::HashMismatch {
                    which: "read-back sha256",
                    ..
                }
            ),
            "{err}"
        );
        assert!(!err.is_resumable());
        rig.assert_failed_cleanly();
        assert!(
            !rig.dir.path().join("state/slots/b.stage.json").exists(),
            "a wrong image must not be resumed"
        );
    }
}

#[tokio::test]
async fn wrong_content_hash_of_compressed_image() {
    let rig = Rig::new();
    let content = vec![1u8; MIB as usize];
    let compressed = zstd::encode_all(&content[..], 3).unwrap();
    let (_s, src) = serve(&compressed, "targets/img.zst").await;
    let mut req = zstd_req(&content, &compressed);
    req.content_sha256 = sha256(b"something else");
    let err = run(&rig, &req, &src).await.unwrap_err();
    assert!(
        matches!(
            &err,
            StageError::HashMismatch {
                which: "read-back sha256",
                ..
            }
        ),
        "{err}"
    );
    rig.assert_failed_cleanly();
}

#[tokio::test]
async fn stall_fails_after_retries() {
    let rig = Rig::new();
    let data = common::noise(MIB as usize, 7);
    let (s, src) = serve(&data, "targets/img").await;
    s.set(Faults {
        stall_at: Some(1000),
        stall_times: 1000,
        ..Faults::default()
    });
    let err = run(&rig, &raw_req(&data), &src).await.unwrap_err();
    assert!(err.to_string().contains("stalled"), "{err}");
    rig.assert_failed_cleanly();
}

#[tokio::test]
async fn redirect_to_another_host_and_tls_failure() {
    let rig = Rig::new();
    let data = common::noise(1000, 8);
    let (s, src) = serve(&data, "targets/img").await;
    let mut f = Faults::default();
    f.redirects.insert(
        "targets/img".into(),
        format!("http://localhost:{}/targets/img", s.addr.port()),
    );
    s.set(f);
    let err = run(&rig, &raw_req(&data), &src).await.unwrap_err();
    assert!(
        matches!(
            &err,
            StageError::Fetch {
                source: FetchError::Redirect { .. },
                ..
            }
        ),
        "{err}"
    );
    rig.assert_failed_cleanly();

    let tls = HttpSource::new(&format!("https://{}/", s.addr), http_opts()).unwrap();
    let err = run(&rig, &raw_req(&data), &tls).await.unwrap_err();
    assert!(matches!(&err, StageError::Fetch { .. }), "{err}");
    rig.assert_failed_cleanly();
}

#[tokio::test]
async fn zstd_bomb_and_image_larger_than_slot() {
    let rig = Rig::new();
    // 128 MiB of zeros compress to a few KiB; the manifest claims 1 MiB.
    let zeros = vec![0u8; 128 * MIB as usize];
    let bomb = zstd::encode_all(&zeros[..], 3).unwrap();
    drop(zeros);
    let (_s, src) = serve(&bomb, "targets/img.zst").await;
    let mut req = zstd_req(&[0u8; 16], &bomb);
    req.size = MIB;
    let err = run(&rig, &req, &src).await.unwrap_err();
    assert!(
        matches!(&err, StageError::DecompressedTooLarge { declared, .. } if *declared == MIB),
        "{err}"
    );
    rig.assert_failed_cleanly();

    // Declared size larger than the slot: refused before any byte is fetched.
    req.size = 65 * MIB;
    let err = run(&rig, &req, &src).await.unwrap_err();
    assert!(
        matches!(&err, StageError::Slot(SlotError::Refused { .. })),
        "{err}"
    );
    rig.assert_failed_cleanly();
}

#[tokio::test]
async fn booted_slot_is_never_written() {
    let rig = Rig::new();
    let data = common::noise(1000, 9);
    let (s, src) = serve(&data, "targets/img").await;
    let err = stage_image(
        &raw_req(&data),
        &src,
        rig.a.clone(),
        &opts(),
        None,
        &CancelToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StageError::Slot(SlotError::Refused { .. })),
        "{err}"
    );
    assert!(
        s.seen().is_empty(),
        "nothing may be fetched for a refused slot"
    );
    rig.assert_failed_cleanly();
}

/// Interrupted twice (network drop, then cancel), resumed each time with `Range`, and the
/// second resume against a server that ignores ranges: the end result is identical.
#[tokio::test]
async fn resume_after_interruption_ends_with_the_same_result() {
    let rig = Rig::new();
    let data = common::noise(6 * MIB as usize + 999, 10);
    let req = raw_req(&data);
    let (s, src) = serve(&data, "targets/img").await;
    s.set(Faults {
        truncate_at: Some(2 * MIB + 5000),
        truncate_times: 1000,
        ..Faults::default()
    });
    let err = run(&rig, &req, &src).await.unwrap_err();
    assert!(err.is_resumable(), "{err}");
    rig.assert_failed_cleanly();
    assert!(rig.dir.path().join("state/slots/b.stage.json").exists());

    // Second attempt: slow server, cancelled mid-way.
    s.set(Faults {
        chunk_delay: Some(Duration::from_millis(20)),
        ..Faults::default()
    });
    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        c2.cancel();
    });
    let err = stage_image(&req, &src, rig.slot_b(), &opts(), None, &cancel)
        .await
        .unwrap_err();
    assert!(matches!(err, StageError::Cancelled { .. }), "{err}");
    rig.assert_failed_cleanly();
    let resumed_at: Vec<_> = s.seen().iter().filter_map(|r| r.range_start).collect();
    assert!(
        resumed_at.contains(&(2 * MIB)),
        "second run should resume at the 2 MiB checkpoint: {resumed_at:?}"
    );

    // Third attempt: the server ignores Range; the prefix is skipped, not duplicated.
    s.set(Faults {
        ignore_range: true,
        ..Faults::default()
    });
    let st = run(&rig, &req, &src).await.unwrap();
    assert_eq!(st.state, SlotState::Verified);
    assert_eq!(st.sha256.as_deref(), Some(sha256(&data).as_str()));
    assert_eq!(std::fs::read(rig.b.image_path()).unwrap(), data);
}

/// A resume whose written prefix was damaged behind our back starts before the damage.
#[tokio::test]
async fn damaged_prefix_is_detected_on_resume() {
    let rig = Rig::new();
    let data = common::noise(4 * MIB as usize, 11);
    let req = raw_req(&data);
    let (s, src) = serve(&data, "targets/img").await;
    s.set(Faults {
        truncate_at: Some(3 * MIB + 1),
        truncate_times: 1000,
        ..Faults::default()
    });
    run(&rig, &req, &src).await.unwrap_err();
    // Flip a byte inside the second checkpointed chunk.
    flip_byte(rig.b.image_path(), MIB + 10);
    s.set(Faults::default());
    let st = run(&rig, &req, &src).await.unwrap();
    assert_eq!(st.state, SlotState::Verified);
    assert_eq!(std::fs::read(rig.b.image_path()).unwrap(), data);
    assert_eq!(s.seen().last().unwrap().range_start, Some(MIB));
}

fn flip_byte(path: &Path, at: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0xff;
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&b).unwrap();
}
