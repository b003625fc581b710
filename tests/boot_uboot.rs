//! U-Boot environment interop with libubootenv's `fw_printenv`/`fw_setenv`, single and
//! redundant copies, CRC fallback, and the shipped boot.cmd compiling with `mkimage`.
//! U-Boot's decision is simulated from what `fw_printenv` reads and saved with `fw_setenv`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use patchd::boot::config::UbootCopy;
use patchd::boot::uboot::{state_from_vars, UbootVars};
use patchd::boot::{Bootloader, UbootBootloader, UbootEnv};
use patchd::names::SlotName;

const SIZE: u64 = 0x4000;

fn tool(name: &str, pkg: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        println!("skipped: {name} not installed (Debian package {pkg})");
    }
    found
}

fn s(n: &str) -> SlotName {
    SlotName::new(n).unwrap()
}

fn slots() -> Vec<SlotName> {
    vec![s("a"), s("b")]
}

struct Fixture {
    _dir: tempfile::TempDir,
    file: PathBuf,
    cfg: PathBuf,
    copies: Vec<UbootCopy>,
}

fn fixture(redundant: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("uboot.env");
    let n = if redundant { 2 } else { 1 };
    std::fs::write(&file, vec![0u8; (SIZE * n) as usize]).unwrap();
    let copies: Vec<UbootCopy> = (0..n)
        .map(|i| UbootCopy {
            device: file.clone(),
            offset: i * SIZE,
            size: SIZE,
        })
        .collect();
    let cfg = dir.path().join("fw_env.config");
    let text: String = copies
        .iter()
        .map(|c| format!("{} {:#x} {:#x}\n", c.device.display(), c.offset, c.size))
        .collect();
    std::fs::write(&cfg, text).unwrap();
    Fixture {
        _dir: dir,
        file,
        cfg,
        copies,
    }
}

impl Fixture {
    fn bootloader(&self) -> UbootBootloader {
        UbootBootloader::new(UbootEnv::new(self.copies.clone()).unwrap(), slots()).unwrap()
    }
    fn printenv(&self) -> BTreeMap<String, String> {
        let out = Command::new("fw_printenv")
            .arg("-c")
            .arg(&self.cfg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fw_printenv: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }
    fn setenv(&self, name: &str, value: &str) {
        let st = Command::new("fw_setenv")
            .arg("-c")
            .arg(&self.cfg)
            .arg(name)
            .arg(value)
            .status()
            .unwrap();
        assert!(st.success(), "fw_setenv {name} {value}");
    }
    /// U-Boot at power-on, as boot.cmd does it: decide, then saveenv the decrement.
    fn uboot_boots(&self) -> Option<SlotName> {
        let vars: UbootVars = self.printenv();
        let mut st = state_from_vars("fw_printenv", &vars, &slots()).unwrap();
        let was = st.clone();
        let chosen = st.boot_decision();
        if let Some(c) = &chosen {
            if st.slots[c].left != was.slots[c].left {
                let var = format!("BOOT_{}_LEFT", c.as_str().to_uppercase());
                self.setenv(&var, &st.slots[c].left.to_string());
            }
        }
        chosen
    }
}

fn check_written_env_is_read_by_fw_printenv(redundant: bool) {
    if !tool("fw_printenv", "libubootenv-tool") {
        return;
    }
    let fx = fixture(redundant);
    let bl = fx.bootloader();
    bl.reset(&s("a")).unwrap();
    bl.try_slot(&s("b"), 3).unwrap();
    let vars = fx.printenv();
    assert_eq!(vars["BOOT_ORDER"], "B A");
    assert_eq!(vars["BOOT_A_LEFT"], "3");
    assert_eq!(vars["BOOT_A_OK"], "1");
    assert_eq!(vars["BOOT_B_LEFT"], "3");
    assert_eq!(vars["BOOT_B_OK"], "0");
    assert_eq!(vars.len(), 5, "{vars:?}");
    // fw_setenv's changes are read by us, and ours by it, several rounds (the redundant
    // copies alternate between the two writers).
    for round in 0..3 {
        fx.setenv("bootcmd", &format!("run patchd_{round}"));
        fx.setenv("BOOT_B_LEFT", "1");
        assert_eq!(bl.slots().unwrap()[1].tries_left, Some(1));
        bl.mark_good(&s("b")).unwrap();
        let v = fx.printenv();
        assert_eq!(v["BOOT_B_OK"], "1");
        assert_eq!(v["BOOT_ORDER"], "B A");
        assert_eq!(v["bootcmd"], format!("run patchd_{round}"));
        bl.try_slot(&s("a"), 2).unwrap();
        let v = fx.printenv();
        assert_eq!(
            (v["BOOT_ORDER"].as_str(), v["BOOT_A_LEFT"].as_str()),
            ("A B", "2")
        );
        bl.mark_good(&s("a")).unwrap();
        bl.try_slot(&s("b"), 3).unwrap();
    }
}

#[test]
fn single_env_interop_with_fw_printenv_and_fw_setenv() {
    check_written_env_is_read_by_fw_printenv(false);
}

#[test]
fn redundant_env_interop_with_fw_printenv_and_fw_setenv() {
    check_written_env_is_read_by_fw_printenv(true);
}

fn newest_copy_offset(fx: &Fixture) -> u64 {
    let bytes = std::fs::read(&fx.file).unwrap();
    let (f0, f1) = (bytes[4], bytes[SIZE as usize + 4]);
    if f1 == f0.wrapping_add(1) {
        SIZE
    } else {
        0
    }
}

#[test]
fn broken_crc_falls_back_to_the_other_copy_and_both_broken_is_an_error() {
    if !tool("fw_printenv", "libubootenv-tool") {
        return;
    }
    let fx = fixture(true);
    let bl = fx.bootloader();
    bl.reset(&s("a")).unwrap();
    bl.try_slot(&s("b"), 2).unwrap(); // newer copy: b on trial; older copy: fresh state
    assert_eq!(fx.printenv()["BOOT_ORDER"], "B A");
    let newest = newest_copy_offset(&fx);
    let mut bytes = std::fs::read(&fx.file).unwrap();
    bytes[(newest + 40) as usize] ^= 0xff;
    std::fs::write(&fx.file, &bytes).unwrap();
    // Both we and fw_printenv now see the older copy.
    assert_eq!(fx.printenv()["BOOT_ORDER"], "A B");
    assert_eq!(bl.primary_slot().unwrap(), s("a"));
    assert!(!bl.slots().unwrap()[1].bad, "fresh: unused, not bad");
    // A write goes over the broken copy, never over the only good one.
    bl.try_slot(&s("b"), 1).unwrap();
    assert_eq!(fx.printenv()["BOOT_B_LEFT"], "1");
    // Both copies broken: a clear error and nothing written.
    let mut bytes = std::fs::read(&fx.file).unwrap();
    bytes[40] ^= 0xff;
    bytes[SIZE as usize + 40] ^= 0xff;
    std::fs::write(&fx.file, &bytes).unwrap();
    let err = bl.try_slot(&s("b"), 1).unwrap_err().to_string();
    assert!(
        err.contains("CRC mismatch") && err.contains("uboot.env"),
        "{err}"
    );
    assert!(
        err.contains("offset 0x0") && err.contains("offset 0x4000"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&fx.file).unwrap(),
        bytes,
        "written over bad copies"
    );
    // A plain reset refuses too (the board's variables would be lost, see
    // boot_uboot_reset_corrupt.rs); only a forced one writes over them.
    let err = bl.reset(&s("a")).unwrap_err().to_string();
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&fx.file).unwrap(), bytes);
    let backups = tempfile::tempdir().unwrap();
    patchd::boot::uboot_reset::reset(
        &bl,
        &s("a"),
        &patchd::boot::uboot_reset::ResetBase::Nothing,
        backups.path(),
        jiff::Timestamp::now(),
    )
    .unwrap();
    assert_eq!(fx.printenv()["BOOT_ORDER"], "A B");
}

#[test]
fn trial_that_never_commits_comes_back_to_a() {
    if !tool("fw_printenv", "libubootenv-tool") {
        return;
    }
    for redundant in [false, true] {
        let fx = fixture(redundant);
        let bl = fx.bootloader();
        bl.reset(&s("a")).unwrap();
        assert_eq!(fx.uboot_boots(), Some(s("a")));
        bl.try_slot(&s("b"), 1).unwrap();
        assert_eq!(fx.uboot_boots(), Some(s("b")));
        assert_eq!(fx.uboot_boots(), Some(s("a")));
        assert_eq!(fx.uboot_boots(), Some(s("a")));
        assert_eq!(bl.slots().unwrap()[1].tries_left, Some(0));
        bl.try_slot(&s("b"), 2).unwrap();
        assert_eq!(fx.uboot_boots(), Some(s("b")));
        assert_eq!(fx.uboot_boots(), Some(s("b")));
        assert_eq!(fx.uboot_boots(), Some(s("a")));
        bl.mark_bad(&s("b")).unwrap();
        assert_eq!(fx.printenv()["BOOT_ORDER"], "A");
        assert_eq!(fx.uboot_boots(), Some(s("a")));
    }
}

#[test]
fn boot_cmd_compiles_with_mkimage() {
    if !tool("mkimage", "u-boot-tools") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/u-boot/boot.cmd");
    let out = Command::new("mkimage")
        .args([
            "-A", "arm64", "-O", "linux", "-T", "script", "-C", "none", "-d",
        ])
        .arg(&src)
        .arg(dir.path().join("boot.scr"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scr = std::fs::read(dir.path().join("boot.scr")).unwrap();
    assert_eq!(&scr[..4], &[0x27, 0x05, 0x19, 0x56], "not a U-Boot image");
}

#[test]
fn bad_environments_are_refused_and_left_alone() {
    let fx = fixture(false);
    let bl = fx.bootloader();
    let env = UbootEnv::new(fx.copies.clone()).unwrap();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("BOOT_ORDER", "A C")], "unknown slot"),
        (vec![("BOOT_ORDER", "A A")], "twice"),
        (
            vec![("BOOT_ORDER", "A B"), ("BOOT_B_LEFT", "77")],
            "counter",
        ),
        (
            vec![("BOOT_ORDER", "A B"), ("BOOT_B_LEFT", "-1")],
            "counter",
        ),
        (vec![("BOOT_ORDER", "A B"), ("BOOT_A_OK", "yes")], "0 or 1"),
        (vec![("bootcmd", "x")], "BOOT_ORDER"),
    ];
    for (vars, want) in cases {
        let vars: UbootVars = vars
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        env.store(None, &vars).unwrap();
        let before = std::fs::read(&fx.file).unwrap();
        let err = bl.try_slot(&s("b"), 1).unwrap_err().to_string();
        assert!(
            err.contains(want) && err.contains("uboot.env"),
            "{err} (wanted {want})"
        );
        assert_eq!(std::fs::read(&fx.file).unwrap(), before);
    }
    // Garbage and a zeroed device: CRC errors naming the device.
    std::fs::write(&fx.file, vec![0x5a; SIZE as usize]).unwrap();
    assert!(bl.slots().unwrap_err().to_string().contains("CRC mismatch"));
    // Too short a device for the configured size.
    std::fs::write(&fx.file, b"short").unwrap();
    assert!(bl.slots().unwrap_err().to_string().contains("uboot.env"));
    // A plain reset over that non-blank, unreadable copy refuses (the board's variables
    // would go); a forced one rewrites it.
    assert!(bl
        .reset(&s("a"))
        .unwrap_err()
        .to_string()
        .contains("corrupt"));
    let backups = tempfile::tempdir().unwrap();
    patchd::boot::uboot_reset::reset(
        &bl,
        &s("a"),
        &patchd::boot::uboot_reset::ResetBase::Nothing,
        backups.path(),
        jiff::Timestamp::now(),
    )
    .unwrap();
    // Variables too long for the environment: refused, nothing written.
    let before = std::fs::read(&fx.file).unwrap();
    let mut vars = env.load().unwrap().vars;
    vars.insert("huge".into(), "x".repeat(SIZE as usize));
    let err = env.store(None, &vars).unwrap_err().to_string();
    assert!(err.contains("environment holds"), "{err}");
    assert_eq!(std::fs::read(&fx.file).unwrap(), before);
    // Unknown slot asked for.
    assert!(matches!(
        bl.try_slot(&s("c"), 1),
        Err(patchd::boot::BootError::UnknownSlot(_))
    ));
}

#[test]
fn env_at_an_offset_inside_a_device_and_from_fw_env_config() {
    if !tool("fw_printenv", "libubootenv-tool") {
        return;
    }
    // A "raw device": the environment lives at 0x1000 inside a larger image, the rest of
    // which must stay untouched.
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("disk.img");
    let mut image = vec![0xa5u8; 0x8000];
    image[0x1000..0x1000 + SIZE as usize].fill(0);
    std::fs::write(&dev, &image).unwrap();
    let cfg = dir.path().join("fw_env.config");
    std::fs::write(
        &cfg,
        format!("# device offset size\n{} 0x1000 {SIZE:#x}\n", dev.display()),
    )
    .unwrap();
    let ucfg = patchd::boot::config::UbootConfig {
        fw_env_config: Some(cfg.clone()),
        copies: vec![],
    };
    let env = UbootEnv::from_config(&ucfg, &patchd::paths::Paths::new("/")).unwrap();
    let bl = UbootBootloader::new(env, slots()).unwrap();
    bl.reset(&s("a")).unwrap();
    bl.try_slot(&s("b"), 2).unwrap();
    let out = Command::new("fw_printenv")
        .arg("-c")
        .arg(&cfg)
        .arg("BOOT_ORDER")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "BOOT_ORDER=B A"
    );
    let after = std::fs::read(&dev).unwrap();
    assert_eq!(after.len(), image.len());
    assert_eq!(
        &after[..0x1000],
        &image[..0x1000],
        "bytes before the env changed"
    );
    assert_eq!(
        &after[0x1000 + SIZE as usize..],
        &image[0x1000 + SIZE as usize..],
        "bytes after the env changed"
    );
}
