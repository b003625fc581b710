//! Key compromise below threshold: one stolen key of a 2-of-2 role signs nothing.
mod tuf_support;
use patchd::trust::keys::{KeyScheme, SigningKey};
use patchd::trust::TrustError;
use tuf_support::*;

#[tokio::test]
async fn one_of_two_targets_keys_cannot_sign_targets() {
    let mut repo = Repo::new(false);
    repo.targets_keys
        .push(SigningKey::generate(KeyScheme::EcdsaP256));
    repo.root.roles.get_mut("targets").unwrap().threshold = 2;
    repo.rotate_root(None);
    repo.root.roles.get_mut("targets").unwrap().threshold = 2;
    repo.publish();
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    // The attacker holds only the second key.
    let stolen = repo.targets_keys.remove(1);
    let honest = std::mem::replace(&mut repo.targets_keys, vec![stolen]);
    repo.add_target("evil", b"evil");
    repo.publish();
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::Metadata { role, .. } if role == "targets"),
        &dev,
        &before,
    );
    drop(honest);
}

#[tokio::test]
async fn one_of_two_root_keys_cannot_rotate_root() {
    let mut repo = Repo::new(false);
    repo.root_keys
        .push(SigningKey::generate(KeyScheme::Ed25519));
    repo.root.roles.get_mut("root").unwrap().threshold = 2;
    repo.rotate_root(None);
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    // Attacker with one root key makes root v3 with only its own key.
    let stolen = repo.root_keys.remove(0);
    repo.root_keys = vec![stolen];
    repo.root.roles.get_mut("root").unwrap().threshold = 1;
    repo.rotate_root(None);
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::Metadata { role, .. } if role == "root"),
        &dev,
        &before,
    );
}
