//! Releases published through a delegated targets role (`patchpub delegate`, then
//! `patchpub add --role`), against the binaries: a real `patchd run` on a private bus
//! finds and stages a release its product's team signed into its own role; a release a
//! team's key signs outside the paths delegated to it is refused, with the reason in the
//! daemon's log, and never offered or staged. `patchpub` itself refuses to sign outside
//! a role's paths.

mod process;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use patchd::publish::keystore;
use patchd::trust::metadata::{
    hashes_of, parse_signed, sign_envelope, Envelope, MetaFile, Root, Snapshot, Targets,
    TimestampMeta,
};
use patchd::trust::SigningKey;
use process::*;

fn patchpub(dev: &Device, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_patchpub"))
        .arg("--repo")
        .arg(&dev.repo_dir)
        .arg("--keys")
        .arg(dev.top.join("keys"))
        .args(args)
        .env_remove("PATCHPUB_REPO")
        .env_remove("PATCHPUB_KEYS")
        .output()
        .expect("run patchpub");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Publish `version` of test-box with a distinct image, through `role` (or top-level).
fn add(dev: &Device, version: &str, role: Option<(&str, &Path)>) -> (bool, String) {
    let img = dev.top.join(format!("{version}.img"));
    std::fs::write(&img, image(version, dev.image.len())).unwrap();
    let img = img.to_string_lossy().into_owned();
    let mut args = vec![
        "add",
        "--product",
        "test-box",
        "--version",
        version,
        "--image",
        &img,
        "--summary",
        "team release",
        "--kind",
        "security",
        "--severity",
        "high",
        "--security-version",
        "2",
        "--no-chunk-index",
    ];
    let keys;
    if let Some((name, dir)) = role {
        keys = dir.to_string_lossy().into_owned();
        args.extend(["--role", name, "--role-keys", &keys]);
    }
    patchpub(dev, &args)
}

fn device(rig: &Rig) -> Device {
    rig.device(&DeviceSpec {
        // Staging runs at once; switching waits for a window that never comes.
        policy: NO_WINDOW.into(),
        ..DeviceSpec::default()
    })
}

async fn staged(rig: &Rig, dev: &Device, version: &str) -> String {
    let mut d = dev.spawn(rig.addr(), &[]);
    let e = wait_until(
        &mut d,
        dev,
        Duration::from_secs(60),
        "slot b verified",
        |dev| {
            let b = dev.slot_status("b");
            // Verified: written in full and checked against the signed manifest.
            b.version.as_deref() == Some(version) && b.state == patchd::slot::SlotState::Verified
        },
    )
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    let (code, list, err) = patchctl(rig.addr(), &["--json", "list"]).await;
    assert_eq!(code, 0, "{err}");
    d.stop(Duration::from_secs(10));
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_published_through_a_delegation_is_found_and_staged() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let dev = device(&rig);
    let team = dev.top.join("team-keys");
    let team_s = team.to_string_lossy().into_owned();
    let (ok, out) = patchpub(
        &dev,
        &[
            "delegate",
            "box-team",
            "--product",
            "test-box",
            "--role-keys",
            &team_s,
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("releases/test-box/*/*"), "{out}");
    // The team's key alone signs its role: the targets keys are not needed for `add`.
    let (ok, out) = add(&dev, "3.0.0", Some(("box-team", &team)));
    assert!(ok, "{out}");
    let (ok, out) = patchpub(&dev, &["verify"]);
    assert!(ok && out.contains("test-box/3.0.0"), "{out}");

    let list = staged(&rig, &dev, "3.0.0").await;
    assert!(list.contains("\"3.0.0\""), "{list}");
    let b = dev.slot_status("b");
    assert_eq!(
        b.sha256.as_deref(),
        Some(
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(image(
                "3.0.0",
                dev.image.len()
            )))
            .as_str()
        ),
        "slot b does not hold the delegated release's image"
    );
}

#[test]
fn patchpub_refuses_to_sign_outside_a_roles_paths() {
    let top = tempfile::tempdir().unwrap();
    let dev = Device::new(top.path(), &DeviceSpec::default());
    let team = dev.top.join("team-keys");
    let team_s = team.to_string_lossy().into_owned();
    let (ok, out) = patchpub(
        &dev,
        &[
            "delegate",
            "other-team",
            "--product",
            "other-box",
            "--role-keys",
            &team_s,
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = add(&dev, "3.0.0", Some(("other-team", &team)));
    assert!(!ok, "signed outside its paths: {out}");
    assert!(
        out.contains("role \"other-team\" is delegated only releases/other-box/*/*")
            && out.contains("may not sign releases/test-box/3.0.0/manifest.json"),
        "{out}"
    );
    // Without the role's keys the role cannot sign at all, and says where it looked.
    let (ok, out) = add(&dev, "3.0.0", Some(("no-such-team", &team)));
    assert!(
        !ok && out.contains("delegates no role named \"no-such-team\""),
        "{out}"
    );
}

/// Read a role's current metadata file (`N.NAME.json` as snapshot lists it).
fn current<T: patchd::trust::metadata::RoleMetadata>(md: &Path, snap: &Snapshot, name: &str) -> T {
    let v = snap.meta[&format!("{name}.json")].version;
    let bytes = std::fs::read(md.join(format!("{v}.{name}.json"))).unwrap();
    parse_signed(&Envelope::parse(&bytes, 64).unwrap().signed).unwrap()
}

fn write_role<T: patchd::trust::metadata::RoleMetadata>(
    md: &Path,
    name: &str,
    version: u64,
    meta: &T,
    keys: &[SigningKey],
) -> Vec<u8> {
    let refs: Vec<_> = keys.iter().collect();
    let bytes = sign_envelope(meta, &refs).unwrap();
    std::fs::write(md.join(format!("{version}.{name}.json")), &bytes).unwrap();
    std::fs::write(md.join(format!("{name}.json")), &bytes).unwrap();
    bytes
}

/// What a compromised team key plus an operator who re-signs snapshot would serve: the
/// files of test-box `version` moved from the top-level targets into role `team`, whose
/// delegation does not cover them.
fn move_into_role(dev: &Device, version: &str, team: &str, team_keys: &Path) {
    let md = dev.repo_dir.join("metadata");
    let keys = dev.top.join("keys");
    let read = |f: &str| std::fs::read(md.join(f)).unwrap();
    let root: Root =
        parse_signed(&Envelope::parse(&read("root.json"), 64).unwrap().signed).unwrap();
    let mut ts: TimestampMeta =
        parse_signed(&Envelope::parse(&read("timestamp.json"), 64).unwrap().signed).unwrap();
    let sv = ts.meta["snapshot.json"].version;
    let mut snap: Snapshot = parse_signed(
        &Envelope::parse(&read(&format!("{sv}.snapshot.json")), 64)
            .unwrap()
            .signed,
    )
    .unwrap();
    let mut top: Targets = current(&md, &snap, "targets");
    let mut role: Targets = current(&md, &snap, team);
    let prefix = format!("releases/test-box/{version}/");
    let moved: Vec<String> = top
        .targets
        .keys()
        .filter(|p| p.starts_with(&prefix))
        .cloned()
        .collect();
    assert!(!moved.is_empty());
    for p in moved {
        let tf = top.targets.remove(&p).unwrap();
        role.targets.insert(p, tf);
    }
    let meta = |version, bytes: &[u8]| MetaFile {
        version,
        length: Some(bytes.len() as u64),
        hashes: Some(hashes_of(bytes)),
        extra: Default::default(),
    };
    top.common.version += 1;
    let tk = keystore::keys_for(&keys, &root, "targets").unwrap();
    let b = write_role(&md, "targets", top.common.version, &top, &tk);
    snap.meta
        .insert("targets.json".into(), meta(top.common.version, &b));
    role.common.version += 1;
    let rk: Vec<SigningKey> = keystore::load_all(team_keys)
        .unwrap()
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    let b = write_role(&md, team, role.common.version, &role, &rk);
    snap.meta
        .insert(format!("{team}.json"), meta(role.common.version, &b));
    snap.common.version += 1;
    let sk = keystore::keys_for(&keys, &root, "snapshot").unwrap();
    let b = write_role(&md, "snapshot", snap.common.version, &snap, &sk);
    ts.meta
        .insert("snapshot.json".into(), meta(snap.common.version, &b));
    ts.common.version += 1;
    let tsk = keystore::keys_for(&keys, &root, "timestamp").unwrap();
    let refs: Vec<_> = tsk.iter().collect();
    std::fs::write(
        md.join("timestamp.json"),
        sign_envelope(&ts, &refs).unwrap(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_a_team_signs_outside_its_paths_is_refused_with_the_reason() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let dev = device(&rig);
    let team = dev.top.join("team-keys");
    let team_s = team.to_string_lossy().into_owned();
    let (ok, out) = patchpub(
        &dev,
        &[
            "delegate",
            "other-team",
            "--product",
            "other-box",
            "--role-keys",
            &team_s,
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = add(&dev, "3.0.0", None);
    assert!(ok, "{out}");
    move_into_role(&dev, "3.0.0", "other-team", &team);
    // The publisher's own check sees it as a device would.
    let (ok, out) = patchpub(&dev, &["verify"]);
    assert!(
        !ok,
        "verify accepted a release outside its role's paths: {out}"
    );

    // 3.0.0 is newer and signed by a key the repository trusts, but not for test-box:
    // the device stages the top-level 2.0.0 and says why 3.0.0 is not offered.
    let list = staged(&rig, &dev, "2.0.0").await;
    assert!(
        !list.contains("\"3.0.0\""),
        "refused release offered: {list}"
    );
    let log = dev.log();
    let refused = log
        .lines()
        .find(|l| {
            l.contains("release refused") && l.contains("releases/test-box/3.0.0/manifest.json")
        })
        .unwrap_or_else(|| panic!("no refusal logged:\n{}", tail(&log, 40)));
    assert!(
        refused.contains("other-team") && refused.contains("outside the paths delegated to it"),
        "{refused}"
    );
}

#[test]
fn delegate_writes_the_role_as_asked_and_add_signs_with_its_threshold() {
    let top = tempfile::tempdir().unwrap();
    let dev = Device::new(top.path(), &DeviceSpec::default());
    let team = dev.top.join("team-keys");
    let team_s = team.to_string_lossy().into_owned();
    let (ok, out) = patchpub(
        &dev,
        &[
            "delegate",
            "box-team",
            "--path",
            "releases/test-box/3.*/*",
            "--terminating",
            "--role-key-count",
            "2",
            "--threshold",
            "2",
            "--role-keys",
            &team_s,
        ],
    );
    assert!(ok, "{out}");
    let md = dev.repo_dir.join("metadata");
    let targets: serde_json::Value =
        serde_json::from_slice(&std::fs::read(md.join("targets.json")).unwrap()).unwrap();
    let role = &targets["signed"]["delegations"]["roles"][0];
    assert_eq!(role["name"], "box-team");
    assert_eq!(role["terminating"], true);
    assert_eq!(role["threshold"], 2);
    assert_eq!(
        role["paths"],
        serde_json::json!(["releases/test-box/3.*/*"])
    );
    assert_eq!(role["keyids"].as_array().map(Vec::len), Some(2));
    // A second delegation of the same name is refused.
    let (ok, out) = patchpub(
        &dev,
        &[
            "delegate",
            "box-team",
            "--product",
            "x",
            "--role-keys",
            &team_s,
        ],
    );
    assert!(!ok && out.contains("exists already"), "{out}");

    // One key short of the threshold: nothing is signed.
    let one = dev.top.join("one-key");
    std::fs::create_dir(&one).unwrap();
    let first = keystore::load_all(&team).unwrap().remove(0).0;
    std::fs::copy(&first, one.join(first.file_name().unwrap())).unwrap();
    let (ok, out) = add(&dev, "3.0.0", Some(("box-team", &one)));
    assert!(
        !ok && out.contains("box-team: 1 signing key(s)") && out.contains("threshold is 2"),
        "{out}"
    );
    // Outside the version pattern.
    let (ok, out) = add(&dev, "4.0.0", Some(("box-team", &team)));
    assert!(
        !ok && out.contains("may not sign releases/test-box/4.0.0/manifest.json"),
        "{out}"
    );
    let (ok, out) = add(&dev, "3.0.0", Some(("box-team", &team)));
    assert!(ok, "{out}");
    let role: serde_json::Value =
        serde_json::from_slice(&std::fs::read(md.join("box-team.json")).unwrap()).unwrap();
    assert_eq!(role["signed"]["version"], 2);
    assert_eq!(role["signatures"].as_array().map(Vec::len), Some(2));
    let (ok, out) = patchpub(&dev, &["verify"]);
    assert!(ok && out.contains("test-box/3.0.0"), "{out}");
    let (ok, out) = patchpub(&dev, &["list"]);
    assert!(
        ok && out.contains("test-box/3.0.0") && out.contains("test-box/2.0.0"),
        "{out}"
    );
}
