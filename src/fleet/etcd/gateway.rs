//! etcd's JSON gateway (grpc-gateway, served by every etcd ≥ 3.4 at `/v3/`): the five
//! calls the semaphore needs, over reqwest, with failover across the endpoints.
//!
//! Why the gateway and not the gRPC client crate `etcd-client`: that crate brings tonic,
//! prost, tower and their trees (some forty crates patchd does not otherwise build, plus
//! `protoc` or generated code at build time) for five unary calls; the gateway speaks
//! the same API as JSON over the HTTP client patchd already ships for the repository, so
//! this backend adds no dependency. What it costs: int64s travel as strings, keys and
//! values as base64, and the keep-alive stream is used one message at a time (a request
//! per keep-alive instead of one long stream), which at one call per TTL/3 is nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use reqwest::Url;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use super::super::LockError;

/// gRPC status code etcd gives when a member cannot serve (no leader, stopping).
const UNAVAILABLE: i64 = 14;

/// The HTTP side: endpoints in order, the one that answered last tried first.
#[derive(Debug)]
pub(super) struct Gateway {
    http: reqwest::Client,
    endpoints: Vec<Url>,
    preferred: AtomicUsize,
    timeout: Duration,
}

/// One key as etcd returns it (int64 fields arrive as strings and are left out at 0).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct KeyValue {
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    #[serde(with = "b64")]
    pub value: Vec<u8>,
    #[serde(deserialize_with = "int64")]
    pub mod_revision: i64,
    #[serde(deserialize_with = "int64")]
    pub lease: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Header {
    #[serde(deserialize_with = "int64")]
    revision: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RangeReply {
    header: Header,
    kvs: Vec<KeyValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TxnReply {
    succeeded: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LeaseReply {
    #[serde(rename = "ID", deserialize_with = "int64")]
    id: i64,
    #[serde(rename = "TTL", deserialize_with = "int64")]
    ttl: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct KeepAliveReply {
    result: LeaseReply,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorReply {
    #[serde(deserialize_with = "int64")]
    code: i64,
    message: String,
    error: String,
}

#[derive(Debug, Default, Deserialize)]
struct Empty {}

/// A range read: the keys and the revision the read saw.
#[derive(Debug)]
pub(super) struct Range {
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
}

/// A txn compare ("every key in [key, range_end) was last modified before `below`", or
/// "the key was last modified at `equal`"), as the gateway spells it.
#[derive(Debug, Serialize)]
pub(super) struct Compare {
    #[serde(with = "b64")]
    key: Vec<u8>,
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    range_end: Vec<u8>,
    target: &'static str,
    result: &'static str,
    mod_revision: String,
}

impl Compare {
    pub fn range_modified_before(key: &[u8], range_end: &[u8], below: i64) -> Self {
        Self {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            target: "MOD",
            result: "LESS",
            mod_revision: below.to_string(),
        }
    }
    pub fn modified_at(key: &[u8], revision: i64) -> Self {
        Self {
            key: key.to_vec(),
            range_end: Vec::new(),
            target: "MOD",
            result: "EQUAL",
            mod_revision: revision.to_string(),
        }
    }
}

impl Gateway {
    pub fn new(http: reqwest::Client, endpoints: Vec<Url>, timeout: Duration) -> Self {
        Self {
            http,
            endpoints,
            preferred: AtomicUsize::new(0),
            timeout,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// All keys in `[key, range_end)`, linearizable (so a member cut off from the
    /// quorum cannot answer with stale holders).
    pub async fn range(&self, key: &[u8], range_end: &[u8]) -> Result<Range, LockError> {
        let body =
            serde_json::json!({ "key": B64.encode(key), "range_end": B64.encode(range_end) });
        let r: RangeReply = self.call("v3/kv/range", &body).await?;
        Ok(Range {
            revision: r.header.revision,
            kvs: r.kvs,
        })
    }

    /// Put `key` attached to `lease` if every compare holds; whether it did.
    pub async fn put_if(
        &self,
        compares: &[Compare],
        key: &[u8],
        value: &[u8],
        lease: i64,
    ) -> Result<bool, LockError> {
        let body = serde_json::json!({
            "compare": compares,
            "success": [{ "request_put": {
                "key": B64.encode(key),
                "value": B64.encode(value),
                "lease": lease.to_string(),
            }}],
        });
        let r: TxnReply = self.call("v3/kv/txn", &body).await?;
        Ok(r.succeeded)
    }

    pub async fn delete(&self, key: &[u8]) -> Result<(), LockError> {
        let body = serde_json::json!({ "key": B64.encode(key) });
        let _: Empty = self.call("v3/kv/deleterange", &body).await?;
        Ok(())
    }

    /// A new lease of `ttl` seconds; its id.
    pub async fn grant(&self, ttl: u64) -> Result<i64, LockError> {
        let body = serde_json::json!({ "TTL": ttl.to_string() });
        let r: LeaseReply = self.call("v3/lease/grant", &body).await?;
        Ok(r.id)
    }

    /// Renew `lease`; the TTL it now has, 0 when it no longer exists.
    pub async fn keep_alive(&self, lease: i64) -> Result<i64, LockError> {
        // The gateway turns the bidirectional stream into one request message and one
        // `{"result": …}` line per reply; the stream ends with our request body.
        let body = serde_json::json!({ "ID": lease.to_string() });
        let r: KeepAliveReply = self.call("v3/lease/keepalive", &body).await?;
        Ok(r.result.ttl)
    }

    pub async fn revoke(&self, lease: i64) -> Result<(), LockError> {
        let body = serde_json::json!({ "ID": lease.to_string() });
        let _: Empty = self.call("v3/lease/revoke", &body).await?;
        Ok(())
    }

    /// POST `body` to `path` on the first endpoint that answers, starting with the one
    /// that answered last. Moves on when an endpoint cannot be reached or says it cannot
    /// serve (no leader); all of it within one request timeout, so a caller waits at most
    /// that long whatever the number of endpoints.
    async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, LockError> {
        let deadline = Instant::now() + self.timeout;
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n.max(1);
        let mut failures = Vec::new();
        for i in (0..n).map(|k| (first + k) % n) {
            let url = self.endpoints[i]
                .join(path)
                .map_err(|e| LockError::BadUrl {
                    url: self.endpoints[i].to_string(),
                    detail: e.to_string(),
                })?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(LockError::Timeout {
                    url: url.to_string(),
                    after: self.timeout,
                });
            }
            match self.post(&url, body, left).await {
                Ok(bytes) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return serde_json::from_slice(&bytes).map_err(|e| LockError::Malformed {
                        url: url.to_string(),
                        status: 200,
                        detail: format!("{e}; body starts {:?}", lossy(&bytes)),
                    });
                }
                Err(Attempt::Next(detail)) => {
                    tracing::debug!(%url, %detail, "etcd endpoint failed, trying the next");
                    failures.push(format!("{url}: {detail}"));
                }
                Err(Attempt::Final(e)) => return Err(e),
            }
        }
        Err(LockError::Unreachable {
            url: self
                .endpoints
                .iter()
                .map(Url::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            detail: failures.join("; "),
        })
    }

    async fn post(
        &self,
        url: &Url,
        body: &serde_json::Value,
        left: Duration,
    ) -> Result<Vec<u8>, Attempt> {
        let fail = |e: reqwest::Error| {
            if e.is_timeout() {
                Attempt::Final(LockError::Timeout {
                    url: url.to_string(),
                    after: self.timeout,
                })
            } else if e.is_connect() {
                Attempt::Next(error_chain(&e))
            } else {
                Attempt::Final(LockError::Unreachable {
                    url: url.to_string(),
                    detail: error_chain(&e),
                })
            }
        };
        let resp = self
            .http
            .post(url.clone())
            .timeout(left)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(fail)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(fail)?.to_vec();
        if status.is_success() {
            return Ok(bytes);
        }
        let e: ErrorReply = serde_json::from_slice(&bytes).map_err(|e| {
            let hint = if status == reqwest::StatusCode::NOT_FOUND {
                " (etcd 3.4 and later serve the gateway at /v3/; is this an etcd client URL?)"
            } else {
                ""
            };
            Attempt::Final(LockError::Malformed {
                url: url.to_string(),
                status: status.as_u16(),
                detail: format!(
                    "expected an etcd error {{\"code\":…,\"message\":…}}{hint}: {e}; body starts {:?}",
                    lossy(&bytes)
                ),
            })
        })?;
        let message = if e.message.is_empty() {
            e.error
        } else {
            e.message
        };
        if e.code == UNAVAILABLE {
            return Err(Attempt::Next(format!("HTTP {status}: {message}")));
        }
        Err(Attempt::Final(LockError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            kind: grpc_code_name(e.code),
            value: message,
        }))
    }
}

enum Attempt {
    /// Worth asking the next endpoint.
    Next(String),
    /// The answer, whichever member gives it.
    Final(LockError),
}

fn grpc_code_name(code: i64) -> String {
    let name = match code {
        1 => "cancelled",
        3 => "invalid_argument",
        4 => "deadline_exceeded",
        5 => "not_found",
        7 => "permission_denied",
        8 => "resource_exhausted",
        9 => "failed_precondition",
        13 => "internal",
        14 => "unavailable",
        16 => "unauthenticated",
        _ => return format!("grpc_code_{code}"),
    };
    name.to_owned()
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(160)]).into_owned()
}

/// reqwest's message and its causes: the top line alone hides "connection refused" and
/// which certificate check failed.
pub(super) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// protobuf's JSON form of int64: a string, or a number from other encoders.
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        S(String),
        N(i64),
    }
    match Either::deserialize(d)? {
        Either::N(n) => Ok(n),
        Either::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

/// protobuf's JSON form of bytes: standard base64.
mod b64 {
    use super::B64;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_gateways_json_as_etcd_3_4_writes_it() {
        let r: RangeReply = serde_json::from_str(
            r#"{"header":{"cluster_id":"1","revision":"7"},"kvs":[{"key":"cC9n","create_revision":"2","mod_revision":"5","version":"1","value":"YQ==","lease":"694"}],"count":"1"}"#,
        )
        .unwrap();
        assert_eq!(r.header.revision, 7);
        assert_eq!(r.kvs[0].key, b"p/g");
        assert_eq!(r.kvs[0].value, b"a");
        assert_eq!((r.kvs[0].mod_revision, r.kvs[0].lease), (5, 694));
        // A lease that is gone: TTL left out (0), as etcd sends it.
        let k: KeepAliveReply = serde_json::from_str(r#"{"result":{"ID":"12"}}"#).unwrap();
        assert_eq!((k.result.id, k.result.ttl), (12, 0));
        let t: TxnReply = serde_json::from_str(r#"{"header":{"revision":"2"}}"#).unwrap();
        assert!(!t.succeeded);
        let c = serde_json::to_value(Compare::range_modified_before(b"a/", b"a0", 8)).unwrap();
        assert_eq!(
            c,
            serde_json::json!({"key":"YS8=","range_end":"YTA=","target":"MOD","result":"LESS","mod_revision":"8"})
        );
    }
}
