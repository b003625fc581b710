//! Status, `list`, `retry` and `approve` against a real `patchd run` (private bus, image
//! slots, a signed repository in a directory): a release that failed here is listed as
//! blocked until `patchctl retry` lifts it (audited), the staged release's `Next:` line
//! names its window in the window's zone and UTC, a failed check shows in status with
//! its time and error, and a good check clears both.

mod process;

use std::time::Duration;

use patchd::engine::statefile::{StateDoc, StateFile};
use process::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_next_line_and_a_failed_check_on_the_running_daemon() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let dev = rig.device(&DeviceSpec {
        policy: NO_WINDOW.into(),
        ..DeviceSpec::default()
    });
    // The device remembers that 2.0.0 failed here.
    let mut doc = StateDoc::default();
    doc.block("2.0.0", "health check failed", jiff::Timestamp::now());
    StateFile::new(&dev.paths.state_dir()).save(&doc).unwrap();
    let mut d = dev.spawn(rig.addr(), &[]);
    let mut up = false;
    for _ in 0..200 {
        if patchctl(rig.addr(), &["status"]).await.0 == 0 {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "daemon never answered\n{}", dev.log());

    let (code, out, err) = patchctl(rig.addr(), &["check"]).await;
    assert_eq!(code, 0, "{out}{err}\n{}", dev.log());
    assert!(out.contains("No updates available."), "{out}");
    assert!(out.contains("Not applicable:"), "{out}");
    assert!(
        out.contains("blocked: failed on this device before: health check failed"),
        "{out}"
    );
    let (code, out, err) = patchctl(rig.addr(), &["approve", "2.0.0"]).await;
    assert_eq!(code, 5, "a security release needs no approval: {out}{err}");

    let (code, out, err) = patchctl(
        rig.addr(),
        &["retry", "2.0.0", "--reason", "fixed the unit"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = patchctl(rig.addr(), &["check"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let e = wait_until(&mut d, &dev, Duration::from_secs(60), "staged", |dev| {
        dev.state_kind() == "staged"
    })
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    assert!(
        dev.audit_events().iter().any(|e| e == "retry_allowed"),
        "{:?}",
        dev.audit_events()
    );

    // The window is Mondays 03:00–03:01 in Kiritimati (UTC+14): Sunday 13:00 UTC. (The
    // state file is written before the status is published: ask until it says so.)
    let mut out = String::new();
    for _ in 0..100 {
        let (code, o, err) = patchctl(rig.addr(), &["status"]).await;
        assert_eq!(code, 0, "{o}{err}");
        out = o;
        if out.starts_with("State:          staged\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let next = out
        .lines()
        .find_map(|l| l.strip_prefix("Next:"))
        .unwrap_or_else(|| panic!("no Next line\n{out}"))
        .trim();
    assert!(
        next.starts_with(
            "2.0.0 staged; switches and reboots in the window Mon 03:00–03:01 Pacific/Kiritimati \
             (Sun 13:00–13:01 UTC), in "
        ),
        "{out}"
    );
    assert!(!out.contains("Last error"), "{out}");
    assert!(out.contains(": 1 release found"), "{out}");

    // The repository goes away: the failed check shows in status with its time.
    let away = dev.repo_dir.with_extension("away");
    std::fs::rename(&dev.repo_dir, &away).unwrap();
    let before = jiff::Timestamp::now();
    let (code, out, err) = patchctl(rig.addr(), &["check"]).await;
    assert_ne!(code, 0, "check without a repository: {out}{err}");
    let (_, out, _) = patchctl(rig.addr(), &["status"]).await;
    let line = out
        .lines()
        .find(|l| l.starts_with("Last check:"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("just now: FAILED: "), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("Last error:") && l.contains("check failed: ")),
        "{out}"
    );
    let (_, js, _) = patchctl(rig.addr(), &["--json", "status"]).await;
    let v: serde_json::Value = serde_json::from_str(&js).unwrap();
    let at: jiff::Timestamp = v["last_check_outcome"]["at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        at.as_second() >= before.as_second(),
        "last_check is the failed check's time: {js}"
    );
    assert_eq!(v["last_check_outcome"]["ok"], false, "{js}");
    assert!(
        dev.audit_events().iter().any(|e| e == "check_failed"),
        "{:?}",
        dev.audit_events()
    );

    // Back again: a good check clears the failure and the error.
    std::fs::rename(&away, &dev.repo_dir).unwrap();
    let (code, out, err) = patchctl(rig.addr(), &["check"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = patchctl(rig.addr(), &["status"]).await;
    assert!(!out.contains("FAILED"), "{out}");
    assert!(!out.contains("Last error"), "stale error: {out}");
    d.kill();
}
