//! Slow retrieval: a source that stalls is abandoned after the configured timeout.
mod tuf_support;
use std::time::Duration;

use patchd::fetch::{BoxFuture, ByteReader, ByteSource, FetchError, FileSource};
use patchd::trust::{Limits, TrustError};
use tuf_support::*;

/// Serves files from a directory, but `stall_after` bytes in, stops sending forever.
struct Stalling {
    inner: FileSource,
    stall_after: usize,
}

struct StallReader {
    data: Vec<u8>,
    pos: usize,
    stall_after: usize,
}

impl tokio::io::AsyncRead for StallReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let end = self.data.len().min(self.stall_after);
        if self.pos >= end {
            if self.pos >= self.data.len() {
                return std::task::Poll::Ready(Ok(()));
            }
            // Never wakes: the peer went silent.
            return std::task::Poll::Pending;
        }
        let n = buf.remaining().min(end - self.pos).min(1);
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        std::task::Poll::Ready(Ok(()))
    }
}

impl ByteSource for Stalling {
    fn describe(&self) -> String {
        "stalling".into()
    }
    fn open<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        limit: u64,
    ) -> BoxFuture<'a, Result<ByteReader, FetchError>> {
        Box::pin(async move {
            let data = patchd::fetch::fetch_all(&self.inner, path, limit).await?;
            let data = data[offset as usize..].to_vec();
            let r: ByteReader = Box::new(StallReader {
                data,
                pos: 0,
                stall_after: self.stall_after,
            });
            Ok(r)
        })
    }
}

fn limits() -> Limits {
    Limits {
        metadata_timeout: Duration::from_secs(2),
        stall_timeout: Duration::from_secs(2),
        ..Limits::default()
    }
}

#[tokio::test]
async fn stalled_metadata_times_out() {
    let repo = Repo::new(false);
    let dev = Device::new(&repo);
    let before = dev.snapshot_files();
    let src = Stalling {
        inner: repo.meta_source(),
        stall_after: 10,
    };
    let mut c = dev.client_with(limits());
    assert_rejected(
        c.refresh(&src).await,
        // Bytes did arrive, slowly: the message must not claim that none did.
        |e| {
            let msg = e.to_string();
            matches!(e, TrustError::Timeout { received: 10, .. })
                && e.is_slow_retrieval()
                && msg.contains("slow retrieval: not complete within 2 s (10 bytes received")
                && !msg.contains("no data")
        },
        &dev,
        &before,
    );
}

#[tokio::test]
async fn stalled_target_times_out_without_partial_file() {
    let mut repo = Repo::new(false);
    repo.add_target("t.bin", &[7u8; 1000]);
    repo.publish();
    let dev = Device::new(&repo);
    let mut c = dev.client_with(limits());
    c.refresh(&repo.meta_source()).await.unwrap();
    let before = dev.snapshot_files();
    let t = c.target(&repo.meta_source(), "t.bin").await.unwrap();
    let src = Stalling {
        inner: repo.targets_source(),
        stall_after: 500,
    };
    let out = tempfile::tempdir().unwrap();
    let r = c
        .download_target_file(&src, &t, &out.path().join("t.bin"))
        .await;
    assert_rejected(
        r,
        |e| {
            matches!(e, TrustError::Timeout { received: 500, .. })
                && e.is_slow_retrieval()
                && e.to_string()
                    .contains("slow retrieval: no byte at all for 2 s (500 of 1000 bytes received)")
        },
        &dev,
        &before,
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}
