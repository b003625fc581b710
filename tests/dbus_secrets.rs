//! Read-only calls are open to every local user, so nothing secret may leave the daemon:
//! credentials in repository URLs and tokens are scrubbed from every answer and property.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use patchd::testkit::fake::FakeBackend;
use support::*;

const SECRETS: &[&str] = &["s3cret", "t0psecret", "abc123", "token=abc", "hunter2"];

fn assert_clean(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} leaks {s:?}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secrets_in_answers() {
    let Some(bus) = TestBus::start() else { return };
    let backend = FakeBackend::new(Duration::from_millis(1)).into_arc();
    let _svc = start_service(&bus, backend.clone(), root_only()).await;
    backend.set_last_error("fetch https://admin:hunter2@mirror.example/x?token=abc failed");

    let r = patchctl(&bus, &["check", "--json"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_clean("Check", &r.stdout);
    assert!(r.stdout.contains("repo.example"), "URL host kept: {r:?}");

    let uid = if is_root() { Some(NOBODY) } else { None };
    for args in [
        &["status", "--json"][..],
        &["status"],
        &["list", "--json"],
        &["inventory", "--json"],
        &["inventory"],
        &["history", "--json"],
    ] {
        let r = patchctl_as(&bus, uid, args).await;
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
        assert_clean(&format!("{args:?}"), &r.stdout);
    }
    let r = patchctl(&bus, &["status"]).await;
    assert!(r.stdout.contains("mirror.example"), "{r:?}");

    // Properties, read raw over the bus.
    if have("busctl") {
        let out = tokio::process::Command::new("busctl")
            .arg(format!("--address={}", bus.address))
            .args([
                "get-property",
                "org.patchd.Patchd1",
                "/org/patchd/Patchd1",
                "org.patchd.Patchd1.Manager",
                "LastError",
                "Available",
            ])
            .output()
            .await
            .expect("busctl");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("mirror.example"), "{text}");
        assert_clean("properties", &text);
    }
}
