//! A threshold of 0 would accept unsigned metadata; it is refused wherever it appears.
mod tuf_support;
use patchd::trust::{Limits, TrustError, TufClient};
use serde_json::json;
use tuf_support::*;

#[tokio::test]
async fn root_with_threshold_zero_rejected() {
    let mut repo = Repo::new(false);
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    let mut signed = serde_json::to_value(&repo.root).unwrap();
    signed["version"] = json!(2);
    signed["roles"]["targets"]["threshold"] = json!(0);
    let keys: Vec<&_> = repo.root_keys.iter().collect();
    repo.write_signed_value("2.root.json", signed, &keys);
    // Targets with no signatures at all.
    repo.targets_keys.clear();
    repo.publish();
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::Metadata { role, .. } if role == "root"),
        &dev,
        &before,
    );
}

#[tokio::test]
async fn initial_root_with_threshold_zero_rejected() {
    let repo = Repo::new(false);
    let mut signed = serde_json::to_value(&repo.root).unwrap();
    signed["roles"]["root"]["threshold"] = json!(0);
    let keys: Vec<&_> = repo.root_keys.iter().collect();
    let bytes = patchd::trust::metadata::sign_value(signed, &keys).unwrap();
    let dir = tempfile::tempdir().unwrap();
    assert!(TufClient::init(dir.path(), &bytes, &Limits::default()).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn delegation_with_threshold_zero_rejected() {
    let mut repo = Repo::new(false);
    repo.delegate("team", &["team/*"], false);
    repo.publish();
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    // Targets (properly signed) delegating with threshold 0.
    let mut signed = serde_json::to_value(&repo.targets).unwrap();
    signed["version"] = json!(repo.targets.common.version + 1);
    signed["delegations"]["roles"][0]["threshold"] = json!(0);
    let keys: Vec<&_> = repo.targets_keys.iter().collect();
    repo.write_signed_value("targets.json", signed, &keys);
    let mut snap = patchd::trust::metadata::Snapshot::new(repo.snapshot_version + 1, repo.expires);
    snap.meta.insert(
        "targets.json".into(),
        patchd::trust::metadata::MetaFile::version(repo.targets.common.version + 1),
    );
    snap.meta.insert(
        "team.json".into(),
        patchd::trust::metadata::MetaFile::version(1),
    );
    repo.write_snapshot(&snap);
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::Metadata { role, .. } if role == "targets"),
        &dev,
        &before,
    );
}
