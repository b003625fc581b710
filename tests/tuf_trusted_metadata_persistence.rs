//! Trusted metadata on disk: exact bytes received, re-verified at start-up, never
//! deleted because of a wrong clock.
mod tuf_support;
use jiff::SignedDuration;
use patchd::trust::{Limits, TrustError, TufClient};
use std::sync::Arc;
use tuf_support::*;

#[tokio::test]
async fn stored_files_are_the_bytes_received() {
    let mut repo = Repo::new(false);
    repo.rotate_root(None);
    repo.publish();
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    let files = dev.snapshot_files();
    for f in ["timestamp.json", "snapshot.json", "targets.json"] {
        assert_eq!(files[f], repo.read_meta(f), "{f}");
    }
    assert_eq!(files["root.json"], repo.root_bytes(2));
    let json: Vec<_> = files.keys().filter(|k| k.ends_with(".json")).collect();
    assert_eq!(json.len(), 4, "{json:?}");
}

#[tokio::test]
async fn tampered_trusted_file_is_ignored_at_start_up() {
    let repo = Repo::new(false);
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    // Someone edits the trusted timestamp on disk.
    let p = dev.path().join("timestamp.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    v["signed"]["version"] = 500.into();
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    let c = dev.client();
    assert_eq!(
        c.timestamp_version(),
        None,
        "tampered timestamp must not be trusted"
    );
    // A refresh replaces it with the verified one.
    dev.refresh(&repo).await.unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), repo.read_meta("timestamp.json"));
}

#[tokio::test]
async fn tampered_root_fails_closed() {
    let repo = Repo::new(false);
    let dev = Device::new(&repo);
    let p = dev.path().join("root.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    v["signed"]["expires"] = "2099-01-01T00:00:00Z".into();
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    let r = TufClient::load(dev.path(), Arc::new(dev.clock.clone()), Limits::default());
    assert!(matches!(r, Err(TrustError::BadTrustedMetadata { .. })));
    let empty = tempfile::tempdir().unwrap();
    let r = TufClient::load(empty.path(), Arc::new(dev.clock.clone()), Limits::default());
    assert!(matches!(r, Err(TrustError::NoTrustedRoot { .. })));
}

#[tokio::test]
async fn clock_before_build_time_reported_and_nothing_deleted() {
    let repo = Repo::new(false);
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    dev.clock.set(ts("2001-01-01T00:00:00Z"));
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::ClockWrong { .. }),
        &dev,
        &before,
    );
}

#[tokio::test]
async fn clock_before_last_refresh_reported_and_nothing_deleted() {
    let repo = Repo::new(false);
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    dev.clock.advance(SignedDuration::from_hours(-48));
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::ClockWrong { .. }),
        &dev,
        &before,
    );
}

#[tokio::test]
async fn far_future_clock_reports_expiry_and_keeps_metadata() {
    let repo = Repo::new(false);
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    dev.clock.set(ts("2099-01-01T00:00:00Z"));
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::Expired { .. }),
        &dev,
        &before,
    );
}

/// With the clock-sanity safeguard off (the conformance CLI), the clock is taken as it
/// is: a reading before the build time judges expiry like any other, and no
/// `last-refresh.time` is kept, so a later reading further back is fine too.
#[tokio::test]
async fn clock_sanity_off_takes_the_clock_as_it_is() {
    let repo = Repo::new(false);
    let dev = Device::new(&repo);
    let limits = Limits {
        clock_sanity: false,
        ..Limits::default()
    };
    dev.clock.set(ts("2024-01-01T00:00:00Z"));
    assert!(ts("2024-01-01T00:00:00Z") < limits.not_before);
    let mut c = dev.client_with(limits.clone());
    c.refresh(&repo.meta_source()).await.unwrap();
    dev.clock.set(ts("2023-01-01T00:00:00Z"));
    let mut c = dev.client_with(limits.clone());
    c.refresh(&repo.meta_source()).await.unwrap();
    let names: Vec<String> = dev.snapshot_files().into_keys().collect();
    assert!(names.iter().all(|n| n.ends_with(".json")), "{names:?}");
    // Expiry is still judged, by that clock.
    dev.clock.set(ts("2099-01-01T00:00:00Z"));
    let mut c = dev.client_with(limits);
    let r = c.refresh(&repo.meta_source()).await;
    assert!(matches!(r, Err(TrustError::Expired { .. })), "{r:?}");
}

#[test]
fn clock_sanity_is_on_by_default() {
    assert!(Limits::default().clock_sanity);
}
