//! Fast-forward attack recovery: after a stolen timestamp key pushed the version to
//! 1000, rotating the timestamp key lets the client accept small versions again.
mod tuf_support;
use patchd::trust::keys::{KeyScheme, SigningKey};
use patchd::trust::TrustError;
use tuf_support::*;

#[tokio::test]
async fn fast_forwarded_timestamp_recovered_by_key_rotation() {
    let mut repo = Repo::new(false);
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    // Attacker with the timestamp key publishes version 1000.
    let honest_version = repo.timestamp_version;
    repo.timestamp_version = 999;
    let mf = repo.meta_file(repo.snapshot_version, &repo.read_meta("snapshot.json"));
    repo.write_timestamp(mf.clone());
    dev.refresh(&repo).await.unwrap();
    assert_eq!(dev.client().timestamp_version(), Some(1000));

    // Without rotation, the honest repository's next timestamp is a "rollback".
    repo.timestamp_version = honest_version;
    repo.write_timestamp(mf.clone());
    let before = dev.snapshot_files();
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::Rollback { role, .. } if role == "timestamp"),
        &dev,
        &before,
    );

    // The publisher rotates the timestamp key: trusted timestamp is dropped.
    repo.timestamp_keys = vec![SigningKey::generate(KeyScheme::Ed25519)];
    repo.rotate_root(None);
    repo.publish();
    let c = dev.refresh(&repo).await.unwrap();
    assert_eq!(c.timestamp_version(), Some(repo.timestamp_version));
    assert!(repo.timestamp_version < 1000);
}

#[tokio::test]
async fn fast_forwarded_snapshot_recovered_by_key_rotation() {
    let mut repo = Repo::new(false);
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    let mut snap = patchd::trust::metadata::Snapshot::new(1000, repo.expires);
    let t = repo.read_meta("targets.json");
    snap.meta
        .insert("targets.json".into(), repo.meta_file(1, &t));
    repo.write_snapshot(&snap);
    dev.refresh(&repo).await.unwrap();
    assert_eq!(dev.client().snapshot_version(), Some(1000));
    repo.snapshot_version = 1;
    repo.snapshot_keys = vec![SigningKey::generate(KeyScheme::Ed25519)];
    repo.rotate_root(None);
    repo.publish();
    let c = dev.refresh(&repo).await.unwrap();
    assert_eq!(c.snapshot_version(), Some(2));
}
