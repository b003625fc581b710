//! Inventory: machine facts read under an injected root plus engine facts, as one JSON
//! document; missing facts are null, malformed ones listed as problems.

use std::fs;
use std::path::Path;

use patchd::config::Config;
use patchd::inventory::{collect, EngineFacts, Inventory, PatchInfo};
use patchd::names::SlotName;
use patchd::paths::Paths;
use patchd::policy::{Decision, Hold, Kind, Severity};
use patchd::slot::{SlotState, SlotStatus};

fn put(root: &Path, p: &str, s: &str) {
    let f = root.join(p.trim_start_matches('/'));
    fs::create_dir_all(f.parent().unwrap()).unwrap();
    fs::write(f, s).unwrap();
}

fn now() -> jiff::Timestamp {
    "2026-11-28T12:00:00Z".parse().unwrap()
}

fn engine() -> EngineFacts {
    let a = SlotName::new("a").unwrap();
    let b = SlotName::new("b").unwrap();
    EngineFacts {
        bootloader: Some("file".into()),
        slot_backend: Some("file".into()),
        slots: vec![
            SlotStatus {
                slot: a.clone(),
                state: SlotState::Good,
                version: Some("1.0.0".into()),
                sha256: Some("ab".repeat(32)),
                size: Some(5 * 1024 * 1024 * 1024),
                installed_at: Some(now()),
            },
            SlotStatus::empty(b),
        ],
        booted: Some(a),
        apps_dir: None,
        security_floor: Some(3),
        holds: vec![Hold {
            reason: "audit week".into(),
            by: "uid:1000".into(),
            created: now(),
            until: None,
            max_version: None,
        }],
        patches: vec![PatchInfo {
            release: "appliance/2.0.0".into(),
            version: "2.0.0".into(),
            kind: Kind::Security,
            severity: Severity::High,
            cves: vec!["CVE-2026-12345".into()],
            size: Some(123_456_789),
            state: "available".into(),
            decision: Some(Decision::blocked("hold by uid:1000: audit week")),
            packages: vec![],
        }],
        audit_head: Some(patchd::inventory::AuditHead {
            seq: Some(41),
            hash: "cd".repeat(32),
            lag_at_start: 0,
        }),
        installed_packages: None,
    }
}

#[test]
fn full_document_from_a_fake_root() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    put(r, "/etc/machine-id", "4F8C2A7E0D8B4C0E9F1A2B3C4D5E6F70\n");
    put(r, "/proc/sys/kernel/hostname", "edge-17\n");
    put(r, "/etc/hostname", "ignored\n");
    put(
        r,
        "/etc/os-release",
        "ID=debian\nVERSION_ID=\"13\"\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n",
    );
    put(r, "/proc/sys/kernel/osrelease", "6.12.0-1-amd64\n");
    put(
        r,
        "/proc/sys/kernel/version",
        "#1 SMP PREEMPT_DYNAMIC Debian 6.12.0-1\n",
    );
    put(r, "/proc/sys/kernel/arch", "x86_64\n");
    put(r, "/sys/class/dmi/id/sys_vendor", "QEMU\n");
    put(
        r,
        "/sys/class/dmi/id/product_name",
        "Standard PC (Q35 + ICH9, 2009)\n",
    );
    let mut cfg = Config::default();
    cfg.device.product = Some("appliance".into());
    cfg.device.tags = vec!["canary".into()];
    let inv = collect(&Paths::new(r), &cfg.device, engine(), now());
    assert!(inv.problems.is_empty(), "{:?}", inv.problems);

    let j: serde_json::Value = serde_json::from_str(&inv.to_json_pretty()).unwrap();
    assert_eq!(j["schema"], 1);
    assert_eq!(j["machine_id"], "4f8c2a7e0d8b4c0e9f1a2b3c4d5e6f70");
    assert_eq!(j["hostname"], "edge-17");
    assert_eq!(
        j["os_release"]["PRETTY_NAME"],
        "Debian GNU/Linux 13 (trixie)"
    );
    assert_eq!(j["kernel"]["release"], "6.12.0-1-amd64");
    assert_eq!(j["architecture"], "x86_64");
    assert_eq!(j["hardware"]["vendor"], "QEMU");
    assert_eq!(j["hardware"]["board_name"], serde_json::Value::Null);
    assert_eq!(j["product"], "appliance");
    assert_eq!(j["channel"], "stable");
    assert_eq!(j["tags"][0], "canary");
    assert_eq!(j["bootloader"], "file");
    assert_eq!(j["slots"][0]["slot"], "a");
    assert_eq!(j["slots"][0]["booted"], true);
    assert_eq!(j["slots"][0]["state"], "good");
    assert_eq!(
        j["slots"][0]["size"],
        5u64 * 1024 * 1024 * 1024,
        "sizes past 4 GiB survive"
    );
    assert_eq!(j["slots"][1]["booted"], false);
    assert_eq!(j["security_floor"], 3);
    assert_eq!(j["holds"][0]["reason"], "audit week");
    assert_eq!(j["patches"][0]["kind"], "security");
    assert_eq!(j["patches"][0]["severity"], "high");
    assert_eq!(j["patches"][0]["cves"][0], "CVE-2026-12345");
    assert_eq!(j["patches"][0]["decision"]["decision"], "blocked");

    // The document reads back (patchctl parses it).
    let back: Inventory = serde_json::from_value(j).unwrap();
    assert_eq!(back, inv);
}

#[test]
fn missing_facts_are_null_and_bad_ones_are_problems() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    put(r, "/etc/machine-id", "not-a-machine-id\n");
    put(r, "/etc/hostname", "fallback-host\n");
    put(r, "/usr/lib/os-release", "ID=debian\nthis line is bad\n");
    let inv = collect(
        &Paths::new(r),
        &Config::default().device,
        EngineFacts::default(),
        now(),
    );
    assert_eq!(inv.machine_id, None);
    assert_eq!(inv.hostname.as_deref(), Some("fallback-host"));
    assert_eq!(inv.os_release["ID"], "debian");
    assert_eq!(inv.kernel.release, None);
    assert_eq!(inv.hardware.vendor, None);
    assert_eq!(inv.architecture, std::env::consts::ARCH);
    assert!(inv.slots.is_empty());
    assert_eq!(inv.problems.len(), 2, "{:?}", inv.problems);
    assert!(inv.problems[0].contains("not a machine id"));
    assert!(inv.problems[1].contains("line 2"));
}

#[test]
fn machine_id_path_override_is_honoured() {
    let d = tempfile::tempdir().unwrap();
    put(
        d.path(),
        "/var/lib/dbus/machine-id",
        "00112233445566778899aabbccddeeff\n",
    );
    let mut cfg = Config::default();
    cfg.device.machine_id_path = "/var/lib/dbus/machine-id".into();
    let inv = collect(
        &Paths::new(d.path()),
        &cfg.device,
        EngineFacts::default(),
        now(),
    );
    assert_eq!(
        inv.machine_id.as_deref(),
        Some("00112233445566778899aabbccddeeff")
    );
}

#[test]
fn unreadable_fact_is_a_problem_not_a_crash() {
    let d = tempfile::tempdir().unwrap();
    // A directory where a file is expected cannot be read.
    fs::create_dir_all(d.path().join("etc/machine-id")).unwrap();
    let inv = collect(
        &Paths::new(d.path()),
        &Config::default().device,
        EngineFacts::default(),
        now(),
    );
    assert_eq!(inv.machine_id, None);
    assert!(
        inv.problems.iter().any(|p| p.contains("machine-id")),
        "{:?}",
        inv.problems
    );
}
