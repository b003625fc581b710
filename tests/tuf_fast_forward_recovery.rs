//! Fast-forward attack recovery: after a stolen key pushed a version up (timestamp to
//! 1000, snapshot to 1000, targets to 100), rotating the keys lets the client accept
//! small versions again (TUF 1.0 §5.3.11, 5.6.4).
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

/// TUF 1.0 §5.3.11 and 5.6.4: an attacker pushed targets to version 100; the publisher
/// rotates the snapshot keys, so the trusted snapshot (which lists targets 100) is
/// dropped and the legitimate targets version 1 listed by the new snapshot is accepted.
/// The targets version is checked against the snapshot's `meta`, never against the
/// old trusted targets file.
#[tokio::test]
async fn fast_forwarded_targets_recovered_by_snapshot_key_rotation() {
    let mut repo = Repo::new(false);
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    repo.targets.common.version = 99;
    repo.publish();
    dev.refresh(&repo).await.unwrap();
    assert_eq!(versions_in(dev.path())["targets"], 100);

    repo.snapshot_keys = vec![SigningKey::generate(KeyScheme::Ed25519)];
    repo.rotate_root(None);
    repo.targets.common.version = 0;
    repo.add_target("recovered", b"ok");
    repo.publish();
    let mut c = dev.refresh(&repo).await.unwrap();
    assert_eq!(versions_in(dev.path())["targets"], 1);
    assert_eq!(versions_in(dev.path())["snapshot"], repo.snapshot_version);
    c.target(&repo.meta_source(), "recovered").await.unwrap();
}

/// Without a snapshot key rotation, the same lower targets version is a rollback: the
/// new snapshot lists targets below what the trusted snapshot lists.
#[tokio::test]
async fn fast_forwarded_targets_without_rotation_stays_a_rollback() {
    let mut repo = Repo::new(false);
    let dev = Device::new(&repo);
    repo.targets.common.version = 99;
    repo.publish();
    dev.refresh(&repo).await.unwrap();
    repo.targets.common.version = 0;
    repo.publish();
    let r = dev.refresh(&repo).await;
    assert!(
        matches!(&r, Err(TrustError::Rollback { role, .. }) if role == "targets"),
        "{:?}",
        r.err()
    );
    assert_eq!(versions_in(dev.path())["targets"], 100);
}
