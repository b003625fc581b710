//! The publisher's side of the rollout gate: `Repo::set_gate` signs it beside a guarded
//! release's manifest target (the manifest file stays as it is), refuses unguarded
//! releases and stages that do not exist, and a pause or promote keeps the gate.

use patchd::manifest::{RolloutGate, RolloutStage, GATE_KEY};
use patchd::publish::{AddRelease, InitOptions, Repo};

fn repo(dir: &std::path::Path) -> Repo {
    Repo::init(dir.join("repo"), &InitOptions::new(dir.join("keys"))).unwrap()
}

fn add(repo: &Repo, dir: &std::path::Path, version: &str, guarded: bool) {
    let img = dir.join(format!("{version}.img"));
    std::fs::write(&img, vec![7u8; 4096]).unwrap();
    let mut rel = AddRelease::new("gw", version.parse().unwrap(), &img);
    rel.rollout.guarded = guarded;
    rel.rollout.stages = vec![
        RolloutStage {
            tags: vec!["canary".into()],
            percent: 0,
            after_secs: 0,
        },
        RolloutStage {
            tags: vec![],
            percent: 100,
            after_secs: 3600,
        },
    ];
    repo.add_release(&rel).unwrap();
}

fn gate(open_to: usize) -> RolloutGate {
    RolloutGate {
        open_to,
        expires: "2030-01-01T00:00:00Z".parse().unwrap(),
    }
}

/// The `custom` object of the release's entry in the served targets.json.
fn custom(dir: &std::path::Path, version: &str) -> serde_json::Value {
    let t: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("repo/metadata/targets.json")).unwrap())
            .unwrap();
    t["signed"]["targets"][format!("releases/gw/{version}/manifest.json")]["custom"].clone()
}

#[test]
fn the_gate_is_signed_into_targets_and_survives_a_pause() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo(dir.path());
    add(&r, dir.path(), "2.0.0", true);
    let v = "2.0.0".parse().unwrap();
    let before = r.rollout("gw", &v).unwrap();
    assert!(before.manifest.rollout.guarded && before.gate.is_none());
    let manifest_hash = |d: &std::path::Path| {
        let t: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("repo/metadata/targets.json")).unwrap())
                .unwrap();
        t["signed"]["targets"]["releases/gw/2.0.0/manifest.json"]["hashes"]["sha256"].clone()
    };
    let hash = manifest_hash(dir.path());
    r.set_gate("gw", &v, gate(1)).unwrap();
    assert_eq!(r.rollout("gw", &v).unwrap().gate, Some(gate(1)));
    assert_eq!(
        manifest_hash(dir.path()),
        hash,
        "the manifest file is untouched"
    );
    let c = custom(dir.path(), "2.0.0");
    assert_eq!(c[GATE_KEY]["open_to"], 1, "{c}");
    assert!(c["patchd_release"].is_object(), "{c}");

    r.pause("gw", &v).unwrap();
    r.promote("gw", &v, "beta").unwrap();
    let after = r.rollout("gw", &v).unwrap();
    assert!(after.manifest.rollout.paused);
    assert_eq!(after.gate, Some(gate(1)), "a pause keeps the gate");
}

#[test]
fn unguarded_releases_and_missing_stages_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo(dir.path());
    add(&r, dir.path(), "2.0.0", false);
    add(&r, dir.path(), "3.0.0", true);
    let e = r
        .set_gate("gw", &"2.0.0".parse().unwrap(), gate(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not guarded") && e.contains("--guarded"), "{e}");
    let e = r
        .set_gate("gw", &"3.0.0".parse().unwrap(), gate(2))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("2 rollout stage(s)") && e.contains("stage 2"),
        "{e}"
    );
    assert!(custom(dir.path(), "3.0.0").get(GATE_KEY).is_none());
    let e = r
        .set_gate("gw", &"9.0.0".parse().unwrap(), gate(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not found"), "{e}");
}
