//! Arbitrary software attack: a mirror serves content the publisher never signed.
mod tuf_support;
use patchd::trust::TrustError;
use tuf_support::*;

#[tokio::test]
async fn substituted_target_content_is_rejected_and_not_stored() {
    for consistent in [false, true] {
        let mut repo = Repo::new(consistent);
        repo.add_target("app/image.bin", b"the real image");
        repo.publish();
        let dev = Device::new(&repo);
        let client = dev.refresh(&repo).await.unwrap();
        let before = dev.snapshot_files();
        // Same length, different bytes, at whichever name the client asks for.
        for e in walk(&repo.targets_dir()) {
            std::fs::write(e, b"evil real image").unwrap();
        }
        let mut client = client;
        let t = client
            .target(&repo.meta_source(), "app/image.bin")
            .await
            .unwrap();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join(t.local_file_name());
        let r = client
            .download_target_file(&repo.targets_source(), &t, &dest)
            .await;
        assert_rejected(
            r,
            |e| {
                matches!(
                    e,
                    TrustError::HashMismatch { .. } | TrustError::LengthMismatch { .. }
                )
            },
            &dev,
            &before,
        );
        assert!(!dest.exists());
        assert_eq!(
            std::fs::read_dir(out.path()).unwrap().count(),
            0,
            "partial file left"
        );
    }
}

#[tokio::test]
async fn targets_signed_by_an_unknown_key_are_rejected() {
    let mut repo = Repo::new(false);
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    repo.targets_keys = vec![patchd::trust::SigningKey::generate(Default::default())];
    repo.add_target("evil", b"x");
    repo.publish();
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::Metadata { role, .. } if role == "targets"),
        &dev,
        &before,
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
