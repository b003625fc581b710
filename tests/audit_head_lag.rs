//! A forged, well-chained record appended to the audit log of a real device is named,
//! never verified as intact: `patchd audit verify` (the binary, on the real files) exits
//! 8; exactly one lagging record passes only with `--allow-power-cut-lag` (and is still
//! named); `patchd run` started on such a log records `audit_head_lag` with the extra
//! records' hashes, `patchctl status` warns, and the inventory carries the head hash.
//! A record whose time goes backwards is flagged.

mod process;

use std::process::Command;
use std::time::Duration;

use process::*;
use sha2::Digest;

fn verify(dev: &Device, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_patchd"))
        .arg("--root")
        .arg(dev.paths.resolve("/"))
        .args(["audit", "verify"])
        .args(extra)
        .output()
        .expect("run patchd audit verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn sha(line: &str) -> String {
    hex::encode(sha2::Sha256::digest(line.as_bytes()))
}

/// Append a record chained to the last line, as anyone able to write the file could.
fn forge(dev: &Device, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let path = dev.audit_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let last = text.lines().last().expect("a record to chain to");
    let mut v: serde_json::Value = serde_json::from_str(last).unwrap();
    v["seq"] = (v["seq"].as_u64().unwrap() + 1).into();
    v["prev"] = sha(last).into();
    v["event"] = "committed".into();
    v["reason"] = "forged".into();
    edit(&mut v);
    let line = serde_json::to_string(&v).unwrap();
    std::fs::write(&path, format!("{text}{line}\n")).unwrap();
    sha(&line)
}

async fn start(dev: &Device, bus: &str) -> Daemon {
    let d = dev.spawn(bus, &[]);
    for _ in 0..200 {
        if patchctl(bus, &["status"]).await.0 == 0 {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("daemon never answered\n{}", dev.log());
}

const NO_WINDOW: &str = "windows = [\"Mon 03:00-03:01\"]\nstage_outside_windows = false\n\
                         time_zone = \"Pacific/Kiritimati\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_records_are_named_and_the_daemon_records_the_lag() {
    let Some(bus) = SessionBus::start() else {
        return;
    };
    let systemd = FakeSystemd::default();
    let _sd = systemd.serve(&bus.address).await;
    let top = tempfile::tempdir().unwrap();
    let dev = Device::new(
        top.path(),
        &DeviceSpec {
            policy: NO_WINDOW.into(),
            ..DeviceSpec::default()
        },
    );
    // A genuine log: the daemon's own records.
    let d = start(&dev, &bus.address).await;
    let (code, out, err) = patchctl(&bus.address, &["check"]).await;
    assert_eq!(code, 0, "{out}{err}");
    d.stop(Duration::from_secs(10));
    let (code, out) = verify(&dev, &[]);
    assert_eq!(code, 0, "genuine log: {out}");

    // One forged record with a correct prev: named, exit 8.
    let h1 = forge(&dev, |_| {});
    let (code, out) = verify(&dev, &[]);
    assert_eq!(code, 8, "one forged record verified as intact: {out}");
    assert!(out.contains(&h1), "the forged record is not named: {out}");
    // The power-cut allowance accepts exactly one, and still names it.
    let (code, out) = verify(&dev, &["--allow-power-cut-lag"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&h1), "{out}");

    // A second one (and going back in time): no power cut leaves two.
    let h2 = forge(&dev, |v| v["time"] = "2001-01-01T00:00:00Z".into());
    let (code, out) = verify(&dev, &["--allow-power-cut-lag"]);
    assert_eq!(code, 8, "two forged records accepted: {out}");
    assert!(out.contains(&h1) && out.contains(&h2), "{out}");
    assert!(
        out.contains("before the previous record's"),
        "time going backwards not flagged: {out}"
    );

    // The daemon started on this log documents the lag in the chain and warns.
    let d = start(&dev, &bus.address).await;
    let (code, status, err) = patchctl(&bus.address, &["status"]).await;
    assert_eq!(code, 0, "{status}{err}");
    assert!(
        status.contains("WARNING") && status.contains("head"),
        "no status warning: {status}"
    );
    let (code, inv, err) = patchctl(&bus.address, &["--json", "inventory"]).await;
    assert_eq!(code, 0, "{inv}{err}");
    d.stop(Duration::from_secs(10));
    let text = std::fs::read_to_string(dev.audit_path()).unwrap();
    let lag = text
        .lines()
        .find(|l| l.contains("\"audit_head_lag\""))
        .unwrap_or_else(|| panic!("no audit_head_lag record:\n{text}"));
    assert!(lag.contains(&h1) && lag.contains(&h2), "{lag}");
    let inv: serde_json::Value = serde_json::from_str(&inv).unwrap();
    let last = text.lines().last().unwrap();
    assert_eq!(
        inv["audit_head"]["hash"],
        serde_json::Value::from(sha(last)),
        "inventory head hash: {inv}"
    );
    assert_eq!(inv["audit_head"]["lag_at_start"], 2, "{inv}");
    // The forged records stay named after the head caught up.
    let (code, out) = verify(&dev, &["--allow-power-cut-lag"]);
    assert_eq!(code, 8, "{out}");
    assert!(out.contains(&h1) && out.contains(&h2), "{out}");
}

#[test]
fn journal_unavailable_is_not_success() {
    let top = tempfile::tempdir().unwrap();
    let dev = Device::new(top.path(), &DeviceSpec::default());
    // An empty export: nothing of patchd's in it, so nothing was cross-checked.
    let empty = top.path().join("journal.json");
    std::fs::write(&empty, "").unwrap();
    let (code, out) = verify(
        &dev,
        &["--journal", "--journal-json", empty.to_str().unwrap()],
    );
    assert_eq!(code, 11, "{out}");
}
