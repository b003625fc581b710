//! Role names are percent-encoded exactly once (every reserved character, `/`
//! included), as python-tuf does: in the request and in the metadata directory. A role
//! named `?` is requested as `1.%3F.json` and kept as `%3F.json`.
mod tuf_support;
use patchd::fetch::{HttpOptions, HttpSource};
use patchd::trust::TrustError;
use tuf_support::raw_http::RawServer;
use tuf_support::*;

#[tokio::test]
async fn unusual_role_names_are_requested_and_stored_encoded_once() {
    for (role, encoded) in [
        ("?", "%3F"),
        ("#", "%23"),
        ("/delegatedrole", "%2Fdelegatedrole"),
        ("../delegatedrole", "..%2Fdelegatedrole"),
        ("a b:c@d", "a%20b%3Ac%40d"),
    ] {
        let mut repo = Repo::new(true);
        repo.delegate(role, &["*"], false);
        repo.publish();
        let server = RawServer::start(repo.tmp.path()).unwrap();
        let meta = HttpSource::new(&server.url("metadata/"), HttpOptions::default()).unwrap();
        let dev = Device::new(&repo);
        let mut c = dev.client();
        c.refresh(&meta).await.unwrap();
        let r = c.target(&meta, "nonexistent target").await;
        assert!(
            matches!(r, Err(TrustError::TargetNotFound { .. })),
            "{role}: {r:?}"
        );
        let log = server.take_log();
        let want = format!("/metadata/1.{encoded}.json");
        assert!(log.contains(&want), "{role}: {want} not in {log:?}");
        let stored = versions_in(dev.path());
        assert_eq!(stored.get(encoded), Some(&1), "{role}: {stored:?}");
        assert_eq!(stored.len(), 5, "{role}: {stored:?}");
    }
}
