//! A power cut or a kill during a bootloader write leaves a readable environment holding
//! either the old or the new values.
//!
//! Two fault models: (1) torn writes — every prefix of the bytes a redundant U-Boot write
//! puts on the device, applied over the old image; (2) a writer process killed with SIGKILL
//! at arbitrary moments while it rewrites GRUB, U-Boot and file environments in a loop
//! (the test binary re-runs itself as the writer).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use patchd::boot::config::UbootCopy;
use patchd::boot::{Bootloader, FileBootloader, GrubBootloader, UbootBootloader, UbootEnv};
use patchd::names::SlotName;

const SIZE: u64 = 0x2000;

fn s(n: &str) -> SlotName {
    SlotName::new(n).unwrap()
}

fn slots() -> Vec<SlotName> {
    vec![s("a"), s("b")]
}

fn uboot_copies(file: &Path, redundant: bool) -> Vec<UbootCopy> {
    let n = if redundant { 2 } else { 1 };
    (0..n)
        .map(|i| UbootCopy {
            device: file.to_path_buf(),
            offset: i * SIZE,
            size: SIZE,
        })
        .collect()
}

/// The observable state: (order, per-slot tries/good/bad).
fn snapshot(bl: &dyn Bootloader) -> String {
    format!("{:?}", bl.slots().unwrap())
}

#[test]
fn torn_redundant_uboot_write_leaves_old_or_new() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("uboot.env");
    std::fs::write(&file, vec![0u8; 2 * SIZE as usize]).unwrap();
    let env = UbootEnv::new(uboot_copies(&file, true)).unwrap();
    let bl = UbootBootloader::new(env.clone(), slots()).unwrap();
    bl.reset(&s("a")).unwrap();
    let old_state = snapshot(&bl);
    let old_image = std::fs::read(&file).unwrap();

    // The write try_slot(b) would do, computed but not applied.
    let cur = env.load().unwrap();
    let mut new_vars = cur.vars.clone();
    new_vars.insert("BOOT_ORDER".into(), "B A".into());
    new_vars.insert("BOOT_B_LEFT".into(), "1".into());
    let (target, bytes) = env.plan_write(Some(&cur), &new_vars).unwrap();
    assert_ne!(
        target, cur.copy,
        "a redundant write must go to the inactive copy"
    );
    let at = target * SIZE as usize;

    let mut saw_new = false;
    let cuts: Vec<usize> = (0..=bytes.len())
        .step_by(97)
        .chain([1, 4, 5, 6, bytes.len() - 1, bytes.len()])
        .collect();
    for cut in cuts {
        let mut img = old_image.clone();
        img[at..at + cut].copy_from_slice(&bytes[..cut]);
        std::fs::write(&file, &img).unwrap();
        let loaded = env
            .load()
            .unwrap_or_else(|e| panic!("cut at {cut}: unreadable: {e}"));
        let st = snapshot(&bl);
        if loaded.vars == new_vars {
            saw_new = true;
            // Only once every byte that differs has landed (the zero padding may already match).
            assert_eq!(
                &img[at..at + bytes.len()],
                &bytes[..],
                "cut at {cut}: new values visible before the write completed"
            );
        } else {
            assert_eq!(st, old_state, "cut at {cut}: neither old nor new");
        }
    }
    assert!(saw_new, "the complete write was never read back");
}

/// Child mode: rewrite the environment named by PATCHD_PC_KIND forever.
#[test]
fn writer_child() {
    let Ok(kind) = std::env::var("PATCHD_PC_KIND") else {
        return; // only meaningful when re-run by the parent test
    };
    let path = PathBuf::from(std::env::var("PATCHD_PC_PATH").unwrap());
    let bl = open(&kind, &path);
    loop {
        bl.try_slot(&s("b"), 3).unwrap();
        bl.mark_good(&s("b")).unwrap();
        bl.try_slot(&s("a"), 2).unwrap();
        bl.mark_good(&s("a")).unwrap();
    }
}

fn open(kind: &str, path: &Path) -> Box<dyn Bootloader> {
    match kind {
        "grub" => Box::new(GrubBootloader::new(path, slots()).unwrap()),
        "file" => Box::new(FileBootloader::new(path, slots())),
        "uboot1" => Box::new(
            UbootBootloader::new(UbootEnv::new(uboot_copies(path, false)).unwrap(), slots())
                .unwrap(),
        ),
        "uboot2" => Box::new(
            UbootBootloader::new(UbootEnv::new(uboot_copies(path, true)).unwrap(), slots())
                .unwrap(),
        ),
        other => panic!("unknown kind {other}"),
    }
}

#[test]
fn killed_writer_leaves_a_readable_old_or_new_environment() {
    let exe = std::env::current_exe().unwrap();
    for kind in ["grub", "file", "uboot1", "uboot2"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env");
        match kind {
            "grub" => std::fs::write(&path, vec![0u8; 1024]).unwrap(),
            "uboot1" => std::fs::write(&path, vec![0u8; SIZE as usize]).unwrap(),
            "uboot2" => std::fs::write(&path, vec![0u8; 2 * SIZE as usize]).unwrap(),
            _ => {}
        }
        let bl = open(kind, &path);
        bl.reset(&s("a")).unwrap();
        // Every state the writer loop passes through.
        let mut valid = vec![snapshot(bl.as_ref())];
        for step in 0..4 {
            match step {
                0 => bl.try_slot(&s("b"), 3).unwrap(),
                1 => bl.mark_good(&s("b")).unwrap(),
                2 => bl.try_slot(&s("a"), 2).unwrap(),
                _ => bl.mark_good(&s("a")).unwrap(),
            }
            valid.push(snapshot(bl.as_ref()));
        }
        for round in 0..8u64 {
            let mut child = Command::new(&exe)
                .args(["--exact", "writer_child", "--nocapture", "--test-threads=1"])
                .env("PATCHD_PC_KIND", kind)
                .env("PATCHD_PC_PATH", &path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(20 + round * 13));
            child.kill().unwrap();
            child.wait().unwrap();
            let st = bl
                .slots()
                .unwrap_or_else(|e| panic!("{kind} round {round}: {e}"));
            let st = format!("{st:?}");
            assert!(
                valid.contains(&st),
                "{kind} round {round}: unexpected state {st}"
            );
        }
    }
}
