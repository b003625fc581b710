//! The `tuf-client` example, driven as a separate process against a repository served
//! over HTTP by `python3 -m http.server` on 127.0.0.1.
mod tuf_support;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tuf_support::*;

fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().unwrap()
}

#[track_caller]
fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if code != 0 {
        assert!(!o.stderr.is_empty(), "failure without a reason on stderr");
    }
}

#[test]
fn init_refresh_download_over_http() {
    let Some(bin) = tuf_client() else {
        println!("skipped: examples/tuf-client not built (cargo build --example tuf-client)");
        return;
    };
    let mut repo = Repo::new(true);
    repo.add_target("rel/app.bin", b"application v1");
    repo.add_target("notes.txt", b"notes");
    repo.publish();
    let logdir = tempfile::tempdir().unwrap();
    let Some(server) = Server::start(repo.tmp.path(), logdir.path().join("log")) else {
        println!("skipped: cannot start python3 -m http.server");
        return;
    };
    let dev = tempfile::tempdir().unwrap();
    let md = dev.path().join("meta");
    let td = dev.path().join("targets");
    let md_s = md.to_str().unwrap();
    let td_s = td.to_str().unwrap();
    let root_file = repo.meta_dir().join("1.root.json");
    assert_exit(
        &run(
            &bin,
            &["--metadata-dir", md_s, "init", root_file.to_str().unwrap()],
        ),
        0,
    );
    assert_eq!(
        files_in(&md).into_keys().collect::<Vec<_>>(),
        vec!["root.json"]
    );

    let meta_url = server.url("metadata/");
    let target_url = server.url("targets/");
    assert_exit(
        &run(
            &bin,
            &[
                "--metadata-url",
                &meta_url,
                "--metadata-dir",
                md_s,
                "refresh",
            ],
        ),
        0,
    );
    for name in files_in(&md).into_keys() {
        assert!(
            name.ends_with(".json") || !name.contains(".json"),
            "unexpected file {name} in the metadata dir"
        );
    }
    let download = [
        "--target-dir",
        td_s,
        "--target-name",
        "rel/app.bin",
        "--metadata-dir",
        md_s,
        "--target-base-url",
        &target_url,
        "--metadata-url",
        &meta_url,
        "--target-name",
        "notes.txt",
        "download",
    ];
    assert_exit(&run(&bin, &download), 0);
    assert_eq!(
        std::fs::read(td.join("rel%2Fapp.bin")).unwrap(),
        b"application v1"
    );
    assert_eq!(std::fs::read(td.join("notes.txt")).unwrap(), b"notes");
    assert_eq!(server.requests_for("app.bin"), 1);
    // Unchanged target: no request at all for it.
    assert_exit(&run(&bin, &download), 0);
    assert_eq!(server.requests_for("app.bin"), 1);

    // A mirror serving other bytes: exit 1, nothing partial left, old file untouched.
    std::fs::remove_file(td.join("notes.txt")).unwrap();
    for e in walk(&repo.targets_dir()) {
        if e.to_string_lossy().ends_with("notes.txt") {
            std::fs::write(&e, b"NOTES").unwrap();
        }
    }
    let before_meta = files_in(&md);
    assert_exit(&run(&bin, &download), 1);
    let names: Vec<String> = files_in(&td).into_keys().collect();
    assert_eq!(names, vec!["rel%2Fapp.bin"]);
    let after_meta = files_in(&md);
    assert_eq!(
        before_meta
            .keys()
            .filter(|k| k.ends_with(".json"))
            .collect::<Vec<_>>(),
        after_meta
            .keys()
            .filter(|k| k.ends_with(".json"))
            .collect::<Vec<_>>()
    );
    drop(server);
}

#[test]
fn argument_errors_exit_1() {
    let Some(bin) = tuf_client() else {
        println!("skipped: examples/tuf-client not built (cargo build --example tuf-client)");
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let ds = d.path().to_str().unwrap();
    for args in [
        vec![],
        vec!["refresh"],
        vec!["--metadata-dir", ds],
        vec!["--metadata-dir", ds, "refresh"],
        vec!["--metadata-dir", ds, "--bogus", "refresh"],
        vec!["--metadata-dir", ds, "init"],
        vec!["--metadata-dir", ds, "init", "/nonexistent/root.json"],
        vec![
            "--metadata-dir",
            ds,
            "--metadata-url",
            "http://127.0.0.1:9/",
            "download",
        ],
        vec!["--metadata-dir", ds, "frobnicate"],
    ] {
        let o = run(&bin, &args);
        assert_exit(&o, 1);
    }
    // No trusted root: refresh fails closed.
    let o = run(
        &bin,
        &[
            "--metadata-dir",
            ds,
            "--metadata-url",
            "file:///nonexistent",
            "refresh",
        ],
    );
    assert_exit(&o, 1);
}

/// A panic inside a run is a failure like any other: exit status 1 (never 101, the
/// conformance harness knows only 0 and 1) and a reason on stderr.
#[test]
fn a_panic_exits_1_with_a_reason() {
    let Some(bin) = tuf_client() else {
        println!("skipped: examples/tuf-client not built (cargo build --example tuf-client)");
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let ds = d.path().to_str().unwrap();
    let o = Command::new(&bin)
        .args([
            "--metadata-dir",
            ds,
            "--metadata-url",
            "http://127.0.0.1:9/",
            "refresh",
        ])
        .env("TUF_CLIENT_PANIC_FOR_TEST", "1")
        .output()
        .unwrap();
    assert_exit(&o, 1);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("internal panic"), "{err}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The example follows the system clock as the TUF specification does (the conformance
/// suite runs it under `faketime`, sometimes in the past): no clock-sanity safeguard,
/// and the metadata directory holds only trusted role files.
#[test]
fn system_clock_before_the_build_time_is_taken_as_it_is() {
    let Some(bin) = tuf_client() else {
        println!("skipped: examples/tuf-client not built (cargo build --example tuf-client)");
        return;
    };
    let faketime_works = Command::new("faketime")
        .args(["2024-01-01 00:00:00", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !faketime_works {
        println!("skipped: faketime not installed (tests/deps/apt-packages.txt)");
        return;
    }
    let repo = Repo::new(false);
    let dev = tempfile::tempdir().unwrap();
    let md = dev.path().join("meta");
    let md_s = md.to_str().unwrap();
    let root_file = repo.meta_dir().join("1.root.json");
    let url = format!("file://{}", repo.meta_dir().display());
    let at = |when: &str, args: &[&str]| {
        Command::new("faketime")
            .arg(when)
            .arg(&bin)
            .args(args)
            .output()
            .unwrap()
    };
    assert_exit(
        &run(
            &bin,
            &["--metadata-dir", md_s, "init", root_file.to_str().unwrap()],
        ),
        0,
    );
    let refresh = ["--metadata-dir", md_s, "--metadata-url", &url, "refresh"];
    // Before the build time, and then further back: both judged by that clock.
    assert_exit(&at("2024-01-01 00:00:00", &refresh), 0);
    assert_exit(&at("2023-06-01 00:00:00", &refresh), 0);
    let names: Vec<String> = files_in(&md).into_keys().collect();
    assert_eq!(
        names,
        [
            "root.json",
            "snapshot.json",
            "targets.json",
            "timestamp.json"
        ]
    );
    // After the metadata expired (2028-06-01): refused.
    assert_exit(&at("2029-01-01 00:00:00", &refresh), 1);
}
