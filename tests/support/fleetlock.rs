//! A FleetLock v1 server written from the protocol text (coreos/zincati
//! docs/development/fleetlock/protocol.md): POST only, `/v1/pre-reboot` and
//! `/v1/steady-state`, the `fleet-lock-protocol: true` header, a `client_params` body with
//! `id` and `group`, a counting semaphore of `slots` per group with recursive owned locks,
//! errors as `{kind, value}`. It can be stopped and started again on the same port (a
//! lock service that is down), and records every request and every grant and release.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

#[derive(Default)]
pub struct State {
    pub slots: usize,
    pub holders: BTreeMap<String, BTreeSet<String>>,
    pub seen: Vec<Seen>,
    /// Answer every request with this status and raw body instead.
    pub canned: Option<(u16, String)>,
    /// Accept connections but never answer (a hung service).
    pub silent: bool,
    /// (when, group, id, taken) for every change of a group's holders.
    pub changes: Vec<(Instant, String, String, bool)>,
    /// Most holders any group had at once.
    pub most_held: usize,
}

pub struct FleetLockServer {
    pub url: String,
    addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    accept: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl FleetLockServer {
    /// A server with `slots` slots per group on a free port of 127.0.0.1.
    pub async fn start(slots: usize) -> FleetLockServer {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            slots,
            ..State::default()
        }));
        let s = FleetLockServer {
            url: format!("http://{addr}/"),
            addr,
            state,
            accept: Mutex::new(None),
        };
        s.serve(l);
        s
    }

    fn serve(&self, l: TcpListener) {
        let st = self.state.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = l.accept().await {
                tokio::spawn(serve(sock, st.clone()));
            }
        });
        *self.accept.lock().unwrap() = Some(task);
    }

    /// Stop listening: connections are refused until [`Self::resume`].
    pub fn stop(&self) {
        if let Some(t) = self.accept.lock().unwrap().take() {
            t.abort();
        }
    }

    /// Listen again on the same port, with the same holders.
    pub async fn resume(&self) {
        let l = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                // The aborted task's listener may take a moment to close.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        self.serve(l);
    }

    pub fn holders(&self, group: &str) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.holders
            .get(group)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
}

impl Drop for FleetLockServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(mut sock: TcpStream, state: Arc<Mutex<State>>) {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = match sock.read(&mut chunk).await {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let mut start = lines.next().unwrap().split(' ');
    let (method, path) = (
        start.next().unwrap().to_owned(),
        start.next().unwrap().to_owned(),
    );
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let seen = Seen {
        method,
        path,
        headers,
        body: String::from_utf8(body).unwrap(),
    };
    if state.lock().unwrap().silent {
        state.lock().unwrap().seen.push(seen);
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        return;
    }
    let (status, reply) = answer(&mut state.lock().unwrap(), seen);
    let resp = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
        reply.len()
    );
    let _ = sock.write_all(resp.as_bytes()).await;
    let _ = sock.shutdown().await;
}

pub fn refuse(status: u16, kind: &str, value: &str) -> (u16, String) {
    (
        status,
        serde_json::json!({"kind": kind, "value": value}).to_string(),
    )
}

/// The protocol's server side, as the text describes it.
fn answer(s: &mut State, req: Seen) -> (u16, String) {
    s.seen.push(req.clone());
    if let Some(c) = s.canned.clone() {
        return c;
    }
    if req.method != "POST" {
        return refuse(405, "bad_method", "only POST");
    }
    let header = req.headers.iter().find(|(k, _)| k == "fleet-lock-protocol");
    if header.map(|(_, v)| v.as_str()) != Some("true") {
        return refuse(400, "missing_header", "fleet-lock-protocol: true required");
    }
    let Ok(body) = serde_json::from_str::<serde_json::Value>(&req.body) else {
        return refuse(400, "bad_body", "not JSON");
    };
    let p = &body["client_params"];
    let (Some(id), Some(group)) = (p["id"].as_str(), p["group"].as_str()) else {
        return refuse(400, "bad_body", "client_params.id and .group required");
    };
    if id.is_empty() || group.is_empty() {
        return refuse(400, "bad_body", "empty id or group");
    }
    let slots = s.slots;
    let holders = s.holders.entry(group.to_owned()).or_default();
    let (reply, changed) = match req.path.as_str() {
        "/v1/pre-reboot" => {
            if holders.contains(id) {
                ((200, String::new()), None)
            } else if holders.len() < slots {
                holders.insert(id.to_owned());
                ((200, String::new()), Some(true))
            } else {
                let who: Vec<&str> = holders.iter().map(String::as_str).collect();
                let value = format!("all {slots} slots taken by {}", who.join(", "));
                (refuse(409, "failed_lock", &value), None)
            }
        }
        "/v1/steady-state" => {
            let was = holders.remove(id);
            ((200, String::new()), was.then_some(false))
        }
        _ => (refuse(404, "not_found", "unknown path"), None),
    };
    let held = holders.len();
    if let Some(taken) = changed {
        s.changes
            .push((Instant::now(), group.to_owned(), id.to_owned(), taken));
        s.most_held = s.most_held.max(held);
    }
    reply
}
