//! Extended attributes survive a btrfs slot install: a tree whose files and directories
//! carry `user.*` and `trusted.*` attributes (set with `setfattr`), archived by GNU tar
//! with `--xattrs`, extracted by `BtrfsSlots::stage_tar` into a subvolume, and read back
//! with `getfattr` (root only; real btrfs on a loop device).

mod common;

use std::path::Path;
use std::process::Command;

use common::disk::Btrfs;
use common::http::FaultServer;
use common::image::zstd_request;
use patchd::fetch::{HttpOptions, HttpSource};
use patchd::names::SlotName;
use patchd::slot::{BtrfsSlots, CancelToken, ImageFormat, SlotState, StageJob, StageOptions};

fn run(cmd: &mut Command) {
    let st = cmd.status().unwrap();
    assert!(st.success(), "{cmd:?} failed: {st}");
}

fn getfattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let out = Command::new("getfattr")
        .args(["--only-values", "--absolute-names", "-n", name])
        .arg(path)
        .output()
        .unwrap();
    out.status.success().then_some(out.stdout)
}

#[tokio::test]
async fn xattrs_are_preserved_in_btrfs_tar_installs() {
    let t = "xattrs_are_preserved_in_btrfs_tar_installs";
    if !common::require_root(t)
        || !common::require_tools(
            t,
            &[
                "losetup",
                "mkfs.btrfs",
                "mount",
                "setfattr",
                "getfattr",
                "tar",
            ],
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = Btrfs::new(dir.path());
    // The source tree lives on the btrfs too, so every attribute namespace is supported.
    let src = fs.mnt.join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::create_dir_all(src.join("usr/bin")).unwrap();
    std::fs::write(src.join("etc/config"), b"key=value\n").unwrap();
    std::fs::write(src.join("usr/bin/tool"), b"\x7fELF").unwrap();
    let attrs: &[(&str, &str, &str)] = &[
        ("etc/config", "user.patchd.note", "hello"),
        (
            "etc/config",
            "trusted.patchd.label",
            "system_u:object_r:etc_t",
        ),
        ("usr/bin/tool", "user.binary", "with spaces and = signs"),
        ("etc", "user.dir", "directory attribute"),
    ];
    for (p, n, v) in attrs {
        run(Command::new("setfattr")
            .args(["-n", n, "-v", v])
            .arg(src.join(p)));
    }
    let tar_path = dir.path().join("rootfs.tar");
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--format=posix", "-C"])
        .arg(&src)
        .arg("-cf")
        .arg(&tar_path)
        .args(["etc", "usr"]));
    let tar = std::fs::read(&tar_path).unwrap();
    let z = zstd::encode_all(&tar[..], 3).unwrap();
    let req = zstd_request("targets/rootfs.tar.zst", "7", ImageFormat::Tar, &tar, &z);
    let server = FaultServer::start().await;
    server.add("targets/rootfs.tar.zst", z);
    let source = HttpSource::new(&server.url(), HttpOptions::default()).unwrap();
    let slots_dir = fs.mnt.join("slots");
    std::fs::create_dir(&slots_dir).unwrap();
    let slots = BtrfsSlots::new(&slots_dir, dir.path().join("state"));
    let name = SlotName::new("b").unwrap();
    let st = slots
        .stage_tar(
            &name,
            StageJob {
                req: &req,
                source: &source,
                opts: &StageOptions::default(),
                progress: None,
                cancel: &CancelToken::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(st.state, SlotState::Verified);

    let root = slots.subvolume_path(&name);
    for (p, n, v) in attrs {
        assert_eq!(
            getfattr(&root.join(p), n).as_deref(),
            Some(v.as_bytes()),
            "{p}: attribute {n} lost or changed"
        );
    }
    // And nothing invented: a file without attributes has none.
    assert_eq!(
        getfattr(&root.join("usr/bin/tool"), "user.patchd.note"),
        None
    );
}
