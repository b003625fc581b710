//! Byte sources: where repository files come from (local directory, HTTP(S)).
//!
//! Callers always say how many bytes they expect at most; a source never yields more.
//! Nothing here trusts a length or a hash: verification happens in `trust` / `slot` over
//! the very bytes this module yields.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncReadExt};

mod file;
pub use file::FileSource;

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
}

/// Fetch a whole (small) file such as TUF metadata, refusing more than `limit` bytes.
pub async fn fetch_all(
    src: &dyn ByteSource,
    path: &str,
    limit: u64,
) -> Result<Vec<u8>, FetchError> {
    let reader = src.open(path, 0, limit).await?;
    let mut buf = Vec::new();
    // Read one byte past the limit to tell "exactly limit" from "more than limit".
    let mut limited = reader.take(limit.saturating_add(1));
    limited
        .read_to_end(&mut buf)
        .await
        .map_err(|e| io_or_too_large(path, limit, e))?;
    if buf.len() as u64 > limit {
        return Err(FetchError::TooLarge {
            what: path.to_string(),
            limit,
        });
    }
    Ok(buf)
}

fn io_or_too_large(path: &str, limit: u64, e: std::io::Error) -> FetchError {
    if e.kind() == std::io::ErrorKind::FileTooLarge {
        FetchError::TooLarge {
            what: path.to_string(),
            limit,
        }
    } else {
        FetchError::Io {
            what: path.to_string(),
            source: e,
        }
    }
}

/// Check a repository-relative path before it touches a file system or a URL.
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
