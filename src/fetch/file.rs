//! Local-directory byte source (offline bundles, the demo, tests).

use std::io::SeekFrom;
use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{validate_repo_path, BoxFuture, ByteReader, FetchError, ReadRequest, ReadSource};

/// Serves repository files from a directory.
#[derive(Debug, Clone)]
pub struct FileSource {
    root: PathBuf,
}

impl FileSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

impl FileSource {
    async fn open_from(
        &self,
        path: &str,
        offset: u64,
        limit: u64,
    ) -> Result<ByteReader, FetchError> {
        validate_repo_path(path)?;
        let full = self.root.join(path);
        let io = |source| FetchError::Io {
            what: full.display().to_string(),
            source,
        };
        let mut f = match tokio::fs::File::open(&full).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(FetchError::NotFound {
                    what: full.display().to_string(),
                })
            }
            Err(e) => return Err(io(e)),
        };
        if offset > 0 {
            f.seek(SeekFrom::Start(offset)).await.map_err(io)?;
        }
        let r: ByteReader = Box::new(f.take(limit.saturating_sub(offset).saturating_add(1)));
        Ok(r)
    }

    async fn open_exact_len(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<ByteReader, FetchError> {
        let r = self.open_from(path, offset, len).await?;
        // The file may still change under us; callers count the bytes they get.
        let full = self.root.join(path);
        if let Ok(m) = tokio::fs::metadata(&full).await {
            if m.len() != len {
                return Err(FetchError::LengthMismatch {
                    what: full.display().to_string(),
                    expected: len,
                    announced: m.len(),
                });
            }
        }
        Ok(r)
    }
}

impl ReadSource for FileSource {
    fn description(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn open_read<'a>(
        &'a self,
        path: &'a str,
        req: ReadRequest,
    ) -> BoxFuture<'a, Result<ByteReader, FetchError>> {
        Box::pin(async move {
            match req {
                ReadRequest::UpTo { offset, limit } => self.open_from(path, offset, limit).await,
                ReadRequest::Exact { offset, len } => self.open_exact_len(path, offset, len).await,
                // A file seeks to the offset and stops reading at the range's end.
                ReadRequest::Range {
                    offset,
                    end,
                    file_len,
                } => {
                    let r = self.open_exact_len(path, offset, file_len).await?;
                    let r: ByteReader = Box::new(r.take(end - offset));
                    Ok(r)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::fetch_all;
    use super::*;
    use crate::fetch::ByteSource;

    #[tokio::test]
    async fn file_source_limits() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.json"), b"0123456789").unwrap();
        let src = FileSource::new(dir.path());
        assert_eq!(fetch_all(&src, "x.json", 10).await.unwrap(), b"0123456789");
        assert!(matches!(
            fetch_all(&src, "x.json", 9).await,
            Err(FetchError::TooLarge { .. })
        ));
        assert!(matches!(
            fetch_all(&src, "nope.json", 9).await,
            Err(FetchError::NotFound { .. })
        ));
        assert!(matches!(
            fetch_all(&src, "../x.json", 9).await,
            Err(FetchError::InvalidPath { .. })
        ));
        assert!(src.open_exact("x.json", 0, 10).await.is_ok());
        assert!(matches!(
            src.open_exact("x.json", 0, 11).await,
            Err(FetchError::LengthMismatch { announced: 10, .. })
        ));
    }

    #[tokio::test]
    async fn streaming_hands_every_byte_to_the_sink_and_stops_on_its_error() {
        use crate::fetch::{fetch_each, Streamed};
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("big"), &big).unwrap();
        let src = FileSource::new(dir.path());
        let mut got = Vec::new();
        let mut calls = 0;
        let n = fetch_each(&src, "big", 200_000, |c| {
            calls += 1;
            got.extend_from_slice(c);
            Ok::<(), String>(())
        })
        .await
        .unwrap();
        assert_eq!((n, got == big), (200_000, true));
        assert!(calls > 1, "handed over whole, not streamed");
        // One byte more than allowed: refused, and the sink never saw the excess.
        let mut seen = 0u64;
        let e = fetch_each(&src, "big", 199_999, |c| {
            seen += c.len() as u64;
            Ok::<(), String>(())
        })
        .await
        .unwrap_err();
        assert!(matches!(
            e,
            Streamed::Fetch(FetchError::TooLarge { limit: 199_999, .. })
        ));
        assert!(seen <= 199_999);
        let mut calls = 0;
        let e = fetch_each(&src, "big", 200_000, |_| {
            calls += 1;
            Err("disk full".to_string())
        })
        .await
        .unwrap_err();
        assert!(matches!(e, Streamed::Sink(ref s) if s == "disk full"));
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn file_source_range_stops_at_its_end() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), b"0123456789").unwrap();
        let src = FileSource::new(dir.path());
        let mut b = Vec::new();
        let mut r = src.open_range("x", 3, 4, 10).await.unwrap();
        r.read_to_end(&mut b).await.unwrap();
        assert_eq!(b, b"3456");
        for (off, len, total) in [(8, 3, 10), (0, 0, 10), (u64::MAX, 2, 10)] {
            assert!(matches!(
                src.open_range("x", off, len, total).await,
                Err(FetchError::Protocol { .. })
            ));
        }
        assert!(matches!(
            src.open_range("x", 0, 4, 11).await,
            Err(FetchError::LengthMismatch { .. })
        ));
    }
}
