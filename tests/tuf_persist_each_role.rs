//! Each role is persisted the moment it verified (TUF 1.0 §5.3.8, 5.4.5, 5.5.7, 5.6.6
//! and each delegated role), not only when the whole refresh succeeds: a refresh that
//! fails at a later role keeps the rotated root and the new timestamp. Metadata that
//! failed verification is never written.
mod tuf_support;
use patchd::trust::keys::{KeyScheme, SigningKey};
use patchd::trust::TrustError;
use serde_json::Value;
use tuf_support::*;

#[derive(Debug, Clone, Copy)]
enum Break {
    /// No signatures at all.
    Unsigned,
    /// Signed, but by a key the delegator does not list.
    BelowThreshold,
    /// Consistent snapshot: `2.<role>.json` says version 3 inside.
    VersionInName,
    /// Other bytes (still validly signed) than the hash the parent signed.
    Hash,
    /// 404.
    Missing,
    /// Validly signed, but `_type` names another role.
    WrongType,
    /// Validly signed, expired.
    Expired,
}

const ALL: [Break; 7] = [
    Break::Unsigned,
    Break::BelowThreshold,
    Break::VersionInName,
    Break::Hash,
    Break::Missing,
    Break::WrongType,
    Break::Expired,
];

fn keys_of<'a>(repo: &'a Repo, role: &str) -> Vec<&'a SigningKey> {
    match role {
        "timestamp" => repo.timestamp_keys.iter().collect(),
        "snapshot" => repo.snapshot_keys.iter().collect(),
        "targets" => repo.targets_keys.iter().collect(),
        other => repo.delegated[other].keys.iter().collect(),
    }
}

/// Replace version 2 of `role` in the repository with a broken file.
fn break_role(repo: &Repo, role: &str, how: Break) {
    let file = if role == "timestamp" {
        "timestamp.json".to_string()
    } else {
        repo.role_file(role, 2)
    };
    let bytes = repo.read_meta(&file);
    let mut signed = signed_of(&bytes);
    let keys = keys_of(repo, role);
    match how {
        Break::Unsigned => {
            let mut v: Value = serde_json::from_slice(&bytes).unwrap();
            v["signatures"] = Value::Array(Vec::new());
            repo.write_meta(&file, &serde_json::to_vec(&v).unwrap());
        }
        Break::BelowThreshold => {
            let stranger = SigningKey::generate(KeyScheme::Ed25519);
            repo.write_signed_value(&file, signed, &[&stranger]);
        }
        Break::VersionInName => {
            signed["version"] = 3.into();
            repo.write_signed_value(&file, signed, &keys);
        }
        Break::Hash => {
            signed["x-extra"] = "other bytes".into();
            repo.write_signed_value(&file, signed, &keys);
        }
        Break::Missing => std::fs::remove_file(repo.meta_dir().join(&file)).unwrap(),
        Break::WrongType => {
            signed["_type"] = if role == "snapshot" {
                "targets"
            } else {
                "snapshot"
            }
            .into();
            repo.write_signed_value(&file, signed, &keys);
        }
        Break::Expired => {
            signed["expires"] = "2020-01-01T00:00:00Z".into();
            repo.write_signed_value(&file, signed, &keys);
        }
    }
}

/// A device trusting everything at version 1; the repository then rotates root to v2
/// and publishes version 2 of timestamp, snapshot and targets. Hashes of snapshot and
/// targets are signed only for the hash case (so the other cases reach the check they
/// are about).
async fn repo_at_v2(how: Break) -> (Repo, Device) {
    let mut repo = Repo::new(true);
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    repo.with_hashes = matches!(how, Break::Hash);
    repo.rotate_root(None);
    repo.publish();
    assert_eq!(repo.timestamp_version, 2);
    (repo, dev)
}

#[track_caller]
fn assert_trusted(dev: &Device, expected: &[(&str, u64)], case: &str) {
    assert_eq!(versions_in(dev.path()), versions(expected), "{case}");
    // A restart trusts what was kept, the rotated root first of all.
    assert_eq!(
        dev.client().root().common.version,
        2,
        "{case}: root after restart"
    );
}

#[tokio::test]
async fn a_broken_snapshot_keeps_the_rotated_root_and_the_new_timestamp() {
    for how in ALL {
        let (repo, dev) = repo_at_v2(how).await;
        break_role(&repo, "snapshot", how);
        let r = dev.refresh(&repo).await;
        assert!(r.is_err(), "{how:?}: refresh succeeded");
        assert_trusted(
            &dev,
            &[
                ("root", 2),
                ("timestamp", 2),
                ("snapshot", 1),
                ("targets", 1),
            ],
            &format!("snapshot {how:?}"),
        );
    }
}

#[tokio::test]
async fn a_broken_targets_keeps_root_timestamp_and_snapshot() {
    for how in ALL {
        let (repo, dev) = repo_at_v2(how).await;
        break_role(&repo, "targets", how);
        let r = dev.refresh(&repo).await;
        assert!(r.is_err(), "{how:?}: refresh succeeded");
        assert_trusted(
            &dev,
            &[
                ("root", 2),
                ("timestamp", 2),
                ("snapshot", 2),
                ("targets", 1),
            ],
            &format!("targets {how:?}"),
        );
    }
}

#[tokio::test]
async fn a_broken_timestamp_keeps_the_rotated_root() {
    for how in [
        Break::Unsigned,
        Break::BelowThreshold,
        Break::Missing,
        Break::WrongType,
        Break::Expired,
    ] {
        let (repo, dev) = repo_at_v2(how).await;
        break_role(&repo, "timestamp", how);
        let r = dev.refresh(&repo).await;
        assert!(r.is_err(), "{how:?}: refresh succeeded");
        assert_trusted(
            &dev,
            &[
                ("root", 2),
                ("timestamp", 1),
                ("snapshot", 1),
                ("targets", 1),
            ],
            &format!("timestamp {how:?}"),
        );
    }
}

#[tokio::test]
async fn an_expired_final_root_is_kept_and_the_refresh_fails() {
    let mut repo = Repo::new(false);
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    repo.root.common.expires = ts("2020-01-01T00:00:00Z");
    repo.rotate_root(None);
    let r = dev.refresh(&repo).await;
    assert!(
        matches!(&r, Err(TrustError::Expired { role, .. }) if role == "root"),
        "{:?}",
        r.err()
    );
    assert!(
        dev.snapshot_files()["root.json"] == repo.root_bytes(2),
        "root.json is not root v2"
    );
    assert_eq!(
        versions_in(dev.path()),
        versions(&[
            ("root", 2),
            ("timestamp", 1),
            ("snapshot", 1),
            ("targets", 1)
        ])
    );
}

#[tokio::test]
async fn each_verified_root_is_kept_when_a_later_root_fails() {
    let mut repo = Repo::new(false);
    let dev = Device::new(&repo);
    repo.rotate_root(None); // v2: fine
    repo.rotate_root(None); // v3: signed by a stranger only
    let mut v3 = signed_of(&repo.root_bytes(3));
    v3["x-tampered"] = true.into();
    let stranger = SigningKey::generate(KeyScheme::Ed25519);
    repo.write_signed_value("3.root.json", v3, &[&stranger]);
    let r = dev.refresh(&repo).await;
    assert!(
        matches!(&r, Err(TrustError::Metadata { role, .. }) if role == "root"),
        "{:?}",
        r.err()
    );
    assert!(
        dev.snapshot_files()["root.json"] == repo.root_bytes(2),
        "root.json is not root v2"
    );
    assert_eq!(versions_in(dev.path()), versions(&[("root", 2)]));
}

#[tokio::test]
async fn a_delegated_role_is_kept_when_a_later_one_in_the_search_fails() {
    let mut repo = Repo::new(false);
    repo.delegate("a", &["rel/*"], false);
    repo.delegate("b", &["rel/*"], false);
    repo.publish();
    repo.add_delegated_target("b", "rel/app", b"app");
    repo.publish();
    // "b" is signed by a key the top-level targets does not list for it.
    let file = repo.role_file("b", repo.delegated["b"].meta.common.version);
    let stranger = SigningKey::generate(KeyScheme::Ed25519);
    repo.write_signed_value(&file, signed_of(&repo.read_meta(&file)), &[&stranger]);
    let dev = Device::new(&repo);
    let mut c = dev.client();
    let meta = repo.meta_source();
    c.refresh(&meta).await.unwrap();
    let r = c.target(&meta, "rel/app").await;
    assert!(r.is_err(), "{r:?}");
    let got = versions_in(dev.path());
    assert_eq!(got.get("a"), Some(&2), "{got:?}");
    assert_eq!(got.get("b"), None, "{got:?}");
}
