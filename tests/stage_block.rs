//! Block-device slots on real loop devices (root only): install with read-back, and the
//! refusals — booted root, mounted target, image larger than the partition.

mod common;

use std::sync::Arc;

use common::disk::{mkfs, Loop, Mount};
use common::http::FaultServer;
use common::image::zstd_request;
use patchd::fetch::{HttpOptions, HttpSource};
use patchd::names::SlotName;
use patchd::paths::Paths;
use patchd::slot::{
    stage_image, BlockSlot, CancelToken, ImageFormat, Slot, SlotError, SlotState, StageError,
    StageOptions,
};

const MIB: u64 = 1 << 20;

fn usable(test: &str) -> bool {
    common::require_root(test)
        && common::require_tools(test, &["losetup", "mkfs.ext4", "mount", "sfdisk"])
}

#[tokio::test]
async fn block_slot_install_refusals_and_read_back() {
    if !usable("block_slot_install_refusals_and_read_back") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let a = Loop::new(dir.path(), "a.raw", 16 * MIB);
    let b = Loop::new(dir.path(), "b.raw", 16 * MIB);

    // Half noise, half compressible, zstd-compressed: the production shape.
    let mut content = common::noise(6 * MIB as usize, 5);
    content.extend(std::iter::repeat_n(b'x', 6 * MIB as usize));
    let compressed = zstd::encode_all(&content[..], 3).unwrap();
    let req = zstd_request(
        "targets/os.img.zst",
        "5.1",
        ImageFormat::Raw,
        &content,
        &compressed,
    );
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
    mkfs(&a.dev, "ext4");
    let mnt = dir.path().join("mnt");
    let mounted = Mount::device(&a.dev, &mnt);
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
    mounted.unmount();
    assert!(
        matches!(&err, StageError::Slot(SlotError::Refused { why, .. }) if why.contains("mounted")),
        "{err}"
    );
    assert_ne!(slot_a.status().unwrap().state, SlotState::Verified);
    // A whole disk one of whose partitions is mounted.
    let disk = Loop::partitioned(
        dir.path(),
        "disk.raw",
        16 * MIB,
        "label: dos\nstart=2048, type=83\n",
    );
    let part = disk.partition(1);
    mkfs(&part, "ext4");
    let mounted = Mount::device(&part, &mnt);
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
    mounted.unmount();
    assert!(
        matches!(&err, StageError::Slot(SlotError::Refused { why, .. }) if why.contains("partition")),
        "{err}"
    );

    // b, verified earlier, is untouched by the refusals.
    assert_eq!(slot_b.status().unwrap().state, SlotState::Verified);
}
