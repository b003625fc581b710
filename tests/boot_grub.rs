//! GRUB environment block interop: what we write is what `grub-editenv` lists, what it
//! sets is what we read, and the shipped snippet is valid GRUB script. The bootloader's
//! decision is simulated from what `grub-editenv list` reads, and written back with
//! `grub-editenv set` as `save_env` would.

use std::path::Path;
use std::process::Command;

use patchd::boot::ab::AbState;
use patchd::boot::grubenv::{state_from_env, GrubEnv, ENVBLK_SIZE};
use patchd::boot::{Bootloader, GrubBootloader};
use patchd::names::SlotName;

fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        println!("skipped: {name} not installed (Debian package grub-common)");
    }
    found
}

fn s(n: &str) -> SlotName {
    SlotName::new(n).unwrap()
}

fn slots() -> Vec<SlotName> {
    vec![s("a"), s("b")]
}

fn editenv(file: &Path, args: &[&str]) -> String {
    let out = Command::new("grub-editenv")
        .arg(file)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "grub-editenv {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn listed(file: &Path) -> Vec<String> {
    editenv(file, &["list"])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn values_we_write_are_listed_identically_by_grub_editenv() {
    if !tool("grub-editenv") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("grubenv");
    editenv(&f, &["create"]);
    editenv(&f, &["set", "saved_entry=Debian GNU/Linux"]);
    let bl = GrubBootloader::new(&f, slots()).unwrap();
    bl.reset(&s("a")).unwrap();
    bl.try_slot(&s("b"), 3).unwrap();
    let bytes = std::fs::read(&f).unwrap();
    assert_eq!(bytes.len(), ENVBLK_SIZE);
    assert_eq!(
        listed(&f),
        [
            "saved_entry=Debian GNU/Linux",
            "patchd_order=b a",
            "patchd_a_left=0",
            "patchd_a_ok=1",
            "patchd_b_left=3",
            "patchd_b_ok=0",
        ]
    );
    // Escapes: a value with a backslash survives both ways.
    let mut env = bl.read_env().unwrap();
    env.set("odd", "x\\y");
    bl.write_env(&env).unwrap();
    assert!(listed(&f).contains(&"odd=x\\y".to_string()));
    // Byte-identical to what grub-editenv itself writes for the same variables.
    let g = dir.path().join("grubenv2");
    editenv(&g, &["create"]);
    for (n, v) in env.vars() {
        editenv(&g, &["set", &format!("{n}={v}")]);
    }
    assert_eq!(std::fs::read(&f).unwrap(), std::fs::read(&g).unwrap());
}

#[test]
fn values_set_by_grub_editenv_are_read_and_kept() {
    if !tool("grub-editenv") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("grubenv");
    editenv(&f, &["create"]);
    editenv(
        &f,
        &[
            "set",
            "patchd_order=b a",
            "patchd_a_ok=1",
            "patchd_b_left=2",
            "next_entry=rescue",
        ],
    );
    let bl = GrubBootloader::new(&f, slots()).unwrap();
    let info = bl.slots().unwrap();
    assert_eq!(info[1].tries_left, Some(2));
    assert_eq!(bl.primary_slot().unwrap(), s("a"));
    bl.mark_good(&s("b")).unwrap();
    let l = listed(&f);
    assert!(l.contains(&"next_entry=rescue".to_string()), "{l:?}");
    assert!(l.contains(&"patchd_b_ok=1".to_string()), "{l:?}");
    let bytes = std::fs::read(&f).unwrap();
    assert_eq!(bytes.len(), ENVBLK_SIZE, "size not preserved");
    let used = bytes.iter().rposition(|&c| c == b'\n').unwrap() + 1;
    assert!(
        bytes[used..].iter().all(|&c| c == b'#'),
        "padding is not '#'"
    );
}

#[test]
fn shipped_snippet_passes_grub_script_check() {
    if !tool("grub-script-check") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("grub-script-check")
        .arg(root.join("packaging/grub/patchd-ab.cfg"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The mkconfig helper's output (slot settings + snippet) must be valid too.
    let helper = std::fs::read_to_string(root.join("packaging/grub/06_patchd")).unwrap();
    let snippet = std::fs::read_to_string(root.join("packaging/grub/patchd-ab.cfg")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gen = dir.path().join("gen.cfg");
    let out = Command::new("sh")
        .arg("-c")
        .arg(helper.replace(
            "cat /usr/share/patchd/grub/patchd-ab.cfg",
            "cat \"$SNIPPET\"",
        ))
        .env("SNIPPET", root.join("packaging/grub/patchd-ab.cfg"))
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&gen, &out.stdout).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&snippet));
    assert!(Command::new("grub-script-check")
        .arg(&gen)
        .status()
        .unwrap()
        .success());
}

/// GRUB's side of a boot, done with grub-editenv: read, decide, save the decrement.
fn grub_boots(f: &Path) -> Option<SlotName> {
    let text = editenv(f, &["list"]);
    let mut env = GrubEnv::default();
    for line in text.lines() {
        let (n, v) = line.split_once('=').unwrap();
        env.set(n, v);
    }
    let mut st: AbState = state_from_env("listed", &env, &slots()).unwrap();
    let chosen = st.boot_decision();
    if let Some(c) = &chosen {
        let left = st.slots[c].left;
        editenv(f, &["set", &format!("patchd_{c}_left={left}")]);
    }
    chosen
}

#[test]
fn trial_that_never_commits_comes_back_to_a() {
    if !tool("grub-editenv") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("grubenv");
    editenv(&f, &["create"]);
    let bl = GrubBootloader::new(&f, slots()).unwrap();
    bl.reset(&s("a")).unwrap();
    assert_eq!(grub_boots(&f), Some(s("a")));
    bl.try_slot(&s("b"), 1).unwrap();
    assert_eq!(grub_boots(&f), Some(s("b")));
    // b never marks itself good: the next boot is a again, and stays a.
    assert_eq!(grub_boots(&f), Some(s("a")));
    assert_eq!(grub_boots(&f), Some(s("a")));
    let info = bl.slots().unwrap();
    assert_eq!(info[1].tries_left, Some(0));
    assert_eq!(bl.primary_slot().unwrap(), s("a"));
    // A trial that commits stays.
    bl.try_slot(&s("b"), 2).unwrap();
    assert_eq!(grub_boots(&f), Some(s("b")));
    bl.mark_good(&s("b")).unwrap();
    assert_eq!(grub_boots(&f), Some(s("b")));
    assert_eq!(grub_boots(&f), Some(s("b")));
    // A bad slot is never chosen.
    bl.mark_bad(&s("a")).unwrap();
    assert_eq!(grub_boots(&f), Some(s("b")));
    assert!(listed(&f).contains(&"patchd_order=b".to_string()));
}

#[test]
fn bad_environments_are_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("grubenv");
    let bl = GrubBootloader::new(&f, slots()).unwrap();
    let mut good = GrubEnv::default();
    good.set("patchd_order", "a");
    good.set("patchd_a_ok", "1");
    let good = good.encode("x").unwrap();
    let mut garbage = good.clone();
    let at = garbage.iter().rposition(|&c| c == b'\n').unwrap() + 1;
    garbage[at..at + 3].copy_from_slice(b"\x01\x02\n");
    let mut no_header = good.clone();
    no_header[0] = b'X';
    let mut unknown = GrubEnv::default();
    unknown.set("patchd_order", "a c");
    let mut counter = GrubEnv::default();
    counter.set("patchd_order", "a b");
    counter.set("patchd_a_ok", "1");
    counter.set("patchd_b_left", "12");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"hello world".to_vec(), "1024"),
        (good[..512].to_vec(), "1024"),
        ([good.clone(), vec![b'#'; 512]].concat(), "1024"),
        (no_header, "header"),
        (garbage, "garbage"),
        (vec![0u8; 1024], "header"),
        (unknown.encode("x").unwrap(), "unknown slot"),
        (counter.encode("x").unwrap(), "counter"),
        (GrubEnv::default().encode("x").unwrap(), "patchd_order"),
    ];
    for (bytes, want) in cases {
        std::fs::write(&f, &bytes).unwrap();
        let err = bl.try_slot(&s("b"), 1).unwrap_err().to_string();
        assert!(err.contains(want), "{err} (wanted {want})");
        assert!(
            err.contains("grubenv"),
            "error does not name the file: {err}"
        );
        assert_eq!(std::fs::read(&f).unwrap(), bytes, "written over bad input");
    }
    // Too many variables for the block: refused, old block kept.
    std::fs::write(&f, &good).unwrap();
    let mut env = bl.read_env().unwrap();
    env.set("huge", &"x".repeat(1100));
    assert!(bl
        .write_env(&env)
        .unwrap_err()
        .to_string()
        .contains("holds 1024"));
    assert_eq!(std::fs::read(&f).unwrap(), good);
    // An explicit reset may overwrite garbage.
    std::fs::write(&f, b"garbage").unwrap();
    bl.reset(&s("a")).unwrap();
    assert_eq!(bl.primary_slot().unwrap(), s("a"));
}

/// An ext4 image loop-mounted at a directory, unmounted on drop.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// GRUB reads `/boot` without replaying the journal. A write of the environment must
/// reach the filesystem's home blocks before patchd goes on (say, to overwrite the slot
/// it just fenced), not only the journal: read back here as GRUB would, with `debugfs`
/// on a copy of the image taken while it is still mounted.
#[test]
fn a_write_is_visible_to_a_reader_that_does_not_replay_the_journal() {
    if !tool("grub-editenv") || !tool("debugfs") || !tool("mkfs.ext4") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("boot.img");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::File::create(&img)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    assert!(Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&img)
        .status()
        .unwrap()
        .success());
    let mounted = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        println!("skipped: cannot loop-mount an ext4 /boot (needs root and loop devices)");
        return;
    }
    let _m = Mounted(mnt.clone());
    let env = mnt.join("grubenv");
    editenv(&env, &["create"]);
    let bl = GrubBootloader::new(&env, slots()).unwrap();
    bl.reset(&s("a")).unwrap();
    bl.try_slot(&s("b"), 1).unwrap();
    bl.mark_good(&s("b")).unwrap();
    // What the bootloader sees right now: a copy of the mounted image, journal ignored.
    let copy = dir.path().join("seen.img");
    std::fs::copy(&img, &copy).unwrap();
    let out = Command::new("debugfs")
        .args(["-R", "cat /grubenv"])
        .arg(&copy)
        .output()
        .unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(
        seen.lines().any(|l| l == "patchd_order=b a") && seen.lines().any(|l| l == "patchd_b_ok=1"),
        "GRUB would read a stale environment:\n{seen}"
    );
    // Fencing a (the next staging's target) must be visible the same way.
    bl.mark_bad(&s("a")).unwrap();
    std::fs::copy(&img, &copy).unwrap();
    let out = Command::new("debugfs")
        .args(["-R", "cat /grubenv"])
        .arg(&copy)
        .output()
        .unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(
        seen.lines().any(|l| l == "patchd_order=b") && seen.lines().any(|l| l == "patchd_a_ok=0"),
        "GRUB would still find the fenced slot a:\n{seen}"
    );
}
