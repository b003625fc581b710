//! kill -9 of a real process in the middle of a delta stage, then a new process resumes:
//! the slot ends byte-identical to the new release and verified, and the resumed run
//! fetches fewer bytes than a fresh start.
//!
//! - static delta: killed while the delta file downloads; the resume asks for the rest
//!   with a `Range` from the last synced checkpoint of the partial file;
//! - dynamic delta: killed while chunk ranges are in flight, after some were written;
//!   the resume keeps the chunks already in place (hash checked) and fetches only the
//!   others.
//!
//! The stage runs in a child process (this test binary re-executed with
//! `PATCHD_DELTA_CHILD` set) against repository targets served over HTTP by a throttled
//! server in this process, so SIGKILL hits a real process mid-transfer.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{FaultServer, Faults};
use patchd::engine::ports::Updates;
use patchd::engine::{StageMethod, StageReport};
use patchd::fetch::{ByteSource, FileSource, HttpOptions, HttpSource};
use patchd::names::SlotName;
use patchd::publish::{AddRelease, DeltaOptions, InitOptions, Repo};
use patchd::slot::stage::StageOptions;
use patchd::slot::SlotBackend;
use patchd::slot::{ImageFileSlot, Slot, SlotState};
use patchd::source::RepoUpdates;
use patchd::trust::{Limits, TufClient};
use rand::Rng;

const MIB: usize = 1 << 20;

/// v1: noise; v2: v1 with everything from `keep` on replaced by other noise.
fn images(size: usize, keep: usize) -> (Vec<u8>, Vec<u8>) {
    let v1 = common::noise(size, 1);
    let mut v2 = v1.clone();
    v2[keep..].copy_from_slice(&common::noise(size - keep, 2));
    (v1, v2)
}

fn slot(top: &Path, s: &str, booted: bool) -> Arc<ImageFileSlot> {
    Arc::new(
        ImageFileSlot::new(
            SlotName::new(s).unwrap(),
            top.join(format!("slot-{s}.img")),
            &top.join("state"),
        )
        .with_booted(booted),
    )
}

/// The device's port over the repository metadata on disk and targets at `url`.
async fn updates(top: &Path, url: &str, booted: &str) -> RepoUpdates {
    let client = TufClient::load(
        &top.join("state/tuf"),
        Arc::new(patchd::clock::SystemClock),
        Limits::default(),
    )
    .unwrap();
    let md: Arc<dyn ByteSource> = Arc::new(FileSource::new(top.join("repo/metadata")));
    let tg: Arc<dyn ByteSource> = Arc::new(HttpSource::new(url, HttpOptions::default()).unwrap());
    let slots: Vec<Arc<dyn SlotBackend>> =
        vec![slot(top, "a", booted == "a"), slot(top, "b", booted == "b")];
    let u = RepoUpdates::new(
        client,
        md,
        tg,
        "acme".into(),
        None,
        "stable".into(),
        slots,
        StageOptions::default(),
    );
    u.discover().await.unwrap();
    u
}

async fn stage(top: &Path, url: &str, booted: &str, version: &str, into: &str) -> StageReport {
    let u = updates(top, url, booted).await;
    let (tx, _rx) = tokio::sync::watch::channel(None);
    u.stage(&version.parse().unwrap(), &SlotName::new(into).unwrap(), tx)
        .await
        .unwrap()
}

/// The child: stage 2.0.0 into slot b (slot a runs 1.0.0), then exit.
#[test]
fn child_entry() {
    let Ok(top) = std::env::var("PATCHD_DELTA_CHILD") else {
        return; // not a child: nothing to do
    };
    let url = std::env::var("PATCHD_DELTA_URL").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(stage(Path::new(&top), &url, "a", "2.0.0", "b"));
}

struct World {
    _tmp: tempfile::TempDir,
    top: PathBuf,
    server: FaultServer,
    v2: Vec<u8>,
}

impl World {
    /// A repository with 1.0.0 and 2.0.0 (`opts` for 2.0.0) served over HTTP; slot a
    /// holds 1.0.0, verified.
    async fn new(size: usize, keep: usize, opts: DeltaOptions) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().to_path_buf();
        let repo = Repo::init(top.join("repo"), &InitOptions::new(top.join("keys"))).unwrap();
        TufClient::init(
            &top.join("state/tuf"),
            &repo.root_bytes().unwrap(),
            &Limits::default(),
        )
        .unwrap();
        let (v1, v2) = images(size, keep);
        for (v, bytes, o) in [
            ("1.0.0", &v1, DeltaOptions::default()),
            ("2.0.0", &v2, opts),
        ] {
            let img = top.join(format!("{v}.img"));
            std::fs::write(&img, bytes).unwrap();
            repo.add_release_with(&AddRelease::new("acme", v.parse().unwrap(), &img), &o)
                .unwrap();
        }
        let server = FaultServer::start().await;
        serve_dir(&server, &repo.targets_dir(), &repo.targets_dir());
        let w = World {
            _tmp: tmp,
            top,
            server,
            v2,
        };
        let r = stage(&w.top, &w.server.url(), "b", "1.0.0", "a").await;
        assert_eq!(r.method, StageMethod::Full);
        assert!(std::fs::read(w.top.join("slot-a.img")).unwrap() == v1);
        w
    }

    fn spawn_child(&self) -> std::process::Child {
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
            .env("PATCHD_DELTA_CHILD", &self.top)
            .env("PATCHD_DELTA_URL", self.server.url())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Start the child on a link throttled to 64 KiB per `delay_ms` on every connection,
    /// wait until `ready` says enough happened, then SIGKILL it (after a small random
    /// delay).
    async fn kill_child_when(&self, delay_ms: u64, what: &str, ready: impl Fn() -> bool) {
        self.server.set(Faults {
            chunk_delay: Some(Duration::from_millis(delay_ms)),
            ..Faults::default()
        });
        let mut child = self.spawn_child();
        let t = Instant::now();
        while !ready() && t.elapsed() < Duration::from_secs(60) {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the child ended before {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(ready(), "no {what} within 60 s");
        let jitter = rand::thread_rng().gen_range(0..40);
        tokio::time::sleep(Duration::from_millis(jitter)).await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child finished before it could be killed"
        );
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        self.server.set(Faults::default());
        let st = slot(&self.top, "b", false).status().unwrap();
        assert_ne!(st.state, SlotState::Verified, "killed mid-stage: {st:?}");
    }

    /// Stage 2.0.0 into b in this process and check the slot.
    async fn resume(&self) -> StageReport {
        let r = stage(&self.top, &self.server.url(), "a", "2.0.0", "b").await;
        self.assert_b_is_v2();
        r
    }

    /// Wipe slot b and stage 2.0.0 from nothing: what a fresh start fetches.
    async fn fresh(&self) -> StageReport {
        let _ = std::fs::remove_file(self.top.join("slot-b.img"));
        let _ = std::fs::remove_file(self.top.join("state/slots/b.json"));
        let r = stage(&self.top, &self.server.url(), "a", "2.0.0", "b").await;
        self.assert_b_is_v2();
        r
    }

    fn assert_b_is_v2(&self) {
        assert!(
            std::fs::read(self.top.join("slot-b.img")).unwrap() == self.v2,
            "slot b differs from 2.0.0"
        );
        let st = slot(&self.top, "b", false).status().unwrap();
        assert_eq!(st.state, SlotState::Verified);
        assert_eq!(st.version.as_deref(), Some("2.0.0"));
    }

    /// Bytes of the new part of 2.0.0 (from `keep`) already at their place in slot b,
    /// counted in 64 KiB blocks.
    fn new_bytes_in_place(&self, keep: usize) -> usize {
        let Ok(b) = std::fs::read(self.top.join("slot-b.img")) else {
            return 0;
        };
        (keep..self.v2.len())
            .step_by(64 << 10)
            .filter(|&at| {
                let end = (at + (64 << 10)).min(self.v2.len());
                b.get(at..end) == Some(&self.v2[at..end])
            })
            .count()
            * (64 << 10)
    }
}

/// Serve every file under `dir` at its path relative to `root`.
fn serve_dir(server: &FaultServer, root: &Path, dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            serve_dir(server, root, &p);
        } else {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            server.add(&rel, std::fs::read(&p).unwrap());
        }
    }
}

fn synced_part(top: &Path) -> u64 {
    let Ok(b) = std::fs::read(top.join("state/slots/b.delta.part.json")) else {
        return 0;
    };
    serde_json::from_slice::<serde_json::Value>(&b).unwrap_or_default()["synced"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_static_delta_download_then_resume() {
    let (size, keep) = (8 * MIB, 3 * MIB);
    let w = World::new(size, keep, static_from_v1()).await;
    let top = w.top.clone();
    w.kill_child_when(15, "a synced part of the delta", || {
        synced_part(&top) >= MIB as u64
    })
    .await;
    let synced = synced_part(&w.top);
    assert!(synced >= MIB as u64);

    let r = w.resume().await;
    assert_eq!(r.method, StageMethod::StaticDelta, "{r:?}");
    let resumed_from: Vec<u64> = w
        .server
        .seen()
        .iter()
        .filter(|s| s.path.ends_with(".delta"))
        .filter_map(|s| s.range_start)
        .collect();
    assert!(
        resumed_from.iter().any(|&o| o >= synced),
        "no ranged request from the checkpoint ({synced}): {resumed_from:?}"
    );
    let f = w.fresh().await;
    assert_eq!(f.method, StageMethod::StaticDelta, "{f:?}");
    eprintln!(
        "static: synced before the cut {synced}, resume fetched {}, fresh start {}",
        r.bytes_fetched, f.bytes_fetched
    );
    assert!(
        r.bytes_fetched + synced <= f.bytes_fetched,
        "resume fetched {} bytes, a fresh start {} (synced before the cut: {synced})",
        r.bytes_fetched,
        f.bytes_fetched
    );
    assert!(r.bytes_fetched > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_dynamic_delta_then_resume() {
    // 12 MiB of new content: more 2 MiB ranges than requests in flight (4).
    let (size, keep) = (16 * MIB, 4 * MIB);
    let w = World::new(
        size,
        keep,
        DeltaOptions {
            from: vec![],
            chunk_index: true,
            level: 3,
        },
    )
    .await;
    // Four 2 MiB ranges arrive together, then two more take ~1 s: the cut comes there.
    w.kill_child_when(30, "4 MiB of new chunks in place", || {
        w.new_bytes_in_place(keep) >= 4 * MIB
    })
    .await;
    let before = w.new_bytes_in_place(keep);

    let r = w.resume().await;
    assert_eq!(r.method, StageMethod::DynamicDelta, "{r:?}");
    let f = w.fresh().await;
    assert_eq!(f.method, StageMethod::DynamicDelta, "{f:?}");
    eprintln!(
        "dynamic: {before} new bytes in place at the cut, resume fetched {}, fresh start {}",
        r.bytes_fetched, f.bytes_fetched
    );
    // What was written before the cut is not fetched again (64 KiB blocks undercount
    // the chunks in place, never overcount).
    assert!(
        r.bytes_fetched + (before as u64) <= f.bytes_fetched + (64 << 10),
        "resume fetched {} bytes, a fresh start {} ({before} new bytes were in place)",
        r.bytes_fetched,
        f.bytes_fetched
    );
    assert!(r.bytes_reused > f.bytes_reused, "{r:?} vs {f:?}");
}

/// A partial download whose bytes do not match (the medium lost or changed them) is not
/// trusted: the finished file fails its signed hash, and the delta is fetched once more
/// from the start; the slot still ends right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_partial_delta_is_fetched_again_not_trusted() {
    let (size, keep) = (4 * MIB, 3 * MIB);
    let w = World::new(size, keep, static_from_v1()).await;
    let f = w.fresh().await;
    assert_eq!(f.method, StageMethod::StaticDelta, "{f:?}");
    let len = f.bytes_fetched;
    let _ = std::fs::remove_file(w.top.join("slot-b.img"));
    let _ = std::fs::remove_file(w.top.join("state/slots/b.json"));
    let half = len / 2;
    std::fs::write(
        w.top.join("state/slots/b.delta.part"),
        vec![0x5a; half as usize],
    )
    .unwrap();
    let sha = {
        let dir = w.top.join("repo/targets/releases/acme/2.0.0");
        let d = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".delta"))
            .unwrap();
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(d).unwrap()))
    };
    std::fs::write(
        w.top.join("state/slots/b.delta.part.json"),
        serde_json::json!({ "target_sha256": sha, "length": len, "synced": half }).to_string(),
    )
    .unwrap();
    let r = w.resume().await;
    assert_eq!(r.method, StageMethod::StaticDelta, "{r:?}");
    assert_eq!(r.bytes_fetched, (len - half) + len, "{r:?}");
    assert!(!w.top.join("state/slots/b.delta.part").exists());
    assert!(!w.top.join("state/slots/b.delta.part.json").exists());
}

/// Releases with a static delta from 1.0.0 and no chunk index (fast to publish).
fn static_from_v1() -> DeltaOptions {
    DeltaOptions {
        from: vec!["1.0.0".parse().unwrap()],
        chunk_index: false,
        level: 3,
    }
}
