//! Delegations: a role is trusted only for its paths; terminating delegations stop the
//! search; hash bins route each path to exactly one bin.
mod tuf_support;
use std::collections::BTreeMap;

use patchd::trust::keys::{KeyScheme, SigningKey};
use patchd::trust::metadata::{Delegations, SuccinctRoles, Targets};
use patchd::trust::TrustError;
use serde_json::Map;
use tuf_support::*;

#[tokio::test]
async fn target_outside_delegated_paths_not_trusted() {
    let mut repo = Repo::new(false);
    repo.delegate("team-a", &["a/*"], false);
    repo.add_delegated_target("team-a", "a/ok.bin", b"ok");
    // team-a also lists a target outside its paths.
    repo.add_delegated_target("team-a", "b/evil.bin", b"evil");
    repo.publish();
    let dev = Device::new(&repo);
    let mut c = dev.refresh(&repo).await.unwrap();
    c.target(&repo.meta_source(), "a/ok.bin").await.unwrap();
    let before = dev.snapshot_files();
    assert_rejected(
        c.target(&repo.meta_source(), "b/evil.bin").await,
        |e| matches!(e, TrustError::TargetNotFound { .. }),
        &dev,
        &before,
    );
    // Wildcards do not cross '/'.
    repo.add_delegated_target("team-a", "a/sub/evil.bin", b"evil");
    repo.publish();
    let mut c = dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    assert_rejected(
        c.target(&repo.meta_source(), "a/sub/evil.bin").await,
        |e| matches!(e, TrustError::TargetNotFound { .. }),
        &dev,
        &before,
    );
}

#[tokio::test]
async fn terminating_delegation_stops_search() {
    let mut repo = Repo::new(false);
    repo.delegate("first", &["x/*"], true);
    repo.delegate("second", &["x/*"], false);
    repo.add_delegated_target("second", "x/f", b"from second");
    repo.publish();
    let dev = Device::new(&repo);
    let mut c = dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    let r = c.target(&repo.meta_source(), "x/f").await;
    assert!(matches!(r, Err(TrustError::TargetNotFound { .. })), "{r:?}");
    // "first" was visited (and stored), "second" never fetched.
    let after = dev.snapshot_files();
    assert!(after.contains_key("first.json"));
    assert!(!after.contains_key("second.json"));
    assert!(before.keys().all(|k| after.get(k) == before.get(k)));
}

#[tokio::test]
async fn non_terminating_delegation_continues_in_order() {
    let mut repo = Repo::new(false);
    repo.delegate("first", &["x/*"], false);
    repo.delegate("second", &["x/*"], false);
    repo.add_delegated_target("second", "x/f", b"from second");
    repo.publish();
    let dev = Device::new(&repo);
    let mut c = dev.refresh(&repo).await.unwrap();
    let t = c.target(&repo.meta_source(), "x/f").await.unwrap();
    assert_eq!(t.length(), 11);
}

#[tokio::test]
async fn hash_bins_route_to_one_bin() {
    let mut repo = Repo::new(false);
    let key = SigningKey::generate(KeyScheme::Ed25519);
    let succinct = SuccinctRoles {
        keyids: vec![key.keyid().to_string()],
        threshold: 1,
        bit_length: 3,
        name_prefix: "bin".into(),
        extra: Map::new(),
    };
    repo.targets.delegations = Some(Delegations {
        keys: BTreeMap::from([(key.keyid().to_string(), key.public().clone())]),
        roles: None,
        succinct_roles: Some(succinct.clone()),
        extra: Map::new(),
    });
    for bin in 0..8 {
        let mut meta = Targets::new(0, repo.expires);
        meta.common.version = 0;
        repo.delegated.insert(
            succinct.role_name(bin),
            Delegated {
                meta,
                keys: vec![key.clone()],
            },
        );
    }
    let path = "pkgs/thing-1.0.tar";
    let right = succinct.role_for_target(path).unwrap();
    let wrong = (0..8)
        .map(|b| succinct.role_name(b))
        .find(|n| n != &right)
        .unwrap();
    repo.add_delegated_target(&wrong, "pkgs/other.tar", b"o");
    repo.add_delegated_target(&right, path, b"thing");
    // The wrong bin also claims a path that belongs to another bin.
    let stray = (0..100)
        .map(|i| format!("stray/{i}"))
        .find(|p| succinct.role_for_target(p).unwrap() != wrong)
        .unwrap();
    repo.add_delegated_target(&wrong, &stray, b"evil");
    repo.publish();
    let dev = Device::new(&repo);
    let mut c = dev.refresh(&repo).await.unwrap();
    let t = c.target(&repo.meta_source(), path).await.unwrap();
    assert_eq!(t.length(), 5);
    let before = dev.snapshot_files();
    let r = c.target(&repo.meta_source(), &stray).await;
    let after = dev.snapshot_files();
    assert!(matches!(r, Err(TrustError::TargetNotFound { .. })), "{r:?}");
    assert!(before.keys().all(|k| after.get(k) == before.get(k)));
}

#[tokio::test]
async fn visited_roles_are_capped() {
    let mut repo = Repo::new(false);
    for i in 0..40 {
        repo.delegate(&format!("r{i}"), &["x/*"], false);
    }
    repo.add_delegated_target("r39", "x/deep", b"d");
    repo.publish();
    let dev = Device::new(&repo);
    let mut c = dev.refresh(&repo).await.unwrap();
    let r = c.target(&repo.meta_source(), "x/deep").await;
    assert!(matches!(r, Err(TrustError::TargetNotFound { .. })), "{r:?}");
    let stored = dev
        .snapshot_files()
        .keys()
        .filter(|k| k.starts_with('r') && *k != "root.json")
        .count();
    // The top-level targets plus at most `max_delegations` (32) delegated roles, as
    // python-tuf counts them.
    assert_eq!(stored, 32, "{stored} delegated roles fetched");
}
