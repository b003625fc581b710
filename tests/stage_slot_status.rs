//! The target slot's record after a failed install is the same in direct and cache mode:
//! untouched while no byte of the slot was written (its content still is what the record
//! says, e.g. an earlier verified release), `incomplete` once any byte was written.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::http::{FaultServer, Faults};
use common::image::sha256_hex as sha;
use patchd::fetch::{HttpOptions, HttpSource, RetryPolicy};
use patchd::names::SlotName;
use patchd::slot::{
    stage_image, stage_image_cached, CancelToken, DownloadCache, ImageFileSlot, ImageFormat, Slot,
    SlotState, StageError, StageOptions, StageRequest,
};

const MIB: u64 = 1 << 20;

fn http(server: &FaultServer) -> HttpSource {
    HttpSource::new(
        &server.url(),
        HttpOptions {
            stall_timeout: Duration::from_millis(300),
            retry: RetryPolicy {
                max_attempts: 2,
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(20),
                jitter: true,
            },
            ..HttpOptions::default()
        },
    )
    .unwrap()
}

fn opts() -> StageOptions {
    StageOptions {
        checkpoint_every: MIB,
        ..StageOptions::default()
    }
}

/// Slot `b` holding verified release 1.
struct Rig {
    dir: tempfile::TempDir,
    slot: Arc<ImageFileSlot>,
    server: FaultServer,
    v1: Vec<u8>,
    record_v1: String,
}

impl Rig {
    async fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let slot = Arc::new(ImageFileSlot::new(
            SlotName::new("b").unwrap(),
            dir.path().join("b.img"),
            &dir.path().join("state"),
        ));
        let server = FaultServer::start().await;
        let v1 = common::noise(3 * MIB as usize, 1);
        server.add("targets/v1", v1.clone());
        let req = StageRequest::raw("targets/v1", "1", v1.len() as u64, &sha(&v1));
        let st = stage_image(
            &req,
            &http(&server),
            slot.clone(),
            &opts(),
            None,
            &CancelToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(st.state, SlotState::Verified);
        let record_v1 = std::fs::read_to_string(dir.path().join("state/slots/b.json")).unwrap();
        Rig {
            dir,
            slot,
            server,
            v1,
            record_v1,
        }
    }

    fn assert_untouched(&self) {
        let now = std::fs::read_to_string(self.dir.path().join("state/slots/b.json")).unwrap();
        assert_eq!(now, self.record_v1, "record changed without a write");
        assert_eq!(self.slot.status().unwrap().state, SlotState::Verified);
        assert_eq!(std::fs::read(self.slot.image_path()).unwrap(), self.v1);
    }

    fn assert_incomplete(&self, version: &str) {
        let st = self.slot.status().unwrap();
        assert_eq!(st.state, SlotState::Incomplete, "{st:?}");
        assert_eq!(st.version.as_deref(), Some(version));
        assert!(self.slot.set_state(SlotState::Verified).is_err());
    }
}

#[tokio::test]
async fn direct_mode_record_untouched_before_the_first_write_incomplete_after() {
    let rig = Rig::new().await;
    let v2 = common::noise(4 * MIB as usize, 2);

    // Not on the server: fails before any byte reaches the slot.
    let req = StageRequest::raw("targets/missing", "2", v2.len() as u64, &sha(&v2));
    let err = stage_image(
        &req,
        &http(&rig.server),
        rig.slot.clone(),
        &opts(),
        None,
        &CancelToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StageError::Fetch { .. }), "{err}");
    rig.assert_untouched();

    // Connection drops after 1.5 MiB: bytes were written, the record must say so.
    rig.server.add("targets/v2", v2.clone());
    rig.server.set(Faults {
        truncate_at: Some(MIB + MIB / 2),
        truncate_times: 1000,
        ..Faults::default()
    });
    let req = StageRequest::raw("targets/v2", "2", v2.len() as u64, &sha(&v2));
    let err = stage_image(
        &req,
        &http(&rig.server),
        rig.slot.clone(),
        &opts(),
        None,
        &CancelToken::new(),
    )
    .await
    .unwrap_err();
    assert!(err.is_resumable(), "{err}");
    rig.assert_incomplete("2");
}

#[tokio::test]
async fn cache_mode_record_untouched_before_the_first_write_incomplete_after() {
    let rig = Rig::new().await;
    let cache = DownloadCache::new(rig.dir.path().join("cache"), 64 * MIB);
    let v2 = common::noise(4 * MIB as usize, 3);
    let z = zstd::encode_all(&v2[..], 3).unwrap();
    rig.server.add("targets/v2.zst", z.clone());

    // Download interrupted: the slot was never opened for writing.
    rig.server.set(Faults {
        truncate_at: Some(MIB),
        truncate_times: 1000,
        ..Faults::default()
    });
    let req = common::image::zstd_request("targets/v2.zst", "2", ImageFormat::Raw, &v2, &z);
    let err = stage_image_cached(
        &req,
        &http(&rig.server),
        rig.slot.clone(),
        &cache,
        &opts(),
        None,
        &CancelToken::new(),
    )
    .await
    .unwrap_err();
    assert!(err.is_resumable(), "{err}");
    rig.assert_untouched();

    // Complete download whose content does not match the signed content hash: the slot
    // was written, so it is incomplete (and the bad cached copy is dropped).
    rig.server.set(Faults::default());
    let mut bad = req.clone();
    bad.content_sha256 = sha(b"not this content");
    let err = stage_image_cached(
        &bad,
        &http(&rig.server),
        rig.slot.clone(),
        &cache,
        &opts(),
        None,
        &CancelToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StageError::HashMismatch { .. }), "{err}");
    rig.assert_incomplete("2");

    // The right request then installs cleanly.
    let st = stage_image_cached(
        &req,
        &http(&rig.server),
        rig.slot.clone(),
        &cache,
        &opts(),
        None,
        &CancelToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(st.state, SlotState::Verified);
    assert_eq!(std::fs::read(rig.slot.image_path()).unwrap(), v2);
}
