//! Duplicate signatures and duplicate keys never reach a threshold of 2 with one key.
mod tuf_support;
use patchd::trust::keys::{KeyScheme, SigningKey};
use patchd::trust::metadata::RoleType;
use patchd::trust::TrustError;
use serde_json::Value;
use tuf_support::*;

#[tokio::test]
async fn same_signature_twice_counts_once() {
    let mut repo = Repo::new(false);
    repo.targets_keys
        .push(SigningKey::generate(KeyScheme::Ed25519));
    repo.root.roles.get_mut("targets").unwrap().threshold = 2;
    repo.rotate_root(None);
    repo.root.roles.get_mut("targets").unwrap().threshold = 2;
    repo.publish();
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    repo.targets_keys.truncate(1);
    repo.add_target("evil", b"x");
    repo.with_hashes = false;
    repo.publish();
    let mut v: Value = serde_json::from_slice(&repo.read_meta("targets.json")).unwrap();
    let sig = v["signatures"][0].clone();
    v["signatures"] = Value::Array(vec![sig.clone(), sig]);
    repo.write_meta("targets.json", &serde_json::to_vec(&v).unwrap());
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::Metadata { role, .. } if role == "targets"),
        &dev,
        &before,
    );
}

#[tokio::test]
async fn same_key_under_two_keyids_counts_once() {
    let mut repo = Repo::new(false);
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    // Root v2 (signed legitimately) lists the targets key twice: once under its real key
    // id and once under another id (hex in upper case: same key, different JSON).
    let k = &repo.targets_keys[0];
    let mut alias = k.public().clone();
    let upper = alias.keyval["public"].as_str().unwrap().to_uppercase();
    alias.keyval.insert("public".into(), Value::String(upper));
    repo.root.common.version += 1;
    repo.set_root_keys();
    repo.root.add_key(RoleType::Targets, &alias).unwrap();
    repo.root.roles.get_mut("targets").unwrap().threshold = 2;
    repo.write_root(&[]);
    // Targets signed by the one key, under both key ids.
    repo.add_target("evil", b"x");
    repo.with_hashes = false;
    repo.publish();
    let mut v: Value = serde_json::from_slice(&repo.read_meta("targets.json")).unwrap();
    let mut sig2 = v["signatures"][0].clone();
    sig2["keyid"] = Value::String(alias.keyid().unwrap());
    v["signatures"].as_array_mut().unwrap().push(sig2);
    repo.write_meta("targets.json", &serde_json::to_vec(&v).unwrap());
    // The (valid) root v2 is kept; the targets file is not.
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::Metadata { role, .. } if role == "targets"),
        &dev,
        &before,
    );
}
