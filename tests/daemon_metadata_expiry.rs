//! TUF freeze-attack protection at switch time, against a real `patchd run` (private bus,
//! image slots, a repository published by `patchpub`'s `Repo` with a timestamp and
//! snapshot valid for seconds): the device stages 2.0.0, the repository then serves
//! nothing new, the timestamp expires, and the device does not switch although nothing
//! else holds it back (its approval arrives after the expiry) — status, `list` and the
//! audit log (once) say why — and it switches once the repository answers with fresh
//! metadata.

mod process;

use std::time::Duration;

use patchd::publish::{Expiries, Repo};
use process::*;

/// 2.0.0 (security, high) needs an admin's approval: it stages and then waits.
const APPROVAL: &str = "[[policy.urgency]]\nkind = \"security\"\naction = \"approval\"\n";

fn count(dev: &Device, event: &str) -> usize {
    dev.audit_events().iter().filter(|e| *e == event).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_metadata_stops_the_switch_until_a_check_renews_it() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let dev = rig.device(&DeviceSpec {
        policy: APPROVAL.into(),
        ..DeviceSpec::default()
    });
    let keys = rig.top.path().join("keys");
    let short = Expiries {
        timestamp: jiff::SignedDuration::from_secs(10),
        snapshot: jiff::SignedDuration::from_secs(10),
        ..Expiries::default()
    };
    let repo = Repo::open(&dev.repo_dir, &keys)
        .unwrap()
        .with_expiries(short);
    repo.refresh().unwrap();
    let report = repo.refresh_if_expiring(Duration::ZERO, false).unwrap();
    assert!(report.resigned.is_empty(), "{report:?}");
    let expires = report
        .expires
        .iter()
        .filter(|(role, _)| role == "timestamp" || role == "snapshot")
        .map(|(_, t)| *t)
        .min()
        .unwrap();

    let mut d = dev.spawn(rig.addr(), &[]);
    let e = wait_until(
        &mut d,
        &dev,
        Duration::from_secs(60),
        "staged 2.0.0",
        |dev| count(dev, "staged") == 1,
    )
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}");
    assert!(
        jiff::Timestamp::now() < expires,
        "staged only after the metadata expired; the test machine is too slow"
    );
    let (_, out, _) = patchctl(rig.addr(), &["status"]).await;
    assert!(out.contains("patchctl approve 2.0.0"), "{out}");

    // The repository serves nothing new: its timestamp expires.
    let wait = expires.as_second() + 1 - jiff::Timestamp::now().as_second();
    if wait > 0 {
        tokio::time::sleep(Duration::from_secs(wait as u64)).await;
    }
    // Approval was all that held 2.0.0 back; now the expired metadata does.
    let (code, out, err) = patchctl(rig.addr(), &["approve", "2.0.0"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let e = wait_until(
        &mut d,
        &dev,
        Duration::from_secs(30),
        "metadata_expired",
        |dev| count(dev, "metadata_expired") == 1,
    )
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}");
    let said = format!("the repository's signed metadata expired at {expires}");
    let (_, status, _) = patchctl(rig.addr(), &["status"]).await;
    assert!(status.contains(&said), "{status}");
    assert!(
        status.contains("waiting for a check to renew it"),
        "{status}"
    );
    let (code, json, _) = patchctl(rig.addr(), &["--json", "status"]).await;
    assert_eq!(code, 0, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["next"]["kind"], "stale", "{json}");
    let (_, list, _) = patchctl(rig.addr(), &["list"]).await;
    assert!(list.contains("Waiting:") && list.contains(&said), "{list}");

    // A check against the stale repository fails (expired timestamp): still no switch,
    // and the wait is not audited again.
    let (code, out, err) = patchctl(rig.addr(), &["check"]).await;
    assert_ne!(code, 0, "{out}{err}");
    assert!(format!("{out}{err}").contains("expired"), "{out}{err}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count(&dev, "switching"), 0, "{:?}", dev.audit_events());
    assert_eq!(
        count(&dev, "metadata_expired"),
        1,
        "{:?}",
        dev.audit_events()
    );
    assert_eq!(dev.state_kind(), "staged");

    // The repository answers again with fresh metadata: the next check renews it and the
    // device switches.
    Repo::open(&dev.repo_dir, &keys).unwrap().refresh().unwrap();
    let (code, out, err) = patchctl(rig.addr(), &["check"]).await;
    assert_eq!(code, 0, "{out}{err}\n{}", tail(&dev.log(), 30));
    let e = wait_until(&mut d, &dev, Duration::from_secs(30), "switching", |dev| {
        count(dev, "switching") == 1
    })
    .await;
    assert!(matches!(e, Ended::Reached | Ended::Exited(_)), "{e:?}");
    assert_eq!(count(&dev, "switching"), 1, "{:?}", dev.audit_events());
    drop(d);
}
