//! Coordinated reboots with real `patchd run` devices (private buses, image-file slots,
//! a fake systemd taking the reboot request, the file bootloader "power-cycled" by the
//! test) against a real lock service: a group with 2 slots never has more than 2
//! devices switching at once (from their audit logs); a device whose update rolled back
//! keeps its slot and holds the group until `patchctl fleet release`; while the lock
//! service is down devices stage but do not reboot, and switch once it is back.
//!
//! The lock service is a parameter ([`LockServer`]): each test runs against every
//! variant of it — the FleetLock test server and a real three-member etcd cluster (with
//! one member down in the five-device run, and the quorum lost for "down").

mod process;

use std::time::{Duration, Instant};

use jiff::Timestamp;
use patchd::fleet::etcd::{EtcdLock, EtcdSettings};
use patchd::fleet::fleetlock::FleetLockClient;
use patchd::fleet::{LockAnswer, RebootLock};
use patchd::testkit::etcd_cluster::EtcdCluster;
use process::support::fleetlock::FleetLockServer;
use process::*;

const GROUP: &str = "workers";

/// A lock service the devices share.
enum LockServer {
    /// The protocol-faithful FleetLock test server (a counting semaphore per group).
    FleetLock(FleetLockServer),
    /// A real three-member etcd cluster (Debian `etcd-server`), spoken to directly.
    Etcd(EtcdCluster),
}

/// The variants every test runs against.
#[derive(Debug, Clone, Copy)]
enum Kind {
    FleetLock,
    Etcd,
}

const KINDS: &[Kind] = &[Kind::FleetLock, Kind::Etcd];

/// Where the group's keys live in etcd (the backend's default prefix).
const ETCD_PREFIX: &str = "/patchd/reboot";

impl LockServer {
    /// The service with `slots` slots in the group; `None` (after printing why) when
    /// this machine cannot run it.
    async fn start(kind: Kind, slots: usize) -> Option<LockServer> {
        match kind {
            Kind::FleetLock => Some(LockServer::FleetLock(FleetLockServer::start(slots).await)),
            Kind::Etcd => {
                let c = EtcdCluster::start_or_skip(3).unwrap()?;
                c.put(&format!("{ETCD_PREFIX}/{GROUP}/slots"), &slots.to_string())
                    .unwrap();
                Some(LockServer::Etcd(c))
            }
        }
    }

    /// The `[fleet]` sections of a device's patchd.toml.
    fn config(&self) -> String {
        let common = format!(
            "[fleet]\ngroup = \"{GROUP}\"\nretry_min = \"1s\"\nretry_max = \"2s\"\ntimeout = \"2s\"\n"
        );
        match self {
            LockServer::FleetLock(s) => format!(
                "{common}lock = \"fleetlock\"\n\n[fleet.fleetlock]\nurl = \"{}\"\n",
                s.url
            ),
            LockServer::Etcd(c) => {
                let endpoints: Vec<String> =
                    c.endpoints().iter().map(|e| format!("\"{e}\"")).collect();
                format!(
                    "{common}lock = \"etcd\"\n\n[fleet.etcd]\nendpoints = [{}]\nrequest_timeout = \"2s\"\n",
                    endpoints.join(", ")
                )
            }
        }
    }

    /// Take the service down: FleetLock refuses connections; etcd loses its quorum
    /// (two of three members stopped), which must make devices wait, never reboot.
    fn stop(&self) {
        match self {
            LockServer::FleetLock(s) => s.stop(),
            LockServer::Etcd(c) => {
                c.stop_member(0);
                c.stop_member(1);
            }
        }
    }

    async fn resume(&self) {
        match self {
            LockServer::FleetLock(s) => s.resume().await,
            LockServer::Etcd(c) => {
                c.start_member(0).unwrap();
                c.start_member(1).unwrap();
                c.wait_healthy(&[0, 1, 2]).unwrap();
            }
        }
    }

    /// Lose one member of a cluster (a no-op for a single server): locking must go on.
    fn lose_one_member(&self) {
        if let LockServer::Etcd(c) = self {
            c.stop_member(2);
        }
    }

    /// The most slots of the group the service ever had taken at once, when it counts.
    fn most_held(&self) -> Option<usize> {
        match self {
            LockServer::FleetLock(s) => Some(s.state.lock().unwrap().most_held),
            LockServer::Etcd(_) => None,
        }
    }

    /// A client of the service for `id` in the group (to occupy slots from the test).
    fn client(&self, id: &str) -> Box<dyn RebootLock> {
        match self {
            LockServer::FleetLock(s) => {
                Box::new(FleetLockClient::new(&s.url, id, GROUP, Duration::from_secs(5)).unwrap())
            }
            LockServer::Etcd(c) => {
                let endpoints = c.endpoints();
                let list: Vec<&str> = endpoints.iter().map(String::as_str).collect();
                let settings = EtcdSettings::for_endpoints(&list).unwrap();
                Box::new(EtcdLock::new(&settings, id, GROUP).unwrap())
            }
        }
    }

    fn holders(&self) -> Vec<String> {
        match self {
            LockServer::FleetLock(s) => s.holders(GROUP),
            LockServer::Etcd(c) => {
                let under = format!("{ETCD_PREFIX}/{GROUP}/holders/");
                let keys = c.keys(&under).unwrap();
                keys.iter()
                    .filter_map(|k| k.strip_prefix(&under).map(str::to_owned))
                    .collect()
            }
        }
    }
}

/// One device: its own bus with a fake systemd, its tree, its daemon.
struct Node {
    name: String,
    rig: Rig,
    dev: Device,
    daemon: Option<Daemon>,
    reboots_seen: usize,
}

impl Node {
    async fn new(n: usize, lock: &LockServer, extra: &str) -> Option<Node> {
        let rig = Rig::start().await?;
        let dev = rig.device(&DeviceSpec {
            extra: format!("{}\n{extra}", lock.config()),
            ..DeviceSpec::default()
        });
        // Each device its own machine id, so each its own lock id.
        std::fs::write(
            dev.paths.resolve("/etc/machine-id"),
            format!("{:032x}\n", 0x5eed_0000_u128 + n as u128),
        )
        .unwrap();
        Some(Node {
            name: format!("dev{n}"),
            rig,
            dev,
            daemon: None,
            reboots_seen: 0,
        })
    }

    fn start(&mut self) {
        self.daemon = Some(self.dev.spawn(self.rig.addr(), &[]));
    }

    /// Drive the simulated hardware: a daemon that asked for a reboot and exited is
    /// "rebooted" (the bootloader decides, the daemon starts again).
    fn step(&mut self) {
        let Some(d) = self.daemon.as_mut() else {
            return;
        };
        let Some(st) = d.try_wait() else { return };
        d.0 = None;
        let calls = self.rig.systemd.calls().len();
        assert!(
            st.success() && calls > self.reboots_seen,
            "{}: patchd exited ({st}) without asking for a reboot:\n{}",
            self.name,
            tail(&self.dev.log(), 40)
        );
        self.reboots_seen = calls;
        self.dev.power_cycle();
        self.start();
    }

    /// Committed 2.0.0 and gave the slot back (the state file is written before the
    /// audit record, so both are waited for).
    fn steady(&self) -> bool {
        committed(&self.dev, "2.0.0")
            && !self.holds_slot()
            && self.first("reboot_slot_released").is_some()
    }

    fn holds_slot(&self) -> bool {
        matches!(self.dev.state(), Ok(Some(d)) if d.reboot_slot.is_some())
    }

    fn records(&self) -> Vec<patchd::audit::Record> {
        let log = patchd::audit::AuditLog::open(self.dev.audit_path(), Default::default()).unwrap();
        log.query(&Default::default()).unwrap()
    }

    fn first(&self, event: &str) -> Option<Timestamp> {
        self.records()
            .iter()
            .find(|r| r.event == event)
            .map(|r| r.time)
    }

    async fn status(&self) -> String {
        let (code, out, err) = patchctl(self.rig.addr(), &["status"]).await;
        assert_eq!(code, 0, "{}: status failed: {err}", self.name);
        out
    }
}

/// Step every node until `done` holds for all of them.
async fn drive(nodes: &mut [Node], limit: Duration, what: &str, done: impl Fn(&Node) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        for n in nodes.iter_mut() {
            n.step();
        }
        if nodes.iter().all(&done) {
            return;
        }
        if Instant::now() > deadline {
            let states: Vec<String> = nodes
                .iter()
                .map(|n| format!("{}: {}", n.name, n.dev.state_kind()))
                .collect();
            panic!(
                "timed out waiting for {what}: {states:?}\nlast log of {}:\n{}",
                nodes[0].name,
                tail(&nodes[0].dev.log(), 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn nodes(count: usize, lock: &LockServer, extra: &str) -> Option<Vec<Node>> {
    let mut v = Vec::new();
    for n in 0..count {
        v.push(Node::new(n, lock, extra).await?);
    }
    Some(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_devices_with_two_slots_never_switch_more_than_two_at_once() {
    for kind in KINDS {
        let Some(lock) = LockServer::start(*kind, 2).await else {
            return;
        };
        let Some(mut nodes) = nodes(5, &lock, "").await else {
            return;
        };
        // Two maintenance jobs hold both slots until every device is staged and
        // waiting, so all five compete for the slots at once.
        let jobs = [lock.client("maintenance-1"), lock.client("maintenance-2")];
        for j in &jobs {
            assert_eq!(j.acquire().await.unwrap(), LockAnswer::Granted);
        }
        // One member of a cluster down for the whole run: locking goes on.
        lock.lose_one_member();
        for n in nodes.iter_mut() {
            n.start();
        }
        drive(
            &mut nodes,
            Duration::from_secs(30),
            "every device waiting for a slot",
            |n| n.dev.state_kind() == "staged" && n.first("reboot_slot_waiting").is_some(),
        )
        .await;
        assert!(nodes.iter().all(|n| n.rig.systemd.calls().is_empty()));
        for j in &jobs {
            j.release().await.unwrap();
        }
        drive(
            &mut nodes,
            Duration::from_secs(45),
            "every device committed and steady",
            |n| n.steady(),
        )
        .await;
        // From each device's own audit log: from its switch to giving the slot back.
        let mut spans = Vec::new();
        for n in &nodes {
            let from = n.first("switching").expect("switched");
            let to = n.first("reboot_slot_released").expect("released");
            let took = n.first("reboot_slot_acquired").expect("acquired");
            assert!(took <= from && from < to, "{}: {took} {from} {to}", n.name);
            spans.push((from, to, n.name.clone()));
        }
        for (from, _, name) in &spans {
            let at_once: Vec<&str> = spans
                .iter()
                .filter(|(f, t, _)| f <= from && from < t)
                .map(|(_, _, n)| n.as_str())
                .collect();
            assert!(
                at_once.len() <= 2,
                "{kind:?}: when {name} switched, {} were switching: {at_once:?}",
                at_once.len()
            );
        }
        assert!(lock.holders().is_empty(), "{kind:?}: {:?}", lock.holders());
        if let Some(most) = lock.most_held() {
            assert_eq!(most, 2, "{kind:?}: the lock itself saw");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_device_keeps_its_slot_until_an_operator_releases_it() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: the daemon trusts only root-owned health checks");
        return;
    }
    for kind in KINDS {
        let Some(lock) = LockServer::start(*kind, 1).await else {
            return;
        };
        let metrics = "[metrics]\ntextfile = \"/var/lib/patchd/patchd.prom\"\n";
        let Some(mut nodes) = nodes(2, &lock, metrics).await else {
            return;
        };
        // dev0's new release fails its health check.
        let check = nodes[0].dev.paths.resolve("/etc/patchd/health.d/10-fails");
        std::fs::create_dir_all(check.parent().unwrap()).unwrap();
        std::fs::write(&check, "#!/bin/sh\necho broken >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(&check, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        nodes[0].start();
        drive(
            &mut nodes[..1],
            Duration::from_secs(30),
            "dev0 rolled back, keeping its slot",
            |n| n.first("reboot_slot_kept").is_some(),
        )
        .await;
        assert_eq!(lock.holders().len(), 1, "{kind:?}");
        nodes[1].start();
        drive(
            &mut nodes[1..],
            Duration::from_secs(30),
            "dev1 waiting for the slot",
            |n| n.first("reboot_slot_waiting").is_some() && n.dev.state_kind() == "staged",
        )
        .await;
        let s = nodes[1].status().await;
        assert!(
            s.contains(&format!("waiting for a reboot slot in group {GROUP}"))
                && s.contains("asks again"),
            "{s}"
        );
        let s0 = nodes[0].status().await;
        assert!(
            s0.contains("kept in group") && s0.contains("patchctl fleet release"),
            "{s0}"
        );
        let prom = nodes[0].dev.paths.resolve("/var/lib/patchd/patchd.prom");
        let line = format!("patchd_reboot_slot{{group=\"{GROUP}\",state=\"kept\"}} 1");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&prom)
            .unwrap_or_default()
            .contains(&line)
        {
            assert!(
                Instant::now() < deadline,
                "{line} not in\n{}",
                std::fs::read_to_string(&prom).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Still held a while later: the group stays paused by itself.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(nodes[1].dev.state_kind(), "staged", "{kind:?}");
        assert!(nodes[0].holds_slot());

        // With the service down the release fails, says why, and nothing changes.
        lock.stop();
        let (code, _, err) = patchctl(nodes[0].rig.addr(), &["fleet", "release"]).await;
        assert_eq!(code, 1, "{err}");
        assert!(
            // A refused connection is "unreachable"; a cluster without quorum holds the
            // request until the timeout.
            err.contains("fleet release")
                && (err.contains("unreachable") || err.contains("did not answer")),
            "{kind:?}: {err}"
        );
        assert!(nodes[0].holds_slot());
        lock.resume().await;
        let (code, out, err) = patchctl(
            nodes[0].rig.addr(),
            &["fleet", "release", "--reason", "looked at it"],
        )
        .await;
        assert_eq!(code, 0, "{out}{err}");
        assert!(!nodes[0].holds_slot());
        let released = nodes[0]
            .records()
            .into_iter()
            .find(|r| r.event == "reboot_slot_released")
            .expect("release audited");
        assert!(released.reason.contains("looked at it"), "{released:?}");
        assert!(
            matches!(released.actor, patchd::audit::Actor::Uid(0)),
            "{released:?}"
        );
        drive(
            &mut nodes[1..],
            Duration::from_secs(30),
            "dev1 committed and steady",
            |n| n.steady(),
        )
        .await;
        assert!(lock.holders().is_empty(), "{kind:?}: {:?}", lock.holders());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_lock_service_down_devices_stage_but_do_not_reboot() {
    for kind in KINDS {
        let Some(lock) = LockServer::start(*kind, 2).await else {
            return;
        };
        lock.stop();
        let Some(mut nodes) = nodes(2, &lock, "").await else {
            return;
        };
        for n in nodes.iter_mut() {
            n.start();
        }
        drive(
            &mut nodes,
            Duration::from_secs(30),
            "staged and lock unreachable",
            |n| n.dev.state_kind() == "staged" && n.first("reboot_lock_unreachable").is_some(),
        )
        .await;
        // A few retries later: still staged, no reboot asked for.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for n in &nodes {
            assert_eq!(n.dev.state_kind(), "staged", "{}", n.name);
            assert!(n.rig.systemd.calls().is_empty(), "{}: rebooted", n.name);
            let s = n.status().await;
            assert!(
                s.contains("cannot be reached") && s.contains("not rebooting"),
                "{}: {s}",
                n.name
            );
            let unreachable = n
                .records()
                .into_iter()
                .filter(|r| r.event == "reboot_lock_unreachable")
                .count();
            assert_eq!(unreachable, 1, "{}: audited once per outage", n.name);
        }
        lock.resume().await;
        drive(
            &mut nodes,
            Duration::from_secs(30),
            "committed and steady after the outage",
            |n| n.steady(),
        )
        .await;
    }
}

/// `patchd --check-config`: a malformed lock URL or an unusable CA bundle is a
/// configuration error naming it;
/// a lock service that does not answer is not (devices wait for it at switch time).
#[tokio::test]
async fn check_config_refuses_a_malformed_lock_url_or_ca_bundle_but_not_an_unreachable_service() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}/", free.local_addr().unwrap());
    drop(free);
    // (url, CA bundle content, None = fine / Some(text) = refused naming it); a CA
    // bundle of "" is one that is missing.
    let cases: [(&str, Option<&str>, Option<&str>); 4] = [
        (&down, None, None),
        ("lock:8080", None, Some("fleet.fleetlock.url")),
        (&down, Some(""), Some("fleet.fleetlock.ca_bundle")),
        (&down, Some("not a certificate"), Some("CA bundle")),
    ];
    for (url, ca, refused) in cases {
        let top = tempfile::tempdir().unwrap();
        let ca_line = if ca.is_some() {
            "ca_bundle = \"/etc/patchd/lock-ca.pem\"\n"
        } else {
            ""
        };
        let dev = Device::new(
            top.path(),
            &DeviceSpec {
                extra: format!(
                    "[fleet]\ngroup = \"{GROUP}\"\nlock = \"fleetlock\"\n[fleet.fleetlock]\nurl = \"{url}\"\n{ca_line}"
                ),
                ..DeviceSpec::default()
            },
        );
        if let Some(pem) = ca.filter(|p| !p.is_empty()) {
            std::fs::write(dev.paths.resolve("/etc/patchd/lock-ca.pem"), pem).unwrap();
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_patchd"))
            .arg("--root")
            .arg(dev.paths.resolve("/"))
            .arg("--check-config")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        match refused {
            None => {
                assert!(out.status.success(), "{url}: {text}");
                assert!(
                    text.contains("reboot lock") && text.contains("fleetlock"),
                    "{text}"
                );
            }
            Some(named) => {
                assert!(!out.status.success(), "{url} {ca:?}: {text}");
                assert!(text.contains(named), "{named}: {text}");
            }
        }
    }
}

/// Without a reboot lock `fleet status` says reboots are not coordinated and `fleet
/// release` is "not found" (exit 6), naming the setting.
#[tokio::test]
async fn without_a_lock_fleet_commands_say_so() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let dev = rig.device(&DeviceSpec {
        policy: QUIET.into(),
        ..DeviceSpec::default()
    });
    let mut d = dev.spawn(rig.addr(), &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let r = patchctl(rig.addr(), &["fleet", "status"]).await;
        if r.0 == 0 || Instant::now() > deadline {
            break r;
        }
        assert!(d.try_wait().is_none(), "patchd exited:\n{}", dev.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(out.0, 0, "{out:?}");
    assert!(out.1.contains("not coordinated"), "{out:?}");
    let (code, o, e) = patchctl(rig.addr(), &["fleet", "release"]).await;
    assert_eq!(code, 6, "{o}{e}");
    assert!(e.contains("[fleet] lock"), "{e}");
    let (code, o, _) = patchctl(rig.addr(), &["--json", "fleet", "status"]).await;
    assert_eq!((code, o.trim()), (0, "null"));
}

/// etcd: a device killed while it holds a slot (in its health checks after the reboot)
/// frees the slot once its lease runs out, and the next device gets it; while it lives,
/// a short lease is renewed and the slot kept across the reboot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_a_device_killed_while_holding_a_slot_frees_it_after_the_lease_ttl() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: the daemon trusts only root-owned health checks");
        return;
    }
    let Some(lock) = LockServer::start(Kind::Etcd, 1).await else {
        return;
    };
    // Lands in [fleet.etcd], the last table of the lock's config.
    let ttl = "lease_ttl = \"6s\"\n";
    let Some(mut nodes) = nodes(1, &lock, ttl).await else {
        return;
    };
    let check = nodes[0].dev.paths.resolve("/etc/patchd/health.d/10-slow");
    std::fs::create_dir_all(check.parent().unwrap()).unwrap();
    std::fs::write(&check, "#!/bin/sh\nsleep 50\n").unwrap();
    std::fs::set_permissions(&check, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    nodes[0].start();
    drive(
        &mut nodes,
        Duration::from_secs(40),
        "dev0 rebooted into its health checks, holding the slot",
        |n| n.dev.state_kind() == "verifying" && n.first("booted_new_slot").is_some(),
    )
    .await;
    // Past one TTL after the reboot: still held (the restarted daemon renews it).
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        lock.holders().len(),
        1,
        "kept across the reboot while alive"
    );
    let other = lock.client("other-device");
    assert!(
        matches!(other.acquire().await.unwrap(), LockAnswer::Busy { .. }),
        "the group's only slot is taken"
    );
    let killed = Instant::now();
    nodes[0].daemon.take().unwrap().kill();
    loop {
        if lock.holders().is_empty() {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "the slot of a killed device must free after its 6 s lease: {:?}",
            lock.holders()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "freed after the lease, not at once ({:?})",
        killed.elapsed()
    );
    assert_eq!(other.acquire().await.unwrap(), LockAnswer::Granted);
}
