//! Consistent snapshots: the version inside `N.role.json` must be N.
mod tuf_support;
use patchd::trust::TrustError;
use tuf_support::*;

#[tokio::test]
async fn snapshot_file_with_other_version_inside_rejected() {
    let mut repo = Repo::new(true);
    repo.with_hashes = false;
    repo.publish(); // 2.snapshot.json
    let dev = Device::new(&repo);
    let before = dev.snapshot_files();
    // 2.snapshot.json replaced by the (validly signed) version 1.
    repo.write_meta("2.snapshot.json", &repo.read_meta("1.snapshot.json"));
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::VersionMismatch { role, found: 1, expected: 2, .. } if role == "snapshot"),
        &dev,
        &before,
    );
}

#[tokio::test]
async fn targets_file_with_other_version_inside_rejected() {
    let mut repo = Repo::new(true);
    repo.with_hashes = false;
    repo.publish();
    let dev = Device::new(&repo);
    let before = dev.snapshot_files();
    repo.write_meta("2.targets.json", &repo.read_meta("1.targets.json"));
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::VersionMismatch { role, .. } if role == "targets"),
        &dev,
        &before,
    );
}

#[tokio::test]
async fn consistent_snapshot_repository_works() {
    let mut repo = Repo::new(true);
    repo.delegate("team", &["team/*"], false);
    repo.add_delegated_target("team", "team/app.bin", b"app v1");
    repo.add_target("top.txt", b"top");
    repo.publish();
    let dev = Device::new(&repo);
    let mut c = dev.refresh(&repo).await.unwrap();
    for (path, content) in [("team/app.bin", &b"app v1"[..]), ("top.txt", b"top")] {
        let t = c.target(&repo.meta_source(), path).await.unwrap();
        assert!(t.remote_path().contains(t.sha256().unwrap()));
        let got = c
            .fetch_target_bytes(&repo.targets_source(), &t)
            .await
            .unwrap();
        assert_eq!(got, content);
    }
    assert!(dev.path().join("team.json").exists());
}
