//! Differential test against python-tuf's ngclient: for a table of repository scenarios
//! built with python-tuf's Metadata API (tests/interop/differential.py), both clients
//! refresh (or download) from the same repository served over HTTP, step by step, and
//! after every step must agree on success or failure, hold the same trusted role files
//! at the same versions, and have made the same requests in the same order. A
//! divergence fails the test, naming the scenario and step.
//!
//! Scenarios: every key rotation, expiry and rollback of each role (and of a delegated
//! role), a role below its threshold and unsigned roles, consistent-snapshot files
//! whose version differs from their name, snapshot/targets whose hash differs from the
//! parent's, missing snapshot/targets (404), wrong `_type`, the final root expired
//! (persisted, then refresh fails), repeated signature key ids, delegated role names
//! `?` `#` `/delegatedrole` `../delegatedrole`, targets fast-forward recovery through a
//! snapshot key rotation, and a delegation graph with terminating and path-pattern
//! delegations (found, shadowed, and outside every path), and a delegated role's key
//! rotation, expiry, threshold raised past its signatures, and signature by a retired
//! key.

mod tuf_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The venv python with python-tuf's ngclient, or None (the test reports itself skipped).
fn python() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("PATCHD_TEST_PYTHON").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/.venv/bin/python")),
    ];
    candidates.into_iter().flatten().find(|p| {
        std::process::Command::new(p)
            .args(["-c", "import tuf.ngclient, securesystemslib.signer"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

/// Every scenario the driver defines; a missing one means the driver stopped early.
const SCENARIOS: &[&str] = &[
    "baseline",
    "rotate-root",
    "rotate-timestamp",
    "rotate-snapshot",
    "rotate-targets",
    "expire-root",
    "expire-timestamp",
    "expire-snapshot",
    "expire-targets",
    "rollback-timestamp",
    "rollback-snapshot",
    "rollback-targets",
    "rollback-delegated",
    "below-threshold",
    "unsigned-targets",
    "unsigned-snapshot",
    "unsigned-timestamp",
    "version-mismatch-targets",
    "version-mismatch-snapshot",
    "hash-differs-targets",
    "hash-differs-snapshot",
    "missing-targets",
    "missing-snapshot",
    "wrong-type-targets",
    "wrong-type-snapshot",
    "wrong-type-timestamp",
    "final-root-expired",
    "duplicate-sigs-targets",
    "duplicate-sigs-snapshot",
    "duplicate-sigs-timestamp",
    "role-names",
    "fast-forward-recovery",
    "delegation-graph",
    "delegated-rotate",
    "delegated-expire",
    "delegated-below-threshold",
    "delegated-stale-key",
];

/// Steps whose outcome the scenario exists for: they must fail for both clients (a
/// driver that silently stopped corrupting would otherwise compare two successes).
const MUST_FAIL: &[(&str, &str)] = &[
    ("expire-timestamp", "timestamp expired"),
    ("expire-snapshot", "snapshot expired"),
    ("expire-targets", "targets expired"),
    ("expire-root", "root expired"),
    ("rollback-timestamp", "timestamp rolled back"),
    ("rollback-snapshot", "snapshot rolled back"),
    ("rollback-targets", "targets rolled back"),
    ("rollback-delegated", "team rolled back"),
    ("below-threshold", "targets below threshold"),
    ("final-root-expired", "root v2 expired"),
    ("delegation-graph", "shadowed by a terminating role"),
    ("delegated-expire", "team expire"),
    ("delegated-below-threshold", "team below-threshold"),
    ("delegated-stale-key", "team stale-key"),
];

#[test]
fn ngclient_and_our_client_agree_step_by_step() {
    let Some(py) = python() else {
        println!(
            "skipped: no python with python-tuf (set PATCHD_TEST_PYTHON or create tests/.venv)"
        );
        return;
    };
    let Some(client) = tuf_support::tuf_client() else {
        println!("skipped: examples/tuf-client not built (cargo build --example tuf-client)");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/differential.py");
    let out = std::process::Command::new(&py)
        .arg(&script)
        .arg(&client)
        .arg(work.path())
        .output()
        .expect("run the differential driver");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "driver failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steps: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let seen: BTreeSet<&str> = steps
        .iter()
        .filter_map(|s| s["scenario"].as_str())
        .collect();
    for s in SCENARIOS {
        assert!(seen.contains(s), "scenario {s} did not run");
    }

    let mut divergences = Vec::new();
    let mut table = String::new();
    for s in &steps {
        let (py, ours) = (&s["python"], &s["ours"]);
        let name = format!(
            "{} / {}",
            s["scenario"].as_str().unwrap_or("?"),
            s["step"].as_str().unwrap_or("?")
        );
        let differs: Vec<&str> = ["ok", "roles", "requests"]
            .into_iter()
            .filter(|k| py[k] != ours[k])
            .collect();
        table.push_str(&format!(
            "{name:70} python={:5} ours={:5} {}\n",
            py["ok"],
            ours["ok"],
            if differs.is_empty() {
                "same".to_string()
            } else {
                format!("DIFFERS in {}", differs.join(", "))
            }
        ));
        if !differs.is_empty() {
            let detail: Vec<String> = differs
                .iter()
                .map(|k| format!("  {k}: python {} / ours {}", py[k], ours[k]))
                .collect();
            divergences.push(format!(
                "{name}\n{}\n  errors: python {:?} / ours {:?}",
                detail.join("\n"),
                py["error"],
                ours["error"]
            ));
        }
    }
    println!("{table}");
    assert!(
        divergences.is_empty(),
        "{} step(s) diverge from python-tuf's ngclient:\n{}",
        divergences.len(),
        divergences.join("\n")
    );
    for (scenario, step) in MUST_FAIL {
        let s = steps
            .iter()
            .find(|s| s["scenario"] == *scenario && s["step"] == *step)
            .unwrap_or_else(|| panic!("{scenario} / {step} did not run"));
        assert_eq!(s["ours"]["ok"], false, "{scenario} / {step} succeeded: {s}");
    }
    // The comparison saw real traffic: delegated roles were fetched by their encoded
    // names, in the order of the search.
    let names = steps
        .iter()
        .find(|s| s["scenario"] == "role-names" && s["step"] == "delegated role names")
        .expect("role-names step");
    let req: Vec<&str> = names["ours"]["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|r| r.starts_with("metadata/1.%") || r.starts_with("metadata/1.."))
        .collect();
    assert_eq!(
        req,
        [
            "metadata/1.%3F.json",
            "metadata/1.%23.json",
            "metadata/1.%2Fdelegatedrole.json",
            "metadata/1...%2Fdelegatedrole.json"
        ],
        "{names}"
    );
}
