//! Byte-source adapters used by the TUF client.

use crate::fetch::{BoxFuture, ByteReader, ByteSource, FetchError};

/// A view of one directory of another source: `Subdir::new(&repo, "metadata")` serves
/// `metadata/timestamp.json` as `timestamp.json`.
pub struct Subdir<'s> {
    inner: &'s dyn ByteSource,
    prefix: String,
}

impl<'s> Subdir<'s> {
    pub fn new(inner: &'s dyn ByteSource, dir: &str) -> Self {
        let dir = dir.trim_matches('/');
        Self {
            inner,
            prefix: if dir.is_empty() {
                String::new()
            } else {
                format!("{dir}/")
            },
        }
    }
}

impl ByteSource for Subdir<'_> {
    fn describe(&self) -> String {
        format!("{}/{}", self.inner.describe(), self.prefix)
    }

    fn open<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        limit: u64,
    ) -> BoxFuture<'a, Result<ByteReader, FetchError>> {
        Box::pin(async move {
            let full = format!("{}{}", self.prefix, path);
            self.inner.open(&full, offset, limit).await
        })
    }
}
