//! Malicious mirror: altered metadata (signatures no longer match) is refused.
mod tuf_support;
use patchd::trust::TrustError;
use tuf_support::*;

#[tokio::test]
async fn altered_metadata_from_mirror_rejected() {
    for file in ["timestamp.json", "snapshot.json", "targets.json"] {
        let mut repo = Repo::new(false);
        repo.with_hashes = false;
        repo.add_target("a", b"a");
        repo.publish();
        let dev = Device::new(&repo);
        let before = dev.snapshot_files();
        // Same signatures, one field changed in `signed`.
        let mut v: serde_json::Value = serde_json::from_slice(&repo.read_meta(file)).unwrap();
        v["signed"]["expires"] = "2099-01-01T00:00:00Z".into();
        repo.write_meta(file, &serde_json::to_vec(&v).unwrap());
        assert_rejected(
            dev.refresh(&repo).await.map(|_| ()),
            |e| matches!(e, TrustError::Metadata { .. }),
            &dev,
            &before,
        );
    }
}

#[tokio::test]
async fn mirror_cannot_add_targets() {
    let mut repo = Repo::new(false);
    repo.with_hashes = false;
    repo.publish();
    let dev = Device::new(&repo);
    let before = dev.snapshot_files();
    let mut v: serde_json::Value = serde_json::from_slice(&repo.read_meta("targets.json")).unwrap();
    v["signed"]["targets"]["evil"] = serde_json::json!({"length": 1, "hashes": {"sha256": "00"}});
    repo.write_meta("targets.json", &serde_json::to_vec(&v).unwrap());
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::Metadata { role, .. } if role == "targets"),
        &dev,
        &before,
    );
}
