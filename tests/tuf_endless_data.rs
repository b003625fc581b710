//! Endless data: no role and no target can make the client read past its limit.
mod tuf_support;
use patchd::fetch::FetchError;
use patchd::trust::TrustError;
use tuf_support::*;

fn too_large(e: &TrustError) -> bool {
    matches!(
        e,
        TrustError::Fetch {
            source: FetchError::TooLarge { .. },
            ..
        }
    )
}

/// Pad a metadata file with whitespace past `n` bytes (still valid JSON, still validly
/// signed: only a size limit can stop it).
fn pad(repo: &Repo, file: &str, n: usize) {
    let mut b = repo.read_meta(file);
    b.extend(vec![b' '; n]);
    repo.write_meta(file, &b);
}

#[tokio::test]
async fn endless_timestamp_rejected() {
    let repo = Repo::new(false);
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    pad(&repo, "timestamp.json", 20_000);
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        too_large,
        &dev,
        &before,
    );
}

#[tokio::test]
async fn endless_root_rejected() {
    let mut repo = Repo::new(false);
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    repo.rotate_root(None);
    pad(&repo, "2.root.json", 600_000);
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        too_large,
        &dev,
        &before,
    );
}

#[tokio::test]
async fn endless_snapshot_and_targets_rejected_with_signed_length() {
    for file in ["snapshot.json", "targets.json"] {
        let repo = Repo::new(false);
        let dev = Device::new(&repo);
        let before = dev.snapshot_files();
        pad(&repo, file, 100);
        assert_rejected(
            dev.refresh(&repo).await.map(|_| ()),
            too_large,
            &dev,
            &before,
        );
    }
}

#[tokio::test]
async fn endless_snapshot_and_targets_rejected_without_signed_length() {
    for (file, n) in [("snapshot.json", 2_100_000), ("targets.json", 5_100_000)] {
        let mut repo = Repo::new(false);
        repo.with_hashes = false;
        repo.publish();
        let dev = Device::new(&repo);
        let before = dev.snapshot_files();
        pad(&repo, file, n);
        assert_rejected(
            dev.refresh(&repo).await.map(|_| ()),
            too_large,
            &dev,
            &before,
        );
    }
}

#[tokio::test]
async fn endless_delegated_role_rejected() {
    let mut repo = Repo::new(false);
    repo.delegate("team", &["team/*"], false);
    repo.add_delegated_target("team", "team/x", b"x");
    repo.publish();
    let dev = Device::new(&repo);
    let mut c = dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    pad(&repo, "team.json", 10);
    assert_rejected(
        c.target(&repo.meta_source(), "team/x").await,
        too_large,
        &dev,
        &before,
    );
}

#[tokio::test]
async fn endless_target_rejected_and_not_stored() {
    let mut repo = Repo::new(false);
    repo.add_target("big.bin", b"0123456789");
    repo.publish();
    std::fs::write(repo.targets_dir().join("big.bin"), vec![b'x'; 1 << 20]).unwrap();
    let dev = Device::new(&repo);
    let mut c = dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    let t = c.target(&repo.meta_source(), "big.bin").await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join(t.local_file_name());
    let r = c
        .download_target_file(&repo.targets_source(), &t, &dest)
        .await;
    assert_rejected(
        r,
        |e| {
            matches!(
                e,
                TrustError::LengthMismatch { .. } | TrustError::Fetch { .. }
            )
        },
        &dev,
        &before,
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}
