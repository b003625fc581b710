//! Duplicate signatures and duplicate keys never reach a threshold of 2 with one key;
//! two signatures under one key id reject the file as a whole.
mod tuf_support;
use patchd::trust::keys::{KeyScheme, SigningKey};
use patchd::trust::metadata::RoleType;
use patchd::trust::TrustError;
use serde_json::Value;
use tuf_support::*;

#[tokio::test]
async fn same_signature_twice_never_reaches_a_threshold_of_two() {
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
    // Refresh is all-or-nothing: the (valid) root v2 is not kept either.
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::Metadata { role, .. } if role == "targets"),
        &dev,
        &before,
    );
}

/// python-tuf refuses metadata carrying two signatures under one key id, whatever the
/// threshold: the file is malformed, not merely over-counted.
#[tokio::test]
async fn two_signatures_under_one_keyid_reject_the_metadata() {
    for file in ["timestamp.json", "snapshot.json", "targets.json"] {
        let mut repo = Repo::new(false);
        repo.with_hashes = false;
        let dev = Device::new(&repo);
        dev.refresh(&repo).await.unwrap();
        repo.publish();
        let mut v: Value = serde_json::from_slice(&repo.read_meta(file)).unwrap();
        let sig = v["signatures"][0].clone();
        v["signatures"] = Value::Array(vec![sig.clone(), sig]);
        repo.write_meta(file, &serde_json::to_vec(&v).unwrap());
        let role = file.trim_end_matches(".json");
        let r = dev.refresh(&repo).await;
        assert!(
            matches!(&r, Err(TrustError::Metadata { role: r, .. }) if r == role),
            "{file}: {:?}",
            r.err()
        );
        assert_eq!(versions_in(dev.path())[role], 1, "{file}");
    }
}

#[tokio::test]
async fn a_root_with_two_signatures_under_one_keyid_is_refused() {
    let mut repo = Repo::new(false);
    let dev = Device::new(&repo);
    repo.rotate_root(None);
    let mut v: Value = serde_json::from_slice(&repo.root_bytes(2)).unwrap();
    let sig = v["signatures"][0].clone();
    v["signatures"].as_array_mut().unwrap().push(sig);
    repo.write_meta("2.root.json", &serde_json::to_vec(&v).unwrap());
    let r = dev.refresh(&repo).await;
    assert!(
        matches!(&r, Err(TrustError::Metadata { role, .. }) if role == "root"),
        "{:?}",
        r.err()
    );
    assert_eq!(versions_in(dev.path())["root"], 1);
}
