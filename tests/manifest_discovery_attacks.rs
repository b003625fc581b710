//! Attacks on release discovery, each rejected with a clear error and with the device's
//! trusted metadata left as it was: wrong product, downgrade below the security floor,
//! withdrawn release, a manifest that contradicts its signed summary, and a mirror
//! serving stale manifest bytes.

mod manifest_support;

use manifest_support::{device, snapshot_dir, World};
use patchd::manifest::{DiscoveryError, Ineligible, ManifestError, ReleaseSummary};

#[tokio::test]
async fn wrong_product_is_never_offered() {
    let w = World::new();
    w.repo
        .add_release(&w.release("other-product", "9.0.0", 0))
        .unwrap();
    w.repo.add_release(&w.release("acme", "1.1.0", 0)).unwrap();
    let mut c = w.client().await;
    let before = snapshot_dir(&w.device_dir());
    let d = w
        .discover(&mut c, &device("acme", 0, Some("1.0.0")))
        .await
        .unwrap();
    assert_eq!(d.candidates.len(), 1, "only acme releases are candidates");
    assert_eq!(d.newest.as_ref().unwrap().product, "acme");
    assert_eq!(d.newest.as_ref().unwrap().version.to_string(), "1.1.0");
    assert_eq!(before, snapshot_dir(&w.device_dir()));

    // Eligibility itself names the product mismatch.
    let m = w
        .repo
        .manifest("other-product", &"9.0.0".parse().unwrap())
        .unwrap();
    let why =
        patchd::manifest::check_eligibility(&ReleaseSummary::of(&m), &device("acme", 0, None));
    assert!(matches!(why[0], Ineligible::WrongProduct { .. }), "{why:?}");
}

#[tokio::test]
async fn wrong_product_manifest_under_our_path_is_rejected() {
    // A signed target at acme's release path whose manifest describes another product
    // (a publisher mistake or a compromised build step): the summary says acme, the
    // manifest says otherwise.
    let w = World::new();
    let good = w.repo.add_release(&w.release("other", "2.0.0", 0)).unwrap();
    let mut summary = ReleaseSummary::of(&good);
    summary.product = "acme".into();
    w.repo
        .add_target_bytes(
            "releases/acme/2.0.0/manifest.json",
            &good.to_vec().unwrap(),
            Some(summary.to_custom()),
        )
        .unwrap();
    let mut c = w.client().await;
    let before = snapshot_dir(&w.device_dir());
    let err = w
        .discover(&mut c, &device("acme", 0, Some("1.0.0")))
        .await
        .unwrap_err();
    match &err {
        DiscoveryError::Manifest {
            source: ManifestError::PathMismatch { .. },
            ..
        } => {}
        other => panic!("expected a path mismatch, got {other}"),
    }
    assert!(err.to_string().contains("releases/other/2.0.0"), "{err}");
    assert_eq!(before, snapshot_dir(&w.device_dir()));
}

#[tokio::test]
async fn downgrade_below_security_floor_is_refused() {
    let w = World::new();
    w.repo.add_release(&w.release("acme", "1.0.0", 3)).unwrap();
    w.repo.add_release(&w.release("acme", "2.0.0", 3)).unwrap();
    let mut c = w.client().await;
    let before = snapshot_dir(&w.device_dir());
    // The device already committed security version 5 (e.g. it ran a later release).
    let d = w.discover(&mut c, &device("acme", 5, None)).await.unwrap();
    assert!(d.newest.is_none(), "nothing below the floor may be offered");
    assert_eq!(d.candidates.len(), 2);
    for cand in &d.candidates {
        assert!(cand.ineligible.contains(&Ineligible::BelowSecurityFloor {
            release: 3,
            floor: 5
        }));
    }
    assert_eq!(before, snapshot_dir(&w.device_dir()));
}

#[tokio::test]
async fn security_floor_lie_in_summary_is_rejected() {
    // The signed summary claims security version 9 so the release passes the floor, but
    // the manifest says 1: the cross-check refuses it.
    let w = World::new();
    let m = w.repo.add_release(&w.release("tmp", "2.0.0", 1)).unwrap();
    let mut bytes_m = m.clone();
    bytes_m.product = "acme".into();
    bytes_m.images[0].target = "releases/acme/2.0.0/os.rootfs.img.zst".into();
    let mut summary = ReleaseSummary::of(&bytes_m);
    summary.security_version = 9;
    w.repo
        .add_target_bytes(
            "releases/acme/2.0.0/manifest.json",
            &bytes_m.to_vec().unwrap(),
            Some(summary.to_custom()),
        )
        .unwrap();
    let mut c = w.client().await;
    let before = snapshot_dir(&w.device_dir());
    let err = w
        .discover(&mut c, &device("acme", 5, None))
        .await
        .unwrap_err();
    match &err {
        DiscoveryError::Manifest {
            source: ManifestError::SummaryMismatch { fields, .. },
            ..
        } => assert_eq!(fields, &vec!["security_version"]),
        other => panic!("expected a summary mismatch, got {other}"),
    }
    assert_eq!(before, snapshot_dir(&w.device_dir()));
}

#[tokio::test]
async fn withdrawn_release_is_not_offered() {
    let w = World::new();
    w.repo.add_release(&w.release("acme", "1.1.0", 0)).unwrap();
    w.repo.add_release(&w.release("acme", "1.2.0", 0)).unwrap();
    w.repo.withdraw("acme", &"1.2.0".parse().unwrap()).unwrap();
    let mut c = w.client().await;
    let before = snapshot_dir(&w.device_dir());
    let d = w
        .discover(&mut c, &device("acme", 0, Some("1.0.0")))
        .await
        .unwrap();
    assert_eq!(d.candidates[0].version().to_string(), "1.2.0");
    assert_eq!(d.candidates[0].ineligible, vec![Ineligible::Withdrawn]);
    let newest = d.newest.expect("the older release is still eligible");
    assert_eq!(newest.version.to_string(), "1.1.0");
    assert_eq!(before, snapshot_dir(&w.device_dir()));
}

#[tokio::test]
async fn withdrawn_release_replayed_by_mirror_is_rejected() {
    // After the device has seen the withdrawal, a mirror replays the metadata from before
    // it (where the release was still offered): the refresh fails as a rollback, the
    // trusted metadata stays, and the release stays withdrawn for the device.
    let w = World::new();
    w.repo.add_release(&w.release("acme", "1.2.0", 0)).unwrap();
    let old_md = w.tmp.path().join("old-metadata");
    std::fs::create_dir(&old_md).unwrap();
    for e in std::fs::read_dir(w.repo.metadata_dir()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, old_md.join(p.file_name().unwrap())).unwrap();
    }
    w.repo.withdraw("acme", &"1.2.0".parse().unwrap()).unwrap();
    let _ = w.client().await; // the device trusts the withdrawal
    let before = snapshot_dir(&w.device_dir());

    let md = w.repo.metadata_dir();
    std::fs::remove_dir_all(&md).unwrap();
    std::fs::rename(&old_md, &md).unwrap();
    let mut c = patchd::trust::TufClient::load(
        &w.device_dir(),
        std::sync::Arc::new(patchd::clock::SystemClock),
        patchd::trust::Limits::default(),
    )
    .unwrap();
    let src = patchd::fetch::FileSource::new(w.repo.dir());
    let err = c
        .refresh(&patchd::trust::source::Subdir::new(&src, "metadata"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("rollback"), "{err}");
    assert_eq!(before, snapshot_dir(&w.device_dir()));
    let d = w
        .discover(&mut c, &device("acme", 0, Some("1.0.0")))
        .await
        .unwrap();
    assert!(d.newest.is_none());
    assert_eq!(d.candidates[0].ineligible, vec![Ineligible::Withdrawn]);
}

#[tokio::test]
async fn tampered_manifest_bytes_are_rejected_before_parsing() {
    let w = World::new();
    w.repo.add_release(&w.release("acme", "1.2.0", 0)).unwrap();
    let dir = w.repo.targets_dir().join("releases/acme/1.2.0");
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().ends_with(".manifest.json") {
            let mut b = std::fs::read(&p).unwrap();
            let i = b.iter().position(|&c| c == b'0').unwrap_or(10);
            b[i] = b'9';
            std::fs::write(&p, b).unwrap();
        }
    }
    let mut c = w.client().await;
    let before = snapshot_dir(&w.device_dir());
    let err = w
        .discover(&mut c, &device("acme", 0, Some("1.0.0")))
        .await
        .unwrap_err();
    assert!(matches!(err, DiscoveryError::Trust { .. }), "{err}");
    assert_eq!(before, snapshot_dir(&w.device_dir()));
}

#[tokio::test]
async fn below_min_version_and_other_channel_are_reported() {
    let w = World::new();
    let mut r = w.release("acme", "3.0.0", 0);
    r.min_version = Some("2.0.0".parse().unwrap());
    w.repo.add_release(&r).unwrap();
    let mut s = w.release("acme", "3.1.0", 0);
    s.channels = vec!["staging".into()];
    w.repo.add_release(&s).unwrap();
    let mut c = w.client().await;
    let d = w
        .discover(&mut c, &device("acme", 0, Some("1.5.0")))
        .await
        .unwrap();
    assert!(d.newest.is_none());
    assert!(matches!(
        d.candidates[0].ineligible[0],
        Ineligible::NotOnChannel { .. }
    ));
    assert!(matches!(
        d.candidates[1].ineligible[0],
        Ineligible::BelowMinVersion { .. }
    ));
    // Promotion to stable makes 3.1.0 eligible for a device on 2.x.
    w.repo
        .promote("acme", &"3.1.0".parse().unwrap(), "stable")
        .unwrap();
    let mut c = w.client().await;
    let d = w
        .discover(&mut c, &device("acme", 0, Some("2.1.0")))
        .await
        .unwrap();
    let n = d.newest.unwrap();
    assert_eq!(n.version.to_string(), "3.1.0");
    assert_eq!(n.channels, vec!["staging", "stable"]);
}
