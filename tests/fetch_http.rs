//! `HttpSource` against a fault-injecting HTTP server: resume, limits, redirects, TLS.

mod common;

use std::time::Duration;

use common::http::{FaultServer, Faults};
use patchd::fetch::{
    fetch_all, ByteSource, FetchError, HttpOptions, HttpSource, RangeIgnored, RateRule,
    RetryPolicy, SlowRetrieval,
};
use tokio::io::AsyncReadExt;

fn fast() -> HttpOptions {
    HttpOptions {
        connect_timeout: Duration::from_secs(2),
        stall_timeout: Duration::from_millis(400),
        retry: RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            jitter: true,
        },
        ..HttpOptions::default()
    }
}

async fn read_exact_file(
    src: &HttpSource,
    path: &str,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, FetchError> {
    let mut r = src.open_exact(path, offset, len).await?;
    let mut out = Vec::new();
    r.read_to_end(&mut out)
        .await
        .map_err(|e| FetchError::from_io(path, e))?;
    Ok(out)
}

async fn server_with(data: &[u8]) -> FaultServer {
    let s = FaultServer::start().await;
    s.add("targets/img", data.to_vec());
    s
}

#[tokio::test]
async fn plain_fetch_and_offset() {
    let data = common::noise(300_000, 1);
    let s = server_with(&data).await;
    let src = HttpSource::new(&s.url(), fast()).unwrap();
    let len = data.len() as u64;
    assert_eq!(
        read_exact_file(&src, "targets/img", 0, len).await.unwrap(),
        data
    );
    assert_eq!(
        read_exact_file(&src, "targets/img", 1000, len)
            .await
            .unwrap(),
        &data[1000..]
    );
    assert_eq!(s.seen()[1].range_start, Some(1000));
}

#[tokio::test]
async fn truncated_stream_is_resumed_with_range() {
    let data = common::noise(500_000, 2);
    let s = server_with(&data).await;
    s.set(Faults {
        truncate_at: Some(123_457),
        truncate_times: 1,
        ..Faults::default()
    });
    let src = HttpSource::new(&s.url(), fast()).unwrap();
    let got = read_exact_file(&src, "targets/img", 0, data.len() as u64)
        .await
        .unwrap();
    assert_eq!(got, data);
    let seen = s.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].range_start, Some(123_457));
}

#[tokio::test]
async fn always_truncating_server_gives_up_with_clear_error() {
    let data = common::noise(200_000, 3);
    let s = server_with(&data).await;
    s.set(Faults {
        truncate_at: Some(100_000),
        truncate_times: 100,
        ..Faults::default()
    });
    let src = HttpSource::new(&s.url(), fast()).unwrap();
    // After the cut every resume starts at 100 000 and is cut at once again.
    let err = read_exact_file(&src, "targets/img", 0, data.len() as u64)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::RetriesExhausted { .. } | FetchError::Protocol { .. }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn server_ignoring_range_restarts_cleanly() {
    let data = common::noise(400_000, 4);
    let s = server_with(&data).await;
    s.set(Faults {
        truncate_at: Some(150_000),
        truncate_times: 1,
        ignore_range: true,
        ..Faults::default()
    });
    let src = HttpSource::new(&s.url(), fast()).unwrap();
    let got = read_exact_file(&src, "targets/img", 0, data.len() as u64)
        .await
        .unwrap();
    assert_eq!(got, data, "prefix must be skipped, not delivered twice");

    // Configured to fail instead.
    s.set(Faults {
        ignore_range: true,
        ..Faults::default()
    });
    let strict = HttpSource::new(
        &s.url(),
        HttpOptions {
            on_range_ignored: RangeIgnored::Fail,
            ..fast()
        },
    )
    .unwrap();
    let err = read_exact_file(&strict, "targets/img", 10, data.len() as u64)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::RangeIgnored { offset: 10, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn content_length_disagreeing_with_signed_length_fails_early() {
    let data = common::noise(10_000, 5);
    let s = server_with(&data).await;
    let src = HttpSource::new(&s.url(), fast()).unwrap();
    // Signed length larger than the file.
    let err = read_exact_file(&src, "targets/img", 0, 10_001)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::LengthMismatch {
                expected: 10_001,
                announced: 10_000,
                ..
            }
        ),
        "{err}"
    );
    // Signed length smaller than the file.
    let err = read_exact_file(&src, "targets/img", 0, 9_999)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::TooLarge { .. }), "{err}");
    // A lying header is caught the same way.
    s.set(Faults {
        content_length: Some(20_000),
        ..Faults::default()
    });
    let err = read_exact_file(&src, "targets/img", 0, 10_000)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::TooLarge { .. }), "{err}");
}

#[tokio::test]
async fn more_bytes_than_declared_are_never_delivered() {
    let data = common::noise(50_000, 6);
    let s = server_with(&data).await;
    s.set(Faults {
        omit_content_length: true,
        ..Faults::default()
    });
    let src = HttpSource::new(&s.url(), fast()).unwrap();
    let mut r = src.open("targets/img", 0, 40_000).await.unwrap();
    let mut out = Vec::new();
    let err = r.read_to_end(&mut out).await.unwrap_err();
    assert!(matches!(
        FetchError::from_io("img", err),
        FetchError::TooLarge { limit: 40_000, .. }
    ));
    assert!(out.len() <= 40_000, "read past the limit: {}", out.len());
    assert!(matches!(
        fetch_all(&src, "targets/img", 40_000).await,
        Err(FetchError::TooLarge { limit: 40_000, .. })
    ));
}

#[tokio::test]
async fn stall_is_detected_and_resumed() {
    let data = common::noise(300_000, 7);
    let s = server_with(&data).await;
    s.set(Faults {
        stall_at: Some(70_000),
        stall_times: 1,
        ..Faults::default()
    });
    let src = HttpSource::new(&s.url(), fast()).unwrap();
    let t = std::time::Instant::now();
    let got = read_exact_file(&src, "targets/img", 0, data.len() as u64)
        .await
        .unwrap();
    assert_eq!(got, data);
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(s.seen().last().unwrap().range_start, Some(70_000));

    // A server that always stalls ends in a clear error.
    s.set(Faults {
        stall_at: Some(1000),
        stall_times: 100,
        ..Faults::default()
    });
    let err = read_exact_file(&src, "targets/img", 0, data.len() as u64)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("stalled"), "{err}");
}

#[tokio::test]
async fn transient_errors_are_retried_and_404_is_not() {
    let data = common::noise(1000, 8);
    let s = server_with(&data).await;
    s.set(Faults {
        fail_first: 2,
        ..Faults::default()
    });
    let src = HttpSource::new(&s.url(), fast()).unwrap();
    assert_eq!(fetch_all(&src, "targets/img", 1000).await.unwrap(), data);
    assert_eq!(s.seen().len(), 3);
    let err = fetch_all(&src, "targets/nope", 1000).await.unwrap_err();
    assert!(matches!(err, FetchError::NotFound { .. }), "{err}");
    assert_eq!(s.seen().len(), 4, "404 must not be retried");
}

#[tokio::test]
async fn redirects_only_to_https_or_same_origin() {
    let data = common::noise(1000, 9);
    let s = server_with(&data).await;
    let other = server_with(&data).await;
    let mut f = Faults::default();
    f.redirects
        .insert("targets/same".into(), format!("{}targets/img", s.url()));
    f.redirects.insert(
        "targets/elsewhere".into(),
        format!("http://localhost:{}/targets/img", other.addr.port()),
    );
    s.set(f);
    let src = HttpSource::new(&s.url(), fast()).unwrap();
    assert_eq!(fetch_all(&src, "targets/same", 1000).await.unwrap(), data);
    let err = fetch_all(&src, "targets/elsewhere", 1000)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Redirect { .. }), "{err}");
    assert!(other.seen().is_empty(), "redirect target was contacted");

    // An https repository never follows a redirect to http, not even its own host.
    let strict = HttpSource::new(
        &s.url(),
        HttpOptions {
            redirects: patchd::fetch::RedirectRule::HttpsOnly,
            ..fast()
        },
    )
    .unwrap();
    let err = fetch_all(&strict, "targets/same", 1000).await.unwrap_err();
    assert!(matches!(err, FetchError::Redirect { .. }), "{err}");
}

#[tokio::test]
async fn tls_failure_is_a_clear_error() {
    let data = common::noise(1000, 10);
    let s = server_with(&data).await;
    // https to a port that speaks plain HTTP.
    let url = format!("https://{}/", s.addr);
    let src = HttpSource::new(&url, fast()).unwrap();
    let err = fetch_all(&src, "targets/img", 1000).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FetchError::RetriesExhausted { .. }), "{msg}");
    let lower = msg.to_lowercase();
    assert!(
        lower.contains("tls") || lower.contains("corrupt message") || lower.contains("handshake"),
        "{msg}"
    );
    // A malformed extra CA bundle is refused at construction.
    let bad = HttpSource::new(
        &url,
        HttpOptions {
            extra_ca_pem: Some(b"not a pem".to_vec()),
            ..fast()
        },
    );
    assert!(matches!(bad, Err(FetchError::Config { .. })));
}

/// A small window and minimum rate so the slow-retrieval rule decides within seconds.
fn rate_rule(min_rate: u64, window_ms: u64, floor_ms: u64) -> HttpOptions {
    HttpOptions {
        min_rate: RateRule {
            min_rate,
            window: Duration::from_millis(window_ms),
            deadline_floor: Duration::from_millis(floor_ms),
        },
        ..fast()
    }
}

#[tokio::test]
async fn trickling_mirror_is_abandoned_as_slow_retrieval_after_one_window() {
    let data = common::noise(262_159, 21);
    let s = server_with(&data).await;
    // 20 bytes every 100 ms = 200 B/s: never silent long enough to look stalled.
    s.set(Faults {
        trickle: Some((20, Duration::from_millis(100))),
        ..Faults::default()
    });
    let src = HttpSource::new(&s.url(), rate_rule(1000, 1000, 30_000)).unwrap();
    let t0 = std::time::Instant::now();
    let err = read_exact_file(&src, "targets/img", 0, data.len() as u64)
        .await
        .unwrap_err();
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(4), "took {took:?}: {err}");
    let FetchError::SlowRetrieval { why, .. } = &err else {
        panic!("not a slow retrieval: {err:?}");
    };
    match why {
        SlowRetrieval::BelowMinRate {
            rate,
            min_rate,
            received,
            expected,
            ..
        } => {
            assert!(*rate < 400.0, "{rate}");
            assert_eq!((*min_rate, *expected), (1000, 262_159));
            assert!(*received > 0 && *received < 1000, "{received}");
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("slow retrieval: average rate"), "{msg}");
    assert!(msg.contains("below the minimum 1000 B/s"), "{msg}");
    assert!(msg.contains("of 262159 bytes received"), "{msg}");
    // Abandoned, not resumed over and over on the same slow mirror.
    assert_eq!(s.seen().len(), 1, "{:?}", s.seen());
}

#[tokio::test]
async fn silence_after_some_bytes_is_reported_as_no_data_with_what_arrived() {
    let data = common::noise(200_000, 22);
    let s = server_with(&data).await;
    s.set(Faults {
        stall_at: Some(5000),
        stall_times: 100,
        ..Faults::default()
    });
    // The stall timer is longer than the window: the rate rule speaks first.
    let opts = HttpOptions {
        stall_timeout: Duration::from_secs(20),
        ..rate_rule(1000, 1000, 30_000)
    };
    let src = HttpSource::new(&s.url(), opts).unwrap();
    let err = read_exact_file(&src, "targets/img", 0, data.len() as u64)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.slow_retrieval(),
            Some(SlowRetrieval::NoData {
                received: 5000,
                expected: 200_000,
                ..
            })
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("no byte at all for 1 s (5000 of 200000 bytes received)"),
        "{msg}"
    );
}

#[tokio::test]
async fn download_still_running_at_its_size_derived_deadline_is_abandoned() {
    let data = common::noise(2000, 23);
    let s = server_with(&data).await;
    // 500 B/s; the window (10 s) never fills, the deadline is 1 s + 2000 B / 1000 B/s.
    s.set(Faults {
        trickle: Some((50, Duration::from_millis(100))),
        ..Faults::default()
    });
    let src = HttpSource::new(&s.url(), rate_rule(1000, 10_000, 1000)).unwrap();
    let t0 = std::time::Instant::now();
    let err = read_exact_file(&src, "targets/img", 0, data.len() as u64)
        .await
        .unwrap_err();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(5),
        "took {took:?}: {err}"
    );
    assert!(
        matches!(err.slow_retrieval(), Some(SlowRetrieval::Deadline { .. })),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("slow retrieval: deadline of 3 s"), "{msg}");
    assert!(msg.contains("of 2000 bytes received (average"), "{msg}");
}

#[tokio::test]
async fn resumed_download_gets_a_deadline_for_the_bytes_left_only() {
    let data = common::noise(300_000, 24);
    let s = server_with(&data).await;
    // 10 KB/s. Resumed at 250 000, the 50 000 bytes left get 1 s + 50 000 / 50 000 B/s
    // = 2 s (the whole file would get 7 s, enough to finish in 5 s).
    s.set(Faults {
        trickle: Some((1000, Duration::from_millis(100))),
        ..Faults::default()
    });
    let src = HttpSource::new(&s.url(), rate_rule(50_000, 10_000, 1000)).unwrap();
    let err = read_exact_file(&src, "targets/img", 250_000, data.len() as u64)
        .await
        .unwrap_err();
    match err.slow_retrieval() {
        Some(SlowRetrieval::Deadline { secs, received, .. }) => {
            assert_eq!(*secs, 2, "{err}");
            assert!((250_000..300_000).contains(received), "{err}");
        }
        _ => panic!("{err:?}"),
    }
    assert_eq!(s.seen()[0].range_start, Some(250_000));
}

#[tokio::test]
async fn a_mirror_above_the_minimum_rate_is_left_alone() {
    let data = common::noise(600_000, 25);
    let s = server_with(&data).await;
    // About 1.3 MB/s against a minimum of 100 kB/s over 1 s windows.
    s.set(Faults {
        chunk_delay: Some(Duration::from_millis(50)),
        ..Faults::default()
    });
    let src = HttpSource::new(&s.url(), rate_rule(100_000, 1000, 1000)).unwrap();
    let got = read_exact_file(&src, "targets/img", 0, data.len() as u64)
        .await
        .unwrap();
    assert_eq!(got, data);
    assert_eq!(s.seen().len(), 1);
}
