//! Duplicate JSON keys: `{"version": 1, "version": 9}` is refused, never resolved.
mod tuf_support;
use patchd::trust::metadata::MetadataError;
use patchd::trust::TrustError;
use tuf_support::*;

#[tokio::test]
async fn duplicate_keys_in_signed_part_rejected() {
    let repo = Repo::new(false);
    let dev = Device::new(&repo);
    let before = dev.snapshot_files();
    let ts = String::from_utf8(repo.read_meta("timestamp.json")).unwrap();
    let forged = ts.replacen(
        "\"_type\": \"timestamp\",",
        "\"_type\": \"timestamp\", \"_type\": \"snapshot\",",
        1,
    );
    assert_ne!(ts, forged);
    repo.write_meta("timestamp.json", forged.as_bytes());
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
async fn duplicate_signatures_key_rejected() {
    let repo = Repo::new(false);
    let dev = Device::new(&repo);
    let before = dev.snapshot_files();
    let ts = String::from_utf8(repo.read_meta("timestamp.json")).unwrap();
    let forged = ts.replacen("{", "{\"signatures\": [],", 1);
    repo.write_meta("timestamp.json", forged.as_bytes());
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::Metadata { .. }),
        &dev,
        &before,
    );
}
