//! Type confusion: a validly signed file of one role served as another.
mod tuf_support;
use patchd::trust::metadata::MetadataError;
use patchd::trust::TrustError;
use tuf_support::*;

#[tokio::test]
async fn snapshot_served_as_timestamp_rejected() {
    let mut repo = Repo::new(false);
    // Timestamp and snapshot share a key, so the signature itself is valid.
    let k = patchd::trust::SigningKey::generate(Default::default());
    let k2 = k.clone();
    repo.timestamp_keys = vec![k];
    repo.snapshot_keys = vec![k2];
    repo.rotate_root(None);
    repo.publish();
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    repo.write_meta("timestamp.json", &repo.read_meta("snapshot.json"));
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| {
            matches!(
                e,
                TrustError::Metadata {
                    source: MetadataError::WrongType { .. },
                    ..
                }
            )
        },
        &dev,
        &before,
    );
}

#[tokio::test]
async fn root_served_as_targets_rejected() {
    let mut repo = Repo::new(false);
    repo.targets_keys = vec![repo.root_keys[0].clone()];
    repo.rotate_root(None);
    repo.with_hashes = false;
    repo.publish();
    let dev = Device::new(&repo);
    let before = dev.snapshot_files();
    repo.write_meta("targets.json", &repo.root_bytes(2));
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| {
            matches!(
                e,
                TrustError::Metadata {
                    source: MetadataError::WrongType { .. },
                    ..
                }
            )
        },
        &dev,
        &before,
    );
}
