//! The FleetLock client against a server written from the protocol text
//! (coreos/zincati docs/development/fleetlock/protocol.md): POST only, the two paths,
//! `fleet-lock-protocol: true`, a `client_params` body with `id` and `group`, a counting
//! semaphore of slots per group with recursive owned locks, errors as `{kind, value}`.

use std::time::{Duration, Instant};

use patchd::fleet::device_id;
use patchd::fleet::fleetlock::FleetLockClient;
use patchd::fleet::{LockAnswer, LockError, RebootLock};

#[path = "support/fleetlock.rs"]
mod fleetlock_server;
use fleetlock_server::{refuse, FleetLockServer as Server};

fn client(server: &Server, id: &str) -> FleetLockClient {
    FleetLockClient::new(&server.url, id, "workers", Duration::from_secs(5)).unwrap()
}

#[tokio::test]
async fn request_has_the_exact_method_path_header_and_body() {
    let server = Server::start(1).await;
    let c = client(&server, "dev-1");
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
    let (a, b, c) = (
        client(&server, "a"),
        client(&server, "b"),
        client(&server, "c"),
    );
    assert_eq!(a.acquire().await.unwrap(), LockAnswer::Granted);
    assert_eq!(a.acquire().await.unwrap(), LockAnswer::Granted);
    assert_eq!(server.holders("workers"), vec!["a"]);
    assert_eq!(b.acquire().await.unwrap(), LockAnswer::Granted);
    match c.acquire().await.unwrap() {
        LockAnswer::Busy { kind, value } => {
            assert_eq!(kind, "failed_lock");
            assert!(value.contains("2 slots taken by a, b"), "{value}");
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
    let holder = client(&server, "holder");
    assert_eq!(holder.acquire().await.unwrap(), LockAnswer::Granted);
    client(&server, "stranger").release().await.unwrap();
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
    let c = client(&server, "a");
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

#[tokio::test]
async fn a_server_that_never_answers_times_out_naming_the_url_and_the_bound() {
    let server = Server::start(1).await;
    server.state.lock().unwrap().silent = true;
    let c = FleetLockClient::new(&server.url, "a", "workers", Duration::from_millis(400)).unwrap();
    let started = Instant::now();
    let e = c.acquire().await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(
        e,
        LockError::Timeout {
            url: format!("{}v1/pre-reboot", server.url),
            after: Duration::from_millis(400),
        }
    );
    assert!(
        took < Duration::from_secs(3),
        "the bound did not hold: {took:?}"
    );
    assert!(e.to_string().contains("did not answer within"), "{e}");
    // The request did arrive: it is the answer that never came.
    assert_eq!(server.seen().len(), 1);
}

/// systemd's own derivation (sd_id128_get_machine_app_specific) of this machine's id with
/// patchd's application id, compared with ours.
#[test]
fn device_id_is_what_systemd_derives_for_our_app_id() {
    let tool = std::process::Command::new("systemd-id128")
        .arg("machine-id")
        .arg(format!("--app-specific={}", hex::encode(device_id::APP_ID)))
        .output();
    let machine = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let out = match tool {
        Ok(o) if o.status.success() && !machine.trim().is_empty() => o,
        Ok(o) => {
            println!(
                "skipped: systemd-id128 machine-id --app-specific failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            println!("skipped: systemd-id128 not available: {e}");
            return;
        }
    };
    let theirs = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let ours = device_id::from_machine_id(&machine).unwrap();
    assert_eq!(ours, theirs, "machine id {}", machine.trim());
    assert_ne!(ours, machine.trim());
}
