//! Issue 15 item 1, against the running daemon and the real bootloader tools: slot a runs
//! 1.0.0 (committed), slot b is the committed fallback. `patchd run` stages 2.0.0 into b
//! from a throttled mirror and the power is cut (SIGKILL) once b's first bytes are
//! written. The bootloader, read back with its own tool (`grub-editenv list`,
//! `fw_printenv`, `bootctl list`), must no longer offer b: when a's boot counter then runs
//! out, the shipped boot logic finds nothing to boot rather than the half-written b.

mod common;
mod process;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::http::{FaultServer, Faults};
use patchd::boot::ab::AbState;
use patchd::boot::config::UbootCopy;
use patchd::boot::grubenv::{state_from_env, GrubEnv};
use patchd::boot::uboot::state_from_vars;
use patchd::boot::{Bootloader, UbootBootloader, UbootEnv};
use patchd::names::SlotName;
use patchd::slot::SlotState;
use process::*;

const SIZE: usize = 8 << 20;
const UBOOT_ENV_SIZE: u64 = 0x4000;

#[derive(Clone, Copy, Debug)]
enum Backend {
    File,
    Grub,
    Uboot,
    SystemdBoot,
}

fn s(n: &str) -> SlotName {
    SlotName::new(n).unwrap()
}

fn have_tool(name: &str, pkg: &str) -> bool {
    if have(name) {
        return true;
    }
    println!("skipped: {name} not installed (Debian package {pkg})");
    false
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The ESP as bootctl accepts it: a mounted filesystem (ext4 with relaxed checks).
struct Mounted(PathBuf);

impl Mounted {
    fn new(img: &Path, mnt: &Path) -> Option<Self> {
        std::fs::create_dir_all(mnt).unwrap();
        std::fs::File::create(img)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
        if !(ok(Command::new("mkfs.ext4").arg("-q").arg(img))
            && ok(Command::new("mount").args(["-o", "loop"]).arg(img).arg(mnt)))
        {
            println!("skipped: cannot loop-mount an ext4 ESP (needs root and loop devices)");
            return None;
        }
        Some(Self(mnt.to_path_buf()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// One backend's bootloader on the device, with a and b both committed, a first.
struct Boot {
    backend: Backend,
    root: PathBuf,
    _esp: Option<Mounted>,
}

impl Boot {
    fn setup(backend: Backend, dev: &Device, top: &Path) -> Option<Boot> {
        let root = dev.paths.resolve("/");
        let conf = dev.paths.resolve("/etc/patchd/patchd.toml");
        let text = std::fs::read_to_string(&conf).unwrap();
        let section = match backend {
            Backend::File => "[boot]\nbackend = \"file\"\n".to_string(),
            Backend::Grub => "[boot]\nbackend = \"grub\"\n\n[boot.grub]\nenv = \"/boot/grub/grubenv\"\n".into(),
            Backend::Uboot => format!(
                "[boot]\nbackend = \"uboot\"\n\n[[boot.uboot.copies]]\ndevice = \"/boot/uboot.env\"\nsize = {UBOOT_ENV_SIZE}\n"
            ),
            Backend::SystemdBoot => "[boot]\nbackend = \"systemd-boot\"\n".into(),
        };
        assert!(text.contains("[boot]\nbackend = \"file\"\n"), "{text}");
        std::fs::write(
            &conf,
            text.replace("[boot]\nbackend = \"file\"\n", &section),
        )
        .unwrap();
        std::fs::create_dir_all(root.join("proc")).unwrap();
        std::fs::write(root.join("proc/cmdline"), "ro patchd.slot=a\n").unwrap();
        let mut esp = None;
        match backend {
            Backend::File => {
                std::fs::write(
                    dev.boot_file(),
                    r#"{"version":1,"order":["a","b"],"slots":{"a":{"left":0,"good":true},"b":{"left":0,"good":true}},"booted":"a"}"#,
                )
                .unwrap();
            }
            Backend::Grub => {
                if !have_tool("grub-editenv", "grub-common") {
                    return None;
                }
                let env = root.join("boot/grub/grubenv");
                std::fs::create_dir_all(env.parent().unwrap()).unwrap();
                run(Command::new("grub-editenv").arg(&env).arg("create"));
                run(Command::new("grub-editenv").arg(&env).args([
                    "set",
                    "patchd_order=a b",
                    "patchd_a_ok=1",
                    "patchd_a_left=0",
                    "patchd_b_ok=1",
                    "patchd_b_left=0",
                ]));
            }
            Backend::Uboot => {
                if !have_tool("fw_printenv", "libubootenv-tool") {
                    return None;
                }
                let file = root.join("boot/uboot.env");
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(&file, vec![0u8; UBOOT_ENV_SIZE as usize]).unwrap();
                std::fs::write(
                    top.join("fw_env.config"),
                    format!("{} 0x0 {UBOOT_ENV_SIZE:#x}\n", file.display()),
                )
                .unwrap();
                let env = UbootEnv::new(vec![UbootCopy {
                    device: file,
                    offset: 0,
                    size: UBOOT_ENV_SIZE,
                }])
                .unwrap();
                UbootBootloader::new(env, slot_names())
                    .unwrap()
                    .reset(&s("a"))
                    .unwrap();
                let b = Boot {
                    backend,
                    root: root.clone(),
                    _esp: None,
                };
                b.fw_setenv(
                    top,
                    &[
                        ("BOOT_ORDER", "A B"),
                        ("BOOT_B_OK", "1"),
                        ("BOOT_B_LEFT", "3"),
                    ],
                );
            }
            Backend::SystemdBoot => {
                if !have_tool("bootctl", "systemd-boot") {
                    return None;
                }
                let dir = root.join("boot/efi");
                esp = Some(Mounted::new(&top.join("esp.img"), &dir)?);
                std::fs::create_dir_all(dir.join("loader/entries")).unwrap();
                for slot in ["a", "b"] {
                    std::fs::create_dir_all(dir.join(slot)).unwrap();
                    std::fs::write(dir.join(slot).join("vmlinuz"), b"kernel").unwrap();
                    std::fs::write(
                        dir.join(format!("loader/entries/patchd-{slot}.conf")),
                        format!("title patchd {slot}\nlinux /{slot}/vmlinuz\noptions patchd.slot={slot}\n"),
                    )
                    .unwrap();
                }
            }
        }
        Some(Boot {
            backend,
            root,
            _esp: esp,
        })
    }

    fn fw_env_config(top: &Path) -> PathBuf {
        top.join("fw_env.config")
    }

    fn fw_setenv(&self, top: &Path, vars: &[(&str, &str)]) {
        for (n, v) in vars {
            run(Command::new("fw_setenv")
                .arg("-c")
                .arg(Self::fw_env_config(top))
                .args([n, v]));
        }
    }

    /// What the bootloader's own tool reads, and the shipped boot logic's decision from
    /// it once slot a's trial has run out (the running slot failing to boot).
    /// `None` for systemd-boot, whose decision is checked on `bootctl list` directly.
    fn listed_and_fallback(&self, dev: &Device, top: &Path) -> (String, Option<Option<SlotName>>) {
        match self.backend {
            Backend::File => {
                let text = std::fs::read_to_string(dev.boot_file()).unwrap();
                let mut st: serde_json::Value = serde_json::from_str(&text).unwrap();
                st["slots"]["a"] = serde_json::json!({"left": 0, "good": false});
                std::fs::write(dev.boot_file(), st.to_string()).unwrap();
                (
                    text,
                    Some(patchd::boot::file::simulate_reboot(&dev.boot_file(), &slot_names()).ok()),
                )
            }
            Backend::Grub => {
                let env = self.root.join("boot/grub/grubenv");
                let listed = run(Command::new("grub-editenv").arg(&env).arg("list"));
                run(Command::new("grub-editenv").arg(&env).args([
                    "set",
                    "patchd_a_ok=0",
                    "patchd_a_left=0",
                ]));
                let text = run(Command::new("grub-editenv").arg(&env).arg("list"));
                let mut g = GrubEnv::default();
                for line in text.lines() {
                    if let Some((n, v)) = line.split_once('=') {
                        g.set(n, v);
                    }
                }
                let mut st: AbState =
                    state_from_env("grub-editenv list", &g, &slot_names()).unwrap();
                (listed, Some(st.boot_decision()))
            }
            Backend::Uboot => {
                let print = || {
                    run(Command::new("fw_printenv")
                        .arg("-c")
                        .arg(Self::fw_env_config(top)))
                };
                let listed = print();
                self.fw_setenv(top, &[("BOOT_A_OK", "0"), ("BOOT_A_LEFT", "0")]);
                let vars: BTreeMap<String, String> = print()
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect();
                let mut st = state_from_vars("fw_printenv", &vars, &slot_names()).unwrap();
                (listed, Some(st.boot_decision()))
            }
            Backend::SystemdBoot => {
                let listed = run(Command::new("bootctl")
                    .arg(format!(
                        "--esp-path={}",
                        self.root.join("boot/efi").display()
                    ))
                    .args(["--no-variables", "--no-pager", "list"])
                    .env("SYSTEMD_RELAX_ESP_CHECKS", "1"));
                (listed, None)
            }
        }
    }

    /// Before staging: b is a bootable fallback (so the test can fail).
    fn assert_b_bootable(&self, dev: &Device, top: &Path) {
        let listed = self.peek(dev, top);
        match self.backend {
            Backend::File => assert!(listed.contains(r#""order":["a","b"]"#), "{listed}"),
            Backend::Grub => {
                assert!(
                    listed.contains("patchd_order=a b\n") && listed.contains("patchd_b_ok=1\n"),
                    "{listed}"
                )
            }
            Backend::Uboot => {
                assert!(
                    listed.contains("BOOT_ORDER=A B\n") && listed.contains("BOOT_B_OK=1\n"),
                    "{listed}"
                )
            }
            Backend::SystemdBoot => assert!(!listed.contains("tries:"), "{listed}"),
        }
    }

    fn peek(&self, dev: &Device, top: &Path) -> String {
        match self.backend {
            Backend::File => std::fs::read_to_string(dev.boot_file()).unwrap(),
            Backend::Grub => run(Command::new("grub-editenv")
                .arg(self.root.join("boot/grub/grubenv"))
                .arg("list")),
            Backend::Uboot => run(Command::new("fw_printenv")
                .arg("-c")
                .arg(Self::fw_env_config(top))),
            Backend::SystemdBoot => run(Command::new("bootctl")
                .arg(format!(
                    "--esp-path={}",
                    self.root.join("boot/efi").display()
                ))
                .args(["--no-variables", "--no-pager", "list"])
                .env("SYSTEMD_RELAX_ESP_CHECKS", "1")),
        }
    }
}

async fn interrupted_staging_leaves_no_fallback_into_garbage(backend: Backend) {
    let Some(bus) = SessionBus::start() else {
        return;
    };
    let systemd = FakeSystemd::default();
    let _sd = systemd.serve(&bus.address).await;
    let server = FaultServer::start().await;
    let top = tempfile::tempdir().unwrap();
    let dev = Device::new(
        top.path(),
        &DeviceSpec {
            image_size: SIZE,
            uncompressed: true,
            url: Some(server.url()),
            ..DeviceSpec::default()
        },
    );
    let Some(boot) = Boot::setup(backend, &dev, top.path()) else {
        return;
    };
    boot.assert_b_bootable(&dev, top.path());
    for (path, bytes) in dev.repo_files() {
        server.add(&path, bytes);
    }
    // ~30 s for the image: staging is surely still writing when the power goes.
    server.set(Faults {
        chunk_delay: Some(Duration::from_millis(250)),
        ..Faults::default()
    });
    let mut d = dev.spawn(&bus.address, &[]);
    let e = wait_until(
        &mut d,
        &dev,
        Duration::from_secs(120),
        "b half written",
        |dev| dev.slot_status("b").state == SlotState::Incomplete,
    )
    .await;
    assert!(
        matches!(e, Ended::Reached),
        "{backend:?}: {e:?}\n{}",
        dev.log()
    );
    d.kill();

    let (listed, decision) = boot.listed_and_fallback(&dev, top.path());
    match backend {
        Backend::File => {
            let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
            assert_eq!(v["order"], serde_json::json!(["a"]), "{listed}");
        }
        Backend::Grub => assert!(
            listed.contains("patchd_order=a\n") && listed.contains("patchd_b_ok=0\n"),
            "grub-editenv list after the cut:\n{listed}"
        ),
        Backend::Uboot => assert!(
            listed.contains("BOOT_ORDER=A\n") && !listed.contains("BOOT_B_OK=1"),
            "fw_printenv after the cut:\n{listed}"
        ),
        Backend::SystemdBoot => {
            // b's entry is out of tries (+0): systemd-boot's automatic choice skips it.
            assert!(
                listed.contains("tries: 0 left"),
                "bootctl list after the cut:\n{listed}"
            );
            assert!(
                listed.contains("patchd-b+0"),
                "bootctl list after the cut:\n{listed}"
            );
        }
    }
    if let Some(decision) = decision {
        assert_eq!(
            decision, None,
            "{backend:?}: with a's counter spent the bootloader chose the half-written b"
        );
    }
    let events = dev.audit_events();
    assert!(events.iter().any(|e| e == "slot_fenced"), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_bootloader() {
    interrupted_staging_leaves_no_fallback_into_garbage(Backend::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grub_with_grub_editenv() {
    interrupted_staging_leaves_no_fallback_into_garbage(Backend::Grub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uboot_with_fw_printenv() {
    interrupted_staging_leaves_no_fallback_into_garbage(Backend::Uboot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_boot_with_bootctl() {
    interrupted_staging_leaves_no_fallback_into_garbage(Backend::SystemdBoot).await;
}

/// When the bootloader cannot be told that the target is unbootable (its environment
/// cannot be written), staging does not start: no byte of the slot is written, the job
/// fails naming the reason, the audit record says `cause: fence`, and the slot — still
/// the bootloader's fallback — keeps its content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_that_cannot_be_written_refuses_to_stage() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root (a read-only bind mount of the bootloader file)");
        return;
    }
    let Some(rig) = Rig::start().await else {
        return;
    };
    let dev = rig.device(&DeviceSpec {
        image_size: SIZE,
        policy: NO_WINDOW.into(),
        ..DeviceSpec::default()
    });
    let Some(boot) = Boot::setup(Backend::File, &dev, rig.top.path()) else {
        return;
    };
    boot.assert_b_bootable(&dev, rig.top.path());
    let b_before = std::fs::read(dev.paths.resolve("/var/lib/slots/b.img")).unwrap();
    // The environment stays readable but every write (temp file + rename onto it) fails.
    let env = dev.boot_file();
    let env_s = env.to_str().unwrap();
    run(Command::new("mount").args(["--bind", env_s, env_s]));
    let _unmount = Unmount(env.clone());
    run(Command::new("mount").args(["-o", "remount,bind,ro", env_s]));

    let mut d = dev.spawn(rig.addr(), &[]);
    let e = wait_until(
        &mut d,
        &dev,
        Duration::from_secs(60),
        "staging_failed",
        |dev| dev.audit_events().iter().any(|e| e == "staging_failed"),
    )
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    let audit = std::fs::read_to_string(dev.audit_path()).unwrap();
    let failed = audit
        .lines()
        .find(|l| l.contains("\"staging_failed\""))
        .unwrap();
    assert!(failed.contains("\"cause\":\"fence\""), "{failed}");
    assert!(
        failed.contains("could not be marked unbootable"),
        "{failed}"
    );
    let (code, status, err) = patchctl(rig.addr(), &["status"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        status.contains("could not be marked unbootable"),
        "{status}"
    );
    assert_ne!(dev.state_kind(), "staging");
    assert_eq!(
        std::fs::read(dev.paths.resolve("/var/lib/slots/b.img")).unwrap(),
        b_before,
        "slot b was written although it could not be fenced"
    );
    assert_ne!(dev.slot_status("b").state, SlotState::Incomplete);
    boot.assert_b_bootable(&dev, rig.top.path());
    d.stop(Duration::from_secs(10));
}

/// Undo a bind mount when the test ends, failed or not.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
