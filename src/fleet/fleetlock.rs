//! The FleetLock v1 client (coreos/zincati docs/development/fleetlock/protocol.md):
//! `POST <base>/v1/pre-reboot` takes a slot (RecursiveLock), `POST <base>/v1/steady-state`
//! gives it back (UnlockIfHeld), each with the header `fleet-lock-protocol: true` and
//! the body `{"client_params":{"id":…,"group":…}}`. 200 means done; any other status
//! carries `{"kind":…,"value":…}`.

use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};

use super::{LockAnswer, LockError, RebootLock};
use crate::fetch::{BoxFuture, TlsOptions};

const PRE_REBOOT: &str = "v1/pre-reboot";
const STEADY_STATE: &str = "v1/steady-state";

#[derive(Serialize)]
struct Request<'a> {
    client_params: ClientParams<'a>,
}

#[derive(Serialize)]
struct ClientParams<'a> {
    id: &'a str,
    group: &'a str,
}

#[derive(Deserialize)]
struct ServerError {
    kind: String,
    value: String,
}

/// A FleetLock client for one device in one group.
#[derive(Debug, Clone)]
pub struct FleetLockClient {
    http: reqwest::Client,
    base: Url,
    id: String,
    group: String,
    timeout: Duration,
}

impl FleetLockClient {
    /// A client asking the service at `base_url` (its paths are appended, so a base
    /// with a path prefix works) for `id` in `group`, each request bounded by `timeout`.
    pub fn new(
        base_url: &str,
        id: &str,
        group: &str,
        timeout: Duration,
    ) -> Result<Self, LockError> {
        Self::with_tls(base_url, id, group, timeout, &TlsOptions::default())
    }

    /// [`Self::new`] trusting the certificates `tls` names (the fetch room's TLS set-up:
    /// rustls, system roots, an extra CA bundle).
    pub fn with_tls(
        base_url: &str,
        id: &str,
        group: &str,
        timeout: Duration,
        tls: &TlsOptions,
    ) -> Result<Self, LockError> {
        let bad = |detail: String| LockError::BadUrl {
            url: base_url.to_owned(),
            detail,
        };
        let mut base = Url::parse(base_url).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad("only http and https are spoken".into()));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let builder = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(concat!("patchd/", env!("CARGO_PKG_VERSION")));
        let http = tls
            .apply(builder)
            .map_err(bad)?
            .build()
            .map_err(|e| bad(error_chain(&e)))?;
        Ok(Self {
            http,
            base,
            id: id.to_owned(),
            group: group.to_owned(),
            timeout,
        })
    }

    /// POST one operation; the status and body of the reply.
    async fn post(&self, op: &str) -> Result<(Url, StatusCode, Vec<u8>), LockError> {
        let url = self.base.join(op).map_err(|e| LockError::BadUrl {
            url: self.base.to_string(),
            detail: e.to_string(),
        })?;
        let body = Request {
            client_params: ClientParams {
                id: &self.id,
                group: &self.group,
            },
        };
        let fail = |e: reqwest::Error| {
            if e.is_timeout() {
                LockError::Timeout {
                    url: url.to_string(),
                    after: self.timeout,
                }
            } else {
                LockError::Unreachable {
                    url: url.to_string(),
                    detail: error_chain(&e),
                }
            }
        };
        // Serialising two strings cannot fail; an empty body would be refused loudly.
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let resp = self
            .http
            .post(url.clone())
            .header("fleet-lock-protocol", "true")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(json)
            .send()
            .await
            .map_err(fail)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(fail)?;
        tracing::debug!(%url, %status, "fleet lock reply");
        Ok((url, status, bytes.to_vec()))
    }
}

/// The `{kind, value}` of a refusal, or why the body is not one.
fn server_error(url: &Url, status: StatusCode, body: &[u8]) -> Result<ServerError, LockError> {
    serde_json::from_slice::<ServerError>(body).map_err(|e| LockError::Malformed {
        url: url.to_string(),
        status: status.as_u16(),
        detail: format!(
            "expected {{\"kind\":…,\"value\":…}}: {e}; body starts {:?}",
            String::from_utf8_lossy(&body[..body.len().min(120)])
        ),
    })
}

/// reqwest's message and its causes: the top line alone hides "connection refused".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

impl RebootLock for FleetLockClient {
    fn acquire(&self) -> BoxFuture<'_, Result<LockAnswer, LockError>> {
        Box::pin(async move {
            let (url, status, body) = self.post(PRE_REBOOT).await?;
            if status == StatusCode::OK {
                return Ok(LockAnswer::Granted);
            }
            let e = server_error(&url, status, &body)?;
            // The protocol only says "not 200"; a 4xx is the service refusing this
            // client (no slot free, …), a 5xx the service failing.
            if status.is_client_error() {
                return Ok(LockAnswer::Busy {
                    kind: e.kind,
                    value: e.value,
                });
            }
            Err(LockError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                kind: e.kind,
                value: e.value,
            })
        })
    }

    fn release(&self) -> BoxFuture<'_, Result<(), LockError>> {
        Box::pin(async move {
            let (url, status, body) = self.post(STEADY_STATE).await?;
            if status == StatusCode::OK {
                return Ok(());
            }
            let e = server_error(&url, status, &body)?;
            Err(LockError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                kind: e.kind,
                value: e.value,
            })
        })
    }
}
