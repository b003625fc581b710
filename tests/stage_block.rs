//! Block-device slots on real loop devices (root only): install with read-back, and the
//! refusals — booted root, mounted target, image larger than the partition.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::http::FaultServer;
use patchd::fetch::{HttpOptions, HttpSource};
use patchd::names::SlotName;
use patchd::paths::Paths;
use patchd::slot::{
    stage_image, BlockSlot, CancelToken, Compression, ImageFormat, Slot, SlotError, SlotState,
    StageError, StageOptions, StageRequest,
};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

/// A loop device detached on drop.
struct Loop {
    dev: PathBuf,
}

impl Loop {
    fn new(backing: &Path, size: u64) -> Loop {
        let f = std::fs::File::create(backing).unwrap();
        f.set_len(size).unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(backing)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop {
            dev: PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()),
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

fn usable(test: &str) -> bool {
    common::require_root(test)
        && common::require_tools(test, &["losetup", "mkfs.ext4", "mount", "sfdisk"])
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[tokio::test]
async fn block_slot_install_refusals_and_read_back() {
    if !usable("block_slot_install_refusals_and_read_back") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let a = Loop::new(&dir.path().join("a.raw"), 16 * MIB);
    let b = Loop::new(&dir.path().join("b.raw"), 16 * MIB);

    // Half noise, half compressible, zstd-compressed: the production shape.
    let mut content = common::noise(6 * MIB as usize, 5);
    content.extend(std::iter::repeat(b'x').take(6 * MIB as usize));
    let compressed = zstd::encode_all(&content[..], 3).unwrap();
    let req = StageRequest {
        path: "targets/os.img.zst".into(),
        version: "5.1".into(),
        length: compressed.len() as u64,
        sha256: sha(&compressed),
        sha512: None,
        compression: Compression::Zstd,
        format: ImageFormat::Raw,
        size: content.len() as u64,
        content_sha256: sha(&content),
    };
    let server = FaultServer::start().await;
    server.add("targets/os.img.zst", compressed.clone());
    let src = HttpSource::new(&server.url(), HttpOptions::default()).unwrap();

    let slot_b = Arc::new(BlockSlot::new(
        SlotName::new("b").unwrap(),
        &b.dev,
        &state,
        Paths::default(),
    ));
    let st = stage_image(
        &req,
        &src,
        slot_b.clone(),
        &StageOptions::default(),
        None,
        &CancelToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(st.state, SlotState::Verified);
    let on_disk = std::fs::read(&b.dev).unwrap();
    assert_eq!(&on_disk[..content.len()], &content[..]);

    // Larger than the partition: refused before anything is fetched.
    let before = server.seen().len();
    let mut big = req.clone();
    big.size = 17 * MIB;
    let err = stage_image(
        &big,
        &src,
        slot_b.clone(),
        &StageOptions::default(),
        None,
        &CancelToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StageError::Slot(SlotError::Refused { why, .. }) if why.contains("does not fit")),
        "{err}"
    );
    assert_eq!(server.seen().len(), before);

    // The booted root: a mountinfo (under an injected root) that says `/` is on b.
    let fake_root = dir.path().join("fakeroot");
    std::fs::create_dir_all(fake_root.join("proc/self")).unwrap();
    let rdev = std::os::unix::fs::MetadataExt::rdev(&std::fs::metadata(&b.dev).unwrap());
    std::fs::write(
        fake_root.join("proc/self/mountinfo"),
        format!(
            "1 0 {}:{} / / rw - ext4 {} rw\n",
            libc::major(rdev),
            libc::minor(rdev),
            b.dev.display()
        ),
    )
    .unwrap();
    let booted = Arc::new(BlockSlot::new(
        SlotName::new("b").unwrap(),
        &b.dev,
        &dir.path().join("state2"),
        Paths::new(&fake_root),
    ));
    let err = stage_image(
        &req,
        &src,
        booted,
        &StageOptions::default(),
        None,
        &CancelToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StageError::Slot(SlotError::Refused { why, .. }) if why.contains("running root")),
        "{err}"
    );

    // A mounted target: refused, and its file system is left alone.
    assert!(Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&a.dev)
        .status()
        .unwrap()
        .success());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    assert!(Command::new("mount")
        .arg(&a.dev)
        .arg(&mnt)
        .status()
        .unwrap()
        .success());
    std::fs::write(mnt.join("keep"), b"running system data").unwrap();
    let slot_a = Arc::new(BlockSlot::new(
        SlotName::new("a").unwrap(),
        &a.dev,
        &state,
        Paths::default(),
    ));
    let err = stage_image(
        &req,
        &src,
        slot_a.clone(),
        &StageOptions::default(),
        None,
        &CancelToken::new(),
    )
    .await
    .unwrap_err();
    let _ = Command::new("umount").arg(&mnt).status();
    assert!(
        matches!(&err, StageError::Slot(SlotError::Refused { why, .. }) if why.contains("mounted")),
        "{err}"
    );
    assert_ne!(slot_a.status().unwrap().state, SlotState::Verified);
    // A whole disk one of whose partitions is mounted.
    let disk_file = dir.path().join("disk.raw");
    std::fs::File::create(&disk_file)
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    let mut sf = Command::new("sfdisk")
        .args(["-q"])
        .arg(&disk_file)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    sf.stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048, type=83\n")
        .unwrap();
    assert!(sf.wait().unwrap().success());
    let out = Command::new("losetup")
        .args(["-f", "-P", "--show"])
        .arg(&disk_file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let disk = Loop {
        dev: PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()),
    };
    let part = PathBuf::from(format!("{}p1", disk.dev.display()));
    // Some kernels/containers skip the partition scan at attach; ask explicitly.
    if !part.exists() {
        let _ = Command::new("partx").arg("-a").arg(&disk.dev).status();
    }
    for _ in 0..100 {
        if part.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(part.exists(), "partition {} did not appear", part.display());
    assert!(Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&part)
        .status()
        .unwrap()
        .success());
    assert!(Command::new("mount")
        .arg(&part)
        .arg(&mnt)
        .status()
        .unwrap()
        .success());
    let whole = Arc::new(BlockSlot::new(
        SlotName::new("w").unwrap(),
        &disk.dev,
        &state,
        Paths::default(),
    ));
    let err = stage_image(
        &req,
        &src,
        whole,
        &StageOptions::default(),
        None,
        &CancelToken::new(),
    )
    .await
    .unwrap_err();
    let _ = Command::new("umount").arg(&mnt).status();
    assert!(
        matches!(&err, StageError::Slot(SlotError::Refused { why, .. }) if why.contains("partition")),
        "{err}"
    );

    // b, verified earlier, is untouched by the refusals.
    assert_eq!(slot_b.status().unwrap().state, SlotState::Verified);
}
