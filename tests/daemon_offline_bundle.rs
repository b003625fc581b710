//! Offline bundles against the real binaries: a `patchpub bundle` (tar file or
//! directory) reaches a `patchd run` with no repository configured through `patchctl
//! install --bundle`, which opens it and passes a file descriptor; the daemon verifies
//! it with the device's trusted root, offers only what it carries, and stages from it.
//! Damaged and expired bundles are refused with nothing on the device changed (state
//! file, slots, bootloader, audit records before the refusal), the refusal audited;
//! `[offline] allow_expired = true` accepts an expired one, audited.

mod process;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use patchd::publish::{AddRelease, ImageInput, Repo};
use process::*;

/// A device that runs 1.0.0 and has no repository: bundles are its only source.
async fn offline_device(extra: &str) -> Option<(Rig, Device)> {
    let rig = Rig::start().await?;
    let dev = rig.device(&DeviceSpec {
        policy: NO_WINDOW.into(),
        extra: extra.into(),
        ..DeviceSpec::default()
    });
    let cfg = dev.paths.resolve("/etc/patchd/patchd.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("dir = \"/srv-repo\"\n"), "{text}");
    std::fs::write(&cfg, text.replace("dir = \"/srv-repo\"\n", "")).unwrap();
    Some((rig, dev))
}

fn patchpub(dev: &Device, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_patchpub"))
        .arg("--repo")
        .arg(&dev.repo_dir)
        .arg("--keys")
        .arg(dev.top.join("keys"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "patchpub {args:?}: {text}");
    text
}

/// `patchpub bundle test-box/VERSION --out OUT` (OUT ending in .tar: a tar file).
fn bundle(dev: &Device, version: &str, out: &Path, extra: &[&str]) -> PathBuf {
    let release = format!("test-box/{version}");
    let mut args = vec!["bundle", release.as_str(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let said = patchpub(dev, &args);
    assert!(said.contains("wrote the bundle of"), "{said}");
    out.to_path_buf()
}

async fn start(rig: &Rig, dev: &Device) -> Daemon {
    let mut d = dev.spawn(rig.addr(), &[]);
    let addr = rig.addr().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (code, _, _) = patchctl(&addr, &["status"]).await;
        if code == 0 {
            return d;
        }
        assert!(d.try_wait().is_none(), "patchd exited:\n{}", dev.log());
        assert!(std::time::Instant::now() < deadline, "{}", dev.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything a refused bundle must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    state: Option<Vec<u8>>,
    boot: Vec<u8>,
    slot_a: Vec<u8>,
    slot_b: Vec<u8>,
    slot_b_status: String,
}

fn snapshot(dev: &Device) -> Snapshot {
    let r = |p: &str| std::fs::read(dev.paths.resolve(p)).unwrap();
    Snapshot {
        state: std::fs::read(dev.paths.state_dir().join("state.json")).ok(),
        boot: std::fs::read(dev.boot_file()).unwrap(),
        slot_a: r("/var/lib/slots/a.img"),
        slot_b: r("/var/lib/slots/b.img"),
        slot_b_status: format!("{:?}", dev.slot_status("b")),
    }
}

fn audit_records(dev: &Device) -> Vec<patchd::audit::Record> {
    patchd::audit::AuditLog::open(dev.audit_path(), Default::default())
        .unwrap()
        .query(&Default::default())
        .unwrap()
}

/// The records after `before` ones, which must be unchanged; the chain must verify.
fn new_records(dev: &Device, before: &[patchd::audit::Record]) -> Vec<patchd::audit::Record> {
    let now = audit_records(dev);
    assert!(now.len() >= before.len());
    assert_eq!(
        format!("{:?}", &now[..before.len()]),
        format!("{before:?}"),
        "audit records changed"
    );
    let report = patchd::audit::AuditLog::open(dev.audit_path(), Default::default())
        .unwrap()
        .verify()
        .unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    now[before.len()..].to_vec()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The bundle's copy of the 2.0.0 image (its one target that is not a manifest).
fn image_file(dir: &Path) -> PathBuf {
    let images: Vec<_> = files_under(&dir.join("targets"))
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".json"))
        .collect();
    assert_eq!(images.len(), 1, "{images:?}");
    images[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_from_a_tar_file_is_staged_without_a_repository() {
    let Some((rig, dev)) = offline_device("").await else {
        return;
    };
    let tar = bundle(&dev, "2.0.0", &dev.top.join("b.tar"), &[]);
    let d = start(&rig, &dev).await;
    // What it offers, before anything is installed.
    let (code, out, err) = patchctl(rig.addr(), &["list", "--bundle", tar.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2.0.0") && out.contains("security"), "{out}");
    assert_eq!(dev.state_kind(), "none");
    let (code, out, err) = patchctl(
        rig.addr(),
        &["install", "--bundle", tar.to_str().unwrap(), "2.0.0"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}\n{}", tail(&dev.log(), 30));
    assert!(out.contains("Installed 2.0.0 into slot b"), "{out}");
    assert_eq!(dev.state_kind(), "staged");
    let b = dev.slot_status("b");
    assert_eq!(b.version.as_deref(), Some("2.0.0"));
    let slot_b = std::fs::read(dev.paths.resolve("/var/lib/slots/b.img")).unwrap();
    assert!(
        slot_b[..dev.image.len()] == dev.image[..],
        "slot b holds 2.0.0"
    );
    let ev = dev.audit_events();
    assert!(ev.contains(&"bundle_opened".to_string()), "{ev:?}");
    assert!(ev.contains(&"staged".to_string()), "{ev:?}");
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_from_a_directory_is_installed_switched_and_committed() {
    let Some((rig, dev)) = offline_device("").await else {
        return;
    };
    let dir = bundle(&dev, "2.0.0", &dev.top.join("bundle-dir"), &[]);
    let mut d = start(&rig, &dev).await;
    // A relative path: it means something only in patchctl's working directory, which
    // is not the daemon's; the daemon gets a descriptor, never the path.
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_patchctl"))
        .current_dir(&dev.top)
        .args([
            "--bus-address",
            rig.addr(),
            "install",
            "--bundle",
            "bundle-dir",
            "--now",
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| panic!("patchctl hangs; log:\n{}", tail(&dev.log(), 30)))
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("Installed 2.0.0 into slot b; rebooting into it now."),
        "{text}"
    );
    assert!(dir.is_dir());
    // --now switches and reboots: the fake systemd takes the request, patchd exits.
    let e = wait_until(&mut d, &dev, Duration::from_secs(60), "reboot", |_| false).await;
    let Ended::Exited(st) = e else { unreachable!() };
    assert!(st.success(), "{text}\n{}", dev.log());
    assert_eq!(rig.systemd.calls().len(), 1, "{text}");
    assert_eq!(dev.power_cycle().as_str(), "b");
    let mut d = dev.spawn(rig.addr(), &[]);
    let e = wait_until(&mut d, &dev, Duration::from_secs(120), "commit", |dev| {
        committed(dev, "2.0.0")
    })
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
}

/// A changed byte in an image, then in signed metadata: refused, nothing changed, the
/// refusal audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_bundles_are_refused_and_change_nothing() {
    let Some((rig, dev)) = offline_device("").await else {
        return;
    };
    let good = bundle(&dev, "2.0.0", &dev.top.join("good"), &[]);
    let _d = start(&rig, &dev).await;
    let before = snapshot(&dev);
    let records = audit_records(&dev);

    let image = dev.top.join("bad-image");
    copy_dir(&good, &image);
    let f = image_file(&image);
    let mut bytes = std::fs::read(&f).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&f, bytes).unwrap();

    let meta = dev.top.join("bad-meta");
    copy_dir(&good, &meta);
    let ts = meta.join("metadata/timestamp.json");
    let text = std::fs::read_to_string(&ts).unwrap();
    // Still valid metadata, its signed expiry moved a thousand years: the signature no
    // longer covers it.
    let at = text.find("\"expires\"").expect("expires in timestamp.json");
    let quote = at + 9 + text[at + 9..].find('"').unwrap();
    assert_eq!(&text[quote + 1..quote + 2], "2", "{text}");
    let changed = format!("{}3{}", &text[..quote + 1], &text[quote + 2..]);
    std::fs::write(&ts, changed).unwrap();

    for (dir, want) in [(&image, "hash"), (&meta, "signature")] {
        let (code, out, err) =
            patchctl(rig.addr(), &["install", "--bundle", dir.to_str().unwrap()]).await;
        assert_eq!(code, 1, "{out}{err}\n{}", tail(&dev.log(), 40));
        assert!(err.contains("offline bundle rejected"), "{err}");
        assert!(err.to_lowercase().contains(want), "{want}: {err}");
        assert_eq!(
            snapshot(&dev),
            before,
            "a refused bundle changed the device"
        );
        let new = new_records(&dev, &records);
        let last = new.last().expect("refusal audited");
        assert_eq!(last.event, "bundle_rejected", "{new:?}");
        assert!(new.iter().all(|r| r.event == "bundle_rejected"), "{new:?}");
    }
    assert_eq!(new_records(&dev, &records).len(), 2);
}

/// Expired timestamp and snapshot: refused by default, with the fix named; accepted with
/// `[offline] allow_expired = true`, each expired role audited; `patchpub bundle
/// --expires` makes a bundle that needs no policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_bundles_need_the_offline_policy() {
    let Some((rig, dev)) = offline_device("").await else {
        return;
    };
    patchpub(
        &dev,
        &[
            "--snapshot-expiry",
            "0",
            "--timestamp-expiry",
            "0",
            "refresh",
        ],
    );
    let expired = bundle(&dev, "2.0.0", &dev.top.join("expired.tar"), &[]);
    let d = start(&rig, &dev).await;
    let before = snapshot(&dev);
    let records = audit_records(&dev);
    let (code, out, err) = patchctl(
        rig.addr(),
        &["install", "--bundle", expired.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("expired"), "{err}");
    assert!(err.contains("allow_expired"), "{err}");
    assert_eq!(snapshot(&dev), before);
    let new = new_records(&dev, &records);
    assert_eq!(
        new.iter().map(|r| r.event.as_str()).collect::<Vec<_>>(),
        ["bundle_rejected"]
    );
    drop(d);

    // The same bundle with the policy on.
    let cfg = dev.paths.resolve("/etc/patchd/patchd.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("\n[offline]\nallow_expired = true\n");
    std::fs::write(&cfg, text).unwrap();
    let d = start(&rig, &dev).await;
    let (code, out, err) = patchctl(
        rig.addr(),
        &[
            "install",
            "--bundle",
            expired.to_str().unwrap(),
            "--no-wait",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}\n{}", tail(&dev.log(), 30));
    let accepted: Vec<_> = audit_records(&dev)
        .into_iter()
        .filter(|r| r.event == "bundle_expired_accepted")
        .collect();
    let roles: Vec<String> = accepted
        .iter()
        .map(|r| r.reason.split(": ").last().unwrap_or_default().to_string())
        .collect();
    assert!(
        roles.iter().any(|r| r.starts_with("timestamp v")),
        "{roles:?}"
    );
    assert!(
        roles.iter().any(|r| r.starts_with("snapshot v")),
        "{roles:?}"
    );
    // The admin's choice holds at switch time too: the release of the expired bundle is
    // staged and waits only for what the device's policy says, not as stale metadata.
    let mut d = d;
    let e = wait_until(&mut d, &dev, Duration::from_secs(60), "staged", |dev| {
        dev.audit_events().iter().any(|e| e == "staged")
    })
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}");
    let (code, json, _) = patchctl(rig.addr(), &["--json", "status"]).await;
    assert_eq!(code, 0, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_ne!(v["next"]["kind"], "stale", "{json}");
    assert!(!json.contains("signed metadata expired"), "{json}");
    let events = dev.audit_events();
    assert!(
        !events.iter().any(|e| e == "metadata_expired"),
        "{events:?}"
    );
    drop(d);

    // A bundle re-signed with its own expiry needs no policy.
    let policy = |on: bool| {
        let t = std::fs::read_to_string(&cfg).unwrap();
        let t = t.replace(
            &format!("allow_expired = {}", !on),
            &format!("allow_expired = {on}"),
        );
        std::fs::write(&cfg, t).unwrap();
    };
    policy(false);
    let fresh = dev.top.join("fresh.tar");
    let said = patchpub(
        &dev,
        &[
            "bundle",
            "test-box/2.0.0",
            "--out",
            fresh.to_str().unwrap(),
            "--expires",
            "30d",
        ],
    );
    assert!(said.contains("wrote the bundle of"), "{said}");
    let d = start(&rig, &dev).await;
    let records = audit_records(&dev);
    let (code, out, err) = patchctl(
        rig.addr(),
        &["install", "--bundle", fresh.to_str().unwrap()],
    )
    .await;
    assert!(!err.contains("rejected"), "{code} {out}{err}");
    let events: Vec<String> = new_records(&dev, &records)
        .into_iter()
        .map(|r| r.event)
        .collect();
    assert!(events.contains(&"bundle_opened".to_string()), "{events:?}");
    assert!(!events.iter().any(|e| e.contains("expired")), "{events:?}");
    drop(d);

    // The device now trusts the fresh bundle's versions: the old bundle is a rollback,
    // refused even with the policy on.
    policy(true);
    let _d = start(&rig, &dev).await;
    let (code, out, err) = patchctl(
        rig.addr(),
        &["install", "--bundle", expired.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("rollback"), "{err}");
}

/// A bundle whose metadata lists 3.0.0 but carries only its manifest: 3.0.0 is not
/// offered, with the reason; asking for it names what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_images_are_missing_is_not_offered() {
    let Some((rig, dev)) = offline_device("").await else {
        return;
    };
    let img3 = dev.top.join("3.0.0.img");
    std::fs::write(&img3, image("3.0.0", dev.image.len())).unwrap();
    let repo = Repo::open(&dev.repo_dir, dev.top.join("keys")).unwrap();
    let mut rel = AddRelease::new("test-box", "3.0.0".parse().unwrap(), img3.clone());
    rel.images = vec![ImageInput::rootfs(&img3)];
    rel.security_version = 3;
    repo.add_release(&rel).unwrap();
    let dir = bundle(&dev, "3.0.0", &dev.top.join("b3"), &[]);
    for f in files_under(&dir.join("targets")) {
        if !f.to_string_lossy().ends_with("manifest.json") {
            std::fs::remove_file(f).unwrap();
        }
    }
    let _d = start(&rig, &dev).await;
    let before = snapshot(&dev);
    let (code, out, err) = patchctl(
        rig.addr(),
        &["list", "--json", "--bundle", dir.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["available"], serde_json::json!([]), "{v}");
    let mut missing: Vec<&str> = v["not_carried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["version"].as_str().unwrap())
        .collect();
    missing.sort_unstable();
    assert_eq!(missing, ["2.0.0", "3.0.0"], "{v}");
    let (code, out, err) = patchctl(
        rig.addr(),
        &["install", "--bundle", dir.to_str().unwrap(), "3.0.0"],
    )
    .await;
    assert_eq!(code, 6, "{out}{err}");
    assert!(err.contains("3.0.0 is not carried by the bundle"), "{err}");
    assert!(
        err.contains("does not carry releases/test-box/3.0.0/"),
        "{err}"
    );
    let (code, out, err) =
        patchctl(rig.addr(), &["install", "--bundle", dir.to_str().unwrap()]).await;
    assert_eq!(code, 6, "{out}{err}");
    assert!(err.contains("carries no release"), "{err}");
    assert_eq!(snapshot(&dev), before);
    let opened: Vec<_> = audit_records(&dev)
        .into_iter()
        .filter(|r| r.event == "bundle_opened")
        .collect();
    assert_eq!(opened.len(), 3, "{}", dev.log());
    assert!(opened
        .iter()
        .all(|r| r.reason.contains("3.0.0 not offered")));
    assert!(
        opened[0].reason.contains("3.0.0 not offered"),
        "{:?}",
        opened[0]
    );
}

/// The method takes the bundle only as a descriptor: no path argument exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundle_method_takes_a_descriptor_not_a_path() {
    let Some((rig, dev)) = offline_device("").await else {
        return;
    };
    let _d = start(&rig, &dev).await;
    let conn = zbus::connection::Builder::address(rig.addr())
        .unwrap()
        .build()
        .await
        .unwrap();
    let p = zbus::fdo::IntrospectableProxy::builder(&conn)
        .destination("org.patchd.Patchd1")
        .unwrap()
        .path("/org/patchd/Patchd1")
        .unwrap()
        .build()
        .await
        .unwrap();
    let xml = p.introspect().await.unwrap();
    let method = xml
        .split("<method name=\"InstallBundle\">")
        .nth(1)
        .and_then(|m| m.split("</method>").next())
        .expect("InstallBundle exported");
    let ins: Vec<&str> = method
        .lines()
        .filter(|l| l.contains("<arg ") && !l.contains("direction=\"out\""))
        .collect();
    assert_eq!(ins.len(), 3, "{method}");
    assert!(
        ins[0].contains("name=\"bundle\"") && ins[0].contains("type=\"h\""),
        "{method}"
    );
    assert!(ins[1].contains("name=\"release\""), "{method}");
    assert!(!method.contains("path"), "{method}");

    // `/dev/stdin` names patchctl's standard input, a pipe here; the daemon's own is
    // /dev/null. Only a descriptor opened by patchctl can carry the bundle.
    let tar = bundle(&dev, "2.0.0", &dev.top.join("b.tar"), &[]);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_patchctl"))
        .args([
            "--bus-address",
            rig.addr(),
            "list",
            "--bundle",
            "/dev/stdin",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let bytes = std::fs::read(&tar).unwrap();
    let feed = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _ = stdin.write_all(&bytes).await;
    });
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("patchctl ends")
        .unwrap();
    feed.await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("2.0.0"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A restart in the middle of staging from a bundle, on a device without a repository:
/// the staging is abandoned at reconciliation (the bundle is not read again by itself),
/// not left `staging` for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_staging_cut_by_a_restart_is_abandoned() {
    use patchd::engine::statefile::{Pending, StateFile};
    use patchd::engine::Lifecycle;
    let Some((rig, dev)) = offline_device("").await else {
        return;
    };
    let tar = bundle(&dev, "2.0.0", &dev.top.join("b.tar"), &[]);
    let d = start(&rig, &dev).await;
    let (code, out, err) =
        patchctl(rig.addr(), &["install", "--bundle", tar.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(d.stop(Duration::from_secs(30)).is_some_and(|s| s.success()));
    // As a power cut during the write leaves it: staging, the write pending.
    let file = StateFile::new(&dev.paths.state_dir());
    let mut doc = dev.state().unwrap().unwrap();
    let Lifecycle::Staged { release, slot } = doc.lifecycle.clone() else {
        panic!("not staged: {:?}", doc.lifecycle);
    };
    doc.pending = Some(Pending::WriteSlot {
        slot: slot.clone(),
        version: release.version.clone(),
    });
    doc.lifecycle = Lifecycle::Staging { release, slot };
    file.save(&doc).unwrap();
    let mut b = dev.slot_status("b");
    b.state = patchd::slot::SlotState::Incomplete;
    patchd::slot::StatusStore::new(&dev.paths.state_dir(), b.slot.clone())
        .save(&b)
        .unwrap();

    let mut d = dev.spawn(rig.addr(), &[]);
    let e = wait_until(
        &mut d,
        &dev,
        Duration::from_secs(60),
        "staging abandoned",
        |dev| dev.state_kind() == "update_available",
    )
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    let failed = audit_records(&dev)
        .into_iter()
        .rfind(|r| r.event == "reconcile_staging_interrupted")
        .unwrap_or_else(|| panic!("interruption audited: {}", dev.log()));
    assert!(failed.reason.contains("cannot resume"), "{failed:?}");
    assert_ne!(
        dev.slot_status("b").state,
        patchd::slot::SlotState::Verified,
        "an abandoned slot must not stay bootable-looking"
    );
}
