//! Staging a patch set in a btrfs snapshot, for real (root only): a btrfs loop device
//! whose slot subvolume `a` holds a debootstrapped Debian (cached once under
//! target/apt-stage-cache, keyed by suite and variant), packages at older versions
//! installed from a signed local archive (`apt_fixture`), the scan, and the upgrade
//! staged into slot `b`: new versions in the snapshot, old ones in the running root,
//! the delta recorded, service starts blocked by policy-rc.d, the `/etc` three-way
//! carry-over after a real edit; a failing postinst deletes the snapshot; a staging
//! killed with SIGKILL leaves a snapshot the restart deletes; the layout check of
//! `patchd --check-config` and `patchd init --apt`; and the whole path through
//! `patchd run` (staged with the delta in the audit log, an /etc edit made while
//! staging carried in at the switch, the reboot into the snapshot requested).

mod apt_fixture;
mod common;
mod process;

use std::path::{Path, PathBuf};
use std::process::Command;

use apt_fixture::{Archive, Entry, Signing, World};
use common::disk::{mkfs, Loop, Mount};
use patchd::boot::Bootloader as _;
use patchd::engine::ports::{Offered, Updates};
use patchd::names::SlotName;
use patchd::slot::{BtrfsSlots, SlotState};
use patchd::source::apt::record::Records;
use patchd::source::apt::Snapshots;
use patchd::source::AptUpdates;
use patchd::sourceconf::{AptConfig, ChangelogSource, RawApt};

const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The debootstrapped minimal Debian, made once (the Debian archive is needed then only).
fn base_tree() -> PathBuf {
    use sha2::{Digest, Sha256};
    let key = hex::encode(Sha256::digest(format!("{SUITE} minbase {MIRROR}")))[..12].to_string();
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/apt-stage-cache");
    let dir = cache.join(format!("debootstrap-{key}"));
    // The tests of this file run in parallel threads: one builds the tree, the others
    // wait for it (two debootstraps into one directory corrupt each other's downloads).
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if !dir.join(".done").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        sh(Command::new("debootstrap")
            .args(["--variant=minbase", SUITE])
            .arg(dir.join("root"))
            .arg(MIRROR));
        let root = dir.join("root");
        for d in [
            "usr/share/doc",
            "usr/share/man",
            "usr/share/locale",
            "var/cache/apt",
        ] {
            let _ = std::fs::remove_dir_all(root.join(d));
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(dir.join(".done"), "").unwrap();
    }
    dir.join("root")
}

struct Env {
    _mount: Mount,
    _lo: Loop,
    tmp: tempfile::TempDir,
    world: World,
    slots_dir: PathBuf,
}

fn name(s: &str) -> SlotName {
    SlotName::new(s).unwrap()
}

impl Env {
    fn running(&self) -> PathBuf {
        self.slots_dir.join("a")
    }
    fn snapshot(&self) -> PathBuf {
        self.slots_dir.join("b")
    }
    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }
    fn slots(&self) -> BtrfsSlots {
        BtrfsSlots::new(&self.slots_dir, self.state()).with_booted(name("a"))
    }
    fn snapshots(&self) -> Snapshots {
        Snapshots {
            slots: self.slots(),
            running: name("a"),
            state: self.state().join("apt"),
            binds: Vec::new(),
        }
    }
    fn source(&self) -> AptUpdates {
        let cfg = AptConfig::from_raw(RawApt {
            root: Some(self.running()),
            security_origins: Some(vec!["label=TestOS-Security".into()]),
            changelogs: Some(ChangelogSource::None),
            ..Default::default()
        })
        .unwrap();
        AptUpdates::new(
            cfg,
            "srv".into(),
            "stable".into(),
            self.tmp.path().join("cache"),
        )
        .with_snapshots(self.snapshots())
    }
    fn version_in(&self, root: &Path, pkg: &str) -> Option<String> {
        let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
        status.split("\n\n").find_map(|stanza| {
            let field = |k: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
            };
            (field("Package:").as_deref() == Some(pkg)).then(|| field("Version:"))?
        })
    }
    fn mounts_under_slots(&self) -> Vec<String> {
        let m = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let d = self.slots_dir.display().to_string();
        m.lines()
            .filter(|l| l.contains(&d))
            .map(String::from)
            .collect()
    }
}

/// The patch set's packages: old versions installed in `a`, new ones in the security
/// archive. `extra` adds packages (name, new-version files) to the upgrade.
fn setup(t: &str, extra: &[(&'static str, &str, &str)]) -> Option<Env> {
    if !common::require_root(t)
        || !common::require_tools(t, &["losetup", "mkfs.btrfs", "btrfs", "debootstrap"])
    {
        return None;
    }
    if let Some(tool) = apt_fixture::missing_tool() {
        println!("skipped: {t} needs {tool}");
        return None;
    }
    let base = base_tree();
    let tmp = tempfile::tempdir().unwrap();
    let lo = Loop::new(tmp.path(), "btrfs.raw", 1536 << 20);
    mkfs(&lo.dev, "btrfs");
    let mount = Mount::device(&lo.dev, &tmp.path().join("mnt"));
    let slots_dir = mount.dir.join("slots");
    std::fs::create_dir_all(&slots_dir).unwrap();
    let a = slots_dir.join("a");
    sh(Command::new("btrfs")
        .args(["-q", "subvolume", "create"])
        .arg(&a));
    sh(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", base.display()))
        .arg(&a));
    std::fs::write(a.join("etc/apt/sources.list"), "").unwrap();
    let top = tmp.path().join("top");
    let world = World::new(&top, &a);
    let mut old = Vec::new();
    let mut new = Vec::new();
    let mut pkgs: Vec<(&'static str, &str, &str)> = vec![
        ("libfoo", "", ""),
        (
            "svc",
            "etc/init.d/svc",
            "#!/bin/sh\ntouch /svc-was-started\n",
        ),
        ("conf", "etc/conf.conf", "setting = package-2\n"),
    ];
    pkgs.extend_from_slice(extra);
    for (pkg, path, content) in &pkgs {
        old.push((*pkg, vec![Entry("1.0-1", "low", "Initial release.")]));
        new.push((
            *pkg,
            vec![
                Entry("1.0-2", "high", "Fix CVE-2026-1111."),
                Entry("1.0-1", "low", "Initial release."),
            ],
        ));
        if !path.is_empty() {
            world.add_file(pkg, "1.0-2", path, content);
        }
    }
    world.add_file("conf", "1.0-1", "etc/conf.conf", "setting = package-1\n");
    world.add_file(
        "svc",
        "1.0-1",
        "etc/init.d/svc",
        "#!/bin/sh\ntouch /svc-was-started\n",
    );
    // The upgrade asks for the service to start; policy-rc.d must refuse. The script
    // also prints and fails on an error (as a kernel package's linux-update-symlinks
    // does): maintainer scripts must run with a stdout.
    world.add_file(
        "svc",
        "1.0-2",
        "DEBIAN/postinst",
        "#!/bin/sh\nset -e\nrc=0\n/usr/sbin/policy-rc.d svc start || rc=$?\n\
         [ \"$rc\" = 101 ] || /etc/init.d/svc start\necho \"svc configured\"\n",
    );
    for (dir, label, suite, packages) in [
        ("old", "TestOS", "stable", old),
        ("security", "TestOS-Security", "stable-security", new),
    ] {
        world.archive(&Archive {
            dir,
            origin: "TestOS",
            label,
            suite,
            signing: Signing::Good,
            packages,
        });
    }
    // The archive and key at the same path inside the root, as apt there sees them.
    let inside = a.join(top.strip_prefix("/").unwrap());
    std::fs::create_dir_all(&inside).unwrap();
    sh(Command::new("cp")
        .arg("-a")
        .arg(top.join("repo"))
        .arg(&world.key)
        .arg(&inside));
    let debs: Vec<String> = std::fs::read_dir(top.join("repo/old/pool"))
        .unwrap()
        .map(|e| format!("{}", e.unwrap().path().display()))
        .collect();
    sh(Command::new("chroot")
        .arg(&a)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .args(["dpkg", "-i"])
        .args(&debs));
    Some(Env {
        _mount: mount,
        _lo: lo,
        tmp,
        world,
        slots_dir,
    })
}

async fn offered(src: &AptUpdates) -> Offered {
    let mut o = src.discover().await.unwrap();
    assert_eq!(o.len(), 1, "one patch set");
    o.remove(0)
}

#[tokio::test]
async fn upgrade_staged_in_a_snapshot_running_root_untouched_and_etc_carried() {
    let Some(env) = setup("upgrade_staged_in_a_snapshot", &[]) else {
        return;
    };
    let src = env.source();
    let set = offered(&src).await;
    let names: Vec<&str> = set.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["conf", "libfoo", "svc"]);
    let status_before = std::fs::read(env.running().join("var/lib/dpkg/status")).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(None);
    src.stage(set.version(), &name("b"), tx).await.unwrap();

    for p in ["libfoo", "svc", "conf"] {
        assert_eq!(
            env.version_in(&env.snapshot(), p).as_deref(),
            Some("1.0-2"),
            "{p}"
        );
        assert_eq!(
            env.version_in(&env.running(), p).as_deref(),
            Some("1.0-1"),
            "{p}"
        );
    }
    assert_eq!(
        std::fs::read(env.running().join("var/lib/dpkg/status")).unwrap(),
        status_before,
        "the running root's dpkg database is unchanged"
    );
    assert!(
        !env.snapshot().join("svc-was-started").exists(),
        "policy-rc.d let a service start"
    );
    assert!(!env.running().join("svc-was-started").exists());
    assert!(
        !env.snapshot().join("usr/sbin/policy-rc.d").exists(),
        "policy-rc.d left behind"
    );
    let st = env.slots().record(&name("b")).unwrap();
    assert_eq!(st.state, SlotState::Verified);
    assert_eq!(
        st.version.as_deref(),
        Some(set.version().to_string().as_str())
    );
    let rec = src.staged_record(&name("b")).unwrap();
    let delta: Vec<(&str, &str, &str)> = rec
        .packages
        .iter()
        .map(|d| (d.name.as_str(), d.old.as_str(), d.new.as_str()))
        .collect();
    assert_eq!(
        delta,
        [
            ("conf", "1.0-1", "1.0-2"),
            ("libfoo", "1.0-1", "1.0-2"),
            ("svc", "1.0-1", "1.0-2")
        ]
    );
    let fields = src.staged_fields(&name("b"));
    assert_eq!(fields[0].0, "packages");
    assert_eq!(fields[0].1.as_array().unwrap().len(), 3);
    assert!(rx.borrow().is_some(), "staging reported progress");
    // `list --verbose` and the inventory: the staged versions, and what runs now.
    let version = set.version().to_string();
    let listed = src.release_packages(&version).unwrap();
    assert!(
        listed.iter().all(|p| p.staged.as_deref() == Some("1.0-2")),
        "{listed:?}"
    );
    let again = offered(&src).await;
    assert_eq!(
        again.version(),
        set.version(),
        "the same patch set while a is running"
    );
    assert!(again
        .packages
        .iter()
        .all(|p| p.staged.as_deref() == Some("1.0-2")));
    let installed = src.installed_packages().unwrap();
    let libfoo = installed.iter().find(|p| p.name == "libfoo").unwrap();
    assert_eq!(libfoo.version, "1.0-1");
    assert!(
        installed.iter().any(|p| p.name == "apt"),
        "the debootstrapped packages too"
    );
    assert!(
        env.mounts_under_slots().is_empty(),
        "{:?}",
        env.mounts_under_slots()
    );

    // The admin edits /etc on the running root after the snapshot was taken.
    let run_etc = env.running().join("etc");
    let new_etc = env.snapshot().join("etc");
    std::fs::write(run_etc.join("hostname"), "edited-by-admin\n").unwrap();
    std::fs::write(run_etc.join("conf.conf"), "setting = admin\n").unwrap();
    std::fs::write(run_etc.join("admin-added.conf"), "x = 1\n").unwrap();
    std::fs::remove_file(run_etc.join("issue.net")).unwrap();
    let fields = src.before_switch(&name("b")).await.unwrap();
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(
        get("carried"),
        serde_json::json!(["admin-added.conf", "hostname"])
    );
    assert_eq!(get("deleted"), serde_json::json!(["issue.net"]));
    assert_eq!(get("conflicts"), serde_json::json!(["conf.conf"]));
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    assert_eq!(read(&new_etc.join("hostname")), "edited-by-admin\n");
    assert_eq!(read(&new_etc.join("conf.conf")), "setting = admin\n");
    assert_eq!(
        read(&new_etc.join("conf.conf.dpkg-new")),
        "setting = package-2\n"
    );
    assert_eq!(read(&new_etc.join("admin-added.conf")), "x = 1\n");
    assert!(!new_etc.join("issue.net").exists());
    // The package's other /etc changes stay (nothing the admin touched).
    assert!(new_etc.join("init.d/svc").exists());
    let etc = src.staged_record(&name("b")).unwrap().etc.unwrap();
    assert_eq!(etc.conflicts, ["conf.conf"]);
    drop(env.world);
}

#[tokio::test]
async fn failing_postinst_deletes_the_snapshot_and_leaves_the_running_root() {
    let extra = [(
        "broken",
        "DEBIAN/postinst",
        "#!/bin/sh\necho broken postinst >&2\nexit 1\n",
    )];
    let Some(env) = setup("failing_postinst_deletes_the_snapshot", &extra) else {
        return;
    };
    let src = env.source();
    let set = offered(&src).await;
    let status_before = std::fs::read(env.running().join("var/lib/dpkg/status")).unwrap();
    let (tx, _rx) = tokio::sync::watch::channel(None);
    let e = src.stage(set.version(), &name("b"), tx).await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("apt-get install in the snapshot failed"),
        "{msg}"
    );
    assert!(msg.contains("broken"), "{msg}");
    assert_eq!(e.cause, Some("stage"));
    assert!(!env.snapshot().exists(), "the failed snapshot is deleted");
    assert_eq!(
        env.slots().record(&name("b")).unwrap().state,
        SlotState::Empty
    );
    assert_eq!(
        std::fs::read(env.running().join("var/lib/dpkg/status")).unwrap(),
        status_before
    );
    assert!(src.staged_record(&name("b")).is_none());
    assert!(Records::new(env.state().join("apt"))
        .unfinished()
        .is_empty());
    assert!(
        env.mounts_under_slots().is_empty(),
        "{:?}",
        env.mounts_under_slots()
    );
}

/// Run as a child process by `killed_staging_leaves_a_snapshot_the_restart_deletes`
/// (which SIGKILLs it in the middle); does nothing on its own.
#[tokio::test]
async fn child_stages_until_killed() {
    let Ok(spec) = std::env::var("PATCHD_APT_STAGE_CHILD") else {
        return;
    };
    let (slots_dir, state, root) = {
        let v: Vec<&str> = spec.split('\n').collect();
        (
            PathBuf::from(v[0]),
            PathBuf::from(v[1]),
            PathBuf::from(v[2]),
        )
    };
    let cfg = AptConfig::from_raw(RawApt {
        root: Some(root),
        security_origins: Some(vec!["label=TestOS-Security".into()]),
        changelogs: Some(ChangelogSource::None),
        ..Default::default()
    })
    .unwrap();
    let src = AptUpdates::new(cfg, "srv".into(), "stable".into(), state.join("cache"))
        .with_snapshots(Snapshots {
            slots: BtrfsSlots::new(&slots_dir, &state).with_booted(name("a")),
            running: name("a"),
            state: state.join("apt"),
            binds: Vec::new(),
        });
    let set = offered(&src).await;
    let (tx, _rx) = tokio::sync::watch::channel(None);
    let _ = src.stage(set.version(), &name("b"), tx).await;
}

#[tokio::test]
async fn killed_staging_leaves_a_snapshot_the_restart_deletes() {
    let extra = [(
        "slow",
        "DEBIAN/postinst",
        "#!/bin/sh\ntouch /in-postinst\nsleep 20\n",
    )];
    let Some(env) = setup(
        "killed_staging_leaves_a_snapshot_the_restart_deletes",
        &extra,
    ) else {
        return;
    };
    let status_before = std::fs::read(env.running().join("var/lib/dpkg/status")).unwrap();
    let spec = format!(
        "{}\n{}\n{}",
        env.slots_dir.display(),
        env.state().display(),
        env.running().display()
    );
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_stages_until_killed", "--nocapture"])
        .env("PATCHD_APT_STAGE_CHILD", spec)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !env.snapshot().join("in-postinst").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the staging never reached the postinst"
        );
        assert!(child.try_wait().unwrap().is_none(), "the child ended early");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    assert!(
        env.snapshot().exists(),
        "the partial snapshot is there after the kill"
    );
    // Nothing of the staging (dpkg, the postinst's sleep) lives on in the snapshot.
    let inside = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_link(e.path().join("root")).is_ok_and(|r| r == env.snapshot())
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while !inside().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        inside().is_empty(),
        "processes left in the snapshot: {:?}",
        inside()
    );
    assert_eq!(
        env.slots().record(&name("b")).unwrap().state,
        SlotState::Incomplete
    );

    // The restart: a new source over the same slots cleans up at start.
    let src = env.source();
    assert_eq!(src.recover().unwrap(), vec![name("b")]);
    assert!(
        !env.snapshot().exists(),
        "the restart deleted the partial snapshot"
    );
    assert_eq!(
        env.slots().record(&name("b")).unwrap().state,
        SlotState::Empty
    );
    assert_eq!(
        std::fs::read(env.running().join("var/lib/dpkg/status")).unwrap(),
        status_before
    );
    assert!(!env.running().join("in-postinst").exists());
    assert!(src.recover().unwrap().is_empty());
}

#[test]
fn check_config_names_each_layout_problem_until_the_layout_is_right() {
    let t = "check_config_names_each_layout_problem";
    if !common::require_root(t) || !common::require_tools(t, &["losetup", "mkfs.btrfs", "btrfs"]) {
        return;
    }
    use patchd::slot::{SlotEntry, SlotKind, SlotsConfig};
    use patchd::source::apt::layout::check;
    let tmp = tempfile::tempdir().unwrap();
    let fs = common::disk::Btrfs::new(tmp.path());
    let slots_dir = fs.mnt.join("slots");
    std::fs::create_dir_all(&slots_dir).unwrap();
    let root = slots_dir.join("a");
    for sv in [root.clone(), fs.mnt.join("@var")] {
        sh(Command::new("btrfs")
            .args(["-q", "subvolume", "create"])
            .arg(&sv));
    }
    for d in ["var/lib/dpkg", ".slots", "usr/lib"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let paths = patchd::paths::Paths::new(&root);
    let cfg = SlotsConfig {
        backend: SlotKind::Btrfs,
        dir: Some("/.slots".into()),
        checkpoint_every: None,
        slot: ["a", "b"]
            .map(|n| SlotEntry {
                name: name(n),
                path: None,
            })
            .into(),
    };
    let problems = |c: Option<&SlotsConfig>| -> Vec<String> {
        check(c, &paths)
            .into_iter()
            .map(|p| format!("{} / fix: {}", p.problem, p.fix))
            .collect()
    };
    let file = SlotsConfig {
        backend: SlotKind::File,
        ..cfg.clone()
    };
    assert!(problems(Some(&file))[0].contains("fix: set [slots] backend = \"btrfs\""));
    // The root is not yet reachable as <dir>/a, and /var is inside it.
    let p = problems(Some(&cfg));
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(p[0].contains("is none of the slot subvolumes"), "{p:#?}");
    assert!(p[1].contains("/var is inside the root subvolume"), "{p:#?}");
    // The top level at <dir>, /var a subvolume of its own: the dpkg database is on it.
    let _top = Bind::new(&slots_dir, &root.join(".slots"));
    sh(Command::new("cp")
        .arg("-a")
        .arg(root.join("var/."))
        .arg(fs.mnt.join("@var")));
    let _var = Bind::new(&fs.mnt.join("@var"), &root.join("var"));
    let init = || {
        Command::new(env!("CARGO_BIN_EXE_patchd"))
            .arg("--root")
            .arg(&root)
            .args(["init", "--apt", "--boot", "file", "--slots", "btrfs"])
            .args([
                "--slots-dir",
                "/.slots",
                "--slot",
                "a",
                "--slot",
                "b",
                "--booted",
                "a",
            ])
            .output()
            .unwrap()
    };
    let conf = root.join("etc/patchd/patchd.toml");
    let p = problems(Some(&cfg));
    assert_eq!(p.len(), 1, "{p:#?}");
    let refused = init();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("dpkg database") && err.contains("fix: "),
        "{err}"
    );
    assert!(!conf.exists(), "a refused init writes nothing");
    assert!(
        p[0].contains("dpkg database") && p[0].contains("ln -s /usr/lib/sysimage/dpkg"),
        "{p:#?}"
    );
    // The database moved into the root, a symlink left on /var.
    std::fs::create_dir_all(root.join("usr/lib/sysimage/dpkg")).unwrap();
    std::fs::remove_dir(root.join("var/lib/dpkg")).unwrap();
    std::os::unix::fs::symlink("/usr/lib/sysimage/dpkg", root.join("var/lib/dpkg")).unwrap();
    assert_eq!(problems(Some(&cfg)), Vec::<String>::new());
    let done = init();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.contains("kind = \"apt\""), "{text}");
    let check = Command::new(env!("CARGO_BIN_EXE_patchd"))
        .arg("--root")
        .arg(&root)
        .arg("--check-config")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        out.contains(
            "the root is a slot subvolume, /var is shared, the dpkg database is in the root"
        ),
        "{out}"
    );
}

/// A bind mount, unmounted on drop.
struct Bind {
    dir: PathBuf,
}

impl Bind {
    fn new(src: &Path, dir: &Path) -> Bind {
        sh(Command::new("mount").arg("--bind").arg(src).arg(dir));
        Bind { dir: dir.into() }
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// `patchd run` on a private bus over `env`'s slot subvolumes (bound at `/slots` in the
/// device's root) with the apt source scanning slot `a`; `more` is appended to the
/// configuration right after `[source.apt]`.
struct AptDevice {
    bus: process::SessionBus,
    systemd: process::FakeSystemd,
    _sd: zbus::Connection,
    dev: process::Device,
    _slots: Bind,
    _top: tempfile::TempDir,
}

impl AptDevice {
    async fn new(env: &Env, more: &str) -> Option<AptDevice> {
        let bus = process::SessionBus::start()?;
        let systemd = process::FakeSystemd::default();
        let sd = systemd.serve(&bus.address).await;
        let top = tempfile::tempdir().unwrap();
        let dev = process::Device::new(
            top.path(),
            &process::DeviceSpec {
                slots: process::SlotsKind::Btrfs("/slots".into()),
                extra: format!(
                    "[source]\nkind = \"apt\"\n\n[source.apt]\nroot = \"/slots/a\"\n\
                     security_origins = [\"label=TestOS-Security\"]\nchangelogs = \"none\"\n{more}"
                ),
                ..Default::default()
            },
        );
        let mnt = dev.paths.resolve("/slots");
        std::fs::create_dir_all(&mnt).unwrap();
        let slots = Bind::new(&env.slots_dir, &mnt);
        Some(AptDevice {
            bus,
            systemd,
            _sd: sd,
            dev,
            _slots: slots,
            _top: top,
        })
    }

    /// The apt source scans slot `slot` from now on (the root the device runs after
    /// the switch).
    fn scan_root(&self, slot: &str) {
        let conf = self.dev.paths.resolve("/etc/patchd/patchd.toml");
        let text = std::fs::read_to_string(&conf).unwrap();
        let text = text.replace("root = \"/slots/a\"", &format!("root = \"/slots/{slot}\""));
        std::fs::write(&conf, text).unwrap();
    }

    async fn patchctl(&self, args: &[&str]) -> (i32, String, String) {
        process::patchctl(&self.bus.address, args).await
    }
}

/// Wait (at most a minute) until `path` exists: a step of the staging was reached.
fn wait_for_file(path: &Path, dev: &process::Device) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared\n{}",
            path.display(),
            dev.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn audit_records(dev: &process::Device) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dev.audit_path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The whole path through `patchd run`: the check offers the patch set, the engine
/// stages it into slot b (the `staged` record carries the delta), an /etc edit the admin
/// makes on the running root while staging runs is carried in at the switch
/// (`etc_carried`), and the reboot into b is requested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patchd_run_stages_switches_and_carries_an_etc_edit() {
    let extra = [(
        "slow",
        "DEBIAN/postinst",
        "#!/bin/sh\ntouch /in-postinst\nsleep 2\n",
    )];
    let Some(env) = setup("patchd_run_stages_switches_and_carries_an_etc_edit", &extra) else {
        return;
    };
    let Some(rig) = AptDevice::new(&env, "").await else {
        return;
    };
    let (dev, systemd) = (&rig.dev, &rig.systemd);
    let mut d = dev.spawn(&rig.bus.address, &[]);
    wait_for_file(&env.snapshot().join("in-postinst"), dev);
    std::fs::write(env.running().join("etc/hostname"), "edited-while-staging\n").unwrap();
    let e = process::wait_until(
        &mut d,
        dev,
        std::time::Duration::from_secs(60),
        "reboot request",
        |_| false,
    )
    .await;
    let process::Ended::Exited(st) = e else {
        unreachable!()
    };
    assert!(st.success(), "patchd exit {st}:\n{}", dev.log());
    assert_eq!(systemd.calls().len(), 1, "{:?}", systemd.calls());
    let audit: Vec<serde_json::Value> = std::fs::read_to_string(dev.audit_path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let event = |name: &str| {
        audit
            .iter()
            .find(|r| r["event"] == name)
            .unwrap_or_else(|| panic!("no {name} record: {audit:#?}"))
    };
    let staged = event("staged");
    let delta = staged["extra"]["packages"]
        .as_array()
        .unwrap_or_else(|| panic!("{staged}"));
    assert_eq!(delta.len(), 4, "{staged}");
    assert!(
        delta
            .iter()
            .all(|p| p["old"] == "1.0-1" && p["new"] == "1.0-2"),
        "{staged}"
    );
    let carried = event("etc_carried");
    assert_eq!(
        carried["extra"]["carried"],
        serde_json::json!(["hostname"]),
        "{carried}"
    );
    assert_eq!(
        std::fs::read_to_string(env.snapshot().join("etc/hostname")).unwrap(),
        "edited-while-staging\n"
    );
    assert_eq!(
        env.version_in(&env.snapshot(), "libfoo").as_deref(),
        Some("1.0-2")
    );
    assert_eq!(
        env.version_in(&env.running(), "libfoo").as_deref(),
        Some("1.0-1")
    );
    assert_eq!(dev.slot_status("b").state, SlotState::Verified);
    assert_eq!(
        dev.power_cycle().as_str(),
        "b",
        "the bootloader tries the snapshot"
    );
}

/// `chattr +i` on a path, taken off again on drop (a failed test too), so the
/// temporary directory can be deleted.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Immutable {
        sh(Command::new("chattr").arg("+i").arg(path));
        Immutable(path.into())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// The `/etc` carry-over fails at the switch for real: the admin edits `/etc/hostname`
/// on the running root while the patch set stages, and the snapshot's copy is
/// immutable (`chattr +i` stops even root). The switch fails (`switch_failed` with the
/// cause in status, the audit log and the metrics), nothing is armed (the bootloader's
/// slots as before the switch, no reboot, the running root as it was) and nothing is
/// lost: the release stays staged, the state file loads, the audit chain verifies. The
/// metrics also show the patch set's packages by kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etc_carry_that_cannot_write_fails_the_switch_and_arms_nothing() {
    let t = "an_etc_carry_that_cannot_write_fails_the_switch_and_arms_nothing";
    let extra = [(
        "slow",
        "DEBIAN/postinst",
        "#!/bin/sh\ntouch /in-postinst\nsleep 2\n",
    )];
    let Some(env) = setup(t, &extra) else {
        return;
    };
    if !common::require_tools(t, &["chattr"]) {
        return;
    }
    let metrics = "\n[metrics]\ntextfile = \"/var/lib/patchd/metrics.prom\"\n";
    let Some(rig) = AptDevice::new(&env, metrics).await else {
        return;
    };
    let dev = &rig.dev;
    let mut d = dev.spawn(&rig.bus.address, &[]);
    wait_for_file(&env.snapshot().join("in-postinst"), dev);
    // Staging fenced slot b before writing it; this is the bootloader the switch finds.
    let boot_before = dev.bootloader().slots().unwrap();
    let hostname = env.snapshot().join("etc/hostname");
    let in_snapshot = std::fs::read_to_string(&hostname).unwrap();
    let _frozen = Immutable::set(&hostname);
    std::fs::write(env.running().join("etc/hostname"), "edited-while-staging\n").unwrap();
    let e = process::wait_until(
        &mut d,
        dev,
        std::time::Duration::from_secs(90),
        "switch_failed",
        |dev| dev.audit_events().iter().any(|e| e == "switch_failed"),
    )
    .await;
    assert!(matches!(e, process::Ended::Reached), "{}", dev.log());
    let prom = dev.paths.resolve("/var/lib/patchd/metrics.prom");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&prom).unwrap_or_default();
        if text.contains("patchd_failures_total{reason=\"switch\"}") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no switch failure in the metrics:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    for line in [
        "patchd_pending_packages{kind=\"security\"} 4",
        "patchd_pending_packages{kind=\"bugfix\"} 0",
        "patchd_held_packages 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    let (code, out, err) = rig.patchctl(&["status"]).await;
    assert!(
        out.contains("carry /etc changes into slot b") && out.contains("Operation not permitted"),
        "patchctl status exit {code}:\n{out}{err}"
    );
    let (code, out, err) = rig.patchctl(&["audit", "verify"]).await;
    assert_eq!(code, 0, "audit verify:\n{out}{err}");
    let st = d.stop(std::time::Duration::from_secs(30));
    assert!(st.is_some_and(|s| s.success()), "{st:?}\n{}", dev.log());

    assert!(
        rig.systemd.calls().is_empty(),
        "no reboot: {:?}",
        rig.systemd.calls()
    );
    assert_eq!(
        dev.bootloader().slots().unwrap(),
        boot_before,
        "nothing armed"
    );
    assert_eq!(
        dev.power_cycle().as_str(),
        "a",
        "the running root boots next"
    );
    assert_eq!(
        env.version_in(&env.running(), "libfoo").as_deref(),
        Some("1.0-1")
    );
    assert_eq!(
        std::fs::read_to_string(env.running().join("etc/hostname")).unwrap(),
        "edited-while-staging\n",
        "the admin's edit stays on the running root"
    );
    assert_eq!(std::fs::read_to_string(&hostname).unwrap(), in_snapshot);
    let audit = audit_records(dev);
    let failed = audit
        .iter()
        .find(|r| r["event"] == "switch_failed")
        .unwrap();
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("carry /etc changes into slot b")
            && reason.contains("/etc/hostname in the new root: Operation not permitted"),
        "{failed}"
    );
    assert_eq!(failed["extra"]["cause"], "switch", "{failed}");
    assert!(
        !audit.iter().any(|r| r["event"] == "etc_carried"),
        "nothing carried: {audit:#?}"
    );
    let doc = dev.state().unwrap().unwrap();
    assert_eq!(doc.lifecycle.kind().as_str(), "staged", "{doc:?}");
    assert!(doc.pending.is_none(), "{doc:?}");
    assert_eq!(dev.slot_status("b").state, SlotState::Verified);
}

/// The first run: the patch set stages into b and the device switches (the reboot
/// requested); then the bootloader boots b and the apt source scans it from now on.
async fn staged_and_switched_to_b(rig: &AptDevice) {
    let dev = &rig.dev;
    let mut d = dev.spawn(&rig.bus.address, &[]);
    let e = process::wait_until(
        &mut d,
        dev,
        std::time::Duration::from_secs(120),
        "reboot request",
        |_| false,
    )
    .await;
    assert!(
        matches!(e, process::Ended::Exited(st) if st.success()),
        "{}",
        dev.log()
    );
    assert_eq!(dev.power_cycle().as_str(), "b");
    rig.scan_root("b");
}

/// What a finished prune of the previous root a leaves: out of the boot order (bad, not
/// primary), its subvolume gone, the slot empty, the release committed in b with no
/// previous slot and nothing pending, and one `snapshot_pruned` record naming it.
fn assert_a_pruned(env: &Env, dev: &process::Device) {
    let events = dev.audit_events();
    assert!(
        !events.iter().any(|e| e == "prune_failed"),
        "{events:?}\n{}",
        dev.log()
    );
    let audit = audit_records(dev);
    let pruned: Vec<_> = audit
        .iter()
        .filter(|r| r["event"] == "snapshot_pruned")
        .collect();
    assert_eq!(pruned.len(), 1, "{events:?}");
    let pruned = pruned[0];
    assert_eq!(pruned["extra"]["slot"], "a", "{pruned}");
    assert!(
        pruned["extra"]["snapshot"]
            .as_str()
            .is_some_and(|p| p.ends_with("/slots/a")),
        "{pruned}"
    );
    assert!(
        !env.running().exists(),
        "the previous root's subvolume is gone"
    );
    assert_eq!(
        env.version_in(&env.snapshot(), "libfoo").as_deref(),
        Some("1.0-2")
    );
    assert_eq!(dev.slot_status("a").state, SlotState::Empty);
    let boot = dev.bootloader().slots().unwrap();
    let a = boot.iter().find(|i| i.slot.as_str() == "a").unwrap();
    let b = boot.iter().find(|i| i.slot.as_str() == "b").unwrap();
    assert!(a.bad && !a.primary, "a out of the boot order: {boot:?}");
    assert!(b.primary && b.good, "{boot:?}");
    assert_eq!(dev.power_cycle().as_str(), "b");
    let doc = dev.state().unwrap().unwrap();
    match &doc.lifecycle {
        patchd::engine::state::Lifecycle::Committed { slot, previous, .. } => {
            assert_eq!((slot.as_str(), previous), ("b", &None), "{doc:?}");
        }
        other => panic!("not committed: {other:?}"),
    }
    assert!(doc.pending.is_none(), "{doc:?}");
}

/// `[source.apt] keep = 1` through `patchd run`: the patch set stages into b and the
/// device switches; after the reboot into b the health checks pass and the release is
/// committed with the old root a kept through probation; when probation ends, a is
/// taken out of the boot order (marked bad) and then its snapshot deleted
/// (`snapshot_pruned` naming it), the slot shows empty, and `patchctl rollback` says
/// there is no previous root to go back to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_1_deletes_the_previous_root_after_probation_out_of_the_boot_order_first() {
    let t = "keep_1_deletes_the_previous_root_after_probation_out_of_the_boot_order_first";
    let Some(env) = setup(t, &[]) else {
        return;
    };
    let more = "keep = 1\n\n[health]\nprobation = \"4s\"\n";
    let Some(rig) = AptDevice::new(&env, more).await else {
        return;
    };
    let dev = &rig.dev;
    staged_and_switched_to_b(&rig).await;
    let mut d = dev.spawn(&rig.bus.address, &[]);
    let e = process::wait_until(
        &mut d,
        dev,
        std::time::Duration::from_secs(60),
        "committed",
        |dev| dev.audit_events().iter().any(|e| e == "committed"),
    )
    .await;
    assert!(matches!(e, process::Ended::Reached), "{}", dev.log());
    assert!(
        env.running().join("etc").is_dir()
            && !dev.audit_events().iter().any(|e| e == "snapshot_pruned"),
        "the previous root is kept through probation"
    );
    // The engine looks at probation's end on its minute tick.
    let e = process::wait_until(
        &mut d,
        dev,
        std::time::Duration::from_secs(180),
        "snapshot_pruned",
        |dev| {
            dev.audit_events()
                .iter()
                .any(|e| e == "snapshot_pruned" || e == "prune_failed")
        },
    )
    .await;
    assert!(matches!(e, process::Ended::Reached), "{}", dev.log());
    let (code, out, err) = rig.patchctl(&["rollback"]).await;
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("no previous root to go back to") && err.contains("keep = 1"),
        "{out}{err}"
    );
    let (_, status, _) = rig.patchctl(&["status"]).await;
    let st = d.stop(std::time::Duration::from_secs(30));
    assert!(st.is_some_and(|s| s.success()), "{st:?}\n{}", dev.log());

    let events = dev.audit_events();
    let at = |name: &str| events.iter().position(|e| e == name);
    assert!(
        at("committed") < at("probation_over") && at("probation_over") < at("snapshot_pruned"),
        "{events:?}"
    );
    assert_a_pruned(&env, dev);
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["a", "empty"])),
        "slot a shown empty:\n{status}"
    );
}

/// A prune cut off by a crash: the state file says what `patchd run` writes before it
/// touches the boot order (the prune of a pending, no previous slot any more) while a
/// is still there and bootable; the next start takes a out of the boot order and
/// deletes it. Before that, with probation still running, a is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_1_a_prune_cut_off_by_a_crash_is_finished_at_the_next_start() {
    let t = "keep_1_a_prune_cut_off_by_a_crash_is_finished_at_the_next_start";
    let Some(env) = setup(t, &[]) else {
        return;
    };
    let more = "keep = 1\n\n[health]\nprobation = \"1h\"\n";
    let Some(rig) = AptDevice::new(&env, more).await else {
        return;
    };
    let dev = &rig.dev;
    staged_and_switched_to_b(&rig).await;
    let mut d = dev.spawn(&rig.bus.address, &[]);
    let e = process::wait_until(
        &mut d,
        dev,
        std::time::Duration::from_secs(60),
        "committed",
        |dev| dev.audit_events().iter().any(|e| e == "committed"),
    )
    .await;
    assert!(matches!(e, process::Ended::Reached), "{}", dev.log());
    let st = d.stop(std::time::Duration::from_secs(30));
    assert!(st.is_some_and(|s| s.success()), "{st:?}\n{}", dev.log());
    assert!(env.running().join("etc").is_dir(), "kept during probation");
    assert!(!dev.audit_events().iter().any(|e| e == "snapshot_pruned"));
    let a_before = dev.bootloader().slots().unwrap();
    assert!(
        a_before.iter().any(|i| i.slot.as_str() == "a" && !i.bad),
        "{a_before:?}"
    );
    let file = patchd::engine::statefile::StateFile::new(&dev.paths.state_dir());
    let mut doc = dev.state().unwrap().unwrap();
    doc.lifecycle = doc.lifecycle.previous_gone().unwrap();
    doc.pending = Some(patchd::engine::statefile::Pending::Prune { slot: name("a") });
    file.save(&doc).unwrap();
    let mut d = dev.spawn(&rig.bus.address, &[]);
    let e = process::wait_until(
        &mut d,
        dev,
        std::time::Duration::from_secs(60),
        "snapshot_pruned",
        |dev| {
            dev.audit_events()
                .iter()
                .any(|e| e == "snapshot_pruned" || e == "prune_failed")
        },
    )
    .await;
    assert!(matches!(e, process::Ended::Reached), "{}", dev.log());
    let st = d.stop(std::time::Duration::from_secs(30));
    assert!(st.is_some_and(|s| s.success()), "{st:?}\n{}", dev.log());
    assert_a_pruned(&env, dev);
}
