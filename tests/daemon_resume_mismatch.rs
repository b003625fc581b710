//! A download that resumes (Range) after a stalled connection, and whose second part is
//! not the signed file any more (a mirror that changed or corrupts it), against a real
//! `patchd run`: the staging fails as a transfer hash mismatch — what it is — and not as
//! the zstd framing error the decompressor happened to hit first.

mod common;
mod process;

use std::time::{Duration, Instant};

use common::http::{FaultServer, Faults};
use process::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_body_that_differs_is_a_hash_mismatch_not_a_zstd_error() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let server = FaultServer::start().await;
    let dev = Device::new(
        rig.top.path(),
        &DeviceSpec {
            // zstd-compressed (the default).
            image_size: 1 << 20,
            url: Some(server.url()),
            policy: NO_WINDOW.into(),
            extra: "[fetch]\nstall_timeout = \"1s\"\n".into(),
            ..DeviceSpec::default()
        },
    );
    let files = dev.repo_files();
    for (path, bytes) in &files {
        server.add(path, bytes.clone());
    }
    let (image, len) = files
        .iter()
        .find(|(p, _)| p.starts_with("targets/") && p.ends_with(".zst"))
        .map(|(p, b)| (p.clone(), b.len() as u64))
        .expect("a zstd image target");
    // Stall a third of the way in; everything after that point differs once resumed.
    let at = len / 3;
    server.set(Faults {
        stall_at: Some(at),
        // Counted per request, metadata included; replaced before the resume anyway.
        stall_times: 100,
        ..Faults::default()
    });
    let mut d = dev.spawn(rig.addr(), &[]);
    // The first image request stalls at `at`; before patchd resumes it, the mirror starts
    // serving other bytes after that point.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server
        .seen()
        .iter()
        .any(|r| r.path.trim_start_matches('/') == image)
    {
        assert!(
            Instant::now() < deadline,
            "image never requested\n{}",
            dev.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.set(Faults {
        corrupt: (at..len).collect(),
        ..Faults::default()
    });
    let e = wait_until(
        &mut d,
        &dev,
        Duration::from_secs(60),
        "staging_failed",
        |dev| dev.audit_events().iter().any(|e| e == "staging_failed"),
    )
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());
    let resumed = server
        .seen()
        .iter()
        .filter(|r| r.path.trim_start_matches('/') == image)
        .any(|r| r.range_start.is_some_and(|s| s > 0));
    assert!(
        resumed,
        "the download was never resumed: {:?}",
        server.seen()
    );
    let audit = std::fs::read_to_string(dev.audit_path()).unwrap();
    let failed = audit
        .lines()
        .find(|l| l.contains("\"staging_failed\""))
        .unwrap();
    assert!(
        failed.contains("transfer sha256 mismatch"),
        "not reported as a hash mismatch: {failed}"
    );
    assert!(
        !failed.contains("zstd"),
        "reported as a zstd error: {failed}"
    );
    assert!(failed.contains("\"cause\":\"verify\""), "{failed}");
    let (code, status, err) = patchctl(rig.addr(), &["status"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(status.contains("mismatch"), "{status}");
    d.stop(Duration::from_secs(10));
}
