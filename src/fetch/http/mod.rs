//! HTTP(S) byte source: reqwest with rustls, retries with backoff, resume by `Range`.
//!
//! The reader a [`HttpSource`] hands out hides reconnects: when a connection drops or
//! stalls mid-body, it reconnects with `Range: bytes=<pos>-` and carries on, so the caller
//! sees one continuous stream and hashes every byte exactly once. If the server ignores the
//! range (answers `200`), the already delivered prefix is read again and discarded rather
//! than delivered twice, so hashing over the stream stays correct (or, if configured, the
//! read fails with [`FetchError::RangeIgnored`]).
//!
//! Lengths from the server are never trusted: the reader never yields more than the
//! caller's limit, fails loudly when the server has more, and `open_exact` refuses a
//! `Content-Length`/`Content-Range` that disagrees with the signed length before any
//! payload byte is read.
//!
//! This file holds the source and its options; `transfer.rs` one transfer: connecting
//! with retries, checking what the server announces, pumping the body with resume.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use reqwest::{StatusCode, Url};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::rate::RateRule;
use super::{validate_repo_path, BoxFuture, ByteReader, FetchError, ReadRequest, ReadSource};

mod tls;
mod transfer;

pub use tls::TlsOptions;
use transfer::{chain, ChannelReader, Transfer};

/// When and how often to retry a failed request or a dropped transfer.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per connection establishment, including the first one. A transfer that
    /// made progress since the last failure gets a fresh budget.
    pub max_attempts: u32,
    /// Delay before the first retry; doubled for each further one.
    pub initial_backoff: Duration,
    /// Upper bound for one delay.
    pub max_backoff: Duration,
    /// Randomise each delay to 50–100 % of its nominal value so a fleet does not retry
    /// in lockstep after an outage.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// No retries at all (tests, interactive one-shot fetches).
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Delay before retry number `retry` (1 = first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(30);
        let nominal = self
            .initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        if self.jitter && !nominal.is_zero() {
            nominal.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
        } else {
            nominal
        }
    }
}

/// What to do when a server answers a range request with the whole file (`200`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeIgnored {
    /// Re-read from byte 0 and discard what was already delivered (default).
    Skip,
    /// Fail with [`FetchError::RangeIgnored`]; the caller restarts on its own.
    Fail,
}

/// Which redirects are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectRule {
    /// Only to `https://` URLs (any host; CDNs redirect across hosts).
    HttpsOnly,
    /// To `https://`, or to plain `http://` on the repository's own origin. For
    /// repositories served over plain http on a trusted network.
    HttpsOrSameOrigin,
    /// Never follow redirects.
    None,
}

/// Options for [`HttpSource`]; `Default` gives the production settings.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub connect_timeout: Duration,
    /// A transfer that receives no byte for this long is dropped and resumed (within
    /// the same read; reconnects count against `retry` and `min_rate`).
    pub stall_timeout: Duration,
    /// Minimum average rate and per-transfer deadline: a transfer that breaks it ends
    /// with [`FetchError::SlowRetrieval`] instead of being resumed.
    pub min_rate: RateRule,
    pub retry: RetryPolicy,
    /// Extra trusted CAs (PEM bundle) on top of the system roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Trust only `extra_ca_pem`, not the system roots (private PKI, tests).
    pub disable_system_roots: bool,
    pub redirects: RedirectRule,
    pub max_redirects: usize,
    pub on_range_ignored: RangeIgnored,
    /// Chunks buffered between the network task and the reader (bounded memory: hyper
    /// hands over chunks of up to ~400 KiB, so each slot can cost that much).
    pub channel_chunks: usize,
    pub user_agent: String,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(15),
            stall_timeout: Duration::from_secs(30),
            min_rate: RateRule::default(),
            retry: RetryPolicy::default(),
            extra_ca_pem: None,
            disable_system_roots: false,
            redirects: RedirectRule::HttpsOrSameOrigin,
            max_redirects: 5,
            on_range_ignored: RangeIgnored::Skip,
            channel_chunks: 2,
            user_agent: concat!("patchd/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// A repository (or any file tree) served over HTTP(S).
#[derive(Debug, Clone)]
pub struct HttpSource {
    base: Url,
    client: reqwest::Client,
    opts: HttpOptions,
}

impl HttpSource {
    /// `base_url` is the repository root (`https://updates.example.com/repo/`).
    /// Proxies come from the environment (`https_proxy`, `no_proxy`, …).
    pub fn new(base_url: &str, opts: HttpOptions) -> Result<Self, FetchError> {
        let what = redact(base_url);
        let cfg = |why: String| FetchError::Config {
            what: what.clone(),
            why,
        };
        let mut base = Url::parse(base_url).map_err(|e| cfg(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(cfg(format!("unsupported scheme {:?}", base.scheme())));
        }
        if base.cannot_be_a_base() || base.host_str().is_none() {
            return Err(cfg("not a base URL".into()));
        }
        base.set_query(None);
        base.set_fragment(None);

        let origin = base.origin();
        let rule = opts.redirects;
        let max = opts.max_redirects;
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max {
                return attempt.error(format!("more than {max} redirects"));
            }
            let to = attempt.url();
            let ok = match rule {
                RedirectRule::None => false,
                RedirectRule::HttpsOnly => to.scheme() == "https",
                RedirectRule::HttpsOrSameOrigin => {
                    to.scheme() == "https" || (to.scheme() == "http" && to.origin() == origin)
                }
            };
            if ok {
                attempt.follow()
            } else {
                let shown = redact(to.as_str());
                attempt.error(format!(
                    "refusing redirect to {shown}: only https or the repository's own origin"
                ))
            }
        });

        let builder = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.stall_timeout)
            .redirect(policy)
            .user_agent(opts.user_agent.clone());
        let tls = TlsOptions {
            extra_ca_pem: opts.extra_ca_pem.clone(),
            disable_system_roots: opts.disable_system_roots,
        };
        let client = tls
            .apply(builder)
            .map_err(cfg)?
            .build()
            .map_err(|e| cfg(chain(&e)))?;
        Ok(Self { base, client, opts })
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn url_for(&self, path: &str) -> Result<Url, FetchError> {
        validate_repo_path(path)?;
        if self.base.cannot_be_a_base() {
            return Err(FetchError::Config {
                what: redact(self.base.as_str()),
                why: "not a base URL".into(),
            });
        }
        let mut url = self.base.clone();
        let mut full = self.base.path().trim_end_matches('/').to_string();
        for s in path.split('/') {
            full.push('/');
            full.push_str(&encode_segment(s));
        }
        url.set_path(&full);
        Ok(url)
    }

    async fn open_inner(
        &self,
        path: &str,
        offset: u64,
        limit: u64,
        exact: bool,
        range_of: Option<u64>,
    ) -> Result<ByteReader, FetchError> {
        let url = self.url_for(path)?;
        let what = redact(url.as_str());
        if offset > limit {
            return Err(FetchError::Protocol {
                what,
                why: format!("start offset {offset} past the limit {limit}"),
            });
        }
        let t = Transfer {
            client: self.client.clone(),
            url,
            what,
            pos: offset,
            limit,
            exact,
            range_of,
            opts: self.opts.clone(),
        };
        if offset == limit && exact {
            return Ok(Box::new(ChannelReader::empty()));
        }
        t.start().await
    }
}

impl ReadSource for HttpSource {
    fn description(&self) -> String {
        redact(self.base.as_str())
    }

    fn open_read<'a>(
        &'a self,
        path: &'a str,
        req: ReadRequest,
    ) -> BoxFuture<'a, Result<ByteReader, FetchError>> {
        Box::pin(match req {
            ReadRequest::UpTo { offset, limit } => {
                self.open_inner(path, offset, limit, false, None)
            }
            ReadRequest::Exact { offset, len } => self.open_inner(path, offset, len, true, None),
            // Only this range is asked for, and the answer's `Content-Range` checked.
            ReadRequest::Range {
                offset,
                end,
                file_len,
            } => self.open_inner(path, offset, end, true, Some(file_len)),
        })
    }
}

/// A URL without user info, for logs and errors.
fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "<invalid url>".to_string(),
    }
}

/// One path segment for the URL: ASCII letters, digits and `-._~` as they are, a `%XX`
/// escape as it is (the TUF client hands over role names already percent-encoded once,
/// `1.%3F.json`, which must reach the server exactly so), everything else `%XX`.
fn encode_segment(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let escape = c == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit();
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') || escape {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::ByteSource;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            jitter: false,
            ..RetryPolicy::default()
        };
        assert_eq!(p.delay(1), Duration::from_millis(500));
        assert_eq!(p.delay(2), Duration::from_secs(1));
        assert_eq!(p.delay(40), Duration::from_secs(30));
        let j = RetryPolicy::default();
        for _ in 0..20 {
            let d = j.delay(3);
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_secs(2),
                "{d:?}"
            );
        }
    }

    #[test]
    fn urls_are_encoded_and_validated() {
        let s = HttpSource::new("http://u:p@127.0.0.1:1/repo", HttpOptions::default()).unwrap();
        assert_eq!(
            s.url_for("targets/a?b#c").unwrap().as_str(),
            "http://u:p@127.0.0.1:1/repo/targets/a%3Fb%23c"
        );
        assert!(s.url_for("../x").is_err());
        // Already-encoded role names go out encoded once; a stray '%' is escaped.
        assert_eq!(
            s.url_for("metadata/1.%3F.json").unwrap().path(),
            "/repo/metadata/1.%3F.json"
        );
        assert_eq!(
            s.url_for("metadata/1...%2Fdelegatedrole.json")
                .unwrap()
                .path(),
            "/repo/metadata/1...%2Fdelegatedrole.json"
        );
        assert_eq!(
            s.url_for("a%zz b%4").unwrap().path(),
            "/repo/a%25zz%20b%254"
        );
        assert_eq!(s.describe(), "http://127.0.0.1:1/repo");
        assert!(HttpSource::new("ftp://x/", HttpOptions::default()).is_err());
    }
}
