//! The read-back reads the device, not the page cache (`O_DIRECT`), and falls back
//! cleanly where direct I/O is not supported (root only: loop devices, ramfs).

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use common::disk::{Loop, Mount};
use common::image::sha256_hex as sha;
use patchd::fetch::FileSource;
use patchd::names::SlotName;
use patchd::paths::Paths;
use patchd::slot::{
    stage_image, supports_direct_read, verify_slot_content, BlockSlot, CancelToken, ImageFileSlot,
    RawSlot, SlotState, StageError, StageOptions, StageRequest,
};

const MIB: u64 = 1 << 20;

fn repo(dir: &std::path::Path, data: &[u8]) -> FileSource {
    std::fs::create_dir_all(dir.join("repo/targets")).unwrap();
    std::fs::write(dir.join("repo/targets/img"), data).unwrap();
    FileSource::new(dir.join("repo"))
}

/// Corrupt the loop device's backing file behind the loop device's page cache: a
/// buffered read of the device still shows the old byte, the read-back sees the new one.
#[tokio::test]
async fn read_back_sees_the_device_behind_a_stale_page_cache() {
    let t = "read_back_sees_the_device_behind_a_stale_page_cache";
    if !common::require_root(t) || !common::require_tools(t, &["losetup"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lo = Loop::new(dir.path(), "b.raw", 8 * MIB);
    let data = common::noise(4 * MIB as usize + 1000, 5);
    let req = StageRequest::raw("targets/img", "1", data.len() as u64, &sha(&data));
    let slot: Arc<dyn RawSlot> = Arc::new(BlockSlot::new(
        SlotName::new("b").unwrap(),
        &lo.dev,
        &dir.path().join("state"),
        Paths::default(),
    ));
    assert!(supports_direct_read(slot.as_ref()).unwrap());
    let st = stage_image(
        &req,
        &repo(dir.path(), &data),
        slot.clone(),
        &StageOptions::default(),
        None,
        &CancelToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(st.state, SlotState::Verified);
    verify_slot_content(slot.as_ref(), req.size, &req.sha256).unwrap();

    // Fill the device's page cache with the good content.
    let at = 2 * MIB + 17;
    let dev = std::fs::File::open(&lo.dev).unwrap();
    let mut cached = [0u8; 1];
    dev.read_exact_at(&mut cached, at).unwrap();
    assert_eq!(cached[0], data[at as usize]);
    // Change the medium underneath (the backing file), not through the device.
    let backing = std::fs::OpenOptions::new()
        .write(true)
        .open(&lo.backing)
        .unwrap();
    backing.write_all_at(&[!data[at as usize]], at).unwrap();
    backing.sync_all().unwrap();
    // The page cache would hide the damage …
    dev.read_exact_at(&mut cached, at).unwrap();
    assert_eq!(
        cached[0], data[at as usize],
        "the device's page cache was dropped; the test cannot show anything"
    );
    // … the read-back does not.
    let err = verify_slot_content(slot.as_ref(), req.size, &req.sha256).unwrap_err();
    assert!(
        matches!(
            err,
            StageError::HashMismatch {
                which: "read-back sha256",
                ..
            }
        ),
        "{err}"
    );
}

/// ramfs has no direct I/O: the read-back says so and uses buffered reads; the install
/// still ends verified, and still fails on wrong content.
#[tokio::test]
async fn read_back_falls_back_to_buffered_reads_without_o_direct() {
    let t = "read_back_falls_back_to_buffered_reads_without_o_direct";
    if !common::require_root(t) || !common::require_tools(t, &["mount"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("ram");
    let _ram = Mount::virtual_fs("ramfs", None, &mnt);
    let slot: Arc<dyn RawSlot> = Arc::new(ImageFileSlot::new(
        SlotName::new("b").unwrap(),
        mnt.join("b.img"),
        &dir.path().join("state"),
    ));
    std::fs::write(mnt.join("b.img"), b"").unwrap();
    assert!(
        !supports_direct_read(slot.as_ref()).unwrap(),
        "ramfs unexpectedly supports O_DIRECT"
    );
    let data = common::noise(3 * MIB as usize + 7, 6);
    let req = StageRequest::raw("targets/img", "1", data.len() as u64, &sha(&data));
    let src = repo(dir.path(), &data);
    let st = stage_image(
        &req,
        &src,
        slot.clone(),
        &StageOptions::default(),
        None,
        &CancelToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(st.state, SlotState::Verified);
    assert_eq!(std::fs::read(mnt.join("b.img")).unwrap(), data);
    let mut wrong = req.clone();
    wrong.version = "2".into();
    wrong.sha256 = sha(b"other");
    wrong.content_sha256 = wrong.sha256.clone();
    let err = stage_image(
        &wrong,
        &src,
        slot,
        &StageOptions::default(),
        None,
        &CancelToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StageError::HashMismatch { .. }), "{err}");
}
