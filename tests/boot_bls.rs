//! systemd-boot / BLS boot counting: entry names we produce are parsed by `bootctl list`
//! on a mounted ESP, counter transitions follow the specification and systemd-bless-boot,
//! the EFI variables have the efivarfs layout, and a trial that never gets blessed falls
//! back on the next (simulated) systemd-boot boot.

use std::path::{Path, PathBuf};
use std::process::Command;

use patchd::boot::config::{DetectConfig, SystemdBootConfig};
use patchd::boot::detect::Detector;
use patchd::boot::{Bootloader, SystemdBoot};
use patchd::names::SlotName;
use patchd::paths::Paths;

fn s(n: &str) -> SlotName {
    SlotName::new(n).unwrap()
}

fn slots() -> Vec<SlotName> {
    vec![s("a"), s("b")]
}

const GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// A fake root: ESP at /boot/efi with one Type #1 entry per slot, efivarfs directory.
fn fake_root() -> (tempfile::TempDir, Paths, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::new(dir.path());
    let esp = populate(&paths);
    (dir, paths, esp)
}

fn populate(paths: &Paths) -> PathBuf {
    let esp_dir = paths.resolve("/boot/efi");
    let entries = esp_dir.join("loader/entries");
    std::fs::create_dir_all(&entries).unwrap();
    for (slot, dev) in [("a", "vda2"), ("b", "vda3")] {
        std::fs::create_dir_all(esp_dir.join(slot)).unwrap();
        std::fs::write(esp_dir.join(slot).join("vmlinuz"), b"kernel").unwrap();
        std::fs::write(
            entries.join(format!("patchd-{slot}.conf")),
            format!("title patchd {slot}\nlinux /{slot}/vmlinuz\noptions root=/dev/{dev} patchd.slot={slot}\n"),
        )
        .unwrap();
    }
    std::fs::create_dir_all(paths.resolve("/sys/firmware/efi/efivars")).unwrap();
    esp_dir
}

fn backend(paths: &Paths, _esp: &Path) -> SystemdBoot {
    SystemdBoot::new(&SystemdBootConfig::default(), paths, slots()).unwrap()
}

fn entries(esp: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(esp.join("loader/entries"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn trial_that_never_gets_blessed_comes_back_to_a() {
    let (_d, paths, esp) = fake_root();
    let bl = backend(&paths, &esp);
    bl.reset(&s("a")).unwrap();
    assert_eq!(entries(&esp), ["patchd-a.conf", "patchd-b+0.conf"]);
    let fresh = bl.slots().unwrap();
    assert!(
        fresh[0].primary && !fresh[1].bad && !fresh[1].good,
        "{fresh:?}"
    );
    // The fence before a write makes the unused entry bad (+0-DONE).
    bl.mark_bad(&s("b")).unwrap();
    assert_eq!(entries(&esp), ["patchd-a.conf", "patchd-b+0-0.conf"]);
    assert!(bl.slots().unwrap()[1].bad);
    assert_eq!(bl.simulate_boot().unwrap(), s("a"));
    assert_eq!(bl.booted_slot().unwrap(), s("a"));
    bl.try_slot(&s("b"), 1).unwrap();
    assert_eq!(entries(&esp), ["patchd-a.conf", "patchd-b+1.conf"]);
    assert_eq!(bl.simulate_boot().unwrap(), s("b"));
    assert_eq!(entries(&esp), ["patchd-a.conf", "patchd-b+0-1.conf"]);
    assert_eq!(bl.booted_slot().unwrap(), s("b"));
    let info = bl.slots().unwrap();
    assert!(!info[1].bad && info[1].tries_left == Some(0), "{info:?}");
    // Never blessed: the one-shot is spent, the default is still a.
    assert_eq!(bl.simulate_boot().unwrap(), s("a"));
    assert_eq!(bl.simulate_boot().unwrap(), s("a"));
    let info = bl.slots().unwrap();
    assert!(info[0].primary && info[1].bad, "{info:?}");
    // A trial that gets blessed stays.
    bl.try_slot(&s("b"), 3).unwrap();
    assert_eq!(bl.simulate_boot().unwrap(), s("b"));
    assert_eq!(entries(&esp), ["patchd-a.conf", "patchd-b+2-1.conf"]);
    bl.mark_good(&s("b")).unwrap();
    assert_eq!(entries(&esp), ["patchd-a.conf", "patchd-b.conf"]);
    assert_eq!(bl.primary_slot().unwrap(), s("b"));
    assert_eq!(bl.simulate_boot().unwrap(), s("b"));
    bl.mark_bad(&s("a")).unwrap();
    assert_eq!(entries(&esp), ["patchd-a+0-0.conf", "patchd-b.conf"]);
    assert_eq!(bl.simulate_boot().unwrap(), s("b"));
    assert!(bl.mark_bad(&s("b")).is_err(), "last good entry marked bad");
}

#[test]
fn efi_variables_have_the_efivarfs_layout() {
    let (_d, paths, esp) = fake_root();
    let bl = backend(&paths, &esp);
    bl.reset(&s("a")).unwrap();
    bl.try_slot(&s("b"), 2).unwrap();
    let var = |name: &str| {
        std::fs::read(paths.resolve(format!("/sys/firmware/efi/efivars/{name}-{GUID}"))).unwrap()
    };
    let mut want = vec![7u8, 0, 0, 0];
    for u in "patchd-b*".encode_utf16().chain([0]) {
        want.extend_from_slice(&u.to_le_bytes());
    }
    assert_eq!(var("LoaderEntryOneShot"), want);
    assert_eq!(
        bl.read_var("LoaderEntryDefault").unwrap().as_deref(),
        Some("patchd-a*")
    );
    // LoaderEntrySelected as systemd-boot 252 reports it (counter stripped) and with it.
    for id in ["patchd-b.conf", "patchd-b+1-1.conf"] {
        bl.write_var("LoaderEntrySelected", id).unwrap();
        assert_eq!(bl.booted_slot().unwrap(), s("b"));
    }
    bl.write_var("LoaderEntrySelected", "fedora.conf").unwrap();
    assert!(bl.booted_slot().is_err());
}

#[test]
fn booted_slot_sources_must_agree() {
    let (_d, paths, esp) = fake_root();
    std::fs::create_dir_all(paths.resolve("/proc")).unwrap();
    std::fs::write(paths.resolve("/proc/cmdline"), "ro patchd.slot=a\n").unwrap();
    let det = Detector::new(&paths, &slots(), &DetectConfig::default());
    let bl = backend(&paths, &esp).with_detector(det);
    bl.write_var("LoaderEntrySelected", "patchd-a.conf")
        .unwrap();
    assert_eq!(bl.booted_slot().unwrap(), s("a"));
    bl.write_var("LoaderEntrySelected", "patchd-b.conf")
        .unwrap();
    let e = bl.booted_slot().unwrap_err().to_string();
    assert!(e.contains("disagree"), "{e}");
}

#[test]
fn ukis_count_the_same_way() {
    let (_d, paths, esp) = fake_root();
    std::fs::remove_file(esp.join("loader/entries/patchd-b.conf")).unwrap();
    std::fs::create_dir_all(esp.join("EFI/Linux")).unwrap();
    std::fs::write(esp.join("EFI/Linux/patchd-b+3-0.efi"), b"MZ").unwrap();
    let bl = backend(&paths, &esp);
    bl.reset(&s("a")).unwrap();
    assert!(esp.join("EFI/Linux/patchd-b+0.efi").exists());
    bl.try_slot(&s("b"), 2).unwrap();
    assert!(esp.join("EFI/Linux/patchd-b+2.efi").exists());
    assert_eq!(bl.simulate_boot().unwrap(), s("b"));
    bl.mark_good(&s("b")).unwrap();
    assert!(esp.join("EFI/Linux/patchd-b.efi").exists());
}

#[test]
fn bad_trees_are_refused_with_the_path() {
    let (_d, paths, esp) = fake_root();
    let bl = backend(&paths, &esp);
    let dir = esp.join("loader/entries");
    // Missing entry.
    std::fs::rename(dir.join("patchd-b.conf"), dir.join("other.conf")).unwrap();
    let e = bl.slots().unwrap_err().to_string();
    assert!(
        e.contains("no boot entry for slot b") && e.contains("loader/entries"),
        "{e}"
    );
    // Two entries for one slot.
    std::fs::write(dir.join("patchd-b+1.conf"), "title x\n").unwrap();
    std::fs::write(dir.join("patchd-b+2.conf"), "title x\n").unwrap();
    assert!(bl.slots().unwrap_err().to_string().contains("second entry"));
    std::fs::remove_file(dir.join("patchd-b+2.conf")).unwrap();
    // Counter out of range.
    std::fs::rename(dir.join("patchd-b+1.conf"), dir.join("patchd-b+77.conf")).unwrap();
    let e = bl.try_slot(&s("b"), 1).unwrap_err().to_string();
    assert!(
        e.contains("out of range") && e.contains("patchd-b+77.conf"),
        "{e}"
    );
    assert!(
        dir.join("patchd-b+77.conf").exists(),
        "renamed despite the error"
    );
    std::fs::rename(dir.join("patchd-b+77.conf"), dir.join("patchd-b.conf")).unwrap();
    // Unknown slot, bad attempt counts, trying the primary.
    assert!(bl.try_slot(&s("c"), 1).is_err());
    assert!(bl.try_slot(&s("b"), 0).is_err());
    assert!(bl.try_slot(&s("b"), 10).is_err());
    bl.reset(&s("a")).unwrap();
    assert!(bl.try_slot(&s("a"), 1).is_err());
    // Without efivarfs a trial cannot be armed.
    std::fs::remove_dir_all(paths.resolve("/sys/firmware/efi/efivars")).unwrap();
    let e = bl.try_slot(&s("b"), 1).unwrap_err().to_string();
    assert!(e.contains("efivarfs"), "{e}");
    // Entry names that are prefixes of each other are refused at open.
    let mut cfg = SystemdBootConfig::default();
    cfg.entries.insert(s("a"), "os".into());
    cfg.entries.insert(s("b"), "os-b".into());
    assert!(SystemdBoot::new(&cfg, &paths, slots()).is_err());
}

/// bootctl refuses an ESP that is not a mounted filesystem, so mount an ext4 image (vfat
/// is not available on every test kernel; SYSTEMD_RELAX_ESP_CHECKS=1 accepts ext4).
struct Mounted {
    mnt: PathBuf,
}

impl Mounted {
    fn new(work: &Path, mnt: &Path) -> Option<Self> {
        let img = work.join("esp.img");
        std::fs::create_dir_all(mnt).unwrap();
        std::fs::File::create(&img)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let ok = Command::new("mkfs.ext4")
            .arg("-q")
            .arg(&img)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
            && Command::new("mount")
                .args(["-o", "loop"])
                .arg(&img)
                .arg(mnt)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
        if !ok {
            println!("skipped: cannot loop-mount an ext4 image (needs root and loop devices)");
            return None;
        }
        Some(Self {
            mnt: mnt.to_path_buf(),
        })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

fn bootctl_list(esp: &Path) -> String {
    let out = Command::new("bootctl")
        .arg(format!("--esp-path={}", esp.display()))
        .args(["--no-variables", "--no-pager", "list"])
        .env("SYSTEMD_RELAX_ESP_CHECKS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bootctl list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bootctl_parses_the_entries_we_produce() {
    let have = Command::new("sh")
        .args(["-c", "command -v bootctl"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have {
        println!("skipped: bootctl not installed (Debian package systemd-boot)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let paths = Paths::new(root.path());
    let Some(_mounted) = Mounted::new(work.path(), &paths.resolve("/boot/efi")) else {
        return;
    };
    let esp = populate(&paths);
    let bl = backend(&paths, &esp);
    bl.reset(&s("a")).unwrap();
    bl.try_slot(&s("b"), 3).unwrap();
    let out = bootctl_list(&esp);
    let src_b = format!(
        "source: {}",
        esp.join("loader/entries/patchd-b+3.conf").display()
    );
    assert!(out.contains(&src_b), "{out}");
    assert!(out.contains("tries: 3 left\n"), "{out}");
    assert!(out.contains("id: patchd-b.conf"), "{out}");
    bl.simulate_boot().unwrap();
    let out = bootctl_list(&esp);
    assert!(out.contains("tries: 2 left; 1 done"), "{out}");
    bl.mark_good(&s("b")).unwrap();
    bl.mark_bad(&s("a")).unwrap();
    let out = bootctl_list(&esp);
    assert!(out.contains("tries: 0 left; 0 done"), "{out}");
    assert!(
        out.contains(&format!(
            "source: {}",
            esp.join("loader/entries/patchd-b.conf").display()
        )),
        "{out}"
    );
    assert_eq!(out.matches("tries:").count(), 1, "{out}");
}
