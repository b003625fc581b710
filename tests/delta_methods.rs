//! Delta updates end to end through the device's `Updates` port (RepoUpdates over a
//! signed file repository and image-file slots): static delta, dynamic delta and full
//! image each give a byte-identical slot; damaged local bases and damaged repository
//! pieces fall back to the next method; no usable base means a full install.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use patchd::engine::ports::Updates;
use patchd::engine::{StageMethod, StageReport};
use patchd::fetch::{ByteSource, FileSource};
use patchd::names::SlotName;
use patchd::publish::{AddRelease, DeltaOptions, InitOptions, Repo};
use patchd::slot::stage::StageOptions;
use patchd::slot::SlotBackend;
use patchd::slot::{ImageFileSlot, Slot, SlotState};
use patchd::source::RepoUpdates;
use patchd::trust::{Limits, TufClient};

const SIZE: usize = 3 << 20;

/// Pseudo-random bytes (incompressible, so only a delta can save bytes).
fn noise(seed: u64, len: usize) -> Vec<u8> {
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

fn v1() -> Vec<u8> {
    let mut v = noise(1, SIZE);
    // Some zero runs, as in a file-system image.
    v[SIZE / 2..SIZE / 2 + 200_000].fill(0);
    v
}

/// v1 with a few scattered changes, one insertion (shifts the rest) and a new tail.
fn v2() -> Vec<u8> {
    let mut v = v1();
    for k in 0..12 {
        let at = 100_000 + k * 230_000;
        v[at..at + 4096].copy_from_slice(&noise(100 + k as u64, 4096));
    }
    let ins = noise(7, 5000);
    v.splice(1_000_000..1_000_000, ins);
    v.truncate(SIZE);
    v
}

struct World {
    _tmp: tempfile::TempDir,
    top: PathBuf,
    repo: Repo,
}

impl World {
    fn new() -> World {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("patchd=warn")
            .try_init();
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().to_path_buf();
        let repo = Repo::init(top.join("repo"), &InitOptions::new(top.join("keys"))).unwrap();
        TufClient::init(
            &top.join("state/tuf"),
            &repo.root_bytes().unwrap(),
            &Limits::default(),
        )
        .unwrap();
        World {
            _tmp: tmp,
            top,
            repo,
        }
    }

    fn publish(&self, version: &str, bytes: &[u8], opts: &DeltaOptions) {
        let img = self.top.join(format!("{version}.img"));
        std::fs::write(&img, bytes).unwrap();
        self.repo
            .add_release_with(
                &AddRelease::new("acme", version.parse().unwrap(), &img),
                opts,
            )
            .unwrap();
    }

    fn slot_image(&self, s: &str) -> PathBuf {
        self.top.join(format!("slot-{s}.img"))
    }

    fn slot(&self, s: &str, booted: bool) -> Arc<ImageFileSlot> {
        Arc::new(
            ImageFileSlot::new(
                SlotName::new(s).unwrap(),
                self.slot_image(s),
                &self.top.join("state"),
            )
            .with_booted(booted),
        )
    }

    /// The device's port, with slot `booted` running.
    async fn updates(&self, booted: &str) -> RepoUpdates {
        let client = TufClient::load(
            &self.top.join("state/tuf"),
            Arc::new(patchd::clock::SystemClock),
            Limits::default(),
        )
        .unwrap();
        let md: Arc<dyn ByteSource> = Arc::new(FileSource::new(self.repo.metadata_dir()));
        let tg: Arc<dyn ByteSource> = Arc::new(FileSource::new(self.repo.targets_dir()));
        let slots: Vec<Arc<dyn SlotBackend>> =
            vec![self.slot("a", booted == "a"), self.slot("b", booted == "b")];
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

    async fn stage(&self, booted: &str, version: &str, into: &str) -> Result<StageReport, String> {
        let u = self.updates(booted).await;
        let (tx, _rx) = tokio::sync::watch::channel(None);
        u.stage(&version.parse().unwrap(), &SlotName::new(into).unwrap(), tx)
            .await
            .map_err(|e| e.to_string())
    }

    /// Factory state: slot a holds 1.0.0, verified (installed as a full image).
    async fn with_v1_in_a(&self) {
        let r = self.stage("b", "1.0.0", "a").await.unwrap();
        assert_eq!(
            r.method,
            StageMethod::Full,
            "nothing local to reuse yet: {r:?}"
        );
        assert_eq!(std::fs::read(self.slot_image("a")).unwrap(), v1());
    }

    fn full_len(&self, version: &str) -> u64 {
        let dir = self
            .repo
            .targets_dir()
            .join(format!("releases/acme/{version}"));
        let f = find(&dir, ".os.rootfs.img.zst");
        std::fs::metadata(f).unwrap().len()
    }

    fn target_file(&self, version: &str, suffix: &str) -> PathBuf {
        find(
            &self
                .repo
                .targets_dir()
                .join(format!("releases/acme/{version}")),
            suffix,
        )
    }

    fn assert_b_is_v2(&self) {
        assert!(
            std::fs::read(self.slot_image("b")).unwrap() == v2(),
            "slot b differs from 2.0.0"
        );
        let st = self.slot("b", false).status().unwrap();
        assert_eq!(st.state, SlotState::Verified);
        assert_eq!(st.version.as_deref(), Some("2.0.0"));
    }
}

fn find(dir: &Path, suffix: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(suffix))
        .unwrap_or_else(|| panic!("no *{suffix} in {}", dir.display()))
}

fn flip(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 64];
    f.read_exact_at(&mut b, at).unwrap();
    for x in b.iter_mut() {
        *x ^= 0x5a;
    }
    f.write_all_at(&b, at).unwrap();
}

fn opts(from: &[&str]) -> DeltaOptions {
    DeltaOptions {
        from: from.iter().map(|v| v.parse().unwrap()).collect(),
        chunk_index: true,
        level: 3,
    }
}

async fn world_with_both() -> World {
    let w = World::new();
    w.publish("1.0.0", &v1(), &opts(&[]));
    w.publish("2.0.0", &v2(), &opts(&["1.0.0"]));
    w.with_v1_in_a().await;
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_delta_round_trip_is_byte_identical_and_small() {
    let w = world_with_both().await;
    let r = w.stage("a", "2.0.0", "b").await.unwrap();
    assert_eq!(r.method, StageMethod::StaticDelta, "{r:?}");
    let full = w.full_len("2.0.0");
    assert!(
        r.bytes_fetched * 5 < full,
        "static delta fetched {} of {full}",
        r.bytes_fetched
    );
    assert!(r.bytes_reused > (SIZE as u64) / 2, "{r:?}");
    w.assert_b_is_v2();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_delta_round_trip_when_no_static_delta_matches() {
    let w = World::new();
    w.publish("1.0.0", &v1(), &opts(&[]));
    w.publish("2.0.0", &v2(), &opts(&[]));
    w.with_v1_in_a().await;
    let r = w.stage("a", "2.0.0", "b").await.unwrap();
    assert_eq!(r.method, StageMethod::DynamicDelta, "{r:?}");
    let full = w.full_len("2.0.0");
    assert!(
        r.bytes_fetched * 2 < full,
        "dynamic delta fetched {} of {full}",
        r.bytes_fetched
    );
    assert!(r.bytes_reused > (SIZE as u64) / 2, "{r:?}");
    w.assert_b_is_v2();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_image_when_the_release_has_no_deltas() {
    let w = World::new();
    w.publish("1.0.0", &v1(), &DeltaOptions::default());
    w.publish("2.0.0", &v2(), &DeltaOptions::default());
    w.with_v1_in_a().await;
    let r = w.stage("a", "2.0.0", "b").await.unwrap();
    assert_eq!(r.method, StageMethod::Full);
    assert_eq!(r.bytes_fetched, w.full_len("2.0.0"));
    w.assert_b_is_v2();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_device_without_a_verified_base_installs_the_full_image() {
    let w = World::new();
    w.publish("1.0.0", &v1(), &opts(&[]));
    w.publish("2.0.0", &v2(), &opts(&["1.0.0"]));
    // Slot a holds the right bytes but was never verified (no record): not a base.
    std::fs::write(w.slot_image("a"), v1()).unwrap();
    let r = w.stage("a", "2.0.0", "b").await.unwrap();
    assert_eq!(r.method, StageMethod::Full, "{r:?}");
    w.assert_b_is_v2();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_local_base_falls_back_to_dynamic_delta() {
    let w = world_with_both().await;
    // The running slot changed after it was verified (bit rot, a stray write).
    for k in 0..20u64 {
        flip(&w.slot_image("a"), 50_000 + k * 150_000);
    }
    let r = w.stage("a", "2.0.0", "b").await.unwrap();
    assert_eq!(r.method, StageMethod::DynamicDelta, "{r:?}");
    w.assert_b_is_v2();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_repository_pieces_fall_back_then_fail_cleanly() {
    let w = world_with_both().await;
    // Static delta damaged on the server: its signed hash fails → dynamic delta.
    flip(&w.target_file("2.0.0", ".from-1.0.0.delta"), 3000);
    let r = w.stage("a", "2.0.0", "b").await.unwrap();
    assert_eq!(r.method, StageMethod::DynamicDelta, "{r:?}");
    w.assert_b_is_v2();

    // Chunk store damaged too (pieces fail their signed hashes) → full image.
    let w = world_with_both().await;
    flip(&w.target_file("2.0.0", ".from-1.0.0.delta"), 3000);
    let store = w.target_file("2.0.0", ".chunks.store");
    let len = std::fs::metadata(&store).unwrap().len();
    for k in 0..16 {
        flip(&store, k * (len / 16));
    }
    let r = w.stage("a", "2.0.0", "b").await.unwrap();
    assert_eq!(r.method, StageMethod::Full, "{r:?}");
    w.assert_b_is_v2();

    // Everything damaged (and slot b wiped, so nothing is in place): a clean failure,
    // slot b not bootable.
    std::fs::write(w.slot_image("b"), vec![0u8; SIZE]).unwrap();
    let full = w.target_file("2.0.0", ".os.rootfs.img.zst");
    flip(&full, 100);
    let e = w.stage("a", "2.0.0", "b").await.unwrap_err();
    assert!(e.contains("2.0.0"), "{e}");
    let st = w.slot("b", false).status().unwrap();
    assert!(!st.state.is_bootable(), "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_image_when_a_delta_would_not_be_smaller() {
    let w = World::new();
    w.publish("1.0.0", &v1(), &opts(&[]));
    // Nothing in common with 1.0.0: every chunk would be fetched, plus the index.
    let other = noise(99, SIZE);
    w.publish("2.0.0", &other, &opts(&[]));
    w.with_v1_in_a().await;
    let r = w.stage("a", "2.0.0", "b").await.unwrap();
    assert_eq!(r.method, StageMethod::Full, "{r:?}");
    assert_eq!(std::fs::read(w.slot_image("b")).unwrap(), other);
}
