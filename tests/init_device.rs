//! `patchd init` and `patchd --check-config` as an admin runs them (the built binary,
//! `--root` a temporary directory): init for every boot backend, the factory record and
//! its image hash, refusing to overwrite, a fresh unused slot that is not bad; every
//! check-config failure with its fix, all of them listed, exit status 78.

use std::path::Path;
use std::process::Command;

use sha2::Digest;

struct Run {
    code: i32,
    out: String,
    err: String,
}

fn patchd(root: &Path, args: &[&str]) -> Run {
    let o = Command::new(env!("CARGO_BIN_EXE_patchd"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("PATCHD_ROOT")
        .output()
        .expect("run patchd");
    Run {
        code: o.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn boot_status(root: &Path) -> serde_json::Value {
    let r = patchd(root, &["boot", "status", "--json"]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    serde_json::from_str(&r.out).unwrap()
}

/// Slot `b` as `patchd boot status --json` shows it: unused, neither good nor bad.
fn assert_b_unused(root: &Path) {
    let st = boot_status(root);
    let b = st["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slot"] == "b")
        .unwrap()
        .clone();
    assert_eq!(b["bad"], false, "{st}");
    assert_eq!(b["good"], false, "{st}");
    assert_eq!(st["primary"], "a", "{st}");
}

fn file_slots(root: &Path) {
    std::fs::create_dir_all(root.join("var/lib/slots")).unwrap();
    std::fs::write(root.join("var/lib/slots/a.img"), b"release one").unwrap();
    std::fs::write(root.join("var/lib/slots/b.img"), b"").unwrap();
}

const FILE_SLOTS: [&str; 4] = [
    "--slot",
    "a=/var/lib/slots/a.img",
    "--slot",
    "b=/var/lib/slots/b.img",
];

fn init_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["init"];
    v.extend_from_slice(&FILE_SLOTS);
    v.extend_from_slice(extra);
    v
}

#[test]
fn init_with_the_file_bootloader_records_the_factory_image_hash() {
    let top = tempfile::tempdir().unwrap();
    let root = top.path();
    file_slots(root);
    let image = root.join("factory.img");
    std::fs::write(&image, b"the factory image, byte for byte").unwrap();
    let img = image.to_str().unwrap();
    let r = patchd(
        root,
        &init_args(&[
            "--boot",
            "file",
            "--product",
            "box",
            "--repo-dir",
            "/srv/repo",
            "--factory-version",
            "1.2.3",
            "--factory-image",
            img,
        ]),
    );
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(
        r.out.contains("factory release: slot a runs 1.2.3"),
        "{}",
        r.out
    );
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("var/lib/patchd/slots/a.json")).unwrap())
            .unwrap();
    let want = hex::encode(sha2::Sha256::digest(std::fs::read(&image).unwrap()));
    assert_eq!(rec["sha256"], want.as_str(), "{rec}");
    assert_eq!(rec["size"], 32, "{rec}");
    assert_eq!(rec["version"], "1.2.3");
    assert_eq!(rec["state"], "good");
    // The written file validates as the daemon reads it, with the chosen values active.
    let cfg = patchd::config::load(&patchd::paths::Paths::new(root)).unwrap();
    assert_eq!(cfg.device.product.as_deref(), Some("box"));
    assert_eq!(
        cfg.repository.source,
        Some(patchd::config::RepoSource::Dir("/srv/repo".into()))
    );
    assert_eq!(cfg.slots.as_ref().map(|s| s.slot.len()), Some(2));
    let text = std::fs::read_to_string(root.join("etc/patchd/patchd.toml")).unwrap();
    assert!(text.contains("\n#check_interval = \"6h\"\n"), "{text}");
    assert_b_unused(root);
    let log =
        patchd::audit::AuditLog::open(root.join("var/lib/patchd/audit.log"), Default::default())
            .unwrap();
    let recs = log.query(&Default::default()).unwrap();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0].event, "initialised");
}

#[test]
fn init_refuses_to_overwrite_and_writes_nothing() {
    let top = tempfile::tempdir().unwrap();
    let root = top.path();
    file_slots(root);
    let first = patchd(
        root,
        &init_args(&["--boot", "file", "--factory-version", "1.0.0"]),
    );
    assert_eq!(first.code, 0, "{}", first.err);
    let cfg = root.join("etc/patchd/patchd.toml");
    let before = std::fs::read(&cfg).unwrap();
    let again = patchd(
        root,
        &init_args(&["--boot", "file", "--factory-version", "2.0.0"]),
    );
    assert_ne!(again.code, 0);
    assert!(
        again.err.contains(&cfg.display().to_string()) && again.err.contains("does not overwrite"),
        "{}",
        again.err
    );
    assert_eq!(std::fs::read(&cfg).unwrap(), before);
    // Without the configuration, the factory record is what is refused; then the state.
    std::fs::remove_file(&cfg).unwrap();
    let r = patchd(root, &init_args(&["--boot", "file"]));
    assert!(r.err.contains("slots/a.json"), "{}", r.err);
    std::fs::remove_file(root.join("var/lib/patchd/slots/a.json")).unwrap();
    let r = patchd(root, &init_args(&["--boot", "file"]));
    assert!(
        r.err.contains("boot.json") && r.err.contains("boot state"),
        "{}",
        r.err
    );
    assert!(!cfg.exists(), "nothing written after a refusal");
    // A configuration holding only comments (as the package ships one) is replaced.
    std::fs::remove_file(root.join("var/lib/patchd/boot.json")).unwrap();
    std::fs::write(&cfg, "# all commented\n#[device]\n").unwrap();
    let r = patchd(root, &init_args(&["--boot", "file"]));
    assert_eq!(r.code, 0, "{}", r.err);
}

#[test]
fn init_detects_grub_and_writes_its_environment() {
    let top = tempfile::tempdir().unwrap();
    let root = top.path();
    file_slots(root);
    std::fs::create_dir_all(root.join("boot/grub")).unwrap();
    let r = patchd(root, &init_args(&["--booted", "a"]));
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(r.out.contains("boot grub"), "{}", r.out);
    let env = std::fs::read(root.join("boot/grub/grubenv")).unwrap();
    assert_eq!(env.len(), 1024);
    let text = String::from_utf8_lossy(&env);
    assert!(text.contains("patchd_order=a b\n"), "{text}");
    assert!(text.contains("patchd_a_ok=1\n"), "{text}");
    // GRUB keeps no record of the booted slot: status names it unknown, not an error.
    let r = patchd(root, &["boot", "status"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.contains("b     no       no     no"), "{}", r.out);
    // check-config says how the booted slot becomes detectable, and then finds it.
    let r = patchd(root, &["--check-config"]);
    let fail = r
        .out
        .lines()
        .skip_while(|l| !l.starts_with("FAIL booted slot:"))
        .take(2)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        fail.contains("fix: boot with patchd.slot=SLOT"),
        "{}",
        r.out
    );
    std::fs::create_dir_all(root.join("proc")).unwrap();
    std::fs::write(
        root.join("proc/cmdline"),
        "root=/dev/vda2 patchd.slot=a quiet\n",
    )
    .unwrap();
    let r = patchd(root, &["--check-config"]);
    assert!(r.out.contains("ok   booted slot: a"), "{}", r.out);
    // Without --booted and without a kernel command line naming the slot: refused.
    let top2 = tempfile::tempdir().unwrap();
    file_slots(top2.path());
    std::fs::create_dir_all(top2.path().join("boot/grub")).unwrap();
    let r = patchd(top2.path(), &init_args(&[]));
    assert!(r.code != 0 && r.err.contains("--booted"), "{}", r.err);
}

#[test]
fn init_writes_a_fresh_uboot_environment_from_defaults() {
    let top = tempfile::tempdir().unwrap();
    let root = top.path();
    file_slots(root);
    std::fs::write(root.join("var/lib/uboot.env"), vec![0u8; 0x4000]).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/fw_env.config"),
        "/var/lib/uboot.env 0x0 0x4000\n",
    )
    .unwrap();
    let defaults = root.join("initial-env");
    std::fs::write(&defaults, "bootcmd=run patchd_boot\nbaudrate=115200\n").unwrap();
    let r = patchd(
        root,
        &init_args(&[
            "--booted",
            "a",
            "--uboot-defaults",
            defaults.to_str().unwrap(),
        ]),
    );
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(r.out.contains("boot uboot"), "{}", r.out);
    assert!(
        r.out.contains("backup:") && r.out.contains("kept:"),
        "{}",
        r.out
    );
    assert_b_unused(root);
    let env = std::fs::read(root.join("var/lib/uboot.env")).unwrap();
    let text = String::from_utf8_lossy(&env);
    assert!(
        text.contains("baudrate=115200") && text.contains("BOOT_ORDER=A B"),
        "{text}"
    );
}

#[test]
fn init_resets_systemd_boot_entries() {
    let top = tempfile::tempdir().unwrap();
    let root = top.path();
    file_slots(root);
    let entries = root.join("boot/efi/loader/entries");
    std::fs::create_dir_all(&entries).unwrap();
    for s in ["a", "b"] {
        std::fs::write(
            entries.join(format!("patchd-{s}.conf")),
            format!("title {s}\nlinux /{s}/vmlinuz\noptions patchd.slot={s}\n"),
        )
        .unwrap();
    }
    let r = patchd(root, &init_args(&["--booted", "a"]));
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(r.out.contains("boot systemd-boot"), "{}", r.out);
    assert!(entries.join("patchd-a.conf").exists());
    assert!(
        entries.join("patchd-b+0.conf").exists(),
        "b: no tries, none done"
    );
    assert_b_unused(root);
}

#[test]
fn check_config_lists_every_failure_with_its_fix() {
    let top = tempfile::tempdir().unwrap();
    let root = top.path();
    file_slots(root);
    let r = patchd(
        root,
        &init_args(&[
            "--boot",
            "file",
            "--product",
            "box",
            "--repo-dir",
            "/srv/repo",
            "--trusted-root",
            "/etc/patchd/root.json",
        ]),
    );
    assert_eq!(r.code, 0, "{}", r.err);
    // Nothing of what a start needs beyond init: no machine id, no root, no repository.
    std::fs::remove_file(root.join("var/lib/patchd/boot.json")).unwrap();
    std::fs::remove_file(root.join("var/lib/slots/b.img")).unwrap();
    std::fs::create_dir_all(root.join("var/cache/patchd")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("var/cache/patchd"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let r = patchd(root, &["--check-config"]);
    assert_eq!(r.code, 78, "{}{}", r.out, r.err);
    for (what, fix) in [
        ("FAIL machine id:", "systemd-machine-id-setup"),
        ("FAIL trusted root:", "metadata/root.json"),
        ("FAIL repository:", "patchpub"),
        ("FAIL bootloader state:", "patchd boot reset --primary"),
        ("FAIL booted slot:", "boot reset --primary"),
        ("FAIL slots:", "b.img"),
        ("FAIL cache directory:", "chmod go-w"),
    ] {
        let lines: Vec<&str> = r.out.lines().collect();
        let i = lines
            .iter()
            .position(|l| l.starts_with(what))
            .unwrap_or_else(|| panic!("{what} missing:\n{}", r.out));
        let fix_line = lines.get(i + 1).copied().unwrap_or("");
        assert!(
            fix_line.starts_with("     fix: "),
            "{what}: no fix line:\n{}",
            r.out
        );
        assert!(
            format!("{}{fix_line}", lines[i]).contains(fix),
            "{what}: nothing names {fix:?}:\n{}",
            r.out
        );
    }
    assert!(r.out.contains("7 problems found"), "{}", r.out);
    assert!(
        r.err.contains("machine id") && r.err.contains("fix:"),
        "{}",
        r.err
    );

    // Fixed one by one, the device passes.
    std::fs::write(
        root.join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    std::fs::set_permissions(
        root.join("var/cache/patchd"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(root.join("var/lib/slots/b.img"), b"").unwrap();
    let repo = patchd::publish::Repo::init(
        root.join("srv/repo"),
        &patchd::publish::InitOptions::new(top.path().join("keys")),
    )
    .unwrap();
    std::fs::write(
        root.join("etc/patchd/root.json"),
        repo.root_bytes().unwrap(),
    )
    .unwrap();
    let a = patchd::names::SlotName::new("a").unwrap();
    let b = patchd::names::SlotName::new("b").unwrap();
    patchd::boot::FileBootloader::new(root.join("var/lib/patchd/boot.json"), vec![a.clone(), b])
        .init(&a)
        .unwrap();
    let r = patchd(root, &["--check-config"]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(!r.out.contains("FAIL"), "{}", r.out);
    assert!(r.out.contains("WARN running release"), "{}", r.out);
    assert!(r.out.contains("configuration OK"), "{}", r.out);
}

#[test]
fn check_config_names_a_bad_trusted_root() {
    let top = tempfile::tempdir().unwrap();
    let root = top.path();
    file_slots(root);
    let r = patchd(
        root,
        &init_args(&[
            "--boot",
            "file",
            "--product",
            "box",
            "--url",
            "https://u.example/",
            "--trusted-root",
            "/etc/patchd/root.json",
        ]),
    );
    assert_eq!(r.code, 0, "{}", r.err);
    std::fs::write(root.join("etc/patchd/root.json"), b"{\"signed\": {}}").unwrap();
    let r = patchd(root, &["--check-config"]);
    assert_eq!(r.code, 78);
    let line = r
        .out
        .lines()
        .find(|l| l.starts_with("FAIL trusted root:"))
        .unwrap_or_else(|| panic!("{}", r.out));
    assert!(line.contains("root.json"), "{line}");
    assert!(
        r.out.contains("ok   repository: https://u.example/"),
        "{}",
        r.out
    );
}

/// A configuration that does not parse is one failure, not the end of the checks: what
/// needs no settings (machine id, directories) is still checked at the default paths.
#[test]
fn check_config_goes_on_past_a_file_that_does_not_parse() {
    let top = tempfile::tempdir().unwrap();
    let root = top.path();
    std::fs::create_dir_all(root.join("etc/patchd")).unwrap();
    std::fs::write(
        root.join("etc/patchd/patchd.toml"),
        "[device]\ntagz = [\"x\"]\n",
    )
    .unwrap();
    let r = patchd(root, &["--check-config"]);
    assert_eq!(r.code, 78, "{}{}", r.out, r.err);
    assert!(
        r.out.contains("FAIL configuration:") && r.out.contains("tagz"),
        "{}",
        r.out
    );
    assert!(
        r.out.contains("FAIL machine id (default path)")
            && r.out.contains("systemd-machine-id-setup"),
        "{}",
        r.out
    );
    assert!(r.out.contains("2 problems found"), "{}", r.out);
}
