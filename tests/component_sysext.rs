//! `sysext` components with the real `systemd-sysext` on a temporary root (`--root=`):
//! a directory tree (tar) and a squashfs image are merged into the root's `/usr`,
//! upgraded, rolled back by re-activating the previous copy, and removed; an
//! extension-release for another OS is refused before activation with nothing changed;
//! a kill -9 in the middle of switching leaves exactly one copy linked.
//!
//! Needs root, `systemd-sysext` and overlayfs (and `mksquashfs` from squashfs-tools for
//! the raw image); otherwise each test prints `skipped: <reason>`. On a host where `/run`
//! is not a mount point or `/` is not a shared mount (containers, CI sandboxes),
//! systemd-sysext 252's merge fails — it then still exits 0 — so the tests run the tool
//! through a wrapper: its own mount namespace with `/run` bound onto itself, and the
//! temporary root bound onto itself as a shared mount so the merge reaches this process.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use patchd::component::{
    apply, ApplyError, Hooks, Installed, Installer, Installers, Job, Journal, StepEvent,
    SysextSettings, Sysexts,
};
use patchd::manifest::{Component, ComponentMethod, Rollback};
use patchd::paths::Paths;

const OS: &str = "ID=patchdtest\nVERSION_ID=7\n";
const CHILD_ENV: &str = "PATCHD_SYSEXT_KILL_CHILD";

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (systemd-sysext mounts an overlay)".into());
    }
    if Command::new("systemd-sysext")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("systemd-sysext not installed (Debian package systemd)".into());
    }
    let fs_list = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs_list.contains("overlay") {
        let _ = Command::new("modprobe").arg("overlay").status();
        if !fs::read_to_string("/proc/filesystems")
            .unwrap_or_default()
            .contains("overlay")
        {
            return Some("no overlayfs in this kernel".into());
        }
    }
    None
}

/// The wrapper described in the module doc: systemd-sysext in a mount namespace of its
/// own where `/run` is a mount point; the root's shared bind carries the merge back.
fn tool() -> Vec<String> {
    [
        "unshare",
        "--mount",
        "--propagation",
        "unchanged",
        "--",
        "sh",
        "-c",
        "mount --bind /run /run && exec systemd-sysext \"$@\"",
        "sh",
    ]
    .map(String::from)
    .to_vec()
}

struct Device {
    tmp: tempfile::TempDir,
    root: PathBuf,
    paths: Paths,
    sysexts: Arc<Sysexts>,
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-R").arg(&self.root).status();
    }
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn device() -> Option<Device> {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("usr/lib")).unwrap();
    fs::create_dir_all(root.join("usr/share/base")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("usr/lib/os-release"), OS).unwrap();
    fs::write(root.join("usr/share/base/file"), "base\n").unwrap();
    sh(Command::new("mount").arg("--bind").arg(&root).arg(&root));
    sh(Command::new("mount").arg("--make-shared").arg(&root));
    let paths = Paths::new(&root);
    let sysexts = Arc::new(Sysexts::new(&paths, SysextSettings { tool: tool() }));
    Some(Device {
        tmp,
        root,
        paths,
        sysexts,
    })
}

/// An extension tree for `name` at `version`: `/usr/share/NAME/version` and its
/// extension-release with `release` (the extension-release file is named `file_name`).
fn tree(d: &Device, name: &str, version: &str, release: &str, file_name: &str) -> PathBuf {
    let t = d
        .tmp
        .path()
        .join(format!("src-{name}-{version}-{}", rand_suffix()));
    fs::create_dir_all(t.join("usr/lib/extension-release.d")).unwrap();
    fs::create_dir_all(t.join(format!("usr/share/{name}"))).unwrap();
    fs::write(
        t.join(format!("usr/share/{name}/version")),
        format!("{version}\n"),
    )
    .unwrap();
    fs::write(
        t.join("usr/lib/extension-release.d").join(file_name),
        release,
    )
    .unwrap();
    t
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn tar_of(src: &Path) -> PathBuf {
    let out = src.with_extension("tar");
    let mut b = tar::Builder::new(fs::File::create(&out).unwrap());
    b.append_dir_all("usr", src.join("usr")).unwrap();
    b.finish().unwrap();
    out
}

fn squashfs_of(src: &Path) -> Option<PathBuf> {
    let out = src.with_extension("raw");
    let r = Command::new("mksquashfs")
        .arg(src)
        .arg(&out)
        .args(["-noappend", "-quiet", "-all-root"])
        .output();
    match r {
        Ok(o) if o.status.success() => Some(out),
        Ok(o) => panic!("mksquashfs failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(_) => {
            println!("skipped: mksquashfs not installed (Debian package squashfs-tools)");
            None
        }
    }
}

fn component(name: &str, version: &str, file: &Path) -> Component {
    use sha2::Digest;
    let bytes = fs::read(file).unwrap();
    Component {
        name: name.into(),
        version: version.into(),
        method: ComponentMethod::Sysext,
        target: format!("components/{name}-{version}"),
        size: bytes.len() as u64,
        sha256: hex::encode(sha2::Sha256::digest(&bytes)),
        needs_reboot: false,
        order: 0,
        rollback: Rollback::Ab,
        units: vec![],
        kind: None,
        severity: None,
        cves: vec![],
    }
}

fn job<'a>(c: &'a Component, file: &'a Path) -> Job<'a> {
    Job {
        component: c,
        file,
        release: "2.0.0",
        slot: "b",
    }
}

fn install(d: &Device, c: &Component, file: &Path) {
    d.sysexts.stage(&job(c, file)).unwrap();
    d.sysexts.switch(&job(c, file)).unwrap();
}

/// What the merged `/usr` shows of extension `name` (`None`: not merged).
fn merged_version(d: &Device, name: &str) -> Option<String> {
    fs::read_to_string(d.root.join(format!("usr/share/{name}/version")))
        .ok()
        .map(|s| s.trim().to_string())
}

fn installed(d: &Device, name: &str) -> Option<Installed> {
    d.sysexts.installed(name).unwrap()
}

/// `apply` with a health check that fails for `bad_version` (rolled back as one).
fn apply_one(d: &Device, c: &Component, file: &Path, bad_version: &str) -> Result<(), ApplyError> {
    let installers = Installers::new().with(ComponentMethod::Sysext, d.sysexts.clone());
    let file = file.to_path_buf();
    let mut file_of = |_: &Component| Ok(file.clone());
    let bad = bad_version.to_string();
    let mut health = |c: &Component| {
        if c.version == bad {
            Err("tools --version failed".to_string())
        } else {
            Ok(())
        }
    };
    let mut record = |_: &StepEvent| {};
    let mut hooks = Hooks {
        file: &mut file_of,
        health: &mut health,
        record: &mut record,
        #[cfg(feature = "failpoints")]
        failpoints: None,
    };
    apply(
        &Journal::path(&d.paths),
        "2.0.0",
        "b",
        std::slice::from_ref(c),
        &installers,
        &mut hooks,
    )
    .map(|_| ())
}

fn lifecycle(d: &Device, v1: &Path, v2: &Path, v3: &Path) {
    let c1 = component("tools", "1", v1);
    install(d, &c1, v1);
    assert_eq!(merged_version(d, "tools").as_deref(), Some("1"));
    assert_eq!(
        fs::read_to_string(d.root.join("usr/share/base/file")).unwrap(),
        "base\n"
    );
    let i1 = installed(d, "tools").unwrap();
    assert_eq!((i1.version.as_str(), i1.copy.as_deref()), ("1", Some("a")));

    let c2 = component("tools", "2", v2);
    install(d, &c2, v2);
    assert_eq!(merged_version(d, "tools").as_deref(), Some("2"));
    assert_eq!(installed(d, "tools").unwrap().copy.as_deref(), Some("b"));
    // The inventory reads it back too.
    let (all, problems) =
        patchd::component::list_installed(&d.paths, &d.paths.resolve(patchd::component::APPS_DIR));
    assert!(problems.is_empty(), "{problems:?}");
    assert!(
        all.iter().any(|c| c.name == "tools"
            && c.method == ComponentMethod::Sysext
            && c.installed.version == "2"),
        "{all:?}"
    );

    d.sysexts.roll_back(&c2, Some(&i1)).unwrap();
    assert_eq!(merged_version(d, "tools").as_deref(), Some("1"));
    assert_eq!(installed(d, "tools").unwrap().version, "1");

    // Through the release steps: v3's health check fails, the release rolls v3 back and
    // v1 is merged again.
    let c3 = component("tools", "3", v3);
    let r = apply_one(d, &c3, v3, "3");
    assert!(matches!(r, Err(ApplyError::Failed { .. })), "{r:?}");
    assert_eq!(merged_version(d, "tools").as_deref(), Some("1"));
    assert_eq!(installed(d, "tools").unwrap().version, "1");

    // Not installed before: the rollback removes the extension and unmerges it.
    d.sysexts.roll_back(&c1, None).unwrap();
    assert_eq!(merged_version(d, "tools"), None);
    assert_eq!(installed(d, "tools"), None);
    assert!(d.root.join("usr/share/base/file").exists());
}

#[test]
fn tree_extension_merges_upgrades_and_rolls_back() {
    let Some(d) = device() else { return };
    let rel = "ID=patchdtest\nVERSION_ID=7\n";
    let v: Vec<PathBuf> = ["1", "2", "3"]
        .iter()
        .map(|v| tar_of(&tree(&d, "tools", v, rel, "extension-release.tools")))
        .collect();
    lifecycle(&d, &v[0], &v[1], &v[2]);
    // The copy taken out of use stays, hidden from systemd-sysext, for inspection.
    assert!(d
        .root
        .join("var/lib/extensions/.#tools.patchd/usr/share/tools/version")
        .exists());
}

#[test]
fn squashfs_extension_merges_upgrades_and_rolls_back() {
    let Some(d) = device() else { return };
    let rel = "ID=patchdtest\nSYSEXT_LEVEL=1.0\nVERSION_ID=7\n";
    let mut v = Vec::new();
    for n in ["1", "2", "3"] {
        let Some(img) = squashfs_of(&tree(&d, "tools", n, rel, "extension-release.tools")) else {
            return;
        };
        v.push(img);
    }
    lifecycle(&d, &v[0], &v[1], &v[2]);
    let link = d.root.join("var/lib/extensions/tools.raw");
    assert!(!link.exists(), "the link is gone after the last rollback");
}

/// The extensions directory: names and inodes (what is in use, what is spare).
fn entries(d: &Device) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut v: Vec<(String, u64)> = fs::read_dir(d.root.join("var/lib/extensions"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().to_string(),
                e.metadata().unwrap().ino(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The refusal names the field; nothing in the extensions directory changes (neither
/// the copy in use nor the spare), v2 stays merged and installed.
fn assert_refused(d: &Device, file: &Path, want: &str) {
    let c = component("tools", "9", file);
    let links_before = entries(d);
    let e = d.sysexts.stage(&job(&c, file)).unwrap_err().to_string();
    assert!(e.contains(want), "{e}");
    assert!(
        e.contains("not activated") || e.contains("named after"),
        "{e}"
    );
    // The release's switch finds nothing staged either.
    assert!(d.sysexts.switch(&job(&c, file)).is_err());
    let links_after = entries(d);
    assert_eq!(links_before, links_after);
    assert_eq!(merged_version(d, "tools").as_deref(), Some("2"));
    assert_eq!(installed(d, "tools").unwrap().version, "2");
}

#[test]
fn mismatched_extension_release_is_refused_before_activation() {
    let Some(d) = device() else { return };
    let ok = tar_of(&tree(&d, "tools", "1", OS, "extension-release.tools"));
    install(&d, &component("tools", "1", &ok), &ok);
    let v1 = installed(&d, "tools").unwrap();
    let ok2 = tar_of(&tree(&d, "tools", "2", OS, "extension-release.tools"));
    let c2 = component("tools", "2", &ok2);
    install(&d, &c2, &ok2);
    assert_eq!(merged_version(&d, "tools").as_deref(), Some("2"));
    let other_id = tree(
        &d,
        "tools",
        "9",
        "ID=fedora\nVERSION_ID=7\n",
        "extension-release.tools",
    );
    assert_refused(
        &d,
        &tar_of(&other_id),
        "ID: the extension says \"fedora\", this OS \"patchdtest\"",
    );
    let other_version = tree(
        &d,
        "tools",
        "9",
        "ID=patchdtest\nVERSION_ID=8\n",
        "extension-release.tools",
    );
    assert_refused(
        &d,
        &tar_of(&other_version),
        "VERSION_ID: the extension says \"8\", this OS \"7\"",
    );
    let misnamed = tree(&d, "tools", "9", OS, "extension-release.other");
    assert_refused(&d, &tar_of(&misnamed), "extension-release.tools");
    if let Some(img) = squashfs_of(&other_version) {
        // A raw image cannot replace a tree (an extension keeps its form) ...
        let e = d
            .sysexts
            .stage(&job(&component("tools", "9", &img), &img))
            .unwrap_err();
        assert!(e.to_string().contains("keeps its form"), "{e}");
        // ... and a fresh raw extension for another OS is refused by its content.
        let c = component("other", "1", &img);
        let renamed = tree(
            &d,
            "other",
            "1",
            "ID=patchdtest\nVERSION_ID=8\n",
            "extension-release.other",
        );
        let img = squashfs_of(&renamed).unwrap();
        let e = d.sysexts.stage(&job(&c, &img)).unwrap_err().to_string();
        assert!(e.contains("VERSION_ID"), "{e}");
        assert!(!d.root.join("var/lib/extensions/other.raw").exists());
        assert_eq!(merged_version(&d, "other"), None);
    }
    // The spare copy survived every refusal: the rollback still reaches v1.
    d.sysexts.roll_back(&c2, Some(&v1)).unwrap();
    assert_eq!(merged_version(&d, "tools").as_deref(), Some("1"));
}

#[test]
fn a_payload_that_is_no_image_is_refused() {
    let Some(d) = device() else { return };
    let junk = d.tmp.path().join("junk.raw");
    fs::write(&junk, vec![7u8; 8192]).unwrap();
    let e = d
        .sysexts
        .stage(&job(&component("tools", "1", &junk), &junk))
        .unwrap_err();
    assert!(e.to_string().contains("neither a tar tree nor"), "{e}");
    assert_eq!(installed(&d, "tools"), None);
}

/// The child of `kill_9_during_the_switch_leaves_exactly_one_copy_linked`: switches the
/// extension between the two staged copies until killed.
#[test]
fn kill_child_switches_until_killed() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    let paths = Paths::new(&root);
    let s = Sysexts::new(&paths, SysextSettings { tool: tool() });
    let dir = Path::new(&root).parent().unwrap().to_path_buf();
    let f1 = dir.join("v1.tar");
    let f2 = dir.join("v2.tar");
    let (c1, c2) = (component("tools", "1", &f1), component("tools", "2", &f2));
    loop {
        s.switch(&job(&c2, &f2)).unwrap();
        s.switch(&job(&c1, &f1)).unwrap();
    }
}

#[test]
fn kill_9_during_the_switch_leaves_exactly_one_copy_linked() {
    let Some(d) = device() else { return };
    let f1 = d.tmp.path().join("v1.tar");
    let f2 = d.tmp.path().join("v2.tar");
    fs::rename(
        tar_of(&tree(&d, "tools", "1", OS, "extension-release.tools")),
        &f1,
    )
    .unwrap();
    fs::rename(
        tar_of(&tree(&d, "tools", "2", OS, "extension-release.tools")),
        &f2,
    )
    .unwrap();
    let (c1, c2) = (component("tools", "1", &f1), component("tools", "2", &f2));
    install(&d, &c1, &f1);
    d.sysexts.stage(&job(&c2, &f2)).unwrap();
    let exe = std::env::current_exe().unwrap();
    let links = d.root.join("var/lib/extensions");
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..8u64 {
        use std::os::unix::process::CommandExt;
        let child = Command::new(&exe)
            .args([
                "--exact",
                "kill_child_switches_until_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &d.root)
            .stdout(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(150 + 97 * i));
        // The whole group: systemd-sysext killed in its merge too, as a power cut would.
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::killpg(pid, nix::sys::signal::SIGKILL).unwrap();
        let mut child = child;
        let _ = child.wait();
        // Exactly one copy linked: the link names a or b, whole and recorded.
        let names: Vec<String> = fs::read_dir(&links)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| !n.starts_with(".#"))
            .collect();
        assert_eq!(names, ["tools"], "round {i}");
        let now = installed(&d, "tools").expect("an extension stays installed");
        assert!(
            ["1", "2"].contains(&now.version.as_str()),
            "round {i}: {now:?}"
        );
        seen.insert(now.version.clone());
        // Finishing the interrupted step (what reconciliation does) merges what is linked.
        let (c, f) = if now.version == "1" {
            (&c1, &f1)
        } else {
            (&c2, &f2)
        };
        d.sysexts.switch(&job(c, f)).unwrap();
        assert_eq!(
            merged_version(&d, "tools"),
            Some(now.version.clone()),
            "round {i}"
        );
    }
    println!("versions linked after the kills: {seen:?}");
}

/// The verdict after a reboot asks whether the extension is in effect: systemd-sysext
/// merges again at boot against the booted OS and leaves out one that does not match
/// it, while the A/B entry still names the new copy.
#[test]
fn an_extension_the_booted_os_does_not_merge_is_not_in_effect() {
    let Some(d) = device() else { return };
    let rel = "ID=patchdtest\nVERSION_ID=7\n";
    let file = tar_of(&tree(&d, "tools", "1", rel, "extension-release.tools"));
    let c = component("tools", "1", &file);
    install(&d, &c, &file);
    assert_eq!(d.sysexts.in_effect(&c).unwrap(), Ok(()));
    // The machine boots an OS this extension does not match: nothing is merged at
    // power-up, then the boot's merge (the same systemd-sysext) leaves it out.
    let sysext = |verb: &str| {
        let t = tool();
        let out = Command::new(&t[0])
            .args(&t[1..])
            .arg(format!("--root={}", d.root.display()))
            .arg(verb)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sysext("unmerge");
    fs::write(
        d.root.join("usr/lib/os-release"),
        OS.replace("VERSION_ID=7", "VERSION_ID=8"),
    )
    .unwrap();
    sysext("merge");
    assert_eq!(
        merged_version(&d, "tools"),
        None,
        "systemd-sysext merged it anyway"
    );
    assert_eq!(
        installed(&d, "tools").map(|i| i.version).as_deref(),
        Some("1")
    );
    let why = d.sysexts.in_effect(&c).unwrap().unwrap_err();
    assert!(why.contains("not merged"), "{why}");
    // Another version in use is not in effect either.
    let other = component("tools", "0", &file);
    let other = Component {
        sha256: "00".into(),
        ..other
    };
    let why = d.sysexts.in_effect(&other).unwrap().unwrap_err();
    assert!(why.contains("version 1"), "{why}");
}
