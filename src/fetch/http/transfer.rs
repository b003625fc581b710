//! One transfer of an [`HttpSource`](super::HttpSource): connect with retries so the body
//! continues at the reader's position, check what the server announces against the
//! limit, and pump the body to the reader, reconnecting with `Range` when it drops.

use super::*;
use crate::fetch::rate::RateGuard;

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

pub(super) struct Transfer {
    pub(super) client: reqwest::Client,
    pub(super) url: Url,
    pub(super) what: String,
    /// Absolute offset of the next byte the reader will deliver.
    pub(super) pos: u64,
    pub(super) limit: u64,
    pub(super) exact: bool,
    /// A bounded range read (`limit` is the range's end) of a file of this signed length:
    /// every request asks for `pos..limit` only.
    pub(super) range_of: Option<u64>,
    pub(super) opts: HttpOptions,
}

impl Transfer {
    /// Connect, then pump the body to the returned reader from a task of its own (so
    /// reconnects happen while the caller reads).
    pub(super) async fn start(mut self) -> Result<ByteReader, FetchError> {
        let first = self.connect().await?;
        let (tx, rx) = mpsc::channel(self.opts.channel_chunks.max(1));
        tokio::spawn(async move { self.pump(first, tx).await });
        Ok(Box::new(ChannelReader::new(rx)))
    }

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
pub(super) struct ChannelReader {
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
    pub(super) fn empty() -> Self {
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
pub(super) fn chain(e: &dyn std::error::Error) -> String {
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
}
