//! Hash algorithms: sha256 and sha512 verified; unknown names refused; unknown fields
//! in metadata tolerated (they are covered by the signature).
mod tuf_support;
use std::collections::BTreeMap;

use patchd::trust::metadata::hashes_of;
use patchd::trust::TrustError;
use serde_json::json;
use tuf_support::*;

#[tokio::test]
async fn sha512_only_target_verified() {
    let mut repo = Repo::new(false);
    let mut tf = repo.write_target_file("f", b"content");
    tf.hashes = hashes_of(b"content")
        .into_iter()
        .filter(|(k, _)| k == "sha512")
        .collect();
    repo.targets.targets.insert("f".into(), tf.clone());
    tf.hashes.insert("sha512".into(), "00".repeat(64));
    repo.targets.targets.insert("g".into(), tf);
    std::fs::write(repo.targets_dir().join("g"), b"content").unwrap();
    repo.publish();
    let dev = Device::new(&repo);
    let mut c = dev.refresh(&repo).await.unwrap();
    let t = c.target(&repo.meta_source(), "f").await.unwrap();
    assert_eq!(
        c.fetch_target_bytes(&repo.targets_source(), &t)
            .await
            .unwrap(),
        b"content"
    );
    let g = c.target(&repo.meta_source(), "g").await.unwrap();
    let r = c.fetch_target_bytes(&repo.targets_source(), &g).await;
    assert!(matches!(r, Err(TrustError::HashMismatch { .. })), "{r:?}");
}

#[tokio::test]
async fn unknown_hash_algorithm_rejected() {
    let mut repo = Repo::new(false);
    let mut tf = repo.write_target_file("f", b"content");
    tf.hashes = BTreeMap::from([(
        "md5".to_string(),
        "9a0364b9e99bb480dd25e1f0284c8555".to_string(),
    )]);
    repo.targets.targets.insert("f".into(), tf);
    repo.publish();
    let dev = Device::new(&repo);
    let mut c = dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    assert_rejected(
        c.target(&repo.meta_source(), "f").await,
        |e| matches!(e, TrustError::UnknownHashAlgorithm { .. }),
        &dev,
        &before,
    );
}

#[tokio::test]
async fn unknown_hash_algorithm_for_metadata_rejected() {
    let mut repo = Repo::new(false);
    let dev = Device::new(&repo);
    let before = dev.snapshot_files();
    let mut mf = repo.meta_file(1, &repo.read_meta("snapshot.json"));
    mf.hashes = Some(BTreeMap::from([("blake9".to_string(), "00".to_string())]));
    repo.write_timestamp(mf);
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::UnknownHashAlgorithm { .. }),
        &dev,
        &before,
    );
}

#[tokio::test]
async fn unknown_fields_tolerated() {
    let mut repo = Repo::new(false);
    repo.targets
        .extra
        .insert("x-future".into(), json!({"a": [1, 2]}));
    repo.add_target("f", b"c");
    repo.targets
        .targets
        .get_mut("f")
        .unwrap()
        .extra
        .insert("x-note".into(), json!("hi"));
    repo.publish();
    let dev = Device::new(&repo);
    let mut c = dev.refresh(&repo).await.unwrap();
    c.target(&repo.meta_source(), "f").await.unwrap();
}
