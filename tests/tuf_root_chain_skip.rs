//! Root chain skip: a client at root v1 must walk v2 before trusting v3.
mod tuf_support;
use patchd::trust::keys::{KeyScheme, SigningKey};
use patchd::trust::TrustError;
use tuf_support::*;

#[tokio::test]
async fn root_signed_only_by_a_skipped_version_is_rejected() {
    let mut repo = Repo::new(false);
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    repo.rotate_root(Some(vec![SigningKey::generate(KeyScheme::Ed25519)])); // v2
    repo.rotate_root(Some(vec![SigningKey::generate(KeyScheme::Ed25519)])); // v3, signed by v2+v3 keys
                                                                            // v2 withheld, v3 offered in its place.
    repo.write_meta("2.root.json", &repo.root_bytes(3));
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::Metadata { role, .. } if role == "root"),
        &dev,
        &before,
    );
}

#[tokio::test]
async fn root_chain_walked_one_version_at_a_time() {
    let mut repo = Repo::new(false);
    let dev = Device::new(&repo);
    for _ in 0..3 {
        repo.rotate_root(Some(vec![SigningKey::generate(KeyScheme::EcdsaP256)]));
    }
    repo.publish();
    let c = dev.refresh(&repo).await.unwrap();
    assert_eq!(c.root().common.version, 4);
    assert_eq!(
        std::fs::read(dev.path().join("root.json")).unwrap(),
        repo.root_bytes(4)
    );
}

#[tokio::test]
async fn rotations_per_refresh_are_capped() {
    let mut repo = Repo::new(false);
    let dev = Device::new(&repo);
    for _ in 0..5 {
        repo.rotate_root(None);
    }
    let limits = patchd::trust::Limits {
        max_root_rotations: 2,
        ..Default::default()
    };
    let mut c = dev.client_with(limits);
    c.refresh(&repo.meta_source()).await.unwrap();
    assert_eq!(c.root().common.version, 3);
}
