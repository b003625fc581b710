//! Indefinite freeze: expired metadata replayed is refused, whichever role expired.
mod tuf_support;
use jiff::SignedDuration;
use patchd::trust::TrustError;
use tuf_support::*;

#[tokio::test]
async fn expired_timestamp_replayed_is_rejected() {
    let repo = Repo::new(false);
    let dev = Device::new(&repo);
    dev.refresh(&repo).await.unwrap();
    let before = dev.snapshot_files();
    dev.clock.set(ts(EXPIRES));
    dev.clock.advance(SignedDuration::from_secs(1));
    assert_rejected(
        dev.refresh(&repo).await.map(|_| ()),
        |e| matches!(e, TrustError::Expired { .. }),
        &dev,
        &before,
    );
}

#[tokio::test]
async fn each_expired_role_is_rejected() {
    for role in ["timestamp", "snapshot", "targets", "root"] {
        let mut repo = Repo::new(false);
        let dev = Device::new(&repo);
        dev.refresh(&repo).await.unwrap();
        let before = dev.snapshot_files();
        let past = ts("2027-05-01T00:00:00Z");
        match role {
            "root" => {
                repo.root.common.expires = past;
                repo.rotate_root(None);
            }
            "targets" => {
                repo.targets.common.expires = past;
                // publish() resets expiry: sign by hand.
                let saved = repo.expires;
                repo.expires = past;
                repo.publish();
                repo.expires = saved;
                let snap = repo.read_meta("snapshot.json");
                let mut s: patchd::trust::metadata::Snapshot =
                    serde_json::from_value(signed_of(&snap)).unwrap();
                s.common.version += 1;
                s.common.expires = repo.expires;
                repo.write_snapshot(&s);
            }
            "snapshot" => {
                let mut s = patchd::trust::metadata::Snapshot::new(repo.snapshot_version + 1, past);
                let t = repo.read_meta("targets.json");
                s.meta.insert("targets.json".into(), repo.meta_file(1, &t));
                repo.write_snapshot(&s);
            }
            _ => {
                repo.expires = past;
                let mf = repo.meta_file(1, &repo.read_meta("snapshot.json"));
                repo.write_timestamp(mf);
            }
        }
        let r = dev.refresh(&repo).await.map(|_| ());
        match &r {
            Err(TrustError::Expired { role: r, .. }) => assert_eq!(r, role),
            other => panic!("{role}: {other:?}"),
        }
        assert_rejected(r, |_| true, &dev, &before);
    }
}

/// What the switch decision is told about the metadata a check verified: valid until the
/// earliest expiry among the roles that vouched (here the timestamp, re-signed to expire
/// first); nothing before a refresh; and no expiry at all for a client that accepts
/// expired metadata (the offline policy), which enforces none.
#[tokio::test]
async fn the_vouched_validity_is_the_earliest_expiry_of_the_trusted_roles() {
    let mut repo = Repo::new(false);
    let dev = Device::new(&repo);
    assert_eq!(dev.client().valid_until("targets"), None, "not refreshed");
    let c = dev.refresh(&repo).await.unwrap();
    assert_eq!(c.valid_until("targets"), Some(ts(EXPIRES)));
    assert_eq!(c.refreshed_at(), Some(ts(NOW)));

    let early = ts("2027-06-02T00:00:00Z");
    let saved = repo.expires;
    repo.expires = early;
    let mf = repo.meta_file(1, &repo.read_meta("snapshot.json"));
    repo.write_timestamp(mf);
    repo.expires = saved;
    let c = dev.refresh(&repo).await.unwrap();
    assert_eq!(c.valid_until("targets"), Some(early));

    let mut c = dev.client();
    c.accept_expired(Default::default());
    c.refresh(&repo.meta_source()).await.unwrap();
    assert_eq!(
        c.valid_until("targets"),
        None,
        "offline policy: not enforced"
    );
}
