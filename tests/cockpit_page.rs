//! The Cockpit page (packaging/cockpit/) in a real browser against the real daemon: a
//! private system bus with patchd's bus policy, the real polkitd on it, `patchd run`
//! (polkit authorization, image-file slots, a repository served over HTTP on
//! 127.0.0.1), `cockpit-ws --local-session=cockpit-bridge` pointed at the private bus,
//! and headless Chromium driven through the DevTools protocol. As root, the page shows
//! the running release, Check finds a newly published release, Install shows live
//! progress and ends staged, a hold with a reason shows in the overview and the history,
//! and the audit log verifies; as an unprivileged user (a second cockpit-ws running as
//! `nobody`) the buttons are disabled with polkit's reason, and an Install sent anyway is
//! refused with polkit's message. No console errors in either tab. Screenshots go to
//! target/cockpit/ (`PATCHD_BLESS=1` also copies them to docs/).

#[path = "cockpit_support/cdp.rs"]
mod cdp;
mod common;
mod process;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cdp::{Browser, Page};
use common::http::{FaultServer, Faults};
use patchd::publish::{AddRelease, ImageInput, Repo};
use process::support::{have, is_root, repo_root, TestBus, NOBODY};
use process::{Daemon, Device, DeviceSpec, QUIET};

const POLKITD: &str = "/usr/lib/polkit-1/polkitd";
const ACTIONS_DIR: &str = "/usr/share/polkit-1/actions";
const IMAGE_SIZE: usize = 2 << 20;

/// A child process stopped when the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        cdp::stop(&mut self.0);
    }
}

/// Removes the polkit policy file the test installed (unless it was there before).
struct InstalledPolicy(Option<PathBuf>);

impl Drop for InstalledPolicy {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn cockpit_ws() -> Option<PathBuf> {
    ["/usr/lib/cockpit/cockpit-ws", "/usr/libexec/cockpit-ws"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Why the test cannot run here, if it cannot.
fn missing() -> Option<String> {
    if !is_root() {
        return Some("needs root (polkitd, a second user for cockpit-ws)".into());
    }
    if cockpit_ws().is_none() {
        return Some("cockpit-ws not installed (apt-get install cockpit-ws)".into());
    }
    if !have("cockpit-bridge") {
        return Some("cockpit-bridge not installed (apt-get install cockpit-bridge)".into());
    }
    if cdp::chromium().is_none() {
        return Some("chromium not installed (apt-get install chromium)".into());
    }
    if !Path::new(POLKITD).exists() {
        return Some(format!("{POLKITD} missing (apt-get install polkitd)"));
    }
    if !have("dbus-daemon") || !have("setpriv") {
        return Some("dbus-daemon or setpriv missing (apt-get install dbus util-linux)".into());
    }
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// polkitd on the private bus, with patchd's actions installed where it reads them.
fn start_polkitd(bus: &TestBus) -> (Killed, InstalledPolicy) {
    let src = repo_root().join("systemd/org.patchd.patchd1.policy");
    let dst = Path::new(ACTIONS_DIR).join("org.patchd.patchd1.policy");
    let installed = if dst.exists() {
        InstalledPolicy(None)
    } else {
        std::fs::create_dir_all(ACTIONS_DIR).expect("actions dir");
        std::fs::copy(&src, &dst).expect("install policy file");
        InstalledPolicy(Some(dst))
    };
    let dir = bus.dir.path();
    let child = Command::new(POLKITD)
        .arg("--no-debug")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .stdout(std::fs::File::create(dir.join("polkitd.log")).unwrap())
        .stderr(std::fs::File::create(dir.join("polkitd.err")).unwrap())
        .spawn()
        .expect("spawn polkitd");
    let polkitd = Killed(child);
    wait_for_name(bus, "org.freedesktop.PolicyKit1");
    (polkitd, installed)
}

fn wait_for_name(bus: &TestBus, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new("dbus-send")
            .arg(format!("--bus={}", bus.address))
            .args([
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
            ])
            .arg("org.freedesktop.DBus.NameHasOwner")
            .arg(format!("string:{name}"))
            .output()
            .expect("dbus-send");
        if String::from_utf8_lossy(&out.stdout).contains("boolean true") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not appear on the bus"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `patchd run` with polkit deciding (not the test uid list).
fn spawn_patchd(dev: &Device, bus: &TestBus) -> Daemon {
    let child = Command::new(env!("CARGO_BIN_EXE_patchd"))
        .arg("--root")
        .arg(dev.paths.resolve("/"))
        .args(["--bus-address", &bus.address, "--auth", "polkit", "run"])
        .env("PATCHD_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dev.top.join("patchd.log")).unwrap())
        .spawn()
        .expect("spawn patchd");
    Daemon(Some(child))
}

/// cockpit-ws on 127.0.0.1:`port` with a local session (no login) whose bridge sees
/// the private bus as the system bus and the page under `share`; as `uid` if given.
fn start_cockpit(bus: &TestBus, share: &Path, port: u16, uid: Option<u32>, log: &Path) -> Killed {
    let ws = cockpit_ws().expect("cockpit-ws");
    let home = share
        .parent()
        .unwrap()
        .join(format!("home-{}", uid.unwrap_or(0)));
    std::fs::create_dir_all(&home).unwrap();
    let mut c = match uid {
        Some(uid) => {
            nix::unistd::chown(&home, Some(uid.into()), Some(uid.into())).unwrap();
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .args(["--clear-groups", "--"])
                .arg(&ws);
            c
        }
        None => Command::new(&ws),
    };
    c.args([
        "--no-tls",
        "--address",
        "127.0.0.1",
        "--port",
        &port.to_string(),
    ])
    .arg("--local-session=cockpit-bridge")
    .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
    .env("XDG_DATA_DIRS", format!("{}:/usr/share", share.display()))
    .env("HOME", &home)
    // No session bus: the page needs none, and an autolaunched one would outlive
    // the test.
    .env(
        "DBUS_SESSION_BUS_ADDRESS",
        format!("unix:path={}/no-session-bus", home.display()),
    )
    .env_remove("XDG_RUNTIME_DIR")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(log).unwrap());
    let child = Killed(c.spawn().expect("spawn cockpit-ws"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "cockpit-ws did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// The package as it is installed: its files copied (not linked) under `share/cockpit/`,
/// readable by everyone.
fn install_page(share: &Path) {
    let dst = share.join("cockpit/patchd");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(repo_root().join("packaging/cockpit")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    let web = share.parent().unwrap();
    // From the test's temporary directory down: `nobody`'s bridge reads the page too.
    for d in [
        web.parent().unwrap(),
        web,
        share,
        &share.join("cockpit"),
        &dst,
    ] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Publish `version` (security, critical, one CVE) with an uncompressed image and serve
/// the repository's files.
fn publish(dev: &Device, server: &FaultServer, version: &str) {
    let repo = Repo::open(&dev.repo_dir, dev.top.join("keys")).unwrap();
    let img = dev.top.join(format!("{version}.img"));
    std::fs::write(&img, process::image(version, IMAGE_SIZE)).unwrap();
    let mut input = ImageInput::rootfs(&img);
    input.compression = patchd::manifest::Compression::None;
    let mut rel = AddRelease::new("test-box", version.parse().unwrap(), img.clone());
    rel.images = vec![input];
    rel.security_version = 3;
    rel.kind = patchd::manifest::Kind::Security;
    rel.severity = patchd::manifest::Severity::Critical;
    rel.cves = vec!["CVE-2026-12345".into()];
    rel.summary = "fixes the remote hole".into();
    repo.add_release(&rel).unwrap();
    for (path, bytes) in dev.repo_files() {
        server.add(&path, bytes);
    }
}

fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("cockpit");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The screenshots docs/cockpit.md shows.
const IN_DOCS: &[&str] = &["cockpit-overview.png", "cockpit-job.png"];

/// Keep a screenshot under target/cockpit/ (the CI artifact); with `PATCHD_BLESS=1` also
/// the pictures docs/cockpit.md shows.
fn keep(png: &[u8], name: &str) {
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::write(screenshots_dir().join(name), png).unwrap();
    if IN_DOCS.contains(&name) && std::env::var_os("PATCHD_BLESS").is_some() {
        std::fs::write(repo_root().join("docs").join(name), png).unwrap();
    }
}

fn js_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn text_of(page: &mut Page, id: &str) -> String {
    page.eval(&format!(
        "document.getElementById({}).textContent",
        js_str(id)
    ))
    .as_str()
    .unwrap_or_default()
    .to_owned()
}

const SHOW: &str = "JSON.stringify({state: document.getElementById('state').textContent, \
    message: document.getElementById('message').textContent, \
    progress: document.getElementById('progress-label').textContent})";
const WAIT: Duration = Duration::from_secs(20);

fn open(page: &mut Page, port: u16) {
    page.navigate(&format!(
        "http://127.0.0.1:{port}/cockpit/@localhost/patchd/index.html"
    ));
    page.wait_for(
        "the page to load patchd's status",
        "document.body && document.body.dataset.loaded === 'true'",
        WAIT,
        "document.documentElement.outerHTML.slice(0, 2000)",
    );
}

/// Everything the test starts, stopped when dropped (the fields in reverse order).
struct Stack {
    browser: Browser,
    _ws_user: Killed,
    _ws_root: Killed,
    _daemon: Daemon,
    dev: Device,
    server: FaultServer,
    _polkitd: Killed,
    _policy: InstalledPolicy,
    bus: TestBus,
    top: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
    root_port: u16,
    user_port: u16,
}

impl Stack {
    fn start() -> Stack {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let bus = TestBus::start().expect("private bus");
        let (polkitd, policy) = start_polkitd(&bus);
        let server = rt.block_on(FaultServer::start());
        let top = tempfile::tempdir().unwrap();
        let dev = Device::new(
            top.path(),
            &DeviceSpec {
                image_size: IMAGE_SIZE,
                uncompressed: true,
                url: Some(server.url()),
                policy: QUIET.into(),
                ..DeviceSpec::default()
            },
        );
        for (path, bytes) in dev.repo_files() {
            server.add(&path, bytes);
        }
        let daemon = spawn_patchd(&dev, &bus);
        wait_for_name(&bus, "org.patchd.Patchd1");
        let share = top.path().join("web/share");
        install_page(&share);
        let (root_port, user_port) = (free_port(), free_port());
        let logs = top.path();
        let ws_root = start_cockpit(&bus, &share, root_port, None, &logs.join("ws-root.log"));
        let ws_user = start_cockpit(
            &bus,
            &share,
            user_port,
            Some(NOBODY),
            &logs.join("ws-user.log"),
        );
        let browser = Browser::start(&cdp::chromium().unwrap(), &logs.join("chromium.log"));
        Stack {
            browser,
            _ws_user: ws_user,
            _ws_root: ws_root,
            _daemon: daemon,
            dev,
            server,
            _polkitd: polkitd,
            _policy: policy,
            bus,
            top,
            _rt: rt,
            root_port,
            user_port,
        }
    }

    /// The daemon's and cockpit-ws' logs, for a failure message.
    fn logs(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.top.path().join(n)).unwrap_or_default();
        format!(
            "patchd log:\n{}\ncockpit-ws (root):\n{}\ncockpit-ws (nobody):\n{}\nbus {}",
            process::tail(&self.dev.log(), 30),
            read("ws-root.log"),
            read("ws-user.log"),
            self.bus.address
        )
    }
}

const INSTALL_3: &str =
    "document.querySelector('#release-table tr[data-version=\"3.0.0\"] button')";

fn click(page: &mut Page, id: &str) {
    page.eval(&format!("document.getElementById({}).click()", js_str(id)));
}

/// As root: the running release, and a Check that finds the release published now.
fn check_finds_a_new_release(s: &mut Stack, admin: &mut Page) {
    open(admin, s.root_port);
    assert_eq!(text_of(admin, "current-version"), "1.0.0", "{}", s.logs());
    assert!(!text_of(admin, "next").is_empty());
    publish(&s.dev, &s.server, "3.0.0");
    click(admin, "tab-releases");
    admin.wait_for(
        "Check to be allowed",
        "!document.getElementById('check').disabled",
        WAIT,
        "document.getElementById('check').title",
    );
    // Allowed, but not now: nothing is staged yet.
    let switch = admin.eval(
        "[document.getElementById('switch').disabled, document.getElementById('switch').title]",
    );
    assert_eq!(
        switch[0], true,
        "Switch enabled with nothing staged: {switch}"
    );
    assert_eq!(switch[1], "Nothing is staged.", "{switch}");
    click(admin, "check");
    admin.wait_for("Check to list 3.0.0", INSTALL_3, WAIT, SHOW);
    let row = admin
        .eval("document.querySelector('#release-table tr[data-version=\"3.0.0\"]').textContent");
    let row = row.as_str().unwrap_or_default();
    assert!(
        row.contains("CVE-2026-12345") && row.contains("critical"),
        "{row}"
    );
    keep(&admin.screenshot(), "cockpit-releases.png");
}

/// As nobody: every action disabled with polkit's reason; an Install sent anyway (as
/// when rights change after the page loaded) is refused with polkit's message.
fn unprivileged_user_is_refused(s: &mut Stack, user: &mut Page) {
    open(user, s.user_port);
    click(user, "tab-releases");
    user.wait_for(
        "3.0.0 in the unprivileged user's list",
        INSTALL_3,
        WAIT,
        SHOW,
    );
    let state = user.eval(&format!(
        "[{INSTALL_3}.disabled, {INSTALL_3}.title, document.getElementById('hold').disabled, \
         document.getElementById('check').disabled]"
    ));
    assert_eq!(state[0], true, "Install enabled for nobody: {state}");
    let title = state[1].as_str().unwrap_or_default();
    assert!(
        title.contains("org.patchd.patchd1.install requires authentication"),
        "tooltip: {title}"
    );
    assert_eq!(state[2], true, "Hold enabled for nobody: {state}");
    assert_eq!(state[3], true, "Check enabled for nobody: {state}");
    user.eval(&format!(
        "{INSTALL_3}.disabled = false; {INSTALL_3}.click()"
    ));
    user.wait_for(
        "the denial",
        "document.getElementById('message').dataset.kind === 'danger'",
        WAIT,
        SHOW,
    );
    let denial = text_of(user, "message");
    assert!(
        denial.contains("Not authorized to install 3.0.0")
            && denial.contains("org.patchd.patchd1.install requires authentication"),
        "denial shown: {denial}"
    );
    assert_eq!(
        s.dev.slot_status("b").version,
        None,
        "a refused Install staged"
    );
}

/// As root: Install follows the job live (a screenshot part way) and ends staged.
fn install_shows_progress_and_ends_staged(s: &mut Stack, admin: &mut Page) {
    s.server.set(Faults {
        chunk_delay: Some(Duration::from_millis(120)),
        ..Faults::default()
    });
    admin.eval(&format!("{INSTALL_3}.click()"));
    click(admin, "tab-overview");
    admin.wait_for(
        "a progress bar part way",
        "!document.getElementById('progress').hidden && \
         Number(document.getElementById('progress').dataset.percent) > 10",
        WAIT,
        SHOW,
    );
    let label = text_of(admin, "progress-label");
    assert!(label.contains(" of "), "progress label: {label}");
    keep(&admin.screenshot(), "cockpit-job.png");
    admin.wait_for(
        "staged 3.0.0",
        "document.getElementById('state').dataset.state === 'staged' && \
         document.getElementById('staged-version').textContent === '3.0.0' && \
         document.getElementById('progress').hidden",
        Duration::from_secs(40),
        SHOW,
    );
    assert_eq!(s.dev.slot_status("b").version.as_deref(), Some("3.0.0"));
}

/// A hold with a reason shows in the overview; Switch (asking policy) is refused because
/// of it, with the reason as the page's message.
fn hold_shows_and_stops_the_switch(s: &mut Stack, admin: &mut Page) {
    click(admin, "tab-releases");
    admin.eval("document.getElementById('hold-reason').value = 'quarter-end freeze'");
    click(admin, "hold");
    click(admin, "tab-overview");
    admin.wait_for(
        "the hold in the overview",
        "document.getElementById('holds').textContent.includes('quarter-end freeze')",
        WAIT,
        "document.getElementById('holds').textContent + ' / ' + \
         document.getElementById('message').textContent",
    );
    let holds = text_of(admin, "holds");
    assert!(holds.contains("uid:0"), "{holds}");
    keep(&admin.screenshot(), "cockpit-overview.png");
    click(admin, "switch");
    admin.wait_for(
        "the switch refusal",
        "document.getElementById('message').dataset.kind === 'warning'",
        WAIT,
        SHOW,
    );
    let refusal = text_of(admin, "message");
    assert!(
        refusal.contains("Not now: switch to the staged release") && refusal.contains("hold"),
        "refusal shown: {refusal}"
    );
    assert_eq!(
        s.dev.state_kind(),
        "staged",
        "a refused switch changed the state"
    );
}

/// History lists the hold and the refused Install, filters by event, and the audit log
/// verifies; then the hold is released.
fn history_lists_the_hold(admin: &mut Page) {
    click(admin, "tab-history");
    admin.wait_for(
        "the hold in the history",
        "Array.from(document.querySelectorAll('#history-table tr[data-event=\"hold\"]')) \
         .some(function (r) { return r.textContent.includes('quarter-end freeze'); })",
        WAIT,
        "document.getElementById('history-table').textContent.slice(0, 2000)",
    );
    let denied = admin
        .eval("document.querySelectorAll('#history-table tr[data-event=\"dbus.denied\"]').length");
    assert!(
        denied.as_u64() >= Some(1),
        "the refused Install is not in the history"
    );
    admin.eval("document.getElementById('filter-event').value = 'hold'");
    click(admin, "filter-apply");
    admin.wait_for(
        "the history filtered to holds",
        "document.querySelectorAll('#history-table tbody tr').length > 0 && \
         Array.from(document.querySelectorAll('#history-table tbody tr')) \
         .every(function (r) { return r.dataset.event === 'hold'; })",
        WAIT,
        "document.getElementById('history-table').textContent.slice(0, 2000)",
    );
    click(admin, "verify-audit");
    admin.wait_for(
        "the audit verification",
        "document.getElementById('audit-result').dataset.ok === 'true'",
        WAIT,
        "document.getElementById('audit-result').textContent",
    );
    keep(&admin.screenshot(), "cockpit-history.png");
    click(admin, "release-hold");
    admin.wait_for(
        "the hold released",
        "document.getElementById('holds').textContent === 'none'",
        WAIT,
        SHOW,
    );
}

/// Inventory as sections; at 360 px no tab scrolls sideways.
fn inventory_and_narrow_widths(admin: &mut Page) {
    click(admin, "tab-inventory");
    admin.wait_for(
        "the inventory",
        "document.querySelectorAll('#inventory-body .pf-v5-c-card').length > 1",
        WAIT,
        "document.getElementById('inventory-body').textContent.slice(0, 500)",
    );
    keep(&admin.screenshot(), "cockpit-inventory.png");
    admin.set_size(360, 740);
    for tab in ["overview", "releases", "history", "inventory"] {
        click(admin, &format!("tab-{tab}"));
        let w = admin.eval("[document.documentElement.scrollWidth, window.innerWidth]");
        assert!(
            w[0].as_u64() <= w[1].as_u64(),
            "{tab} scrolls sideways at 360 px: {w}"
        );
    }
    click(admin, "tab-overview");
    keep(&admin.screenshot(), "cockpit-narrow.png");
}

#[test]
fn cockpit_page_shows_and_drives_patchd() {
    if let Some(why) = missing() {
        println!("skipped: {why}");
        return;
    }
    let started = Instant::now();
    let mut s = Stack::start();
    let mut admin = s.browser.new_page();
    let mut user = s.browser.new_page();
    check_finds_a_new_release(&mut s, &mut admin);
    unprivileged_user_is_refused(&mut s, &mut user);
    install_shows_progress_and_ends_staged(&mut s, &mut admin);
    hold_shows_and_stops_the_switch(&mut s, &mut admin);
    history_lists_the_hold(&mut admin);
    inventory_and_narrow_widths(&mut admin);
    for (who, page) in [("nobody", &mut user), ("root", &mut admin)] {
        let errors = page.errors();
        assert!(
            errors.is_empty(),
            "console errors ({who}): {errors:#?}\n{}",
            s.logs()
        );
    }
    let took = started.elapsed();
    println!("cockpit_page: took {took:?}");
    assert!(took < Duration::from_secs(90), "took {took:?}");
}
