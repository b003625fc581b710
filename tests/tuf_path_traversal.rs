//! Path traversal: target paths and role names never escape our directories.
mod tuf_support;
use patchd::trust::TrustError;
use tuf_support::*;

#[tokio::test]
async fn traversal_target_paths_refused() {
    let repo = Repo::new(false);
    let dev = Device::new(&repo);
    let mut c = dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    for p in [
        "../../etc/passwd",
        "/etc/passwd",
        "a/../../b",
        "a\\..\\b",
        "a//b",
        "",
    ] {
        assert_rejected(
            c.target(&repo.meta_source(), p).await,
            |e| matches!(e, TrustError::BadTargetPath { .. }),
            &dev,
            &before,
        );
    }
}

#[tokio::test]
async fn local_file_names_are_one_component() {
    let mut repo = Repo::new(false);
    repo.add_target("dir/sub/file.bin", b"f");
    repo.publish();
    let dev = Device::new(&repo);
    let mut c = dev.refresh(&repo).await.unwrap();
    let t = c
        .target(&repo.meta_source(), "dir/sub/file.bin")
        .await
        .unwrap();
    assert_eq!(t.local_file_name(), "dir%2Fsub%2Ffile.bin");
}

#[tokio::test]
async fn traversal_role_names_are_encoded_or_refused() {
    let outside = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(false);
    // A role name that would climb out of the metadata directory if used as a path.
    let evil = "../../escape";
    repo.delegate(evil, &["e/*"], false);
    repo.add_delegated_target(evil, "e/x", b"x");
    repo.delegate("root", &["t/*"], false); // top-level name reused
    repo.publish();
    let dev = Device::new(&repo);
    let mut c = dev.refresh(&repo).await.unwrap();
    c.target(&repo.meta_source(), "e/x").await.unwrap();
    assert!(dev.path().join("..%2F..%2Fescape.json").exists());
    assert!(!dev.path().parent().unwrap().join("escape.json").exists());
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    let before = dev.snapshot_files();
    assert_rejected(
        c.target(&repo.meta_source(), "t/y").await,
        |e| matches!(e, TrustError::BadRoleName { .. }),
        &dev,
        &before,
    );
}
