//! A bounded range read (`ByteSource::open_range`) yields exactly the bytes asked for and
//! never more: HTTP asks for `bytes=a-b` only, refuses an answer for another range, total
//! or length before reading its body, and fails a body that goes on past the range; a
//! server that ignores the range is skipped to the range and cut at its end (or refused).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::http::{FaultServer, Faults};

use patchd::fetch::ranges::{read_range, Range};
use patchd::fetch::{ByteSource, FetchError, HttpOptions, HttpSource, RangeIgnored, RetryPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How the test server answers `bytes=a-b` of `data`.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    /// The right 206.
    Honest,
    /// The right headers (no Content-Length), then the body runs on to the file's end.
    SendsMore,
    /// 206 from `a` to the end of the file, as for `bytes=a-`.
    IgnoresEnd,
    /// 206 for the range, but a total other than the file's length.
    WrongTotal,
    /// 200 with the whole file.
    WholeFile,
}

struct Server {
    url: String,
    heads: Arc<Mutex<Vec<String>>>,
    _task: tokio::task::JoinHandle<()>,
}

async fn server(data: Arc<Vec<u8>>, answer: Answer) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let h2 = heads.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let (data, heads) = (data.clone(), h2.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if c.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let text = String::from_utf8_lossy(&head).to_lowercase();
                heads.lock().unwrap().push(text.clone());
                let spec = text
                    .lines()
                    .find_map(|l| l.strip_prefix("range: bytes="))
                    .unwrap_or("0-")
                    .trim()
                    .to_string();
                let (a, z) = spec.split_once('-').unwrap();
                let a: usize = a.parse().unwrap();
                let total = data.len();
                let z: usize = z.parse().unwrap_or(total - 1);
                let (hdr, body) = match answer {
                    Answer::Honest => (
                        format!(
                            "206 Partial Content\r\nContent-Range: bytes {a}-{z}/{total}\r\nContent-Length: {}",
                            z + 1 - a
                        ),
                        &data[a..=z],
                    ),
                    Answer::SendsMore => (
                        format!("206 Partial Content\r\nContent-Range: bytes {a}-{z}/{total}"),
                        &data[a..],
                    ),
                    Answer::IgnoresEnd => (
                        format!(
                            "206 Partial Content\r\nContent-Range: bytes {a}-{}/{total}\r\nContent-Length: {}",
                            total - 1,
                            total - a
                        ),
                        &data[a..],
                    ),
                    Answer::WrongTotal => (
                        format!(
                            "206 Partial Content\r\nContent-Range: bytes {a}-{z}/{}\r\nContent-Length: {}",
                            total + 1,
                            z + 1 - a
                        ),
                        &data[a..=z],
                    ),
                    Answer::WholeFile => (format!("200 OK\r\nContent-Length: {total}"), &data[..]),
                };
                let resp = format!("HTTP/1.1 {hdr}\r\nConnection: close\r\n\r\n");
                let _ = c.write_all(resp.as_bytes()).await;
                let _ = c.write_all(body).await;
                let _ = c.shutdown().await;
            });
        }
    });
    Server {
        url,
        heads,
        _task: task,
    }
}

fn data() -> Arc<Vec<u8>> {
    Arc::new((0..300_000u32).map(|i| (i * 7 % 251) as u8).collect())
}

fn source(url: &str, on_ignored: RangeIgnored) -> HttpSource {
    HttpSource::new(
        url,
        HttpOptions {
            retry: RetryPolicy::none(),
            on_range_ignored: on_ignored,
            ..HttpOptions::default()
        },
    )
    .unwrap()
}

const R: Range = Range {
    offset: 100_000,
    len: 50_000,
};

/// Everything the reader yields before it ends or fails.
async fn drain(src: &dyn ByteSource, file_len: u64) -> (Vec<u8>, Option<FetchError>) {
    let mut r = match src.open_range("f", R.offset, R.len, file_len).await {
        Ok(r) => r,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut got = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) => return (got, None),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Some(FetchError::from_io("f", e))),
        }
    }
}

fn want(d: &[u8]) -> &[u8] {
    &d[R.offset as usize..(R.offset + R.len) as usize]
}

#[tokio::test]
async fn honest_server_gets_a_bounded_range_header() {
    let d = data();
    let s = server(d.clone(), Answer::Honest).await;
    let src = source(&s.url, RangeIgnored::Skip);
    let b = read_range(&src, "f", R, d.len() as u64).await.unwrap();
    assert_eq!(b, want(&d));
    let heads = s.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1);
    assert!(
        heads[0].contains("range: bytes=100000-149999\r\n"),
        "{}",
        heads[0]
    );
}

#[tokio::test]
async fn a_body_past_the_range_is_never_yielded_and_fails() {
    let d = data();
    let s = server(d.clone(), Answer::SendsMore).await;
    let src = source(&s.url, RangeIgnored::Skip);
    let (got, err) = drain(&src, d.len() as u64).await;
    assert!(got.len() as u64 <= R.len, "yielded {} bytes", got.len());
    assert_eq!(&got[..], &want(&d)[..got.len()]);
    assert!(matches!(err, Some(FetchError::TooLarge { .. })), "{err:?}");
    let e = read_range(&src, "f", R, d.len() as u64).await.unwrap_err();
    assert!(matches!(e, FetchError::TooLarge { .. }), "{e}");
}

#[tokio::test]
async fn an_answer_for_another_range_is_refused_before_its_body() {
    let d = data();
    let s = server(d.clone(), Answer::IgnoresEnd).await;
    let src = source(&s.url, RangeIgnored::Skip);
    let (got, err) = drain(&src, d.len() as u64).await;
    assert!(got.is_empty());
    assert!(matches!(err, Some(FetchError::Protocol { .. })), "{err:?}");
}

#[tokio::test]
async fn a_total_other_than_the_signed_length_is_refused() {
    let d = data();
    let s = server(d.clone(), Answer::WrongTotal).await;
    let src = source(&s.url, RangeIgnored::Skip);
    let (got, err) = drain(&src, d.len() as u64).await;
    assert!(got.is_empty());
    assert!(
        matches!(err, Some(FetchError::LengthMismatch { .. })),
        "{err:?}"
    );
    // And a signed length the honest server does not have either.
    let s = server(d.clone(), Answer::Honest).await;
    let src = source(&s.url, RangeIgnored::Skip);
    let e = read_range(&src, "f", R, d.len() as u64 - 1)
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::LengthMismatch { .. }), "{e}");
}

#[tokio::test]
async fn a_server_ignoring_ranges_is_cut_at_the_range_end_or_refused() {
    let d = data();
    let s = server(d.clone(), Answer::WholeFile).await;
    let (got, err) = drain(&source(&s.url, RangeIgnored::Skip), d.len() as u64).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, want(&d));
    let (got, err) = drain(&source(&s.url, RangeIgnored::Fail), d.len() as u64).await;
    assert!(got.is_empty());
    assert!(
        matches!(err, Some(FetchError::RangeIgnored { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn ranges_outside_the_file_are_refused_without_a_request() {
    let d = data();
    let s = server(d.clone(), Answer::Honest).await;
    let src = source(&s.url, RangeIgnored::Skip);
    let n = d.len() as u64;
    for (off, len) in [(n - 10, 11), (0, 0), (u64::MAX - 1, 5)] {
        let e = read_range(&src, "f", Range { offset: off, len }, n)
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Protocol { .. }), "{e}");
    }
    assert!(s.heads.lock().unwrap().is_empty());
}

/// A connection dropped inside the range resumes with the rest of the same bounded range
/// (`bytes=<where it stopped>-<range end>`), and the bytes still come out exactly once.
#[tokio::test]
async fn a_dropped_connection_resumes_inside_the_range() {
    let d = data();
    let server = FaultServer::start().await;
    server.add("f", d.to_vec());
    server.set(Faults {
        truncate_at: Some(120_000),
        truncate_times: 1,
        ..Faults::default()
    });
    let src = HttpSource::new(
        &server.url(),
        HttpOptions {
            retry: RetryPolicy {
                initial_backoff: Duration::from_millis(10),
                jitter: false,
                ..RetryPolicy::default()
            },
            ..HttpOptions::default()
        },
    )
    .unwrap();
    let b = read_range(&src, "f", R, d.len() as u64).await.unwrap();
    assert_eq!(b, want(&d));
    let starts: Vec<Option<u64>> = server.seen().iter().map(|s| s.range_start).collect();
    assert_eq!(starts, vec![Some(100_000), Some(120_000)]);
}
