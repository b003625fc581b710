//! Release components (docs/components.md) with the real install methods on a
//! temporary root: app bundles (tar trees behind an atomically replaced symlink, units
//! restarted through a configured command), a handler executable, install order, one
//! verdict with reverse-order rollback, skipping unchanged components, the handler's
//! ownership rules and its payload on stdin or as a file descriptor, and start-up reconciliation after a power cut at every step.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use patchd::component::{
    apply, commit, reconcile, AppBundles, ApplyError, Handler, HandlerSettings, Hooks, Installers,
    Journal, Reconciled, Restarter, StepEvent,
};
use patchd::manifest::{Component, ComponentMethod, Rollback};
use patchd::paths::Paths;

struct Device {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    paths: Paths,
    restarts: PathBuf,
    handler_log: PathBuf,
    installers: Installers,
}

const HANDLER: &str = r#"#!/bin/sh
echo "progress 10 starting"
echo "$PATCHD_ACTION $PATCHD_COMPONENT $PATCHD_VERSION $PATCHD_SLOT $(sha256sum | cut -c1-64)" >> "$(dirname "$0")/handler.log"
echo "status flashed"
[ -e "$(dirname "$0")/fail-$PATCHD_VERSION" ] && { echo "flash verify failed" >&2; exit 3; }
echo "progress 100 done"
exit 0
"#;

fn device() -> Device {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let paths = Paths::new(&root);
    let tools = tmp.path().join("tools");
    fs::create_dir(&tools).unwrap();
    fs::set_permissions(&tools, fs::Permissions::from_mode(0o755)).unwrap();
    let restarts = tmp.path().join("restarts.log");
    let handler = tools.join("handler");
    fs::write(&handler, HANDLER).unwrap();
    fs::set_permissions(&handler, fs::Permissions::from_mode(0o755)).unwrap();
    let restarter = Restarter {
        argv: vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("echo \"$*\" >> {}", restarts.display()),
            "restart".into(),
        ],
    };
    let installers = Installers::new()
        .with(
            ComponentMethod::AppBundle,
            Arc::new(AppBundles::new(&paths, restarter)),
        )
        .with(
            ComponentMethod::Handler,
            Arc::new(Handler::new(
                &paths,
                HandlerSettings {
                    path: handler,
                    timeout: Duration::from_secs(10),
                    trusted_uid: nix::unistd::geteuid().as_raw(),
                    input: Default::default(),
                },
            )),
        );
    Device {
        handler_log: tools.join("handler.log"),
        _tmp: tmp,
        root,
        paths,
        restarts,
        installers,
    }
}

/// A tar payload holding `version` in `app/VERSION`; returns the component and its file.
fn app(d: &Device, name: &str, version: &str, order: u32) -> (Component, PathBuf) {
    let file = d
        .root
        .parent()
        .unwrap()
        .join(format!("{name}-{version}.tar"));
    let mut b = tar::Builder::new(Vec::new());
    let body = format!("{name} {version}\n");
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_size(0);
    dir.set_mode(0o755);
    dir.set_uid(0);
    dir.set_gid(0);
    dir.set_mtime(0);
    dir.set_cksum();
    b.append_data(&mut dir, "app/", &[][..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, "app/VERSION", body.as_bytes())
        .unwrap();
    fs::write(&file, b.into_inner().unwrap()).unwrap();
    (
        component(name, version, order, ComponentMethod::AppBundle, &file),
        file,
    )
}

fn blob(d: &Device, name: &str, version: &str, order: u32) -> (Component, PathBuf) {
    let file = d
        .root
        .parent()
        .unwrap()
        .join(format!("{name}-{version}.bin"));
    fs::write(&file, format!("firmware {name} {version}")).unwrap();
    let mut c = component(name, version, order, ComponentMethod::Handler, &file);
    c.rollback = Rollback::ReinstallPrevious;
    c.units.clear();
    (c, file)
}

fn component(
    name: &str,
    version: &str,
    order: u32,
    method: ComponentMethod,
    file: &Path,
) -> Component {
    let bytes = fs::read(file).unwrap();
    Component {
        name: name.into(),
        version: version.into(),
        method,
        target: format!("components/{name}-{version}"),
        size: bytes.len() as u64,
        sha256: sha2_of(&bytes),
        needs_reboot: false,
        order,
        rollback: Rollback::Ab,
        units: vec![format!("{name}.service")],
        kind: None,
        severity: None,
        cves: vec![],
    }
}

fn sha2_of(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Run `apply` with payload files from `files`, health failing for `unhealthy`.
fn run(
    d: &Device,
    release: &str,
    comps: &[(Component, PathBuf)],
    unhealthy: Option<&str>,
) -> (
    Result<patchd::component::Applied, ApplyError>,
    Vec<StepEvent>,
) {
    let mut events = Vec::new();
    let list: Vec<Component> = comps.iter().map(|(c, _)| c.clone()).collect();
    let mut file = |c: &Component| {
        Ok(comps
            .iter()
            .find(|(x, _)| x.name == c.name)
            .unwrap()
            .1
            .clone())
    };
    let mut health = |c: &Component| match unhealthy {
        Some(n) if n == c.name => Err(format!("{n}.service is failed")),
        _ => Ok(()),
    };
    let mut record = |e: &StepEvent| events.push(e.clone());
    let mut hooks = Hooks {
        file: &mut file,
        health: &mut health,
        record: &mut record,
        #[cfg(feature = "failpoints")]
        failpoints: None,
    };
    let r = apply(
        &Journal::path(&d.paths),
        release,
        "b",
        &list,
        &d.installers,
        &mut hooks,
    );
    (r, events)
}

fn current(d: &Device, name: &str) -> String {
    let link = d
        .paths
        .resolve("/var/lib/patchd/apps")
        .join(name)
        .join("current");
    let t = fs::read_link(&link).unwrap();
    let v = fs::read_to_string(link.join("app/VERSION")).unwrap();
    format!("{} {}", t.display(), v.trim())
}

fn installed(d: &Device, c: &Component) -> Option<String> {
    let inst = d.installers.for_method(c).unwrap();
    inst.installed(&c.name).unwrap().map(|i| i.version)
}

fn names(ev: &[StepEvent]) -> Vec<String> {
    ev.iter()
        .map(|e| format!("{} {}", e.event, e.component))
        .collect()
}

#[test]
fn release_installs_in_order_and_a_new_one_switches_to_the_other_copy() {
    let d = device();
    let v1 = vec![
        app(&d, "web", "1.2", 1),
        app(&d, "api", "4.0", 2),
        blob(&d, "mcu", "7", 3),
    ];
    let (r, ev) = run(&d, "1.0.0", &v1, None);
    let applied = r.unwrap();
    assert_eq!(applied.installed, ["web", "api", "mcu"]);
    commit(&Journal::path(&d.paths), false, &mut |_| {}).unwrap();
    assert_eq!(current(&d, "web"), "a web 1.2");
    assert_eq!(current(&d, "api"), "a api 4.0");
    assert_eq!(
        names(&ev),
        [
            "component_staged web",
            "component_staged api",
            "component_staged mcu",
            "component_switched web",
            "component_switched api",
            "component_switched mcu",
        ]
    );
    assert_eq!(
        fs::read_to_string(&d.restarts).unwrap(),
        "web.service\napi.service\n"
    );
    let log = fs::read_to_string(&d.handler_log).unwrap();
    let want = format!("install mcu 7 b {}\n", v1[2].0.sha256);
    assert_eq!(
        log, want,
        "the handler got the verified payload on stdin and its env"
    );

    // The next release changes web only: api and mcu are skipped, web goes to copy b.
    let v2 = vec![
        app(&d, "web", "1.3", 1),
        app(&d, "api", "4.0", 2),
        blob(&d, "mcu", "7", 3),
    ];
    let (r, ev) = run(&d, "1.1.0", &v2, None);
    let applied = r.unwrap();
    assert_eq!(applied.installed, ["web"]);
    assert_eq!(applied.skipped, ["api", "mcu"]);
    assert_eq!(current(&d, "web"), "b web 1.3");
    assert!(names(&ev).contains(&"component_skipped api".to_string()));
    let plan = patchd::component::plan(
        &v2.iter().map(|c| c.0.clone()).collect::<Vec<_>>(),
        &d.installers,
    )
    .unwrap();
    assert_eq!(plan[0].to_string(), "app: web 1.3, unchanged");
    commit(&Journal::path(&d.paths), false, &mut |_| {}).unwrap();
    let (r, ev) = run(&d, "1.1.1", &v2, None);
    assert_eq!(r.unwrap().skipped, ["web", "api", "mcu"]);
    assert_eq!(ev.len(), 3, "one skipped record each: {ev:?}");
    assert!(
        !Journal::path(&d.paths).exists(),
        "nothing to judge: no journal"
    );
}

#[test]
fn failing_health_after_an_app_switch_rolls_back_in_reverse_order() {
    let d = device();
    let v1 = vec![
        app(&d, "web", "1.2", 1),
        app(&d, "api", "4.0", 2),
        blob(&d, "mcu", "7", 0),
    ];
    run(&d, "1.0.0", &v1, None).0.unwrap();
    commit(&Journal::path(&d.paths), false, &mut |_| {}).unwrap();
    let v2 = vec![
        app(&d, "web", "1.3", 1),
        app(&d, "api", "4.1", 2),
        blob(&d, "mcu", "8", 0),
    ];
    let plan = patchd::component::plan(
        &v2.iter().map(|c| c.0.clone()).collect::<Vec<_>>(),
        &d.installers,
    )
    .unwrap();
    let lines: Vec<String> = plan.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        lines,
        [
            "handler: mcu 7 → 8, no reboot, rollback by reinstalling the previous version",
            "app: web 1.2 → 1.3, no reboot, rollback by switching back",
            "app: api 4.0 → 4.1, no reboot, rollback by switching back",
        ]
    );
    let (r, ev) = run(&d, "2.0.0", &v2, Some("api"));
    match r {
        Err(ApplyError::Failed {
            component,
            rolled_back,
            left,
            ..
        }) => {
            assert_eq!(component, "api");
            assert_eq!(rolled_back, ["api", "web", "mcu"], "reverse install order");
            assert!(left.is_empty());
        }
        other => panic!("expected a failed release, got {other:?}"),
    }
    let tail: Vec<String> = names(&ev).into_iter().skip(6).collect();
    assert_eq!(
        tail,
        [
            "component_health_failed api",
            "component_failed api",
            "component_rolled_back api",
            "component_rolled_back web",
            "component_rolled_back mcu",
        ]
    );
    assert_eq!(current(&d, "web"), "a web 1.2");
    assert_eq!(current(&d, "api"), "a api 4.0");
    assert_eq!(installed(&d, &v2[2].0).as_deref(), Some("7"));
    let log = fs::read_to_string(&d.handler_log).unwrap();
    assert!(
        log.ends_with(&format!("rollback mcu 7  {}\n", v1[2].0.sha256)),
        "{log}"
    );
    assert!(
        !Journal::path(&d.paths).exists(),
        "a finished verdict leaves no journal"
    );
}

#[test]
fn failing_handler_stops_the_release_before_later_components() {
    let d = device();
    let comps = vec![
        app(&d, "web", "1.2", 1),
        blob(&d, "mcu", "9", 2),
        app(&d, "api", "4.0", 3),
    ];
    fs::write(d.handler_log.with_file_name("fail-9"), "").unwrap();
    let (r, ev) = run(&d, "1.0.0", &comps, None);
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("flash verify failed") && e.contains("exit status: 3"),
        "{e}"
    );
    assert!(e.contains("rolled back: web"), "{e}");
    assert!(!names(&ev).contains(&"component_switched api".to_string()));
    // web was new: rolling it back takes its link away.
    assert_eq!(installed(&d, &comps[0].0), None);
    assert_eq!(installed(&d, &comps[2].0), None);
}

#[test]
fn group_writable_handler_is_refused_with_a_clear_error() {
    let d = device();
    let handler = d.handler_log.with_file_name("handler");
    fs::set_permissions(&handler, fs::Permissions::from_mode(0o775)).unwrap();
    let comps = vec![blob(&d, "mcu", "7", 0)];
    let e = run(&d, "1.0.0", &comps, None).0.unwrap_err().to_string();
    assert!(
        e.contains("handler") && e.contains("refused") && e.contains("group- or world-writable"),
        "{e}"
    );
    assert!(!d.handler_log.exists(), "the handler must not have run");
}

/// A handler that takes the payload from the descriptor patchd passes: it hashes the
/// bytes it reads there, checks them against `PATCHD_SHA256`, tries to write to the
/// descriptor, and counts what its stdin holds.
const FD_HANDLER: &str = r#"#!/bin/sh
fd="$PATCHD_PAYLOAD_FD"
[ -n "$fd" ] || { echo "no PATCHD_PAYLOAD_FD" >&2; exit 4; }
got=$(sha256sum <&"$fd" | cut -c1-64)
[ "$got" = "$PATCHD_SHA256" ] || { echo "read $got, expected $PATCHD_SHA256" >&2; exit 5; }
if (echo x >&"$fd") 2>/dev/null; then writable=yes; else writable=no; fi
echo "progress 100 read from fd $fd"
echo "$PATCHD_ACTION $PATCHD_VERSION fd=$fd sha=$got writable=$writable stdin=$(wc -c | tr -d ' ')" >> "$(dirname "$0")/fd-handler.log"
"#;

/// `FD_HANDLER` installed as the device's handler with `input`.
fn fd_handler(d: &Device, input: patchd::component::HandlerInput) -> (Handler, PathBuf) {
    let tools = d.handler_log.parent().unwrap().to_path_buf();
    let path = tools.join("fd-handler");
    fs::write(&path, FD_HANDLER).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    let h = Handler::new(
        &d.paths,
        HandlerSettings {
            path,
            timeout: Duration::from_secs(10),
            // The test's own uid: root, as on a device, where the fd test runs.
            trusted_uid: nix::unistd::geteuid().as_raw(),
            input,
        },
    );
    (h, tools)
}

#[test]
fn handler_reads_the_verified_payload_from_the_descriptor_it_is_given() {
    use patchd::component::{HandlerInput, Installer, Job};
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: the handler must be root-owned, which needs root");
        return;
    }
    let d = device();
    let (h, tools) = fd_handler(&d, HandlerInput::Fd);
    let install = |c: &Component, f: &Path| {
        let job = Job {
            component: c,
            file: f,
            release: "2.0.0",
            slot: "b",
        };
        h.stage(&job).and_then(|()| h.switch(&job))
    };
    let (v7, f7) = blob(&d, "mcu", "7", 0);
    let (v8, f8) = blob(&d, "mcu", "8", 0);
    install(&v7, &f7).unwrap();
    install(&v8, &f8).unwrap();
    let before = h.installed("mcu").unwrap();
    assert_eq!(before.as_ref().map(|i| i.version.as_str()), Some("8"));
    // reinstall_previous: 7's kept payload through the same descriptor protocol.
    let seven = patchd::component::Installed {
        version: "7".into(),
        sha256: v7.sha256.clone(),
        copy: None,
        origin: "1.0.0".into(),
    };
    h.roll_back(&v8, Some(&seven)).unwrap();

    let log = fs::read_to_string(tools.join("fd-handler.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    for (line, (action, c)) in
        lines
            .iter()
            .zip([("install", &v7), ("install", &v8), ("rollback", &v7)])
    {
        // The sha the test computed from the file, not the one the handler was told.
        let want_sha = sha2_of(
            &fs::read(
                tools
                    .parent()
                    .unwrap()
                    .join(format!("mcu-{}.bin", c.version)),
            )
            .unwrap(),
        );
        assert!(
            line.starts_with(&format!("{action} {} fd=", c.version)),
            "{line}"
        );
        assert!(line.contains(&format!("sha={want_sha}")), "{line}");
        assert!(
            line.contains("writable=no"),
            "descriptor not read-only: {line}"
        );
        assert!(line.ends_with("stdin=0"), "stdin must be empty: {line}");
        let fd: i32 = line
            .split("fd=")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no fd number in {line}"));
        assert!(fd >= 3, "the payload took a standard stream: {line}");
    }
}

#[test]
fn a_handler_without_the_descriptor_fails_the_step_with_its_message() {
    // The same handler configured for stdin gets no PATCHD_PAYLOAD_FD: it says so and
    // exits 4, which fails the step with its stderr (the protocol choice matters).
    use patchd::component::{HandlerInput, Installer, Job};
    let d = device();
    let (h, _) = fd_handler(&d, HandlerInput::Stdin);
    let (c, f) = blob(&d, "mcu", "7", 0);
    let job = Job {
        component: &c,
        file: &f,
        release: "2.0.0",
        slot: "b",
    };
    h.stage(&job).unwrap();
    let e = h.switch(&job).unwrap_err().to_string();
    assert!(
        e.contains("no PATCHD_PAYLOAD_FD") && e.contains("exit status: 4"),
        "{e}"
    );
    assert_eq!(h.installed("mcu").unwrap(), None);
}

/// A handler that hangs (with a child of its own, as a flashing tool may have): the
/// step fails after the configured timeout, saying so, the whole process group is
/// killed, and nothing is recorded installed.
#[test]
fn a_handler_past_its_timeout_is_killed_with_its_children_and_the_step_fails() {
    use patchd::component::{HandlerInput, Installer, Job};
    let d = device();
    let tools = d.handler_log.parent().unwrap().to_path_buf();
    let path = tools.join("slow-handler");
    let pids = tools.join("slow.pids");
    fs::write(
        &path,
        format!(
            "#!/bin/sh\nsleep 600 &\necho \"$$ $!\" > {}\necho \"progress 5 erasing\"\nwait\n",
            pids.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    let h = Handler::new(
        &d.paths,
        HandlerSettings {
            path,
            timeout: Duration::from_secs(1),
            trusted_uid: nix::unistd::geteuid().as_raw(),
            input: HandlerInput::Stdin,
        },
    );
    let (c, f) = blob(&d, "mcu", "7", 0);
    let job = Job {
        component: &c,
        file: &f,
        release: "2.0.0",
        slot: "b",
    };
    h.stage(&job).unwrap();
    let started = std::time::Instant::now();
    let e = h.switch(&job).unwrap_err().to_string();
    assert!(e.contains("did not finish within 1s and was killed"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "waited far past the timeout"
    );
    let both = fs::read_to_string(&pids).unwrap();
    for pid in both.split_whitespace() {
        let gone = (0..100).any(|_| {
            let alive = fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false);
            if alive {
                std::thread::sleep(Duration::from_millis(20));
            }
            !alive
        });
        assert!(gone, "process {pid} of the handler outlived its timeout");
    }
    assert_eq!(h.installed("mcu").unwrap(), None);
}

#[test]
fn handler_progress_lines() {
    use patchd::component::{parse_progress, Progress};
    assert_eq!(
        parse_progress("progress 42 writing"),
        Some(Progress::Percent(42, "writing".into()))
    );
    assert_eq!(
        parse_progress("progress 100"),
        Some(Progress::Percent(100, String::new()))
    );
    assert_eq!(parse_progress("progress 101"), None);
    assert_eq!(
        parse_progress("status erasing"),
        Some(Progress::Status("erasing".into()))
    );
    assert_eq!(parse_progress("hello"), None);
}

#[test]
fn interrupted_release_is_rolled_back_at_start_up_from_the_symlinks() {
    let d = device();
    let v1 = vec![app(&d, "web", "1.2", 1), app(&d, "api", "4.0", 2)];
    run(&d, "1.0.0", &v1, None).0.unwrap();
    commit(&Journal::path(&d.paths), false, &mut |_| {}).unwrap();
    let v2 = vec![app(&d, "web", "1.3", 1), app(&d, "api", "4.1", 2)];
    // Health "hangs" at api: simulate the cut by leaving the journal as apply left it
    // right after api's switch (done=false).
    let mut j = {
        let (r, _) = run(&d, "2.0.0", &v2, None);
        r.unwrap();
        Journal::load(&Journal::path(&d.paths)).unwrap().unwrap()
    };
    j.done = false;
    j.save(&Journal::path(&d.paths)).unwrap();
    let mut ev = Vec::new();
    let r = reconcile(&Journal::path(&d.paths), &d.installers, &mut |e| {
        ev.push(e.clone())
    })
    .unwrap();
    assert_eq!(
        r,
        Reconciled::RolledBack {
            release: "2.0.0".into(),
            rolled_back: vec!["api".into(), "web".into()],
            left: vec![]
        }
    );
    assert_eq!(
        names(&ev),
        ["component_reconciled api", "component_reconciled web"]
    );
    assert_eq!(current(&d, "web"), "a web 1.2");
    assert_eq!(current(&d, "api"), "a api 4.0");
}

#[cfg(feature = "failpoints")]
#[test]
fn power_cut_at_every_component_step_is_reconciled() {
    use patchd::failpoint::FailPoints;
    for (point, nth) in [
        ("component_staged", 0),
        ("component_staged", 1),
        ("component_switching", 0),
        ("component_switched", 0),
        ("component_switching", 1),
        ("component_switched", 1),
        ("component_switching", 2),
        ("component_switched", 2),
    ] {
        let d = device();
        let v1 = vec![
            app(&d, "web", "1.2", 1),
            app(&d, "api", "4.0", 2),
            blob(&d, "mcu", "7", 3),
        ];
        run(&d, "1.0.0", &v1, None).0.unwrap();
        commit(&Journal::path(&d.paths), false, &mut |_| {}).unwrap();
        let v2 = vec![
            app(&d, "web", "1.3", 1),
            app(&d, "api", "4.1", 2),
            blob(&d, "mcu", "8", 3),
        ];
        let runs_before = fs::read_to_string(&d.handler_log).unwrap().lines().count();
        let fp = FailPoints::default();
        fp.arm(point, nth);
        let list: Vec<Component> = v2.iter().map(|(c, _)| c.clone()).collect();
        let mut file =
            |c: &Component| Ok(v2.iter().find(|(x, _)| x.name == c.name).unwrap().1.clone());
        let mut health = |_: &Component| Ok(());
        let mut record = |_: &StepEvent| {};
        let mut hooks = Hooks {
            file: &mut file,
            health: &mut health,
            record: &mut record,
            failpoints: Some(&fp),
        };
        let r = apply(
            &Journal::path(&d.paths),
            "2.0.0",
            "b",
            &list,
            &d.installers,
            &mut hooks,
        );
        assert!(
            matches!(r, Err(ApplyError::PowerCut { .. })),
            "{point}#{nth}: {r:?}"
        );
        let r = reconcile(&Journal::path(&d.paths), &d.installers, &mut |_| {}).unwrap();
        assert!(
            matches!(r, Reconciled::RolledBack { .. }),
            "{point}#{nth}: {r:?}"
        );
        assert_eq!(current(&d, "web"), "a web 1.2", "{point}#{nth}");
        assert_eq!(current(&d, "api"), "a api 4.0", "{point}#{nth}");
        assert!(!Journal::path(&d.paths).exists());
        // The handler cannot be read back: once its run started it is given the
        // previous payload again; before that it is not run at all.
        assert_eq!(
            installed(&d, &v2[2].0).as_deref(),
            Some("7"),
            "{point}#{nth}"
        );
        let log = fs::read_to_string(&d.handler_log).unwrap();
        let runs: Vec<&str> = log.lines().skip(runs_before).collect();
        let want: &[&str] = match (point, nth) {
            // Cut before the run, but the journal cannot tell: reinstalled to be sure.
            ("component_switching", 2) => &["rollback mcu 7"],
            ("component_switched", 2) => &["install mcu 8", "rollback mcu 7"],
            _ => &[],
        };
        let got: Vec<String> = runs
            .iter()
            .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(got, want, "{point}#{nth}: {log}");
        // The release installs cleanly afterwards.
        run(&d, "2.0.0", &v2, None).0.unwrap();
        assert_eq!(current(&d, "web"), "b web 1.3", "{point}#{nth}");
    }
}

#[test]
fn a_component_without_rollback_is_left_and_said_so() {
    use patchd::component::SimInstaller;
    let sim = Arc::new(SimInstaller::new());
    sim.preinstall("fw", "1", &"1".repeat(64));
    sim.preinstall("app", "1", &"2".repeat(64));
    let installers = Installers::new()
        .with(ComponentMethod::AppBundle, sim.clone())
        .with(ComponentMethod::Handler, sim.clone());
    let d = device();
    let mut fw = blob(&d, "fw", "2", 1).0;
    fw.rollback = Rollback::None;
    let mut app = blob(&d, "app", "2", 2).0;
    app.method = ComponentMethod::AppBundle;
    app.rollback = Rollback::Ab;
    sim.fail("switch", "app");
    let mut events = Vec::new();
    let mut file = |_: &Component| Ok(PathBuf::from("/dev/null"));
    let mut health = |_: &Component| Ok(());
    let mut record = |e: &StepEvent| events.push(format!("{} {}", e.event, e.component));
    let mut hooks = Hooks {
        file: &mut file,
        health: &mut health,
        record: &mut record,
        #[cfg(feature = "failpoints")]
        failpoints: None,
    };
    let r = apply(
        &Journal::path(&d.paths),
        "2.0.0",
        "b",
        &[fw, app],
        &installers,
        &mut hooks,
    );
    match r {
        Err(ApplyError::Failed {
            component,
            rolled_back,
            left,
            ..
        }) => {
            assert_eq!(component, "app");
            assert!(rolled_back.is_empty(), "{rolled_back:?}");
            assert_eq!(left, ["fw"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        events,
        [
            "component_staged fw",
            "component_staged app",
            "component_switched fw",
            "component_failed app",
            "component_not_rolled_back fw",
        ]
    );
    assert_eq!(
        sim.log(),
        ["stage:fw", "stage:app", "switch:fw", "switch:app"]
    );
}
