//! `[metrics] textfile` against a real `patchd run`: the file is written at start-up and
//! after each change, carries the failure counters (a slow mirror counts as
//! `slow_retrieval`), the state and the audit head the log really ends with; the counters
//! survive a restart because they are counted from the audit log; a file that cannot be
//! written is a status warning and an audit record, cleared once it can be written again.

mod common;
mod process;

use std::path::Path;
use std::time::{Duration, Instant};

use common::http::{FaultServer, Faults};
use process::*;

const PROM: &str = "/var/lib/node-exporter/patchd.prom";

fn metrics_section() -> String {
    format!("[metrics]\ntextfile = \"{PROM}\"\n")
}

/// Poll the textfile until it has `line`; panics with the file's text after `limit`.
async fn wait_for_line(file: &Path, line: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if text.lines().any(|l| l == line) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never had {line:?}; it has:\n{text}",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `seq` and sha256 of the audit log's last line, as the head metrics must name them.
fn audit_tail(dev: &Device) -> (u64, String) {
    use sha2::Digest;
    let log = std::fs::read_to_string(dev.audit_path()).unwrap();
    let last = log.lines().last().expect("audit log is empty");
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    (
        v["seq"].as_u64().unwrap(),
        hex::encode(sha2::Sha256::digest(last.as_bytes())),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_slow_mirror_and_pin_the_audit_head_across_restarts() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let server = FaultServer::start().await;
    let dev = Device::new(
        rig.top.path(),
        &DeviceSpec {
            image_size: 1 << 20,
            uncompressed: true,
            url: Some(server.url()),
            extra: format!(
                "[fetch]\nmin_rate = \"64K\"\nmin_rate_window = \"2s\"\n\
                 deadline_floor = \"2s\"\nstall_timeout = \"1s\"\n\n{}",
                metrics_section()
            ),
            ..DeviceSpec::default()
        },
    );
    let prom = dev.paths.resolve(PROM);
    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    for (path, bytes) in dev.repo_files() {
        server.add(&path, bytes);
    }
    server.set(Faults {
        trickle: Some((4096, Duration::from_millis(500))),
        ..Faults::default()
    });
    let mut d = dev.spawn(rig.addr(), &[]);
    let e = wait_until(&mut d, &dev, Duration::from_secs(60), "staging", |dev| {
        dev.state_kind() == "staging"
    })
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    wait_for_line(
        &prom,
        "patchd_state{state=\"staging\"} 1",
        Duration::from_secs(10),
    )
    .await;
    let text = wait_for_line(
        &prom,
        "patchd_failures_total{reason=\"slow_retrieval\"} 1",
        Duration::from_secs(60),
    )
    .await;
    assert!(
        text.lines()
            .any(|l| l == "patchd_current_release_info{release=\"1.0.0\",channel=\"stable\",product=\"test-box\"} 1"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("patchd_last_successful_check_timestamp_seconds ")),
        "{text}"
    );
    // The engine appends, then publishes; the file follows within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (seq, hash) = audit_tail(&dev);
    wait_for_line(
        &prom,
        &format!("patchd_audit_head_info{{seq=\"{seq}\",hash=\"{hash}\"}} 1"),
        Duration::from_secs(5),
    )
    .await;
    let st = d.stop(Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "{st:?}\n{}", dev.log());

    // A restart counts the same failure again from the log, not from zero. The mirror
    // is still slow, so the retried staging adds a second one.
    let d = dev.spawn(rig.addr(), &[]);
    let text = wait_for_line(
        &prom,
        "patchd_failures_total{reason=\"slow_retrieval\"} 2",
        Duration::from_secs(60),
    )
    .await;
    assert!(
        text.contains("# TYPE patchd_failures_total counter"),
        "{text}"
    );
    d.stop(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_metrics_file_is_a_status_warning_until_it_can_be_written() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let dev = Device::new(
        rig.top.path(),
        &DeviceSpec {
            extra: metrics_section(),
            // Stay up: no window and no staging outside one.
            policy: QUIET.into(),
            ..DeviceSpec::default()
        },
    );
    // The collector's directory does not exist yet.
    let prom = dev.paths.resolve(PROM);
    let mut d = dev.spawn(rig.addr(), &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let (code, out, err) = patchctl(rig.addr(), &["status"]).await;
        if code == 0 && out.contains("WARNING") && out.contains("metrics") {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "no metrics warning in status: {out}{err}\n{}",
            dev.log()
        );
        if let Some(st) = d.try_wait() {
            panic!("daemon exited {st:?}:\n{}", dev.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.contains(&prom.display().to_string()), "{status}");
    let events = dev.audit_events();
    assert_eq!(
        events.iter().filter(|e| *e == "warning").count(),
        1,
        "one warning record, not one per retry: {events:?}"
    );

    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    // Any status change writes the file again; a check is one.
    let (code, out, err) = patchctl(rig.addr(), &["check"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !prom.exists() || !dev.audit_events().iter().any(|e| e == "warning_cleared") {
        assert!(
            Instant::now() < deadline,
            "metrics never written after the directory appeared: {:?}\n{}",
            dev.audit_events(),
            dev.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The audit record comes first, the status a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, out, err) = patchctl(rig.addr(), &["status"]).await;
        assert_eq!(code, 0, "{out}{err}");
        if !out.contains("WARNING") {
            break;
        }
        assert!(Instant::now() < deadline, "warning not cleared: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.stop(Duration::from_secs(10));
}

/// `promtool check metrics` on `text`: `Err` with its complaint when it refuses it.
fn promtool(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("promtool: {e}"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn line_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Every version of the file a whole update writes (check, staging, switch, reboot,
/// health checks, commit) is valid Prometheus text format by Prometheus' own parser,
/// and the file ends saying what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_of_an_update_writes_metrics_promtool_accepts() {
    if !have("promtool") {
        println!("skipped: promtool not installed (apt-get install prometheus)");
        return;
    }
    let Some(rig) = Rig::start().await else {
        return;
    };
    let dev = Device::new(
        rig.top.path(),
        &DeviceSpec {
            extra: metrics_section(),
            ..DeviceSpec::default()
        },
    );
    let prom = dev.paths.resolve(PROM);
    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    // Every distinct file content, and the states they showed.
    let mut seen: Vec<String> = Vec::new();
    let watch = |seen: &mut Vec<String>| {
        if let Ok(t) = std::fs::read_to_string(&prom) {
            if seen.last() != Some(&t) {
                seen.push(t);
            }
        }
    };
    let mut d = dev.spawn(rig.addr(), &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while d.try_wait().is_none() {
        watch(&mut seen);
        assert!(
            Instant::now() < deadline,
            "no reboot request\n{}",
            dev.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    watch(&mut seen);
    d.0 = None;
    assert_eq!(dev.power_cycle().as_str(), "b");
    let d = dev.spawn(rig.addr(), &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        watch(&mut seen);
        if seen
            .last()
            .is_some_and(|t| t.contains("patchd_state{state=\"committed\"} 1"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "never committed\n{}", dev.log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    d.stop(Duration::from_secs(10));
    watch(&mut seen);

    let states: Vec<&str> = seen
        .iter()
        .filter_map(|t| {
            t.lines()
                .find(|l| l.starts_with("patchd_state{") && l.ends_with(" 1"))
                .and_then(|l| l.split('"').nth(1))
        })
        .collect();
    for want in ["switching", "committed"] {
        assert!(states.contains(&want), "no file showed {want}: {states:?}");
    }
    for t in &seen {
        if let Err(e) = promtool(t) {
            panic!("promtool refused the metrics:\n{e}\n--- file ---\n{t}");
        }
    }
    let last = seen.last().unwrap();
    assert!(
        last.lines().any(|l| l
            == "patchd_current_release_info{release=\"2.0.0\",channel=\"stable\",product=\"test-box\"} 1"),
        "{last}"
    );
    assert_eq!(
        line_value(last, "patchd_updates_total"),
        Some(1.0),
        "{last}"
    );
    assert_eq!(
        line_value(last, "patchd_last_check_success"),
        Some(1.0),
        "{last}"
    );
    assert!(
        line_value(last, "patchd_fetched_bytes_total").is_some_and(|b| b > 0.0),
        "{last}"
    );
    assert_eq!(line_value(last, "patchd_holds"), Some(0.0), "{last}");
    // The per-release outcome the fleet sums: on trial after the switch, committed at
    // the end, entered by stage 0 (a release without stages).
    let outcome = |o: &str, v: u8| {
        format!(
            "patchd_release_outcome{{release=\"2.0.0\",channel=\"stable\",product=\"test-box\",group=\"default\",stage=\"0\",outcome=\"{o}\"}} {v}"
        )
    };
    assert!(
        seen.iter()
            .any(|t| t.lines().any(|l| l == outcome("switched", 1))),
        "no file showed 2.0.0 on trial"
    );
    for (o, v) in [
        ("committed", 1),
        ("switched", 0),
        ("rolled_back", 0),
        ("failed", 0),
    ] {
        assert!(last.lines().any(|l| l == outcome(o, v)), "{last}");
    }
}
