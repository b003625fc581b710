//! btrfs snapshot slots configured in `[slots]` and driven by the real daemon: mkfs.btrfs
//! on a loop device (root only), `backend = "btrfs"`, and a whole update — check, stage
//! the release's tar rootfs into a fresh subvolume, switch, reboot, verify, commit —
//! through `patchd run`.

mod process;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use process::*;

struct Mounted {
    dev: String,
    mnt: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

fn mount_btrfs(img: &std::path::Path, mnt: &std::path::Path) -> Mounted {
    std::fs::File::create(img)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(img)
        .output()
        .unwrap();
    assert!(out.status.success(), "losetup: {out:?}");
    let dev = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let m = Mounted {
        dev,
        mnt: mnt.to_path_buf(),
    };
    assert!(Command::new("mkfs.btrfs")
        .args(["-q", "-f", &m.dev])
        .status()
        .unwrap()
        .success());
    std::fs::create_dir_all(mnt).unwrap();
    assert!(Command::new("mount")
        .arg(&m.dev)
        .arg(mnt)
        .status()
        .unwrap()
        .success());
    m
}

fn skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (loop device, mount)");
    }
    if !have("mkfs.btrfs") {
        return Some("mkfs.btrfs not installed (apt-get install btrfs-progs)");
    }
    if !have("losetup") {
        return Some("losetup not installed");
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_updates_into_a_btrfs_subvolume_slot_configured_in_slots() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let Some(bus) = SessionBus::start() else {
        return;
    };
    let systemd = FakeSystemd::default();
    let _sd = systemd.serve(&bus.address).await;
    let top = tempfile::tempdir().unwrap();
    let dev = Device::new(
        top.path(),
        &DeviceSpec {
            slots: SlotsKind::Btrfs("/slots".into()),
            ..DeviceSpec::default()
        },
    );
    let mnt = dev.paths.resolve("/slots");
    let _m = mount_btrfs(&top.path().join("btrfs.raw"), &mnt);

    let mut d = dev.spawn(&bus.address, &[]);
    let e = wait_until(
        &mut d,
        &dev,
        Duration::from_secs(120),
        "reboot request",
        |_| false,
    )
    .await;
    let Ended::Exited(st) = e else { unreachable!() };
    assert!(st.success(), "patchd exit {st}:\n{}", dev.log());
    assert_eq!(systemd.calls().len(), 1, "{:?}", systemd.calls());
    // Staged into a subvolume of its own, published only once verified.
    let os_release = std::fs::read_to_string(mnt.join("b/etc/os-release")).unwrap();
    assert!(os_release.contains("VERSION_ID=2.0.0"), "{os_release}");
    assert!(!mnt.join(".b.partial").exists());
    let out = Command::new("btrfs")
        .args(["subvolume", "show"])
        .arg(mnt.join("b"))
        .output();
    if let Ok(out) = out {
        assert!(out.status.success(), "slot b is not a subvolume: {out:?}");
    }
    assert_eq!(
        dev.slot_status("b").state,
        patchd::slot::SlotState::Verified
    );

    assert_eq!(dev.power_cycle().as_str(), "b");
    let mut d = dev.spawn(&bus.address, &[]);
    let e = wait_until(&mut d, &dev, Duration::from_secs(120), "commit", |dev| {
        committed(dev, "2.0.0")
    })
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    d.stop(Duration::from_secs(40)).expect("stops on SIGTERM");
    assert_eq!(dev.slot_status("b").state, patchd::slot::SlotState::Good);
    assert_eq!(dev.slot_status("b").version.as_deref(), Some("2.0.0"));
}

#[test]
fn daemon_refuses_a_btrfs_slot_dir_that_is_not_btrfs() {
    let top = tempfile::tempdir().unwrap();
    let on_btrfs = nix::sys::statfs::statfs(top.path())
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC);
    if on_btrfs {
        println!("skipped: the temporary directory is on btrfs");
        return;
    }
    let dev = Device::new(
        top.path(),
        &DeviceSpec {
            slots: SlotsKind::Btrfs("/slots".into()),
            ..DeviceSpec::default()
        },
    );
    std::fs::create_dir_all(dev.paths.resolve("/slots")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_patchd"))
        .arg("--root")
        .arg(dev.paths.resolve("/"))
        .args([
            "--bus-address",
            "unix:path=/nonexistent",
            "--auth",
            "uids:0",
            "run",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not on a btrfs filesystem"), "{err}");
}
