//! `patchd boot reset` on a U-Boot environment, through the binary and read back with
//! the real `fw_printenv`/`fw_setenv` (libubootenv-tool): the board's variables (`bootcmd`,
//! `ethaddr`, `serial#`) survive a reset of a readable environment; when both copies are
//! corrupt the reset is refused and nothing is written, unless `--from-defaults FILE` or
//! `--force` says what the rest is; either way both raw copies are backed up under
//! /var/lib/patchd first, and the output names what was kept and what was lost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const SIZE: u64 = 0x4000;

fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        println!("skipped: {tool} not installed (Debian package libubootenv-tool)");
    }
    ok
}

struct Board {
    dir: tempfile::TempDir,
    env: PathBuf,
    fw_cfg: PathBuf,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Board {
    /// A device root whose redundant U-Boot environment (two copies in one file) is blank.
    fn new() -> Board {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc/patchd")).unwrap();
        std::fs::create_dir_all(root.join("var/lib/patchd")).unwrap();
        let env = root.join("var/lib/uboot.env");
        std::fs::write(&env, vec![0u8; (2 * SIZE) as usize]).unwrap();
        std::fs::write(
            root.join("etc/patchd/patchd.toml"),
            format!(
                "[boot]\nbackend = \"uboot\"\n\
                 [[boot.uboot.copies]]\ndevice = \"/var/lib/uboot.env\"\noffset = 0\nsize = {SIZE}\n\
                 [[boot.uboot.copies]]\ndevice = \"/var/lib/uboot.env\"\noffset = {SIZE}\nsize = {SIZE}\n"
            ),
        )
        .unwrap();
        // The real tools read host paths, not paths under the device root.
        let fw_cfg = dir.path().join("fw_env.config");
        std::fs::write(
            &fw_cfg,
            format!(
                "{e} 0x0 {SIZE:#x}\n{e} {SIZE:#x} {SIZE:#x}\n",
                e = env.display()
            ),
        )
        .unwrap();
        Board { dir, env, fw_cfg }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn patchd(&self, args: &[&str]) -> Out {
        let out = Command::new(env!("CARGO_BIN_EXE_patchd"))
            .arg("--root")
            .arg(self.root())
            .arg("boot")
            .args(args)
            .output()
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn printenv(&self) -> BTreeMap<String, String> {
        let out = Command::new("fw_printenv")
            .arg("-c")
            .arg(&self.fw_cfg)
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
            .arg(&self.fw_cfg)
            .arg(name)
            .arg(value)
            .status()
            .unwrap();
        assert!(st.success(), "fw_setenv {name}");
    }

    /// Break the CRC of both copies, leaving their records readable.
    fn corrupt_both(&self) -> Vec<u8> {
        let mut b = std::fs::read(&self.env).unwrap();
        b[0] ^= 0xff;
        b[SIZE as usize] ^= 0xff;
        std::fs::write(&self.env, &b).unwrap();
        b
    }

    fn backups(&self) -> Vec<PathBuf> {
        let d = self.root().join("var/lib/patchd/uboot-env-backup");
        let mut v: Vec<PathBuf> = match std::fs::read_dir(&d) {
            Ok(r) => r.flatten().map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }
}

fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key:?} line in:\n{out}"))
}

fn board_vars(b: &Board) {
    b.setenv("bootcmd", "run distro_bootcmd");
    b.setenv("ethaddr", "02:00:00:aa:bb:cc");
    b.setenv("serial#", "SN-0042");
    b.setenv("vendor_extra", "1");
}

fn backed_up_raw(dir: &Path, i: usize) -> Vec<u8> {
    std::fs::read(dir.join(format!("copy-{i}.bin"))).unwrap()
}

#[test]
fn reset_over_both_corrupt_copies_needs_defaults_or_force_and_keeps_a_backup() {
    if !have("fw_printenv") || !have("fw_setenv") {
        return;
    }
    let b = Board::new();
    // A blank (never written) environment has nothing to lose: a plain reset sets it up.
    let r = b.patchd(&["reset", "--primary", "a"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(b.printenv()["BOOT_ORDER"], "A B");
    board_vars(&b);

    // A readable environment: every board variable is kept, nothing lost, backup made.
    let r = b.patchd(&["reset", "--primary", "b"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let kept = line(&r.stdout, "kept:");
    for v in ["bootcmd", "ethaddr", "serial#", "vendor_extra"] {
        assert!(kept.contains(v), "{}", r.stdout);
    }
    assert!(line(&r.stdout, "lost:").contains("none"), "{}", r.stdout);
    let env = b.printenv();
    assert_eq!(env["BOOT_ORDER"], "B A");
    assert_eq!(env["ethaddr"], "02:00:00:aa:bb:cc");
    assert_eq!(env["serial#"], "SN-0042");
    assert_eq!(b.backups().len(), 2, "one backup per reset");

    // Both copies corrupt: refused, named, nothing written, no backup needed.
    let corrupt = b.corrupt_both();
    let r = b.patchd(&["reset", "--primary", "a"]);
    assert_ne!(r.code, 0, "{}{}", r.stdout, r.stderr);
    for want in [
        "corrupt",
        "--from-defaults",
        "--force",
        "ethaddr",
        "uboot.env",
    ] {
        assert!(r.stderr.contains(want), "{want}: {}", r.stderr);
    }
    assert_eq!(std::fs::read(&b.env).unwrap(), corrupt, "written anyway");
    assert_eq!(b.backups().len(), 2);

    // The board's default environment: its variables are written, the raw copies kept.
    let defaults = b.dir.path().join("u-boot-initial-env");
    std::fs::write(
        &defaults,
        "bootcmd=run distro_bootcmd\nethaddr=02:00:00:aa:bb:cc\nserial#=SN-0042\nbootdelay=2\n",
    )
    .unwrap();
    let r = b.patchd(&[
        "reset",
        "--primary",
        "a",
        "--from-defaults",
        defaults.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let env = b.printenv();
    assert_eq!(env["BOOT_ORDER"], "A B");
    assert_eq!(env["bootcmd"], "run distro_bootcmd");
    assert_eq!(env["bootdelay"], "2");
    assert!(!env.contains_key("vendor_extra"), "{env:?}");
    let kept = line(&r.stdout, "kept:");
    assert!(kept.contains("bootdelay") && kept.contains("u-boot-initial-env"));
    let lost = line(&r.stdout, "lost:");
    assert!(
        lost.contains("vendor_extra") && lost.contains("valid CRC"),
        "{lost}"
    );
    assert!(
        !lost.contains("ethaddr"),
        "same value in the defaults: {lost}"
    );
    let backups = b.backups();
    assert_eq!(backups.len(), 3);
    let last = backups.last().unwrap();
    assert_eq!(backed_up_raw(last, 0), corrupt[..SIZE as usize]);
    assert_eq!(backed_up_raw(last, 1), corrupt[SIZE as usize..]);
    assert_eq!(
        r.stdout.matches("backup:").count(),
        2,
        "both copies named: {}",
        r.stdout
    );
    assert!(r.stdout.contains("corrupt: CRC mismatch"), "{}", r.stdout);

    // --force: only the A/B variables; everything else is reported lost.
    let corrupt = b.corrupt_both();
    let r = b.patchd(&["--json", "reset", "--primary", "b", "--force"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let lost: Vec<&str> = v["reset"]["lost"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x.as_str())
        .collect();
    assert_eq!(lost, ["bootcmd", "bootdelay", "ethaddr", "serial#"], "{v}");
    assert_eq!(v["reset"]["kept"], serde_json::json!([]));
    let env = b.printenv();
    assert_eq!(env["BOOT_ORDER"], "B A");
    assert!(!env.contains_key("bootcmd"), "{env:?}");
    let last = b.backups().pop().unwrap();
    assert_eq!(backed_up_raw(&last, 0), corrupt[..SIZE as usize]);
    assert_eq!(backed_up_raw(&last, 1), corrupt[SIZE as usize..]);
}

#[test]
fn defaults_and_force_are_refused_for_other_backends() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("etc/patchd")).unwrap();
    std::fs::write(
        root.join("etc/patchd/patchd.toml"),
        "[boot]\nbackend = \"file\"\n[boot.file]\npath = \"/boot.json\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_patchd"))
        .arg("--root")
        .arg(root)
        .args(["boot", "reset", "--primary", "a", "--force"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("U-Boot backend only"), "{err}");
}
