//! `patchpub rollout guard` against a real Prometheus (Debian `prometheus`) scraping the
//! metrics textfiles of simulated devices, rendered by the daemon's own renderer and
//! served by a small HTTP server here (one scrape target per device): the guard pauses a
//! release when 3 of 20 canaries rolled back, renews (and then widens) the gate of a
//! healthy one, and when Prometheus is stopped it signs nothing, so the gate expires and
//! a real `patchd run` device does not enter the next stage — until a gate allows it.

mod process;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use patchd::manifest::{Manifest, RolloutGate, RolloutStage};
use patchd::metrics::{MetricsSnapshot, Outcome, ReleaseOutcome};
use patchd::publish::guard::{log, prometheus};
use patchd::publish::{AddRelease, Repo};
use process::*;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const DEVICES: usize = 20;

/// The textfile of one simulated device that entered `release` of `product` by `stage`.
fn textfile(product: &str, release: &str, stage: usize, outcome: Outcome) -> String {
    let m = MetricsSnapshot {
        product: product.into(),
        channel: "stable".into(),
        group: Some("rack-1".into()),
        outcomes: vec![ReleaseOutcome {
            release: release.into(),
            stage: Some(stage),
            outcome,
        }],
        state: "committed".into(),
        ..MetricsSnapshot::default()
    };
    patchd::metrics::render(&m, jiff::Timestamp::now())
}

/// Serves `files[i]` at `/metrics?device=dev<i>`; the test changes them while it runs.
struct DeviceFarm {
    files: Arc<Mutex<Vec<String>>>,
    port: u16,
}

impl DeviceFarm {
    fn start(n: usize) -> DeviceFarm {
        let files = Arc::new(Mutex::new(vec![String::new(); n]));
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let f = files.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let f = f.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(&s);
                    let mut line = String::new();
                    let _ = r.read_line(&mut line);
                    // Skip the request headers.
                    let mut h = String::new();
                    while r.read_line(&mut h).is_ok_and(|n| n > 2) {
                        h.clear();
                    }
                    let body = line
                        .split_whitespace()
                        .nth(1)
                        .and_then(|p| p.split("device=dev").nth(1))
                        .and_then(|n| n.split('&').next()?.parse::<usize>().ok())
                        .and_then(|i| f.lock().unwrap().get(i).cloned());
                    let mut w = &s;
                    let _ = match body {
                        Some(b) => write!(
                            w,
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{b}",
                            b.len()
                        ),
                        None => write!(
                            w,
                            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        ),
                    };
                });
            }
        });
        DeviceFarm { files, port }
    }

    fn set(&self, i: usize, text: String) {
        self.files.lock().unwrap()[i] = text;
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Prometheus server scraping every device of `farm` each second.
struct Prometheus {
    child: Option<Child>,
    url: String,
}

impl Prometheus {
    async fn start(dir: &Path, farm: &DeviceFarm, n: usize) -> Prometheus {
        let targets: Vec<String> = (0..n).map(|i| format!("'dev{i}'")).collect();
        let cfg = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
             scrape_configs:\n  - job_name: devices\n    static_configs:\n      - targets: [{}]\n\
             \x20   relabel_configs:\n\
             \x20     - source_labels: [__address__]\n        target_label: __param_device\n\
             \x20     - source_labels: [__address__]\n        target_label: instance\n\
             \x20     - target_label: __address__\n        replacement: 127.0.0.1:{}\n",
            targets.join(", "),
            farm.port
        );
        let cfg_path = dir.join("prometheus.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let port = free_port();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = reqwest::get(format!("{}/-/ready", p.url))
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Poll until the outcomes of `product`/`version` summed over the fleet are `want`
    /// (entered, committed, rolled back).
    async fn wait_for(&self, product: &str, version: &str, want: (u64, u64, u64)) {
        let q = prometheus::outcome_query(product, version, None);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = prometheus::query(&self.url, &q, Duration::from_secs(2))
                .await
                .map(|o| o.total());
            if let Ok(t) = &got {
                if (t.entered(), t.committed, t.rolled_back) == want {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never saw {want:?} for {product}/{version}: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `patchpub … rollout guard RELEASE …`: exit status, stdout and stderr.
fn guard(
    repo: &Path,
    keys: &Path,
    log: &Path,
    url: &str,
    release: &str,
    extra: &[&str],
) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_patchpub"))
        .arg("--repo")
        .arg(repo)
        .arg("--keys")
        .arg(keys)
        .args(["rollout", "guard", release, "--prometheus", url])
        .args([
            "--min-reported",
            "10",
            "--max-failed-ratio",
            "0.1",
            "--timeout",
            "2s",
        ])
        .arg("--log")
        .arg(log)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `patchpub … rollout status RELEASE [ARGS]`: exit status and stdout.
fn status(repo: &Path, keys: &Path, release: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_patchpub"))
        .arg("--repo")
        .arg(repo)
        .arg("--keys")
        .arg(keys)
        .args(["rollout", "status", release])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}");
    (out.status.code().unwrap_or(-1), text)
}

fn targets_version(repo: &Path) -> u64 {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join("metadata/targets.json")).unwrap())
            .unwrap();
    v["signed"]["version"].as_u64().unwrap()
}

fn last_decision(log_path: &Path) -> log::DecisionRecord {
    log::read(log_path)
        .unwrap()
        .pop()
        .expect("no decision logged")
}

/// Publish a guarded release of `product`: stage 0 the canaries, stage 1 everyone.
fn publish_guarded(repo: &Repo, top: &Path, product: &str, version: &str) -> Manifest {
    let img = top.join(format!("{product}-{version}.img"));
    std::fs::write(&img, image(version, 256 * 1024)).unwrap();
    let mut rel = AddRelease::new(product, version.parse().unwrap(), &img);
    rel.security_version = 3;
    rel.rollout.guarded = true;
    rel.rollout.stages = vec![
        RolloutStage {
            tags: vec!["canary".into()],
            percent: 0,
            after_secs: 0,
        },
        RolloutStage {
            tags: vec![],
            percent: 100,
            after_secs: 0,
        },
    ];
    repo.add_release(&rel).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_pauses_renews_and_a_dead_prometheus_freezes_the_rollout() {
    if !Path::new(PROMETHEUS).exists() {
        println!("skipped: {PROMETHEUS} not installed (apt-get install prometheus)");
        return;
    }
    let Some(rig) = Rig::start().await else {
        return;
    };
    let top = rig.top.path();
    let dev = Device::new(top, &DeviceSpec::default());
    let keys: PathBuf = top.join("keys");
    let repo = Repo::open(&dev.repo_dir, &keys).unwrap();
    // The device's newest release is the guarded 3.0.0 (the 2.0.0 it was built with is
    // withdrawn); it carries no tags, so it enters by stage 1.
    repo.withdraw("test-box", &"2.0.0".parse().unwrap())
        .unwrap();
    publish_guarded(&repo, top, "test-box", "3.0.0");
    publish_guarded(&repo, top, "other-box", "5.0.0");
    let log_path = top.join("guard.jsonl");

    // Devices 0..20 report test-box 3.0.0: 17 committed, 3 on trial. Devices 20..40
    // report other-box 5.0.0: 17 committed, 3 rolled back.
    let farm = DeviceFarm::start(2 * DEVICES);
    for i in 0..DEVICES {
        let (ok, bad) = if i < 17 {
            (Outcome::Committed, Outcome::Committed)
        } else {
            (Outcome::Switched, Outcome::RolledBack)
        };
        farm.set(i, textfile("test-box", "3.0.0", 0, ok));
        farm.set(DEVICES + i, textfile("other-box", "5.0.0", 0, bad));
    }
    let promtool_ok = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(farm.files.lock().unwrap()[DEVICES].as_bytes())
                .unwrap();
            c.wait().unwrap().success()
        });
    assert!(
        promtool_ok.unwrap_or(true),
        "promtool refused a device's textfile"
    );
    let started = Instant::now();
    let mut prom = Prometheus::start(top, &farm, 2 * DEVICES).await;
    prom.wait_for("other-box", "5.0.0", (20, 17, 3)).await;
    prom.wait_for("test-box", "3.0.0", (20, 17, 0)).await;

    // 3 of 20 canaries rolled back: paused, re-signed; a second run changes nothing.
    let (code, out) = guard(
        &dev.repo_dir,
        &keys,
        &log_path,
        &prom.url,
        "other-box/5.0.0",
        &[],
    );
    assert_eq!(code, 0, "{out}");
    let d = last_decision(&log_path);
    assert_eq!(d.decision, "paused", "{out}");
    let c = d.counts.unwrap();
    assert_eq!((c.entered(), c.rolled_back, c.committed), (20, 3, 17));
    let v = repo
        .rollout("other-box", &"5.0.0".parse().unwrap())
        .unwrap();
    assert!(v.manifest.rollout.paused, "the signed manifest is paused");
    let signed = targets_version(&dev.repo_dir);
    let (code, out) = guard(
        &dev.repo_dir,
        &keys,
        &log_path,
        &prom.url,
        "other-box/5.0.0",
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(last_decision(&log_path).decision, "already_paused");
    assert_eq!(
        targets_version(&dev.repo_dir),
        signed,
        "idempotent: nothing re-signed"
    );

    // 0 of 20 rolled back: nothing paused; the first gate opens stage 0, the next run
    // renews it; stage 1 waits for 20 committed canaries.
    let healthy = ["--min-committed", "20", "--gate-ttl", "1h"];
    let (code, out) = guard(
        &dev.repo_dir,
        &keys,
        &log_path,
        &prom.url,
        "test-box/3.0.0",
        &healthy,
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(last_decision(&log_path).decision, "opened_stage_0", "{out}");
    let (code, out) = guard(
        &dev.repo_dir,
        &keys,
        &log_path,
        &prom.url,
        "test-box/3.0.0",
        &healthy,
    );
    assert_eq!(code, 0, "{out}");
    let d = last_decision(&log_path);
    assert_eq!(d.decision, "renewed", "{out}");
    assert_eq!(d.counts.unwrap().bad(), 0);
    assert_eq!(d.gate_after.map(|g| g.open_to), Some(0));
    let v = repo.rollout("test-box", &"3.0.0".parse().unwrap()).unwrap();
    assert!(!v.manifest.rollout.paused);
    let (code, text) = status(
        &dev.repo_dir,
        &keys,
        "test-box/3.0.0",
        &["--prometheus", &prom.url],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("(active)") && text.contains("gate:      open up to stage 0 until"),
        "{text}"
    );
    assert!(
        text.contains("devices:   20 switched, 3 on trial, 17 committed, 0 rolled back"),
        "{text}"
    );
    let stage0 = text.lines().find(|l| l.starts_with("0 ")).unwrap();
    let cells: Vec<&str> = stage0.split_whitespace().rev().take(5).collect();
    assert_eq!(cells, ["0", "0", "17", "3", "20"], "{stage0}");
    let (_, text) = status(
        &dev.repo_dir,
        &keys,
        "other-box/5.0.0",
        &["--prometheus", &prom.url],
    );
    assert!(
        text.contains("(paused)") && text.contains("3 rolled back"),
        "{text}"
    );

    // All 20 canaries committed: stage 1 opens, with a gate of 3 s.
    for i in 0..DEVICES {
        farm.set(i, textfile("test-box", "3.0.0", 0, Outcome::Committed));
    }
    prom.wait_for("test-box", "3.0.0", (20, 20, 0)).await;
    let (code, out) = guard(
        &dev.repo_dir,
        &keys,
        &log_path,
        &prom.url,
        "test-box/3.0.0",
        &["--min-committed", "20", "--gate-ttl", "3s"],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(last_decision(&log_path).decision, "opened_stage_1", "{out}");
    let gate = repo
        .rollout("test-box", &"3.0.0".parse().unwrap())
        .unwrap()
        .gate
        .unwrap();
    assert_eq!(gate.open_to, 1);

    // Prometheus stops: the guard signs nothing and says so (exit 3, logged).
    prom.stop();
    let signed = targets_version(&dev.repo_dir);
    let (code, out) = guard(
        &dev.repo_dir,
        &keys,
        &log_path,
        &prom.url,
        "test-box/3.0.0",
        &healthy,
    );
    assert_eq!(code, 3, "{out}");
    let d = last_decision(&log_path);
    assert_eq!(d.decision, "could_not_query");
    assert!(d.error.is_some() && d.counts.is_none(), "{d:?}");
    assert_eq!(targets_version(&dev.repo_dir), signed, "no renewal signed");
    let (code, text) = status(
        &dev.repo_dir,
        &keys,
        "test-box/3.0.0",
        &["--prometheus", &prom.url],
    );
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("Prometheus could not be queried"), "{text}");
    let (code, text) = status(&dev.repo_dir, &keys, "test-box/3.0.0", &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("not known without --prometheus"), "{text}");

    // Once the gate expired, the device (stage 1) does not enter 3.0.0.
    let wait = gate.expires.as_second() + 1 - jiff::Timestamp::now().as_second();
    if wait > 0 {
        tokio::time::sleep(Duration::from_secs(wait as u64)).await;
    }
    let mut d = dev.spawn(rig.addr(), &[]);
    let frozen = format!(
        "rollout gate expired at {} (frozen at stage 1)",
        gate.expires
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let (_, out, _) = patchctl(rig.addr(), &["status"]).await;
        if out.contains(&frozen) {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "status never said {frozen:?}:\n{out}\n{}",
            tail(&dev.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.contains("3.0.0"), "{status}");
    println!("{status}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = dev.audit_events();
    assert!(
        !events.iter().any(|e| e == "staging" || e == "switching"),
        "a frozen rollout was entered: {events:?}"
    );

    // The control: a gate that allows stage 1 lets the same device in at its next check.
    let until = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    repo.set_gate(
        "test-box",
        &"3.0.0".parse().unwrap(),
        RolloutGate {
            open_to: 1,
            expires: jiff::Timestamp::from_second(until.as_second()).unwrap(),
        },
    )
    .unwrap();
    let (code, out, err) = patchctl(rig.addr(), &["check"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let e = wait_until(
        &mut d,
        &dev,
        Duration::from_secs(30),
        "staged 3.0.0",
        |dev| dev.audit_events().iter().any(|e| e == "staged"),
    )
    .await;
    assert!(
        dev.audit_events().iter().any(|e| e == "staged"),
        "{e:?}\n{}",
        tail(&dev.log(), 30)
    );
    d.kill();
    println!("took {:?}", started.elapsed());
}
