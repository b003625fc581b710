//! Several bounded range reads of one file in flight at once, delivered in request order
//! (the dynamic delta fetches its missing chunk runs this way).
//!
//! Memory stays bounded by the requests, not the file: at most `in_flight` ranges are
//! being read or waiting to be taken, plus one in the hand-over channel and the one the
//! consumer holds — `(in_flight + 2) × largest range` bytes. Each request runs as its own
//! task (it keeps going while the consumer works on an earlier range) and is aborted when
//! the stream is dropped.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::{ByteSource, FetchError};

/// One range of the file: `len` bytes from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub offset: u64,
    pub len: u64,
}

/// The ranges' bytes, in the order they were asked for. Dropping it cancels the
/// requests still running.
pub struct RangeStream {
    rx: mpsc::Receiver<Result<Vec<u8>, FetchError>>,
    task: tokio::task::JoinHandle<()>,
}

impl RangeStream {
    /// Start reading `ranges` of `path` (signed length `file_len`) from `src`, at most
    /// `in_flight` (at least 1) requests at a time. Must be called inside a tokio runtime.
    pub fn start(
        src: Arc<dyn ByteSource>,
        path: String,
        file_len: u64,
        ranges: Vec<Range>,
        in_flight: usize,
    ) -> RangeStream {
        let (tx, rx) = mpsc::channel(1);
        let task = tokio::spawn(async move {
            let path: Arc<str> = path.into();
            // Each request is its own task, so it keeps going while the consumer is busy
            // with an earlier range; `buffered` starts at most `in_flight` of them.
            let mut results = futures_util::stream::iter(ranges)
                .map(|r| {
                    let (src, path) = (src.clone(), path.clone());
                    Aborting(tokio::spawn(async move {
                        read_range(src.as_ref(), &path, r, file_len).await
                    }))
                })
                .buffered(in_flight.max(1));
            while let Some(res) = results.next().await {
                let res = res.unwrap_or_else(|e| {
                    Err(FetchError::Protocol {
                        what: path.to_string(),
                        why: format!("range request task failed: {e}"),
                    })
                });
                let failed = res.is_err();
                // The consumer went away, or the first failure ends the stream.
                if tx.send(res).await.is_err() || failed {
                    return;
                }
            }
        });
        RangeStream { rx, task }
    }

    /// The next range's bytes; `None` after the last one (or after an error).
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, FetchError>> {
        self.rx.recv().await
    }

    /// [`RangeStream::next`] from a blocking thread (never from an async task).
    pub fn blocking_next(&mut self) -> Option<Result<Vec<u8>, FetchError>> {
        self.rx.blocking_recv()
    }
}

impl Drop for RangeStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A request task that is cancelled when nobody waits for it any more.
struct Aborting<T>(tokio::task::JoinHandle<T>);

impl<T> std::future::Future for Aborting<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for Aborting<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Exactly the bytes of one range (bounded read: the source never goes past its end).
pub async fn read_range(
    src: &dyn ByteSource,
    path: &str,
    r: Range,
    file_len: u64,
) -> Result<Vec<u8>, FetchError> {
    let mut reader = src.open_range(path, r.offset, r.len, file_len).await?;
    let n = usize::try_from(r.len).map_err(|_| FetchError::TooLarge {
        what: path.to_string(),
        limit: usize::MAX as u64,
    })?;
    let mut buf = vec![0u8; n];
    reader
        .read_exact(&mut buf)
        .await
        .map_err(|e| FetchError::from_io(path, e))?;
    // A source with more than the range is lying about it: fail rather than ignore it.
    let mut extra = [0u8; 1];
    match reader.read(&mut extra).await {
        Ok(0) => Ok(buf),
        Ok(_) => Err(FetchError::TooLarge {
            what: path.to_string(),
            limit: r.len,
        }),
        Err(e) => Err(FetchError::from_io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::FileSource;

    #[tokio::test]
    async fn ranges_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("f"), &data).unwrap();
        let src: Arc<dyn ByteSource> = Arc::new(FileSource::new(dir.path()));
        let ranges: Vec<Range> = (0..20)
            .map(|i| Range {
                offset: i * 4000 + 7,
                len: 1000 + i,
            })
            .collect();
        let mut s = RangeStream::start(src, "f".into(), data.len() as u64, ranges.clone(), 3);
        for r in &ranges {
            let b = s.next().await.unwrap().unwrap();
            assert_eq!(b, data[r.offset as usize..(r.offset + r.len) as usize]);
        }
        assert!(s.next().await.is_none());
    }
}
