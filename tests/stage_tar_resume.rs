//! kill -9 during a btrfs (tar.zst) install, then resume: the kept download is replayed
//! from disk and only the rest is fetched with `Range`, extraction starts over, and the
//! result is the same verified subvolume (root only: real btrfs on a loop device).
//!
//! The installer runs in a child process (this test binary re-executed with
//! `PATCHD_TAR_CHILD` set), so SIGKILL hits a real process mid-download.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::disk::Btrfs;
use common::http::{FaultServer, Faults};
use patchd::fetch::{HttpOptions, HttpSource};
use patchd::names::SlotName;
use patchd::slot::{
    BtrfsSlots, CancelToken, Compression, ImageFormat, Slot, SlotState, StageOptions, StageRequest,
};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn opts() -> StageOptions {
    StageOptions {
        checkpoint_every: MIB,
        ..StageOptions::default()
    }
}

fn slots(root: &Path, state: &Path) -> BtrfsSlots {
    BtrfsSlots::new(root, state)
}

/// The child: stage the archive described by the environment, then exit.
#[test]
fn child_entry() {
    let Ok(root) = std::env::var("PATCHD_TAR_CHILD") else {
        return; // not a child: nothing to do
    };
    let url = std::env::var("PATCHD_TAR_URL").unwrap();
    let state = std::env::var("PATCHD_TAR_STATE").unwrap();
    let req: StageRequest =
        serde_json::from_str(&std::env::var("PATCHD_TAR_REQ").unwrap()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let src = HttpSource::new(&url, HttpOptions::default()).unwrap();
        slots(Path::new(&root), Path::new(&state))
            .stage_tar(
                &req,
                &src,
                &SlotName::new("b").unwrap(),
                &opts(),
                None,
                &CancelToken::new(),
            )
            .await
            .unwrap();
    });
}

fn kept_offset(root: &Path) -> u64 {
    let Ok(b) = std::fs::read(root.join(".b.download.json")) else {
        return 0;
    };
    serde_json::from_slice::<serde_json::Value>(&b)
        .ok()
        .and_then(|v| v["offset"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_tar_install_then_resume_the_download() {
    let t = "kill_9_during_tar_install_then_resume_the_download";
    if !common::require_root(t) || !common::require_tools(t, &["losetup", "mkfs.btrfs", "mount"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = Btrfs::new(dir.path());
    let root = fs.mnt.join("slots");
    std::fs::create_dir(&root).unwrap();
    let state = dir.path().join("state");

    // ~12 MiB archive of incompressible files.
    let mut b = tar::Builder::new(Vec::new());
    let mut files = Vec::new();
    for i in 0..6 {
        let data = common::noise(2 * MIB as usize, 200 + i);
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        let name = format!("usr/lib/blob{i}");
        b.append_data(&mut h, &name, &data[..]).unwrap();
        files.push((name, data));
    }
    let tar = b.into_inner().unwrap();
    let z = zstd::encode_all(&tar[..], 3).unwrap();
    let req = StageRequest {
        path: "targets/rootfs.tar.zst".into(),
        version: "5".into(),
        length: z.len() as u64,
        sha256: sha(&z),
        sha512: None,
        compression: Compression::Zstd,
        format: ImageFormat::Tar,
        size: tar.len() as u64,
        content_sha256: sha(&tar),
    };
    let server = FaultServer::start().await;
    server.add("targets/rootfs.tar.zst", z.clone());
    server.set(Faults {
        chunk_delay: Some(Duration::from_millis(3)),
        ..Faults::default()
    });

    let exe = std::env::current_exe().unwrap();
    let mut kills = 0;
    for _ in 0..2 {
        let mut child = Command::new(&exe)
            .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
            .env("PATCHD_TAR_CHILD", &root)
            .env("PATCHD_TAR_STATE", &state)
            .env("PATCHD_TAR_URL", server.url())
            .env("PATCHD_TAR_REQ", serde_json::to_string(&req).unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let before = kept_offset(&root);
        let t0 = Instant::now();
        while kept_offset(&root) <= before && t0.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let _ = child.wait();
        let st = slots(&root, &state)
            .slot(&SlotName::new("b").unwrap())
            .status()
            .unwrap();
        assert!(!st.state.is_bootable(), "killed install became bootable");
    }
    assert!(kills > 0, "the child finished before it could be killed");
    let kept = kept_offset(&root);
    assert!(kept > 0, "nothing of the download was kept");

    // Resume in this process, at full speed.
    server.set(Faults::default());
    let before = server.seen().len();
    let src = HttpSource::new(&server.url(), HttpOptions::default()).unwrap();
    let name = SlotName::new("b").unwrap();
    let st = slots(&root, &state)
        .stage_tar(&req, &src, &name, &opts(), None, &CancelToken::new())
        .await
        .unwrap();
    assert_eq!(st.state, SlotState::Verified);
    let seen = server.seen();
    let resumed: Vec<_> = seen[before..].iter().map(|r| r.range_start).collect();
    assert_eq!(
        resumed,
        vec![Some(kept)],
        "the resumed install must fetch only the rest, from the kept offset"
    );
    // Every run after the first fetched from where the previous one had kept bytes.
    assert!(
        seen.iter()
            .skip(1)
            .all(|r| r.range_start.is_some_and(|o| o > 0)),
        "a run started the download over: {:?}",
        seen.iter().map(|r| r.range_start).collect::<Vec<_>>()
    );
    let tree = slots(&root, &state).subvolume_path(&name);
    for (n, data) in &files {
        assert_eq!(&std::fs::read(tree.join(n)).unwrap(), data, "{n}");
    }
    assert!(!root.join(".b.download").exists() && !root.join(".b.download.json").exists());
    assert!(!root.join(".b.partial").exists());
}
