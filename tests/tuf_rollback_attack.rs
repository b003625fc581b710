//! Rollback attacks: each role replayed at an older version is refused.
mod tuf_support;
use patchd::trust::TrustError;
use tuf_support::*;

fn is_rollback_or_mismatch(e: &TrustError) -> bool {
    matches!(
        e,
        TrustError::Rollback { .. }
            | TrustError::VersionMismatch { .. }
            | TrustError::HashMismatch { .. }
    )
}

#[tokio::test]
async fn timestamp_rollback_rejected() {
    let mut repo = Repo::new(false);
    let old_ts = repo.read_meta("timestamp.json");
    repo.publish();
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    repo.write_meta("timestamp.json", &old_ts);
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::Rollback { role, .. } if role == "timestamp"),
        &dev,
        &before,
    );
}

#[tokio::test]
async fn snapshot_rollback_rejected() {
    // Old snapshot served under a fresh (compromised-key) timestamp.
    let mut repo = Repo::new(false);
    let old_snapshot = repo.read_meta("snapshot.json");
    repo.publish();
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    repo.write_meta("snapshot.json", &old_snapshot);
    let mf = repo.meta_file(1, &old_snapshot);
    repo.write_timestamp(mf);
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::Rollback { role, .. } if role == "snapshot"),
        &dev,
        &before,
    );
}

#[tokio::test]
async fn targets_rollback_rejected() {
    let mut repo = Repo::new(false);
    repo.publish();
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    // A snapshot (signed with the snapshot key) that lists an older targets version.
    let mut snap = patchd::trust::metadata::Snapshot::new(repo.snapshot_version + 1, repo.expires);
    snap.meta.insert(
        "targets.json".into(),
        patchd::trust::metadata::MetaFile::version(1),
    );
    repo.write_snapshot(&snap);
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::Rollback { role, .. } if role == "targets"),
        &dev,
        &before,
    );
}

#[tokio::test]
async fn replayed_old_targets_file_rejected() {
    let mut repo = Repo::new(false);
    let old_targets = repo.read_meta("targets.json");
    repo.add_target("a", b"1");
    repo.publish();
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    repo.write_meta("targets.json", &old_targets);
    repo.with_hashes = false;
    repo.publish(); // rewrites targets.json, so put the old one back after
    repo.write_meta("targets.json", &old_targets);
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        is_rollback_or_mismatch,
        &dev,
        &before,
    );
}

#[tokio::test]
async fn delegated_role_rollback_rejected() {
    let mut repo = Repo::new(false);
    repo.delegate("team", &["team/*"], false);
    repo.add_delegated_target("team", "team/x", b"x");
    repo.publish();
    let old = repo.read_meta("team.json");
    repo.publish();
    let dev = Device::new(&repo);
    let mut c = dev.refresh(&repo).await.unwrap();
    c.target(&repo.meta_source(), "team/x").await.unwrap();
    let before = dev.snapshot_files();
    let mut snap = patchd::trust::metadata::Snapshot::new(repo.snapshot_version + 1, repo.expires);
    let targets_mf = repo.meta_file(repo.targets.common.version, &repo.read_meta("targets.json"));
    snap.meta.insert("targets.json".into(), targets_mf);
    snap.meta
        .insert("team.json".into(), repo.meta_file(1, &old));
    repo.write_meta("team.json", &old);
    repo.write_snapshot(&snap);
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::Rollback { role, .. } if role == "team"),
        &dev,
        &before,
    );
}

#[tokio::test]
async fn root_rollback_rejected() {
    let mut repo = Repo::new(false);
    repo.rotate_root(None);
    repo.rotate_root(None);
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    assert_eq!(dev.client().root().common.version, 3);
    let before = dev.snapshot_files();
    // Version 1 served as the next version (4).
    repo.write_meta("4.root.json", &repo.root_bytes(1));
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::VersionMismatch { role, .. } if role == "root"),
        &dev,
        &before,
    );
}
