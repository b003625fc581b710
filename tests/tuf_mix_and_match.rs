//! Mix-and-match: metadata from different repository states combined.
mod tuf_support;
use patchd::trust::TrustError;
use tuf_support::*;

#[tokio::test]
async fn targets_from_another_snapshot_rejected() {
    let mut repo = Repo::new(false);
    repo.add_target("a", b"a1");
    repo.publish();
    let targets_v2 = repo.read_meta("targets.json");
    repo.add_target("a", b"a2-newer");
    repo.publish();
    let dev = Device::new(&repo);
    let before = dev.snapshot_files();
    // Current timestamp + snapshot (v3 lists targets v3), but targets v2.
    repo.write_meta("targets.json", &targets_v2);
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| {
            matches!(
                e,
                TrustError::HashMismatch { .. }
                    | TrustError::LengthMismatch { .. }
                    | TrustError::VersionMismatch { .. }
            )
        },
        &dev,
        &before,
    );
}

#[tokio::test]
async fn snapshot_from_another_timestamp_rejected() {
    let mut repo = Repo::new(false);
    let snap_v1 = repo.read_meta("snapshot.json");
    repo.publish();
    let dev = Device::new(&repo);
    let before = dev.snapshot_files();
    repo.write_meta("snapshot.json", &snap_v1);
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| {
            matches!(
                e,
                TrustError::HashMismatch { .. }
                    | TrustError::LengthMismatch { .. }
                    | TrustError::VersionMismatch { .. }
            )
        },
        &dev,
        &before,
    );
}
