//! Health check runner: drop-in executables and their ownership rules, configured
//! commands, timeouts that kill the process group, the overall deadline, HTTP probes.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use patchd::config::HealthConfig;
use patchd::health::{
    CheckKind, CommandCheck, Deadline, ExecSettings, FixedUnits, HealthPlan, HttpProbe, HttpUrl,
    Verdict,
};
use patchd::paths::Paths;

fn script(path: &Path, body: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn plan(root: &Path) -> HealthPlan {
    let paths = Paths::new(root);
    let mut p = HealthPlan::from_config(&HealthConfig::default(), &paths);
    p.trusted_uid = nix::unistd::geteuid().as_raw();
    p.check_timeout = Duration::from_secs(10);
    // As the daemon runs them: under the reaper (tests/health_reaper.rs has the rest).
    p.exec = ExecSettings {
        reaper: Some(env!("CARGO_BIN_EXE_patchd").into()),
        systemd_run: None,
    };
    p
}

fn units() -> FixedUnits {
    FixedUnits(BTreeMap::from([
        ("nginx.service".to_string(), "active".to_string()),
        ("db.service".to_string(), "failed".to_string()),
    ]))
}

#[tokio::test]
async fn dropins_required_and_wanted() {
    let d = tempfile::tempdir().unwrap();
    let p = plan(d.path());
    script(&p.health_dir.join("10-ok"), "echo all good");
    script(&p.health_dir.join("20-bad"), "echo disk full >&2; exit 3");
    script(&p.health_dir.join("wanted/50-slow-cache"), "exit 1");
    script(&p.health_dir.join(".hidden"), "exit 1");
    fs::write(p.health_dir.join("30-noexec"), "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(
        p.health_dir.join("30-noexec"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let r = p.run(Duration::from_secs(60), &units()).await;
    let by: BTreeMap<_, _> = r.checks.iter().map(|c| (c.name.as_str(), c)).collect();
    assert_eq!(r.checks.len(), 4, "{r}");
    assert_eq!(by["10-ok"].verdict, Verdict::Pass);
    assert_eq!(by["10-ok"].output, "all good");
    assert_eq!(by["10-ok"].kind, CheckKind::DropIn);
    assert_eq!(by["20-bad"].verdict, Verdict::Fail);
    assert!(
        by["20-bad"].output.contains("exit status: 3") && by["20-bad"].output.contains("disk full"),
        "{r}"
    );
    assert_eq!(by["30-noexec"].verdict, Verdict::Fail);
    assert!(by["30-noexec"].output.contains("not executable"));
    assert_eq!(by["50-slow-cache"].verdict, Verdict::Warn);
    assert_eq!(by["50-slow-cache"].kind, CheckKind::Wanted);
    assert!(!r.passed());
    assert!(
        r.summary().contains("20-bad (drop-in): exit status: 3"),
        "{}",
        r.summary()
    );

    fs::remove_file(p.health_dir.join("20-bad")).unwrap();
    fs::remove_file(p.health_dir.join("30-noexec")).unwrap();
    let r = p.run(Duration::from_secs(60), &units()).await;
    assert!(r.passed(), "{r}");
    assert_eq!(r.warnings().count(), 1);
}

#[tokio::test]
async fn group_or_world_writable_executables_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = plan(d.path());
    let f = p.health_dir.join("10-check");
    script(&f, "exit 0");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o775)).unwrap();
    let r = p.run(Duration::from_secs(60), &units()).await;
    assert_eq!(r.checks[0].verdict, Verdict::Fail);
    assert!(
        r.checks[0].output.contains("group- or world-writable"),
        "{r}"
    );
    // A writable directory is refused too.
    fs::set_permissions(&f, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&p.health_dir, fs::Permissions::from_mode(0o777)).unwrap();
    let r = p.run(Duration::from_secs(60), &units()).await;
    assert!(r.checks[0].output.contains("directory"), "{r}");
}

#[tokio::test]
async fn executables_not_owned_by_the_trusted_uid_are_refused() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root to chown a file to another user");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = plan(d.path());
    let f = p.health_dir.join("10-check");
    script(&f, "exit 0");
    nix::unistd::chown(&f, Some(nix::unistd::Uid::from_raw(1234)), None).unwrap();
    let r = p.run(Duration::from_secs(60), &units()).await;
    assert_eq!(r.checks[0].verdict, Verdict::Fail);
    assert!(r.checks[0].output.contains("owned by uid 1234"), "{r}");
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let d = tempfile::tempdir().unwrap();
    let mut p = plan(d.path());
    p.check_timeout = Duration::from_millis(500);
    let pidfile = d.path().join("child.pid");
    script(
        &p.health_dir.join("10-hang"),
        &format!("sleep 60 &\necho $! > {}\nwait", pidfile.display()),
    );
    let t = Instant::now();
    let r = p.run(Duration::from_secs(60), &units()).await;
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(r.checks[0].verdict, Verdict::Fail);
    assert!(r.checks[0].output.contains("timed out"), "{r}");
    let pid = fs::read_to_string(&pidfile).unwrap().trim().to_string();
    // Give the kernel a moment to reap; the grandchild must be gone (or a zombie).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let alive = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false);
    assert!(!alive, "grandchild {pid} survived the timeout");
}

#[tokio::test]
async fn overall_deadline_fails_the_remaining_checks() {
    let d = tempfile::tempdir().unwrap();
    let p = plan(d.path());
    script(&p.health_dir.join("10-slow"), "sleep 5");
    script(&p.health_dir.join("20-fast"), "exit 0");
    let r = p.run(Duration::from_millis(400), &units()).await;
    assert!(r.deadline_exceeded, "{r}");
    assert!(!r.passed());
    assert!(r.checks[0].output.contains("timed out"), "{r}");
    assert!(r.checks[1].output.contains("deadline reached"), "{r}");
    // No time left at all (e.g. after a restart past the deadline): nothing runs.
    let r = p.run(Duration::ZERO, &units()).await;
    assert!(
        r.checks.iter().all(|c| c.output.contains("deadline")),
        "{r}"
    );
}

#[test]
fn deadline_resumes_with_the_remaining_time() {
    let started: jiff::Timestamp = "2026-11-28T10:00:00Z".parse().unwrap();
    let d = Deadline {
        started,
        total: Duration::from_secs(600),
    };
    let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
    assert_eq!(
        d.remaining(at("2026-11-28T10:04:00Z")),
        Duration::from_secs(360)
    );
    assert_eq!(d.remaining(at("2026-11-28T10:20:00Z")), Duration::ZERO);
    // Clock stepped backwards: no extra time is granted.
    assert_eq!(
        d.remaining(at("2026-11-28T09:00:00Z")),
        Duration::from_secs(600)
    );
    let j = serde_json::to_string(&d).unwrap();
    assert_eq!(serde_json::from_str::<Deadline>(&j).unwrap(), d);
}

#[tokio::test]
async fn configured_commands_resolve_under_the_root_and_units_are_checked() {
    let d = tempfile::tempdir().unwrap();
    let mut p = plan(d.path());
    script(
        &d.path().join("usr/local/bin/check-db"),
        "test \"$1\" = --quick && echo \"PATH=$PATH\"",
    );
    p.commands = vec![
        CommandCheck {
            name: "db".into(),
            run: vec!["/usr/local/bin/check-db".into(), "--quick".into()],
            timeout: None,
            required: true,
        },
        CommandCheck {
            name: "missing".into(),
            run: vec!["/usr/bin/does-not-exist".into()],
            timeout: None,
            required: false,
        },
    ];
    p.units = vec![
        "nginx.service".into(),
        "db.service".into(),
        "gone.service".into(),
    ];
    let r = p.run(Duration::from_secs(60), &units()).await;
    let by: BTreeMap<_, _> = r.checks.iter().map(|c| (c.name.as_str(), c)).collect();
    assert_eq!(by["db"].verdict, Verdict::Pass, "{r}");
    assert!(
        by["db"].output.starts_with("PATH=/usr/local/sbin"),
        "environment is clean: {r}"
    );
    assert_eq!(by["missing"].verdict, Verdict::Warn);
    assert_eq!(by["nginx.service"].verdict, Verdict::Pass);
    assert_eq!(by["db.service"].verdict, Verdict::Fail);
    assert!(by["db.service"].output.contains("failed"));
    assert!(by["gone.service"].output.contains("not loaded"));
}

#[tokio::test]
async fn output_is_bounded() {
    let d = tempfile::tempdir().unwrap();
    let p = plan(d.path());
    script(
        &p.health_dir.join("10-loud"),
        "yes loud | head -c 1000000; echo END",
    );
    let r = p.run(Duration::from_secs(60), &units()).await;
    assert_eq!(r.checks[0].verdict, Verdict::Pass, "{r}");
    assert!(r.checks[0].output.len() <= 4096);
    assert!(r.checks[0].output.ends_with("END"));
}

async fn http_server(status_line: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let body = "service says hi";
            let _ = s
                .write_all(format!("HTTP/1.1 {status_line}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).as_bytes())
                .await;
        }
    });
    format!("http://{addr}/healthz")
}

#[tokio::test]
async fn http_probes_compare_the_status() {
    let d = tempfile::tempdir().unwrap();
    let mut p = plan(d.path());
    let ok = http_server("200 OK").await;
    let bad = http_server("503 Service Unavailable").await;
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        drop(l);
        format!("http://{a}/")
    };
    let probe = |name: &str, url: &str, status: u16| HttpProbe {
        name: name.into(),
        url: HttpUrl::parse(url).unwrap(),
        status,
        timeout: Some(Duration::from_secs(5)),
        required: true,
    };
    p.http = vec![
        probe("ok", &ok, 200),
        probe("bad", &bad, 200),
        probe("expect-503", &bad, 503),
        probe("closed", &closed, 200),
    ];
    let r = p.run(Duration::from_secs(60), &units()).await;
    let by: BTreeMap<_, _> = r.checks.iter().map(|c| (c.name.as_str(), c)).collect();
    assert_eq!(by["ok"].verdict, Verdict::Pass, "{r}");
    assert_eq!(by["bad"].verdict, Verdict::Fail);
    assert!(by["bad"].output.contains("HTTP 503, expected 200"), "{r}");
    assert!(by["bad"].output.contains("service says hi"));
    assert_eq!(by["expect-503"].verdict, Verdict::Pass);
    assert_eq!(by["closed"].verdict, Verdict::Fail);
}
