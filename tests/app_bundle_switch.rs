//! The app-bundle installer against real processes: a supervised test process is
//! restarted from the copy `current` names after a switch and after a rollback, and a
//! kill -9 at any instant of a switch leaves `current` naming one whole copy.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use patchd::component::{AppBundles, Installed, Installer, Job, Restarter};
use patchd::manifest::{Component, ComponentMethod, Rollback};

const CHILD_ENV: &str = "PATCHD_APP_SWITCH_KILL_CHILD";

/// The app's program: says which copy it runs from, then stays up (as a service would).
const RUN: &str = r#"#!/bin/sh
here=$(cd "$(dirname "$0")" && pwd -P)
echo "$(cat "$here/VERSION") $$ $here" >> "$APP_LOG"
echo $$ > "$APP_PID"
exec sleep 600
"#;

/// A tar payload with `app/VERSION` and the executable `app/run`.
fn bundle(dir: &Path, version: &str) -> (Component, PathBuf) {
    let file = dir.join(format!("web-{version}.tar"));
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, body: &[u8], mode: u32, kind: tar::EntryType| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(body.len() as u64);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, path, body).unwrap();
    };
    add("app/", b"", 0o755, tar::EntryType::Directory);
    let v = format!("web {version}\n");
    add("app/VERSION", v.as_bytes(), 0o644, tar::EntryType::Regular);
    add("app/run", RUN.as_bytes(), 0o755, tar::EntryType::Regular);
    let bytes = b.into_inner().unwrap();
    fs::write(&file, &bytes).unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let c = Component {
        name: "web".into(),
        version: version.into(),
        method: ComponentMethod::AppBundle,
        target: format!("components/web-{version}"),
        size: bytes.len() as u64,
        sha256: sha,
        needs_reboot: false,
        order: 1,
        rollback: Rollback::Ab,
        units: vec!["web.service".into()],
        kind: None,
        severity: None,
        cves: vec![],
    };
    (c, file)
}

fn job<'a>(c: &'a Component, file: &'a Path) -> Job<'a> {
    Job {
        component: c,
        file,
        release: "2.0.0",
        slot: "b",
    }
}

fn quiet() -> Restarter {
    Restarter {
        argv: vec!["/bin/true".into()],
    }
}

/// `current` of app `web` under `base`: the copy it names and the version in that copy.
fn current(base: &Path) -> (String, String) {
    let link = base.join("web/current");
    let copy = fs::read_link(&link)
        .unwrap_or_else(|e| panic!("current is missing or no link: {e}"))
        .display()
        .to_string();
    let v = fs::read_to_string(link.join("app/VERSION"))
        .unwrap_or_else(|e| panic!("current ({copy}) names no whole copy: {e}"));
    (copy, v.trim().to_string())
}

/// A supervisor as a service manager is one: runs the app from `current` and starts it
/// again whenever it exits.
struct Supervisor {
    child: std::process::Child,
    log: PathBuf,
    pid: PathBuf,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(p) = fs::read_to_string(&self.pid) {
            let _ = Command::new("kill").arg(p.trim()).status();
        }
    }
}

impl Supervisor {
    fn start(tmp: &Path, base: &Path) -> Supervisor {
        let log = tmp.join("app.log");
        let pid = tmp.join("app.pid");
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "while :; do \"{}/web/current/app/run\"; sleep 0.05; done",
                base.display()
            ))
            .env("APP_LOG", &log)
            .env("APP_PID", &pid)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Supervisor { child, log, pid }
    }

    /// Wait for the `n`th start of the app and return its line (version, pid, copy).
    fn start_no(&self, n: usize) -> Vec<String> {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let lines: Vec<String> = fs::read_to_string(&self.log)
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect();
            if let Some(l) = lines.get(n - 1) {
                return l.split_whitespace().map(String::from).collect();
            }
            assert!(
                Instant::now() < until,
                "app start {n} never came: {lines:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn alive(pid: &str) -> bool {
    Path::new("/proc").join(pid).exists()
        && fs::read_to_string(Path::new("/proc").join(pid).join("stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

#[test]
fn a_supervised_app_runs_the_new_copy_after_the_switch_and_the_old_after_rollback() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("apps");
    let pidfile = tmp.path().join("app.pid");
    // The restart command stops the running process; the supervisor starts it again
    // from whatever `current` names then (as `systemctl restart` does for a unit).
    let restarter = Restarter {
        argv: vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("kill \"$(cat {})\"", pidfile.display()),
            "restart".into(),
        ],
    };
    let apps = AppBundles::at(base.clone(), restarter);
    let (c1, f1) = bundle(tmp.path(), "1.0");
    let (c2, f2) = bundle(tmp.path(), "1.1");
    apps.stage(&job(&c1, &f1)).unwrap();
    // The first install has nothing running to restart yet.
    AppBundles::at(base.clone(), quiet())
        .switch(&job(&c1, &f1))
        .unwrap();
    let sup = Supervisor::start(tmp.path(), &base);
    // Each start logs: web VERSION PID COPY-DIR.
    let first = sup.start_no(1);
    assert_eq!(first[1], "1.0", "{first:?}");
    assert!(first[3].ends_with("/web/a/app"), "{first:?}");
    let before: Installed = apps.installed("web").unwrap().unwrap();

    apps.stage(&job(&c2, &f2)).unwrap();
    // Staging the other copy does not touch the running process.
    assert!(alive(&first[2]), "staging restarted the app");
    apps.switch(&job(&c2, &f2)).unwrap();
    let second = sup.start_no(2);
    assert_eq!(second[1], "1.1", "{second:?}");
    assert!(second[3].ends_with("/web/b/app"), "{second:?}");
    assert!(alive(&second[2]) && !alive(&first[2]));
    assert_eq!(current(&base), ("b".into(), "web 1.1".into()));

    apps.roll_back(&c2, Some(&before)).unwrap();
    let third = sup.start_no(3);
    assert_eq!(third[1], "1.0", "{third:?}");
    assert!(third[3].ends_with("/web/a/app"), "{third:?}");
    assert!(alive(&third[2]) && !alive(&second[2]));
    assert_eq!(current(&base), ("a".into(), "web 1.0".into()));
}

/// The child of `kill_9_during_app_switches_leaves_current_on_one_whole_copy`: switches
/// between the two staged copies until killed.
#[test]
fn kill_child_switches_apps_until_killed() {
    let Ok(base) = std::env::var(CHILD_ENV) else {
        return;
    };
    let base = PathBuf::from(base);
    let dir = base.parent().unwrap().to_path_buf();
    let apps = AppBundles::at(base, quiet());
    let (c1, f1) = bundle(&dir.join("src"), "1.0");
    let (c2, f2) = bundle(&dir.join("src"), "1.1");
    loop {
        apps.switch(&job(&c2, &f2)).unwrap();
        apps.switch(&job(&c1, &f1)).unwrap();
    }
}

#[test]
fn kill_9_during_app_switches_leaves_current_on_one_whole_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("apps");
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let apps = AppBundles::at(base.clone(), quiet());
    let (c1, f1) = bundle(&src, "1.0");
    let (c2, f2) = bundle(&src, "1.1");
    apps.stage(&job(&c1, &f1)).unwrap();
    apps.switch(&job(&c1, &f1)).unwrap();
    apps.stage(&job(&c2, &f2)).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..12u64 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "kill_child_switches_apps_until_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &base)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(60 + 37 * i));
        child.kill().unwrap();
        let _ = child.wait();
        // At every instant `current` names one whole copy, recorded as what it holds.
        let (copy, version) = current(&base);
        let inst = apps
            .installed("web")
            .unwrap()
            .expect("the app stays installed");
        let want = match copy.as_str() {
            "a" => "web 1.0",
            "b" => "web 1.1",
            other => panic!("round {i}: current names {other:?}"),
        };
        assert_eq!(version, want, "round {i}");
        assert_eq!(format!("web {}", inst.version), want, "round {i}");
        seen.insert(copy);
        // Finishing the interrupted step (what reconciliation does) works from here.
        apps.switch(&job(&c2, &f2)).unwrap();
        apps.switch(&job(&c1, &f1)).unwrap();
        assert_eq!(current(&base).0, "a", "round {i}");
    }
    assert!(!seen.is_empty());
}
