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

use super::rate::{RateGuard, RateRule};
use super::{validate_repo_path, BoxFuture, ByteReader, ByteSource, FetchError};

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

        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.stall_timeout)
            .redirect(policy)
            .user_agent(opts.user_agent.clone())
            .tls_built_in_root_certs(!opts.disable_system_roots);
        if let Some(pem) = &opts.extra_ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| cfg(format!("extra CA bundle: {}", chain(&e))))?;
            if certs.is_empty() {
                return Err(cfg("extra CA bundle holds no certificate".into()));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder.build().map_err(|e| cfg(chain(&e)))?;
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
        let mut t = Transfer {
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
        let first = t.connect().await?;
        let (tx, rx) = mpsc::channel(self.opts.channel_chunks.max(1));
        tokio::spawn(async move { t.pump(first, tx).await });
        Ok(Box::new(ChannelReader::new(rx)))
    }
}

impl ByteSource for HttpSource {
    fn describe(&self) -> String {
        redact(self.base.as_str())
    }

    fn open<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        limit: u64,
    ) -> BoxFuture<'a, Result<ByteReader, FetchError>> {
        Box::pin(self.open_inner(path, offset, limit, false, None))
    }

    fn open_exact<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<ByteReader, FetchError>> {
        Box::pin(self.open_inner(path, offset, len, true, None))
    }

    fn open_range<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        len: u64,
        file_len: u64,
    ) -> BoxFuture<'a, Result<ByteReader, FetchError>> {
        Box::pin(async move {
            let end = super::check_range(path, offset, len, file_len)?;
            self.open_inner(path, offset, end, true, Some(file_len))
                .await
        })
    }
}

/// A connected response plus how many leading bytes of it to discard.
struct Connected {
    resp: reqwest::Response,
    skip: u64,
    /// The body goes on past `limit` legitimately (a whole file answering a bounded
    /// range): stop there and drop the connection instead of failing.
    cut_at_limit: bool,
}

/// Why one attempt failed: worth retrying or not.
enum Attempt {
    Retry(String),
    Fatal(FetchError),
}

struct Transfer {
    client: reqwest::Client,
    url: Url,
    what: String,
    /// Absolute offset of the next byte the reader will deliver.
    pos: u64,
    limit: u64,
    exact: bool,
    /// A bounded range read (`limit` is the range's end) of a file of this signed length:
    /// every request asks for `pos..limit` only.
    range_of: Option<u64>,
    opts: HttpOptions,
}

impl Transfer {
    /// Connect (with retries) so that the body continues at `self.pos`.
    async fn connect(&mut self) -> Result<Connected, FetchError> {
        let mut retry = 0u32;
        loop {
            match self.try_connect().await {
                Ok(c) => return Ok(c),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(why)) => {
                    retry += 1;
                    if retry >= self.opts.retry.max_attempts {
                        return Err(FetchError::RetriesExhausted {
                            what: self.what.clone(),
                            attempts: retry,
                            last: why,
                        });
                    }
                    let delay = self.opts.retry.delay(retry);
                    tracing::warn!(url = %self.what, pos = self.pos, retry, ?delay, error = %why, "fetch failed, retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn try_connect(&self) -> Result<Connected, Attempt> {
        let mut req = self.client.get(self.url.clone());
        if self.range_of.is_some() {
            req = req.header(RANGE, format!("bytes={}-{}", self.pos, self.limit - 1));
        } else if self.pos > 0 {
            req = req.header(RANGE, format!("bytes={}-", self.pos));
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_redirect() => {
                return Err(Attempt::Fatal(FetchError::Redirect {
                    what: self.what.clone(),
                    why: chain(&e),
                }))
            }
            Err(e) => return Err(Attempt::Retry(chain(&e))),
        };
        let status = resp.status();
        let fatal = |e| Err(Attempt::Fatal(e));
        match status {
            StatusCode::PARTIAL_CONTENT if self.pos > 0 || self.range_of.is_some() => {
                let (start, end, total) = match parse_content_range(resp.headers()) {
                    Some(v) => v,
                    None => {
                        return fatal(self.protocol("206 without a valid Content-Range".into()))
                    }
                };
                if start != self.pos {
                    return fatal(self.protocol(format!(
                        "asked for bytes from {}, server sent from {start}",
                        self.pos
                    )));
                }
                if self.range_of.is_some() && end + 1 != self.limit {
                    // More than asked for is refused before a byte of it is read.
                    return fatal(self.protocol(format!(
                        "asked for bytes {}-{}, server sent {start}-{end}",
                        self.pos,
                        self.limit - 1
                    )));
                }
                if let (Some(_), Some(n)) =
                    (self.range_of, header_u64(resp.headers(), CONTENT_LENGTH))
                {
                    if n != self.limit - self.pos {
                        return fatal(self.protocol(format!(
                            "range of {} bytes announced with Content-Length {n}",
                            self.limit - self.pos
                        )));
                    }
                }
                if let Some(total) = total {
                    self.check_total(total).map_err(Attempt::Fatal)?;
                }
                Ok(Connected {
                    resp,
                    skip: 0,
                    cut_at_limit: false,
                })
            }
            StatusCode::OK => {
                if let Some(total) = header_u64(resp.headers(), CONTENT_LENGTH) {
                    self.check_total(total).map_err(Attempt::Fatal)?;
                }
                if self.pos > 0 {
                    if self.opts.on_range_ignored == RangeIgnored::Fail {
                        return fatal(FetchError::RangeIgnored {
                            what: self.what.clone(),
                            offset: self.pos,
                        });
                    }
                    tracing::warn!(url = %self.what, pos = self.pos, "server ignored Range, re-reading and discarding the prefix");
                }
                Ok(Connected {
                    resp,
                    skip: self.pos,
                    cut_at_limit: self.range_of.is_some(),
                })
            }
            StatusCode::NOT_FOUND | StatusCode::GONE => fatal(FetchError::NotFound {
                what: self.what.clone(),
            }),
            StatusCode::RANGE_NOT_SATISFIABLE => fatal(self.protocol(format!(
                "range from {} not satisfiable (file shorter than expected?)",
                self.pos
            ))),
            s if s.is_server_error()
                || s == StatusCode::TOO_MANY_REQUESTS
                || s == StatusCode::REQUEST_TIMEOUT =>
            {
                Err(Attempt::Retry(format!("HTTP {s}")))
            }
            s => fatal(self.protocol(format!("unexpected HTTP status {s}"))),
        }
    }

    fn protocol(&self, why: String) -> FetchError {
        FetchError::Protocol {
            what: self.what.clone(),
            why,
        }
    }

    /// Check a total file length announced by the server against the caller's limit.
    fn check_total(&self, total: u64) -> Result<(), FetchError> {
        if let Some(file_len) = self.range_of {
            if total != file_len {
                return Err(FetchError::LengthMismatch {
                    what: self.what.clone(),
                    expected: file_len,
                    announced: total,
                });
            }
            return Ok(());
        }
        if total > self.limit {
            return Err(FetchError::TooLarge {
                what: self.what.clone(),
                limit: self.limit,
            });
        }
        if self.exact && total != self.limit {
            return Err(FetchError::LengthMismatch {
                what: self.what.clone(),
                expected: self.limit,
                announced: total,
            });
        }
        Ok(())
    }

    /// Move the body into the channel, reconnecting on drops and stalls; abandon the
    /// transfer when it breaks the minimum-rate rule.
    async fn pump(mut self, first: Connected, tx: mpsc::Sender<io::Result<Bytes>>) {
        let mut cur = first;
        let mut failures = 0u32;
        let mut guard = RateGuard::new(self.opts.min_rate, Instant::now(), self.pos, self.limit);
        let mut last_data = Instant::now();
        loop {
            let now = Instant::now();
            if let Err(why) = guard.check(now, self.pos) {
                tracing::warn!(url = %self.what, pos = self.pos, limit = self.limit, error = %why, "slow retrieval: transfer abandoned");
                let e = FetchError::SlowRetrieval {
                    what: self.what.clone(),
                    why,
                };
                let _ = tx.send(Err(io::Error::other(e))).await;
                return;
            }
            let stall_at = last_data + self.opts.stall_timeout;
            let wake = guard.next_check(now).map_or(stall_at, |c| c.min(stall_at));
            // Waking only to look at the rate drops the pending `chunk()` future; reqwest
            // hands out a chunk only when it completes, so nothing is lost.
            let next = tokio::time::timeout_at(wake, cur.resp.chunk()).await;
            let why = match next {
                Ok(Ok(Some(mut chunk))) => {
                    last_data = Instant::now();
                    if cur.skip > 0 {
                        let n = (chunk.len() as u64).min(cur.skip);
                        cur.skip -= n;
                        let _ = chunk.split_to(n as usize);
                        if chunk.is_empty() {
                            continue;
                        }
                    }
                    failures = 0;
                    let room = self.limit - self.pos;
                    if chunk.len() as u64 > room {
                        if room > 0 {
                            let head = chunk.split_to(room as usize);
                            self.pos += room;
                            if tx.send(Ok(head)).await.is_err() {
                                return;
                            }
                        }
                        if cur.cut_at_limit {
                            return; // the range is complete; the rest is not wanted
                        }
                        let e = FetchError::TooLarge {
                            what: self.what.clone(),
                            limit: self.limit,
                        };
                        let _ = tx.send(Err(io::Error::other(e))).await;
                        return;
                    }
                    self.pos += chunk.len() as u64;
                    let sent = Instant::now();
                    if tx.send(Ok(chunk)).await.is_err() {
                        return; // reader dropped: cancelled
                    }
                    // Time the reader (disk, decompression) kept us waiting is not the
                    // server's: it counts neither as a stall nor against the rate.
                    let waited = sent.elapsed();
                    guard.exclude(waited);
                    last_data = Instant::now();
                    continue;
                }
                Ok(Ok(None)) => {
                    if cur.skip > 0 {
                        format!("body ended {} bytes before the resume point", cur.skip)
                    } else {
                        return; // clean end; the caller checks the length it needed
                    }
                }
                Ok(Err(e)) if e.is_timeout() => format!(
                    "stalled: no byte at all for {} s: {}",
                    self.opts.stall_timeout.as_secs(),
                    chain(&e)
                ),
                Ok(Err(e)) => chain(&e),
                Err(_) if Instant::now() < stall_at => continue, // time for a rate check
                Err(_) => format!(
                    "stalled: no byte at all for {} s",
                    self.opts.stall_timeout.as_secs()
                ),
            };
            failures += 1;
            if failures >= self.opts.retry.max_attempts {
                let e = FetchError::RetriesExhausted {
                    what: self.what.clone(),
                    attempts: failures,
                    last: why,
                };
                let _ = tx.send(Err(io::Error::other(e))).await;
                return;
            }
            let delay = self.opts.retry.delay(failures);
            tracing::warn!(url = %self.what, pos = self.pos, error = %why, ?delay, "transfer interrupted, resuming");
            // Backoff and reconnects count against the rate rule too: a server that
            // drops every connection after a few bytes is as slow as one that trickles.
            let reconnect = async {
                tokio::time::sleep(delay).await;
                self.connect().await
            };
            let connected = match guard.deadline() {
                Some(d) => tokio::time::timeout_at(d, reconnect).await.ok(),
                None => Some(reconnect.await),
            };
            match connected {
                Some(Ok(c)) => {
                    cur = c;
                    last_data = Instant::now();
                }
                Some(Err(e)) => {
                    let _ = tx.send(Err(io::Error::other(e))).await;
                    return;
                }
                // The deadline passed while reconnecting: the check at the top says so.
                None => {}
            }
        }
    }
}

/// `AsyncRead` over the chunks the network task sends.
struct ChannelReader {
    rx: Option<mpsc::Receiver<io::Result<Bytes>>>,
    cur: Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        Self {
            rx: Some(rx),
            cur: Bytes::new(),
        }
    }
    fn empty() -> Self {
        Self {
            rx: None,
            cur: Bytes::new(),
        }
    }
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.cur.is_empty() {
                let n = self.cur.len().min(buf.remaining());
                let head = self.cur.split_to(n);
                buf.put_slice(&head);
                return Poll::Ready(Ok(()));
            }
            let Some(rx) = self.rx.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.rx = None;
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Some(Err(e))) => {
                    self.rx = None;
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Some(Ok(b))) => self.cur = b,
            }
        }
    }
}

/// `Content-Range: bytes <start>-<end>/<total|*>` → (start, end, total).
fn parse_content_range(h: &HeaderMap) -> Option<(u64, u64, Option<u64>)> {
    let v = h.get(CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => {
            let t: u64 = t.parse().ok()?;
            if end >= t {
                return None;
            }
            Some(t)
        }
    };
    Some((start, end, total))
}

fn header_u64(h: &HeaderMap, name: reqwest::header::HeaderName) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The error and its causes on one line (reqwest hides the interesting part in sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        cur = c.source();
    }
    s
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

    #[test]
    fn content_range_parsing() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_RANGE, "bytes 100-199/1000".parse().unwrap());
        assert_eq!(parse_content_range(&h), Some((100, 199, Some(1000))));
        h.insert(CONTENT_RANGE, "bytes 100-199/*".parse().unwrap());
        assert_eq!(parse_content_range(&h), Some((100, 199, None)));
        for bad in [
            "bytes 5-1/10",
            "bytes 0-10/10",
            "items 0-1/2",
            "bytes x-1/2",
        ] {
            h.insert(CONTENT_RANGE, bad.parse().unwrap());
            assert_eq!(parse_content_range(&h), None, "{bad}");
        }
    }

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
