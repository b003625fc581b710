//! Oversized and deeply nested JSON is refused before it is interpreted.
mod tuf_support;
use patchd::fetch::FetchError;
use patchd::trust::metadata::MetadataError;
use patchd::trust::TrustError;
use serde_json::{json, Value};
use tuf_support::*;

#[tokio::test]
async fn deeply_nested_custom_data_rejected() {
    let mut repo = Repo::new(false);
    repo.with_hashes = false;
    repo.publish();
    let dev = Device::new(&repo);
    let before = dev.snapshot_files();
    let mut deep = json!(1);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let mut signed = serde_json::to_value(&repo.targets).unwrap();
    signed["version"] = json!(repo.targets.common.version + 1);
    signed["targets"]["x"] = json!({"length": 1, "hashes": {"sha256": "00"}, "custom": deep});
    let keys: Vec<&_> = repo.targets_keys.iter().collect();
    repo.write_signed_value("targets.json", signed, &keys);
    let mut snap = patchd::trust::metadata::Snapshot::new(repo.snapshot_version + 1, repo.expires);
    snap.meta.insert(
        "targets.json".into(),
        patchd::trust::metadata::MetaFile::version(repo.targets.common.version + 1),
    );
    repo.write_snapshot(&snap);
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| {
            matches!(
                e,
                TrustError::Metadata {
                    source: MetadataError::Json(_),
                    ..
                }
            )
        },
        &dev,
        &before,
    );
}

#[tokio::test]
async fn oversized_timestamp_rejected() {
    let mut repo = Repo::new(false);
    let dev = Device::new(&repo);
    let before = dev.snapshot_files();
    let mut signed: Value = signed_of(&repo.read_meta("timestamp.json"));
    signed["version"] = json!(2);
    signed["padding"] = Value::String("x".repeat(20_000));
    let keys: Vec<&_> = repo.timestamp_keys.iter().collect();
    repo.write_signed_value("timestamp.json", signed, &keys);
    repo.timestamp_version = 2;
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| {
            matches!(
                e,
                TrustError::Fetch {
                    source: FetchError::TooLarge { .. },
                    ..
                }
            )
        },
        &dev,
        &before,
    );
}
