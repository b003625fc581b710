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

    // Forwarded so a bounded range stays bounded on the wire (the default would ask
    // the inner source for `bytes=N-`).
    fn open_range<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        len: u64,
        file_len: u64,
    ) -> BoxFuture<'a, Result<ByteReader, FetchError>> {
        Box::pin(async move {
            let full = format!("{}{}", self.prefix, path);
            self.inner.open_range(&full, offset, len, file_len).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records which method the view called on it.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl ByteSource for Recorder {
        fn describe(&self) -> String {
            "recorder".into()
        }
        fn open<'a>(
            &'a self,
            path: &'a str,
            offset: u64,
            _limit: u64,
        ) -> BoxFuture<'a, Result<ByteReader, FetchError>> {
            Box::pin(async move {
                self.0.lock().unwrap().push(format!("open {path} {offset}"));
                let r: ByteReader = Box::new(tokio::io::empty());
                Ok(r)
            })
        }
        fn open_range<'a>(
            &'a self,
            path: &'a str,
            offset: u64,
            len: u64,
            _file_len: u64,
        ) -> BoxFuture<'a, Result<ByteReader, FetchError>> {
            Box::pin(async move {
                self.0
                    .lock()
                    .unwrap()
                    .push(format!("range {path} {offset}+{len}"));
                let r: ByteReader = Box::new(tokio::io::empty());
                Ok(r)
            })
        }
    }

    #[tokio::test]
    async fn a_subdir_forwards_bounded_ranges_with_its_prefix() {
        let inner = Recorder::default();
        let view = Subdir::new(&inner, "/targets/");
        view.open_range("a.img", 10, 5, 100).await.unwrap();
        view.open("b.img", 0, 7).await.unwrap();
        assert_eq!(
            *inner.0.lock().unwrap(),
            vec![
                "range targets/a.img 10+5".to_string(),
                "open targets/b.img 0".to_string()
            ]
        );
    }
}
