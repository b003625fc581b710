//! `patchd run` with `[source] kind = "apt"` on a private bus, against the real apt and
//! a signed local archive: the patch set shows in `patchctl check`, `list` (with the
//! per-package table of `--verbose`) and `status` with its kind and severity; a patchd
//! hold keeps it from being staged and switched, and releasing the hold lets the engine
//! go on (to the staging step, which says plainly that it is not built yet); a tampered
//! Release fails the check in status and the audit log, and nothing is offered.

mod apt_fixture;
mod process;

use std::time::Duration;

use apt_fixture::{Archive, Entry, Signing, World};
use patchd::engine::statefile::{StateDoc, StateFile};
use process::*;

fn archives(sec: Signing) -> Vec<Archive> {
    vec![
        Archive {
            dir: "security",
            origin: "TestOS",
            label: "TestOS-Security",
            suite: "stable-security",
            signing: sec,
            packages: vec![
                (
                    "libfoo",
                    vec![
                        Entry("1.0-2", "high", "Fix CVE-2026-1111."),
                        Entry("1.0-1", "low", "Initial release."),
                    ],
                ),
                (
                    "heldpkg",
                    vec![
                        Entry("2.0-2", "emergency", "Fix CVE-2026-7777."),
                        Entry("2.0-1", "low", "Initial release."),
                    ],
                ),
            ],
        },
        Archive {
            dir: "updates",
            origin: "TestOS",
            label: "TestOS",
            suite: "stable-updates",
            signing: Signing::Good,
            packages: vec![(
                "bar",
                vec![
                    Entry("1.0-2", "low", "Fix a crash."),
                    Entry("1.0-1", "low", "Initial release."),
                ],
            )],
        },
    ]
}

/// A device whose source is the apt tree at `/srv/apt` (inside its root).
async fn start(sec: Signing, hold: bool) -> Option<(Rig, Device, Daemon)> {
    if let Some(t) = apt_fixture::missing_tool() {
        println!("skipped: {t} is not installed");
        return None;
    }
    let rig = Rig::start().await?;
    let extra = "[source]\nkind = \"apt\"\n\n[source.apt]\nroot = \"/srv/apt\"\n\
                 security_origins = [\"label=TestOS-Security\"]\n\
                 bugfix_origins = [\"suite=stable-updates\"]\n";
    let dev = rig.device(&DeviceSpec {
        extra: extra.into(),
        ..DeviceSpec::default()
    });
    let world = World::new(
        &rig.top.path().join("archive"),
        &dev.paths.resolve("/srv/apt"),
    );
    for a in archives(sec) {
        world.archive(&a);
    }
    world.installed(&[
        ("libfoo", "1.0-1", false),
        ("heldpkg", "2.0-1", true),
        ("bar", "1.0-1", false),
    ]);
    if hold {
        let mut doc = StateDoc::default();
        doc.holds.push(patchd::policy::Hold {
            reason: "change freeze".into(),
            by: "uid:0".into(),
            created: jiff::Timestamp::now(),
            until: None,
            max_version: None,
        });
        StateFile::new(&dev.paths.state_dir()).save(&doc).unwrap();
    }
    let d = dev.spawn(rig.addr(), &[]);
    for _ in 0..200 {
        if patchctl(rig.addr(), &["status"]).await.0 == 0 {
            return Some((rig, dev, d));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("daemon never answered\n{}", dev.log());
}

fn audit_text(dev: &Device) -> String {
    std::fs::read_to_string(dev.audit_path()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_patch_set_is_listed_held_and_then_handed_to_staging() {
    let Some((rig, dev, mut d)) = start(Signing::Good, true).await else {
        return;
    };
    let (code, out, err) = patchctl(rig.addr(), &["check"]).await;
    assert_eq!(code, 0, "{out}{err}\n{}", dev.log());
    assert!(out.contains("Waiting:"), "{out}");
    assert!(
        out.contains("2026-11-28 patch set: 2 packages (1 held by apt-mark)"),
        "{out}"
    );
    assert!(
        out.contains("change freeze"),
        "the hold is the reason: {out}"
    );

    let (code, json, err) = patchctl(rig.addr(), &["--json", "list"]).await;
    assert_eq!(code, 0, "{json}{err}");
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    let set = &list[0];
    let version = set["version"].as_str().unwrap().to_string();
    assert!(version.starts_with("2026.11.28+"), "{version}");
    assert_eq!(set["kind"], "security");
    assert_eq!(
        set["severity"], "high",
        "libfoo's urgency; heldpkg's emergency not counted"
    );
    assert_eq!(set["cves"], serde_json::json!(["CVE-2026-1111"]));
    assert_eq!(set["group"], "waiting");
    assert_eq!(set["packages"].as_array().unwrap().len(), 3);

    let (code, out, _) = patchctl(rig.addr(), &["list", "--verbose"]).await;
    assert_eq!(code, 0);
    assert!(out.contains(&format!("Packages of {version}:")), "{out}");
    let row = |name: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}: {out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("libfoo"),
        [
            "libfoo",
            "1.0-1",
            "1.0-2",
            "TestOS-Security/stable-security",
            "security",
            "high",
            "CVE-2026-1111",
            "included"
        ]
    );
    assert_eq!(row("bar")[3..6], ["TestOS/stable-updates", "bugfix", "low"]);
    assert_eq!(row("heldpkg")[7..], ["held", "(apt-mark)"]);

    let (_, status, _) = patchctl(rig.addr(), &["status"]).await;
    assert!(
        status.contains(&format!("{version} (high security, waiting)")),
        "{status}"
    );
    assert!(status.contains("Patch set:"), "{status}");
    assert!(!matches!(dev.state_kind().as_str(), "staging" | "staged"));
    assert!(
        !audit_text(&dev).contains("\"staging\""),
        "held: not staged"
    );
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_patchd"))
        .arg("--root")
        .arg(dev.paths.resolve("/"))
        .arg("--check-config")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        text.contains("apt: the system's pending upgrades"),
        "{text}"
    );
    // Image-file slots cannot hold a snapshot of the running root: named, with the fix.
    assert!(
        text.contains("[slots] backend is not \"btrfs\"")
            && text.contains("fix: set [slots] backend = \"btrfs\""),
        "{text}"
    );
    assert!(!check.status.success(), "{text}");

    // Without the hold the engine takes the patch set to staging at once; with image-file
    // slots (no btrfs snapshot of the running root) it fails plainly and changes nothing.
    let (code, out, err) = patchctl(rig.addr(), &["release-hold"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = patchctl(rig.addr(), &["check"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let e = wait_until(
        &mut d,
        &dev,
        Duration::from_secs(30),
        "staging_failed",
        |dev| audit_text(dev).contains("staging_failed"),
    )
    .await;
    assert!(matches!(e, Ended::Reached), "{}", dev.log());
    assert!(
        audit_text(&dev).contains("needs [slots] backend = \\\"btrfs\\\""),
        "{}",
        audit_text(&dev)
    );
    d.stop(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_release_fails_the_check_and_offers_nothing() {
    let Some((rig, dev, d)) = start(Signing::Tampered, false).await else {
        return;
    };
    let (code, out, err) = patchctl(rig.addr(), &["check"]).await;
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("signatures were invalid"),
        "{out}{err}"
    );
    let (_, status, _) = patchctl(rig.addr(), &["status"]).await;
    assert!(
        status.contains("FAILED: apt scan: apt-get update:"),
        "{status}"
    );
    assert!(status.contains("signatures were invalid"), "{status}");
    let (_, list, _) = patchctl(rig.addr(), &["list"]).await;
    assert!(list.contains("No updates available."), "{list}");
    let audit = audit_text(&dev);
    assert!(
        audit.contains("check_failed") && audit.contains("signatures were invalid"),
        "{audit}"
    );
    d.stop(Duration::from_secs(10));
}
