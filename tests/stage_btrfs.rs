//! btrfs subvolume slots on a real btrfs (mkfs.btrfs on a loop device; root only):
//! verified tar.zst install, refusal of hostile archives with nothing published,
//! snapshot of the running slot, pruning that spares the booted and rollback slots.

mod common;

use common::disk::Btrfs;
use common::http::FaultServer;
use common::image::{sha256_hex as sha, zstd_request};
use patchd::fetch::{HttpOptions, HttpSource};
use patchd::names::SlotName;
use patchd::slot::{
    BtrfsSlots, CancelToken, ImageFormat, Slot, SlotBackend, SlotState, StageError, StageJob,
    StageOptions, StageRequest,
};

fn tar_of(files: &[(&str, &[u8], u32, u64)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, mode, uid) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_uid(*uid);
        h.set_gid(*uid);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn req_for(path: &str, version: &str, tar: &[u8]) -> (StageRequest, Vec<u8>) {
    let z = zstd::encode_all(tar, 3).unwrap();
    (zstd_request(path, version, ImageFormat::Tar, tar, &z), z)
}

#[tokio::test]
async fn btrfs_slots_install_refuse_snapshot_and_prune() {
    let t = "btrfs_slots_install_refuse_snapshot_and_prune";
    if !common::require_root(t) || !common::require_tools(t, &["losetup", "mkfs.btrfs", "mount"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = Btrfs::new(dir.path());
    let state = dir.path().join("state");
    let name = |s: &str| SlotName::new(s).unwrap();
    let server = FaultServer::start().await;
    let src = HttpSource::new(&server.url(), HttpOptions::default()).unwrap();
    let slots = BtrfsSlots::new(&fs.mnt, &state)
        .with_keep(2)
        .with_booted(name("r1"))
        .with_rollback(name("r2"));
    let stage = |req: StageRequest, n: &'static str| {
        let (slots, src) = (&slots, &src);
        async move {
            slots
                .stage_tar(
                    &name(n),
                    StageJob {
                        req: &req,
                        source: src,
                        opts: &StageOptions::default(),
                        progress: None,
                        cancel: &CancelToken::new(),
                    },
                )
                .await
        }
    };

    // A good release, with owner and mode preserved.
    let tar = tar_of(&[
        ("etc/os-release", b"VERSION=1\n", 0o640, 1234),
        ("usr/bin/app", b"bin", 0o755, 0),
    ]);
    let (req, z) = req_for("targets/r1.tar.zst", "1", &tar);
    server.add("targets/r1.tar.zst", z);
    let st = stage(req.clone(), "r1x").await.unwrap();
    assert_eq!(st.state, SlotState::Verified);
    let root = fs.mnt.join("r1x");
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(root.join("etc/os-release")).unwrap();
    assert_eq!((m.mode() & 0o777, m.uid()), (0o640, 1234));
    assert!(!fs.mnt.join(".r1x.partial").exists());
    // Through the backend trait: a tree slot takes tar archives only, verifies as
    // present, and the booted slot is refused before anything is fetched.
    let r1x = slots.slot(&name("r1x"));
    assert_eq!(r1x.takes(), ImageFormat::Tar);
    assert!(r1x.byte_range().is_none());
    r1x.verify().unwrap();
    r1x.prepare(&req).unwrap();
    let err = slots.slot(&name("r1")).prepare(&req).unwrap_err();
    assert!(matches!(err, StageError::Slot(_)), "{err}");
    let mut raw = req.clone();
    raw.format = ImageFormat::Raw;
    let err = r1x.prepare(&raw).unwrap_err();
    assert!(matches!(err, StageError::BadRequest { .. }), "{err}");

    // Wrong archive hash: nothing is published, the partial subvolume is gone.
    let mut bad = req.clone();
    bad.sha256 = sha(b"other");
    let err = stage(bad, "r3").await.unwrap_err();
    assert!(matches!(err, StageError::HashMismatch { .. }), "{err}");
    assert!(!fs.mnt.join("r3").exists() && !fs.mnt.join(".r3.partial").exists());
    assert!(!slots
        .slot(&name("r3"))
        .status()
        .unwrap()
        .state
        .is_bootable());

    // Hostile archive (../): refused, nothing outside written.
    let mut evil = Vec::new();
    {
        let mut h = tar::Header::new_gnu();
        let n = b"../../escaped";
        h.as_gnu_mut().unwrap().name[..n.len()].copy_from_slice(n);
        h.set_size(1);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        evil.extend_from_slice(h.as_bytes());
        evil.push(b'x');
        evil.extend(std::iter::repeat_n(0u8, 511 + 1024));
    }
    let (ereq, ez) = req_for("targets/evil.tar.zst", "6", &evil);
    server.add("targets/evil.tar.zst", ez);
    let err = stage(ereq, "r4").await.unwrap_err();
    assert!(matches!(err, StageError::Extract { .. }), "{err}");
    assert!(!dir.path().join("escaped").exists() && !fs.mnt.join("r4").exists());

    // Booted and rollback slots are never written.
    assert!(matches!(
        stage(req.clone(), "r1").await,
        Err(StageError::Slot(_))
    ));

    // Snapshot of the running subvolume (for apt-in-snapshot flows).
    let snap = slots.snapshot_running(&name("r1x"), &name("snap")).unwrap();
    assert_eq!(
        std::fs::read(snap.join("etc/os-release")).unwrap(),
        b"VERSION=1\n"
    );
    assert_eq!(
        slots.slot(&name("snap")).status().unwrap().state,
        SlotState::Incomplete
    );

    // Prune: keep 2 besides nothing else; booted r1 / rollback r2 exist and are spared.
    for (n, v) in [("r1", "1"), ("r2", "2")] {
        let unguarded = BtrfsSlots::new(&fs.mnt, &state).with_keep(10);
        let (r, z) = req_for(&format!("targets/{n}.tar.zst"), v, &tar);
        server.add(&format!("targets/{n}.tar.zst"), z);
        unguarded
            .stage_tar(
                &name(n),
                StageJob {
                    req: &r,
                    source: &src,
                    opts: &StageOptions::default(),
                    progress: None,
                    cancel: &CancelToken::new(),
                },
            )
            .await
            .unwrap();
    }
    let removed = slots.prune().unwrap();
    for keep in ["r1", "r2"] {
        assert!(fs.mnt.join(keep).exists(), "{keep} was pruned");
        assert!(!removed.contains(&name(keep)));
    }
    assert!(!removed.is_empty(), "nothing pruned");
    for r in &removed {
        assert!(!fs.mnt.join(r.as_str()).exists());
    }
}
