//! Byte sources: where repository files come from (local directory, HTTP(S)).
//!
//! Callers always say how many bytes they expect at most; a source never yields more.
//! Nothing here trusts a length or a hash: verification happens in `trust` / `slot` over
//! the very bytes this module yields.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncReadExt};

mod config;
mod file;
mod http;
pub mod ranges;
pub mod rate;
pub use config::{FetchConfig, RawFetch, NO_MIN_RATE};
pub use file::FileSource;
pub use http::{HttpOptions, HttpSource, RangeIgnored, RedirectRule, RetryPolicy, TlsOptions};
pub use rate::{RateRule, SlowRetrieval};

/// A boxed future, so [`ByteSource`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A reader over one repository file, already limited to the bytes the caller allowed.
pub type ByteReader = Box<dyn AsyncRead + Send + Unpin>;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid repository path {path:?}: {why}")]
    InvalidPath { path: String, why: &'static str },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{what} is larger than the allowed {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {why}")]
    Protocol { what: String, why: String },
    #[error("{what}: cancelled")]
    Cancelled { what: String },
    #[error("{what}: server announces {announced} bytes, the signed length is {expected}")]
    LengthMismatch {
        what: String,
        expected: u64,
        announced: u64,
    },
    #[error("{what}: server ignored the range request from byte {offset}")]
    RangeIgnored { what: String, offset: u64 },
    #[error("{what}: redirect refused: {why}")]
    Redirect { what: String, why: String },
    #[error("{what}: gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        what: String,
        attempts: u32,
        last: String,
    },
    #[error("source configuration {what}: {why}")]
    Config { what: String, why: String },
    /// The source delivered too slowly (TUF's slow retrieval attack): abandoned so the
    /// download can resume from its checkpoint later instead of blocking updates.
    #[error("{what}: slow retrieval: {why}")]
    SlowRetrieval { what: String, why: SlowRetrieval },
}

impl FetchError {
    /// The slow-retrieval verdict, if this is one.
    pub fn slow_retrieval(&self) -> Option<&SlowRetrieval> {
        match self {
            FetchError::SlowRetrieval { why, .. } => Some(why),
            _ => None,
        }
    }

    /// Recover a `FetchError` that travelled through a reader as an `io::Error`.
    pub fn from_io(what: &str, e: std::io::Error) -> FetchError {
        if !e.get_ref().is_some_and(|i| i.is::<FetchError>()) {
            return FetchError::Io {
                what: what.to_string(),
                source: e,
            };
        }
        let kind = e.kind();
        match e.into_inner().map(|i| i.downcast::<FetchError>()) {
            Some(Ok(f)) => *f,
            Some(Err(other)) => FetchError::Io {
                what: what.to_string(),
                source: std::io::Error::new(kind, other),
            },
            None => FetchError::Io {
                what: what.to_string(),
                source: std::io::Error::from(kind),
            },
        }
    }
}

/// One kind of place repository files come from. `path` is a repository-relative path
/// with `/` separators (`metadata/1.root.json`, `targets/…`); sources validate it.
pub trait ByteSource: Send + Sync {
    /// Human-readable description for logs and errors; never contains credentials.
    fn describe(&self) -> String;

    /// Open `path` starting at byte `offset`, yielding at most `limit - offset` bytes
    /// (the reader ends with an error, not silently, if the source has more).
    fn open<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        limit: u64,
    ) -> BoxFuture<'a, Result<ByteReader, FetchError>>;

    /// Like [`ByteSource::open`] for a file whose total length is known from signed
    /// metadata: a source that can tell early that the file is not exactly `len` bytes
    /// (e.g. from `Content-Length`) fails before yielding anything. Callers still count
    /// the bytes they receive.
    fn open_exact<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<ByteReader, FetchError>> {
        self.open(path, offset, len)
    }

    /// Exactly the bytes `offset..offset + len` of a file whose signed length is
    /// `file_len`, and never a byte past `offset + len`: HTTP asks for that range alone
    /// (`Range: bytes=a-b`) and checks the answer's `Content-Range` before reading; a file
    /// source seeks and stops there. A source that has fewer bytes ends the reader early
    /// (callers read exactly `len`), one that sends more fails the read.
    ///
    /// The default (for sources that cannot ask for a bounded range) opens the file at
    /// `offset` and stops reading at `offset + len`.
    fn open_range<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        len: u64,
        file_len: u64,
    ) -> BoxFuture<'a, Result<ByteReader, FetchError>> {
        Box::pin(async move {
            let end = check_range(path, offset, len, file_len)?;
            let r = self.open_exact(path, offset, file_len).await?;
            let r: ByteReader = Box::new(r.take(end - offset));
            Ok(r)
        })
    }
}

/// Which read of a [`ByteSource`] was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadRequest {
    /// [`ByteSource::open`]: from `offset`, at most `limit - offset` bytes.
    UpTo { offset: u64, limit: u64 },
    /// [`ByteSource::open_exact`]: from `offset` of a file whose signed length is `len`.
    Exact { offset: u64, len: u64 },
    /// [`ByteSource::open_range`]: exactly `offset..end` of a file of `file_len` bytes,
    /// already checked to lie inside it.
    Range {
        offset: u64,
        end: u64,
        file_len: u64,
    },
}

/// A source that answers every kind of read in one function (the local directory, HTTP);
/// its [`ByteSource`] methods follow from it.
pub trait ReadSource: Send + Sync {
    /// [`ByteSource::describe`].
    fn description(&self) -> String;
    fn open_read<'a>(
        &'a self,
        path: &'a str,
        req: ReadRequest,
    ) -> BoxFuture<'a, Result<ByteReader, FetchError>>;
}

impl<T: ReadSource> ByteSource for T {
    fn describe(&self) -> String {
        self.description()
    }

    fn open<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        limit: u64,
    ) -> BoxFuture<'a, Result<ByteReader, FetchError>> {
        self.open_read(path, ReadRequest::UpTo { offset, limit })
    }

    fn open_exact<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<ByteReader, FetchError>> {
        self.open_read(path, ReadRequest::Exact { offset, len })
    }

    fn open_range<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        len: u64,
        file_len: u64,
    ) -> BoxFuture<'a, Result<ByteReader, FetchError>> {
        match check_range(path, offset, len, file_len) {
            Ok(end) => self.open_read(
                path,
                ReadRequest::Range {
                    offset,
                    end,
                    file_len,
                },
            ),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

/// `offset + len` when the range lies inside a file of `file_len` bytes.
pub fn check_range(path: &str, offset: u64, len: u64, file_len: u64) -> Result<u64, FetchError> {
    match offset.checked_add(len) {
        Some(end) if end <= file_len && len > 0 => Ok(end),
        _ => Err(FetchError::Protocol {
            what: path.to_string(),
            why: format!(
                "range of {len} bytes from {offset} is empty or outside the file's {file_len} bytes"
            ),
        }),
    }
}

/// Fetch a whole (small) file such as TUF metadata, refusing more than `limit` bytes.
pub async fn fetch_all(
    src: &dyn ByteSource,
    path: &str,
    limit: u64,
) -> Result<Vec<u8>, FetchError> {
    let mut buf = Vec::new();
    fetch_all_into(src, path, limit, &mut buf).await?;
    Ok(buf)
}

/// [`fetch_all`] into `buf`, so a caller that gives up on time (a deadline around this
/// future) can still tell how many bytes had arrived.
pub async fn fetch_all_into(
    src: &dyn ByteSource,
    path: &str,
    limit: u64,
    buf: &mut Vec<u8>,
) -> Result<(), FetchError> {
    fetch_each(src, path, limit, |chunk| {
        buf.extend_from_slice(chunk);
        Ok::<(), std::convert::Infallible>(())
    })
    .await
    .map(|_| ())
    .map_err(|e| match e {
        Streamed::Fetch(f) => f,
        Streamed::Sink(never) => match never {},
    })
}

/// Why [`fetch_each`] stopped: the source, or the caller's sink.
#[derive(Debug)]
pub enum Streamed<E> {
    Fetch(FetchError),
    Sink(E),
}

/// Hand `path` (at most `limit` bytes, more is an error) to `sink` chunk by chunk, so a
/// large target is never held whole; returns the number of bytes handed over. A sink
/// error stops the read at once.
pub async fn fetch_each<E>(
    src: &dyn ByteSource,
    path: &str,
    limit: u64,
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<u64, Streamed<E>> {
    let reader = src.open(path, 0, limit).await.map_err(Streamed::Fetch)?;
    // Read one byte past the limit to tell "exactly limit" from "more than limit".
    let mut limited = reader.take(limit.saturating_add(1));
    let mut chunk = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = limited.read(&mut chunk).await.map_err(|e| {
            Streamed::Fetch(match FetchError::from_io(path, e) {
                FetchError::TooLarge { what, .. } => FetchError::TooLarge { what, limit },
                other => other,
            })
        })?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > limit {
            return Err(Streamed::Fetch(FetchError::TooLarge {
                what: path.to_string(),
                limit,
            }));
        }
        sink(&chunk[..n]).map_err(Streamed::Sink)?;
    }
    Ok(total)
}

pub fn validate_repo_path(path: &str) -> Result<(), FetchError> {
    let bad = |why| {
        Err(FetchError::InvalidPath {
            path: path.to_string(),
            why,
        })
    };
    if path.is_empty() || path.len() > 1024 {
        return bad("empty or longer than 1024 bytes");
    }
    if path.starts_with('/') {
        return bad("absolute");
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return bad("control character or backslash");
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("empty, '.' or '..' component");
    }
    Ok(())
}

/// Where a configured repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoLocation {
    Dir(PathBuf),
    Url(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_paths() {
        assert!(validate_repo_path("metadata/1.root.json").is_ok());
        for bad in ["", "/etc/passwd", "a/../b", "a//b", "./a", "a\\b", "a\nb"] {
            assert!(validate_repo_path(bad).is_err(), "{bad:?}");
        }
    }
}
