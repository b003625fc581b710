//! The FleetLock client against a server written from the protocol text
//! (coreos/zincati docs/development/fleetlock/protocol.md): POST only, the two paths,
//! `fleet-lock-protocol: true`, a `client_params` body with `id` and `group`, a counting
//! semaphore of slots per group with recursive owned locks, errors as `{kind, value}`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use patchd::fleet::device_id;
use patchd::fleet::fleetlock::FleetLockClient;
use patchd::fleet::{LockAnswer, LockError, RebootLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

#[derive(Default)]
struct State {
    slots: usize,
    holders: BTreeMap<String, BTreeSet<String>>,
    seen: Vec<Seen>,
    /// Answer every request with this status and raw body instead.
    canned: Option<(u16, String)>,
}

struct Server {
    url: String,
    state: Arc<Mutex<State>>,
}

impl Server {
    async fn start(slots: usize) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            slots,
            ..State::default()
        }));
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = l.accept().await {
                tokio::spawn(serve(sock, st.clone()));
            }
        });
        Server { url, state }
    }
    fn client(&self, id: &str) -> FleetLockClient {
        FleetLockClient::new(&self.url, id, "workers", Duration::from_secs(5)).unwrap()
    }
    fn holders(&self, group: &str) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.holders
            .get(group)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }
}

async fn serve(mut sock: TcpStream, state: Arc<Mutex<State>>) {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.unwrap();
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
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "body cut short");
        body.extend_from_slice(&chunk[..n]);
    }
    let seen = Seen {
        method,
        path,
        headers,
        body: String::from_utf8(body).unwrap(),
    };
    let (status, reply) = answer(&mut state.lock().unwrap(), seen);
    let resp = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
        reply.len()
    );
    sock.write_all(resp.as_bytes()).await.unwrap();
    sock.shutdown().await.ok();
}

fn refuse(status: u16, kind: &str, value: &str) -> (u16, String) {
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
    let holders = s.holders.entry(group.to_owned()).or_default();
    match req.path.as_str() {
        "/v1/pre-reboot" => {
            if holders.contains(id) || holders.len() < s.slots {
                holders.insert(id.to_owned());
                (200, String::new())
            } else {
                refuse(409, "failed_lock", &format!("all {} slots taken", s.slots))
            }
        }
        "/v1/steady-state" => {
            holders.remove(id);
            (200, String::new())
        }
        _ => refuse(404, "not_found", "unknown path"),
    }
}

#[tokio::test]
async fn request_has_the_exact_method_path_header_and_body() {
    let server = Server::start(1).await;
    let c = server.client("dev-1");
    assert_eq!(c.acquire().await.unwrap(), LockAnswer::Granted);
    c.release().await.unwrap();
    let seen = server.state.lock().unwrap().seen.clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/v1/pre-reboot")
    );
    assert_eq!(
        (seen[1].method.as_str(), seen[1].path.as_str()),
        ("POST", "/v1/steady-state")
    );
    for s in &seen {
        assert!(
            s.headers
                .contains(&("fleet-lock-protocol".into(), "true".into())),
            "{s:?}"
        );
        let body: serde_json::Value = serde_json::from_str(&s.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"client_params": {"id": "dev-1", "group": "workers"}})
        );
    }
}

#[tokio::test]
async fn locking_is_recursive_and_slots_count_per_group() {
    let server = Server::start(2).await;
    let (a, b, c) = (server.client("a"), server.client("b"), server.client("c"));
    assert_eq!(a.acquire().await.unwrap(), LockAnswer::Granted);
    assert_eq!(a.acquire().await.unwrap(), LockAnswer::Granted);
    assert_eq!(server.holders("workers"), vec!["a"]);
    assert_eq!(b.acquire().await.unwrap(), LockAnswer::Granted);
    match c.acquire().await.unwrap() {
        LockAnswer::Busy { kind, value } => {
            assert_eq!(kind, "failed_lock");
            assert!(value.contains("2 slots"), "{value}");
        }
        other => panic!("third device got {other:?}"),
    }
    // Another group has its own slots.
    let other = FleetLockClient::new(&server.url, "c", "db", Duration::from_secs(5)).unwrap();
    assert_eq!(other.acquire().await.unwrap(), LockAnswer::Granted);
    a.release().await.unwrap();
    assert_eq!(c.acquire().await.unwrap(), LockAnswer::Granted);
    assert_eq!(server.holders("workers"), vec!["b", "c"]);
}

#[tokio::test]
async fn releasing_without_holding_is_fine() {
    let server = Server::start(1).await;
    let holder = server.client("holder");
    assert_eq!(holder.acquire().await.unwrap(), LockAnswer::Granted);
    server.client("stranger").release().await.unwrap();
    assert_eq!(server.holders("workers"), vec!["holder"]);
}

#[tokio::test]
async fn a_server_that_is_down_is_unreachable_naming_the_url() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/", l.local_addr().unwrap());
    drop(l);
    let c = FleetLockClient::new(&base, "a", "workers", Duration::from_secs(5)).unwrap();
    let e = c.acquire().await.unwrap_err();
    assert!(matches!(e, LockError::Unreachable { .. }), "{e:?}");
    assert!(
        e.to_string().contains(&format!("{base}v1/pre-reboot")),
        "{e}"
    );
}

#[tokio::test]
async fn server_errors_keep_kind_and_value_and_garbage_is_named() {
    let server = Server::start(1).await;
    let c = server.client("a");
    server.state.lock().unwrap().canned = Some(refuse(503, "etcd_down", "no quorum"));
    let e = c.release().await.unwrap_err();
    assert_eq!(
        e,
        LockError::Status {
            url: format!("{}v1/steady-state", server.url),
            status: 503,
            kind: "etcd_down".into(),
            value: "no quorum".into(),
        }
    );
    server.state.lock().unwrap().canned = Some((502, "<html>Bad Gateway</html>".into()));
    let e = c.acquire().await.unwrap_err();
    assert!(
        matches!(e, LockError::Malformed { status: 502, .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("{}v1/pre-reboot", server.url)),
        "{msg}"
    );
    assert!(msg.contains("Bad Gateway") && msg.contains("kind"), "{msg}");
}

#[tokio::test]
async fn a_base_url_with_a_path_keeps_it() {
    let server = Server::start(1).await;
    let base = format!("{}lock", server.url);
    let c = FleetLockClient::new(&base, "a", "workers", Duration::from_secs(5)).unwrap();
    assert!(
        matches!(c.acquire().await.unwrap(), LockAnswer::Busy { kind, .. } if kind == "not_found")
    );
    assert_eq!(
        server.state.lock().unwrap().seen[0].path,
        "/lock/v1/pre-reboot"
    );
    assert!(FleetLockClient::new("ftp://x/", "a", "g", Duration::from_secs(1)).is_err());
}

#[test]
fn device_id_is_stable_and_hides_the_machine_id() {
    let machine = "4f2a9c81d3e04b7f8a6e5d1c2b3a4f50";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("machine-id");
    std::fs::write(&file, format!("{machine}\n")).unwrap();
    let id = device_id::from_file(&file).unwrap();
    assert_eq!(id, device_id::from_file(&file).unwrap());
    assert_eq!(id, device_id::from_machine_id(machine).unwrap());
    assert_eq!(id.len(), 32);
    assert!(!id.contains(machine) && !id.contains(&machine[..8]), "{id}");
    let other = device_id::from_machine_id("4f2a9c81d3e04b7f8a6e5d1c2b3a4f51").unwrap();
    assert_ne!(id, other);
    std::fs::write(&file, "garbage\n").unwrap();
    let e = device_id::from_file(&file).unwrap_err();
    assert!(e.to_string().contains("machine-id"), "{e}");
}
