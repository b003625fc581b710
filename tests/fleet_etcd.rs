//! The etcd reboot lock against a real three-member etcd cluster (Debian etcd-server) on
//! 127.0.0.1: the semaphore holds under concurrency, leases free the slots of vanished
//! holders and only theirs, a lost member is survived and a lost quorum never grants.
//! Prints `skipped: …` when etcd is not installed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use patchd::fleet::etcd::{EtcdLock, EtcdSettings};
use patchd::fleet::{LockAnswer, RebootLock};
use patchd::testkit::etcd_cluster::EtcdCluster;

fn settings(endpoints: &[String], prefix: &str, ttl: u64, timeout: u64) -> EtcdSettings {
    let mut s =
        EtcdSettings::for_endpoints(&endpoints.iter().map(String::as_str).collect::<Vec<_>>())
            .unwrap();
    s.prefix = prefix.to_owned();
    s.lease_ttl = Duration::from_secs(ttl);
    s.request_timeout = Duration::from_secs(timeout);
    s
}

fn shared() -> Option<&'static EtcdCluster> {
    EtcdCluster::shared().unwrap()
}

/// Ask every 100 ms until granted; how long it took, or `None` after `limit`.
async fn granted_within(lock: &EtcdLock, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if lock.acquire().await == Ok(LockAnswer::Granted) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn is_busy(lock: &EtcdLock) -> bool {
    matches!(lock.acquire().await, Ok(LockAnswer::Busy { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_contenders_for_two_slots_never_hold_more_than_two_at_once() {
    let Some(c) = shared() else { return };
    let prefix = "/t/contend";
    c.put(&format!("{prefix}/db/slots"), "2").unwrap();
    let s = settings(&c.endpoints(), prefix, 10, 5);
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for n in 0..5 {
        let lock = EtcdLock::new(&s, &format!("dev{n}"), "db").unwrap();
        let (inside, most, log) = (inside.clone(), most.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..2 {
                granted_within(&lock, Duration::from_secs(30))
                    .await
                    .expect("a slot within 30 s");
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                log.lock()
                    .unwrap()
                    .push(format!("{} acquired ({now} inside)", lock.device_id()));
                tokio::time::sleep(Duration::from_millis(300)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                log.lock()
                    .unwrap()
                    .push(format!("{} released", lock.device_id()));
                lock.release().await.unwrap();
            }
        }));
    }
    // Meanwhile count the holder keys as etcd itself lists them.
    let watcher = {
        let prefix = format!("{prefix}/db/holders/");
        tokio::task::spawn_blocking(move || {
            let mut seen = 0;
            for _ in 0..20 {
                seen = seen.max(c.keys(&prefix).unwrap().len());
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    let in_etcd = watcher.await.unwrap();
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 20, "every device got its slot twice: {log:#?}");
    assert_eq!(most.load(Ordering::SeqCst), 2, "{log:#?}");
    assert!(
        (1..=2).contains(&in_etcd),
        "etcd listed {in_etcd} holders at once"
    );
    assert!(c.keys(&format!("{prefix}/db/holders/")).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_holders_and_a_full_group_answers_busy_with_them() {
    let Some(c) = shared() else { return };
    let prefix = "/t/status";
    c.put(&format!("{prefix}/web/slots"), "2").unwrap();
    let s = settings(&c.endpoints(), prefix, 10, 5);
    let [a, b, x] = ["a", "b", "x"].map(|id| EtcdLock::new(&s, id, "web").unwrap());
    assert_eq!(a.acquire().await, Ok(LockAnswer::Granted));
    assert_eq!(b.acquire().await, Ok(LockAnswer::Granted));
    let slots = x.slots().await.unwrap();
    assert_eq!(slots.to_string(), "2 of 2 taken by a, b");
    match x.acquire().await.unwrap() {
        LockAnswer::Busy { kind, value } => {
            assert_eq!(kind, "slots_taken");
            assert!(value.contains("group web: 2 of 2 taken by a, b"), "{value}");
        }
        other => panic!("a third device got {other:?}"),
    }
    // The operator widens the group: the waiting device gets in without a restart.
    c.put(&format!("{prefix}/web/slots"), "3").unwrap();
    assert_eq!(x.acquire().await, Ok(LockAnswer::Granted));
    // And 0 freezes it for newcomers, while holders keep theirs.
    c.put(&format!("{prefix}/web/slots"), "0").unwrap();
    let y = EtcdLock::new(&s, "y", "web").unwrap();
    assert!(is_busy(&y).await);
    assert_eq!(a.acquire().await, Ok(LockAnswer::Granted));
    c.put(&format!("{prefix}/web/slots"), "two").unwrap();
    let e = y.acquire().await.unwrap_err().to_string();
    assert!(
        e.contains("/t/status/web/slots") && e.contains("\"two\""),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_slots_key_means_one_slot() {
    let Some(c) = shared() else { return };
    let s = settings(&c.endpoints(), "/t/default", 10, 5);
    let a = EtcdLock::new(&s, "a", "g").unwrap();
    let b = EtcdLock::new(&s, "b", "g").unwrap();
    assert_eq!(a.acquire().await, Ok(LockAnswer::Granted));
    assert!(is_busy(&b).await);
    assert_eq!(b.slots().await.unwrap().to_string(), "1 of 1 taken by a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_process_is_gone_frees_its_slot_after_the_lease_ttl() {
    let Some(c) = shared() else { return };
    let ttl = 3;
    let s = settings(&c.endpoints(), "/t/vanish", ttl, 3);
    let a = EtcdLock::new(&s, "a", "g").unwrap();
    let b = EtcdLock::new(&s, "b", "g").unwrap();
    assert_eq!(a.acquire().await, Ok(LockAnswer::Granted));
    // No release: the process is gone, its keep-alive with it.
    drop(a);
    let gone = Instant::now();
    assert!(
        is_busy(&b).await,
        "the slot must stay taken until the TTL runs out"
    );
    let waited = granted_within(&b, Duration::from_secs(ttl + 5))
        .await
        .expect("the slot freed itself after the TTL");
    assert!(
        gone.elapsed() >= Duration::from_secs(ttl - 1),
        "freed after {waited:?}, before the TTL of {ttl}s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_stays_up_keeps_its_slot_past_the_ttl_until_it_releases() {
    let Some(c) = shared() else { return };
    let ttl = 2;
    let s = settings(&c.endpoints(), "/t/alive", ttl, 2);
    let a = EtcdLock::new(&s, "a", "g").unwrap();
    let b = EtcdLock::new(&s, "b", "g").unwrap();
    assert_eq!(a.acquire().await, Ok(LockAnswer::Granted));
    // A failed update: the device is up, never releases, its lease is renewed.
    tokio::time::sleep(Duration::from_secs(3 * ttl)).await;
    assert!(is_busy(&b).await, "a live holder lost its slot");
    assert_eq!(
        c.keys("/t/alive/g/holders/").unwrap(),
        ["/t/alive/g/holders/a"]
    );
    a.release().await.unwrap();
    assert_eq!(b.acquire().await, Ok(LockAnswer::Granted));
    // Releasing what one does not hold is fine.
    a.release().await.unwrap();
    assert_eq!(b.slots().await.unwrap().holders, ["b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_id_acquires_again_also_after_a_restart_and_keeps_renewing() {
    let Some(c) = shared() else { return };
    let ttl = 2;
    let s = settings(&c.endpoints(), "/t/again", ttl, 2);
    let a = EtcdLock::new(&s, "a", "g").unwrap();
    let b = EtcdLock::new(&s, "b", "g").unwrap();
    assert_eq!(a.acquire().await, Ok(LockAnswer::Granted));
    assert_eq!(a.acquire().await, Ok(LockAnswer::Granted));
    assert_eq!(a.slots().await.unwrap().to_string(), "1 of 1 taken by a");
    // The daemon restarts (or the device rebooted within the TTL): a new lock object
    // with the same id finds its key and renews that lease, without asking again.
    drop(a);
    let a2 = EtcdLock::new(&s, "a", "g").unwrap();
    tokio::time::sleep(Duration::from_secs(3 * ttl)).await;
    assert!(is_busy(&b).await, "the restarted holder let its slot lapse");
    assert_eq!(a2.acquire().await, Ok(LockAnswer::Granted));
    a2.release().await.unwrap();
    assert_eq!(b.acquire().await, Ok(LockAnswer::Granted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_member_keeps_locking_and_losing_the_quorum_never_grants() {
    let Some(c) = EtcdCluster::start_or_skip(3).unwrap() else {
        return;
    };
    c.put("/t/quorum/g/slots", "2").unwrap();
    let timeout = 2;
    let s = settings(&c.endpoints(), "/t/quorum", 6, timeout);
    let a = EtcdLock::new(&s, "a", "g").unwrap();
    let b = EtcdLock::new(&s, "b", "g").unwrap();
    let x = EtcdLock::new(&s, "x", "g").unwrap();
    assert_eq!(a.acquire().await, Ok(LockAnswer::Granted));
    // The first endpoint every client tries goes away (maybe the leader).
    c.stop_member(0);
    granted_within(&b, Duration::from_secs(15))
        .await
        .expect("two members of three still lock");
    assert!(is_busy(&x).await);
    b.release().await.unwrap();
    assert!(x.acquire().await.is_ok());
    x.release().await.unwrap();
    // Two of three gone: no answer may be a slot, and none may take longer than the
    // request timeout (plus scheduling slack).
    c.stop_member(1);
    let limit = Duration::from_secs(timeout) + Duration::from_millis(1500);
    for lock in [&b, &x, &a] {
        let start = Instant::now();
        let got = lock.acquire().await;
        assert!(start.elapsed() <= limit, "waited {:?}", start.elapsed());
        assert!(
            got != Ok(LockAnswer::Granted),
            "{} got a slot without quorum: {got:?}",
            lock.device_id()
        );
    }
    assert!(a.slots().await.is_err());
    // The holder's renewals fail meanwhile, and it says so (for status and audit).
    let trouble = a
        .renewal_trouble()
        .expect("renewal trouble while without quorum");
    assert!(
        trouble.contains("cannot renew the reboot slot lease"),
        "{trouble}"
    );
    // Quorum back: the holder still holds (its lease survives the outage), a newcomer
    // can take the free slot again.
    c.start_member(1).unwrap();
    c.wait_healthy(&[1, 2]).unwrap();
    granted_within(&b, Duration::from_secs(15))
        .await
        .expect("a slot once the quorum is back");
    let held = a.slots().await.unwrap().holders;
    assert_eq!(held, ["a", "b"]);
    let start = Instant::now();
    while a.renewal_trouble().is_some() && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(a.renewal_trouble(), None, "renewals resume with the quorum");
}

#[tokio::test]
async fn tls_settings_errors_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let with = |ca: Option<&str>, cert: Option<(&str, &str)>| {
        let mut s = EtcdSettings::for_endpoints(&["https://127.0.0.1:2379"]).unwrap();
        s.ca = ca.map(Into::into);
        s.cert = cert.map(|c| c.0.into());
        s.key = cert.map(|c| c.1.into());
        EtcdLock::new(&s, "a", "g").map(drop).unwrap_err()
    };
    let e = with(Some("/nonexistent/etcd-ca.pem"), None);
    assert_eq!(e.key, "fleet.etcd.ca");
    assert!(
        e.why.contains("cannot read /nonexistent/etcd-ca.pem"),
        "{e}"
    );
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let junk = junk.to_str().unwrap();
    let e = with(Some(junk), None);
    assert_eq!(e.key, "fleet.etcd.ca");
    assert!(e.why.contains("holds no PEM certificate"), "{e}");
    let e = with(None, Some(("/nonexistent/etcd.pem", junk)));
    assert_eq!(
        (e.key.as_str(), e.why.contains("/nonexistent/etcd.pem")),
        ("fleet.etcd.cert", true),
        "{e}"
    );
    let e = with(None, Some((junk, junk)));
    assert_eq!(e.key, "fleet.etcd.cert", "{e}");
    assert!(
        e.why.contains("not a PEM certificate and private key"),
        "{e}"
    );
    // A group name that cannot be a key segment is refused before any request.
    let s = EtcdSettings::for_endpoints(&["http://127.0.0.1:2379"]).unwrap();
    assert_eq!(
        EtcdLock::new(&s, "a", "db/eu").map(drop).unwrap_err().key,
        "fleet.group"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_device_with_its_client_certificate_locks_and_others_are_refused() {
    use patchd::testkit::etcd_cluster::{ClusterError, ServerTls};
    let pki = tempfile::tempdir().unwrap();
    let tls = match ServerTls::generate(pki.path()) {
        Err(ClusterError::Missing(why)) => return println!("skipped: {why}"),
        other => other.unwrap(),
    };
    let Some(c) = (match EtcdCluster::start_with(1, Some(tls.clone())) {
        Err(ClusterError::Missing(why)) => return println!("skipped: {why}"),
        other => other.map(Some).unwrap(),
    }) else {
        return;
    };
    c.put("/t/tls/g/slots", "1").unwrap();
    let mut s = settings(&c.endpoints(), "/t/tls", 10, 5);
    s.ca = Some(tls.ca.clone());
    s.cert = Some(tls.client_cert.clone());
    s.key = Some(tls.client_key.clone());
    let a = EtcdLock::new(&s, "a", "g").unwrap();
    assert_eq!(a.acquire().await, Ok(LockAnswer::Granted));
    assert_eq!(c.keys("/t/tls/g/holders/").unwrap(), ["/t/tls/g/holders/a"]);
    a.release().await.unwrap();

    // Without a client certificate the members refuse the connection.
    let mut anon = s.clone();
    (anon.cert, anon.key) = (None, None);
    let e = EtcdLock::new(&anon, "b", "g")
        .unwrap()
        .acquire()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("unreachable"), "{e}");

    // A device that trusts another CA does not talk to these members at all.
    let other = tempfile::tempdir().unwrap();
    let mut wrong = s.clone();
    wrong.ca = Some(ServerTls::generate(other.path()).unwrap().ca);
    let e = EtcdLock::new(&wrong, "b", "g")
        .unwrap()
        .acquire()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("invalid peer certificate"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_freed_with_etcdctl_goes_to_the_next_device() {
    let Some(c) = shared() else { return };
    let s = settings(&c.endpoints(), "/t/freed", 10, 5);
    let a = EtcdLock::new(&s, "a", "g").unwrap();
    let b = EtcdLock::new(&s, "b", "g").unwrap();
    assert_eq!(a.acquire().await, Ok(LockAnswer::Granted));
    assert!(is_busy(&b).await);
    // The operator frees a failed device's slot by hand (docs/fleet.md).
    c.del("/t/freed/g/holders/a").unwrap();
    assert_eq!(b.acquire().await, Ok(LockAnswer::Granted));
    // The former holder notices when it asks again, and waits like anyone else.
    assert!(is_busy(&a).await);
    assert_eq!(a.slots().await.unwrap().holders, ["b"]);
}
