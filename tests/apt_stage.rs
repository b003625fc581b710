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
    let Some(bus) = process::SessionBus::start() else {
        return;
    };
    let systemd = process::FakeSystemd::default();
    let _sd = systemd.serve(&bus.address).await;
    let top = tempfile::tempdir().unwrap();
    let dev = process::Device::new(
        top.path(),
        &process::DeviceSpec {
            slots: process::SlotsKind::Btrfs("/slots".into()),
            extra: "[source]\nkind = \"apt\"\n\n[source.apt]\nroot = \"/slots/a\"\n\
                    security_origins = [\"label=TestOS-Security\"]\nchangelogs = \"none\"\n"
                .into(),
            ..Default::default()
        },
    );
    let mnt = dev.paths.resolve("/slots");
    std::fs::create_dir_all(&mnt).unwrap();
    let _slots = Bind::new(&env.slots_dir, &mnt);
    let mut d = dev.spawn(&bus.address, &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !env.snapshot().join("in-postinst").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "never staged\n{}",
            dev.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    std::fs::write(env.running().join("etc/hostname"), "edited-while-staging\n").unwrap();
    let e = process::wait_until(
        &mut d,
        &dev,
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
