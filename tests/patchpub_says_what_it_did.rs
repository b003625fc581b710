//! Every patchpub command that changes something prints one line saying what it did: what
//! it wrote or signed, which release or root version, where, and (for the repository) the
//! metadata versions now signed — checked against the files it actually wrote.

use std::path::Path;
use std::process::Command;

fn patchpub(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_patchpub"))
        .current_dir(dir)
        .args(["--repo", "repo", "--keys", "keys"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "patchpub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `signed.version` of `metadata/ROLE.json`.
fn version(dir: &Path, role: &str) -> u64 {
    let p = dir.join("repo/metadata").join(format!("{role}.json"));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    v["signed"]["version"].as_u64().unwrap()
}

fn signed(dir: &Path) -> String {
    format!(
        "root v{}, targets v{}, snapshot v{}, timestamp v{}",
        version(dir, "root"),
        version(dir, "targets"),
        version(dir, "snapshot"),
        version(dir, "timestamp")
    )
}

/// One line, containing every fragment.
fn says(out: &str, fragments: &[&str]) {
    assert_eq!(out.lines().count(), 1, "one line: {out:?}");
    for f in fragments {
        assert!(out.contains(f), "{f:?} missing in {out:?}");
    }
}

#[test]
fn each_command_says_what_it_wrote_which_version_and_where() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::write(d.join("img"), vec![7u8; 40_000]).unwrap();

    let out = patchpub(d, &["keygen", "offline/root-2"]);
    says(
        &out,
        &[
            "offline/root-2.pem",
            "offline/root-2.pub.json",
            "ed25519 key",
        ],
    );
    let keyid = out.split_whitespace().last().unwrap();
    assert_eq!(keyid.len(), 64, "{out}");

    let out = patchpub(d, &["init"]);
    says(&out, &["initialized repo", "keys", &signed(d)]);
    let out = patchpub(
        d,
        &[
            "add",
            "--product",
            "acme",
            "--version",
            "1.0.0",
            "--image",
            "img",
            "--summary",
            "s",
        ],
    );
    says(
        &out,
        &[
            "published acme 1.0.0",
            "releases/acme/1.0.0/manifest.json",
            "in repo",
            &signed(d),
        ],
    );
    for (args, what) in [
        (
            &["promote", "acme/1.0.0", "--channel", "beta"][..],
            "promoted acme/1.0.0 to beta",
        ),
        (
            &["pause", "acme/1.0.0"][..],
            "paused the rollout of acme/1.0.0",
        ),
        (
            &["resume", "acme/1.0.0"][..],
            "resumed the rollout of acme/1.0.0",
        ),
        (&["withdraw", "acme/1.0.0"][..], "withdrew acme/1.0.0"),
        (&["refresh"][..], "re-signed snapshot and timestamp"),
        (&["refresh", "--timestamp-only"][..], "re-signed timestamp"),
        (&["rotate", "timestamp"][..], "replaced the timestamp keys"),
        (
            &["delegate", "team", "--product", "other"][..],
            "delegated releases/other/*/* to role team",
        ),
    ] {
        let out = patchpub(d, args);
        says(&out, &[what, "in repo", &signed(d)]);
    }
    let out = patchpub(
        d,
        &[
            "root",
            "export",
            "--out",
            "new-root.json",
            "--add-key",
            "root=offline/root-2.pub.json",
        ],
    );
    let next = version(d, "root") + 1;
    says(&out, &[&format!("unsigned root v{next}"), "new-root.json"]);
    let root_key = std::fs::read_dir(d.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.to_string_lossy().contains("root-") && p.extension().is_some_and(|e| e == "pem")
        })
        .unwrap();
    let out = patchpub(
        d,
        &[
            "root",
            "sign",
            "new-root.json",
            "--key",
            "offline/root-2.pem",
            "--key",
            root_key.to_str().unwrap(),
        ],
    );
    says(
        &out,
        &[
            &format!("signed root v{next}"),
            "new-root.json",
            "2 key(s)",
            keyid,
        ],
    );
    let out = patchpub(d, &["root", "import", "new-root.json"]);
    assert_eq!(version(d, "root"), next);
    says(
        &out,
        &[&format!("published root v{next}"), "in repo", &signed(d)],
    );
    let out = patchpub(d, &["bundle", "acme/1.0.0", "--out", "b.tar"]);
    says(&out, &["acme/1.0.0", "b.tar"]);
    assert!(d.join("b.tar").exists());
}
