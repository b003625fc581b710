//! Every exit status of `patchctl`, provoked for real against `patchd run` on a private
//! system-like bus (patchd's own bus policy, `--auth uids:0`) with an HTTP mirror the test
//! can slow down or make corrupt: one row per code in `patchd::cli::ctl::exit::TABLE`, and
//! that table is the one docs/admin.md lists. The run fails when a code is documented but
//! not provoked, or a command exits with another code than the documented one.

mod common;
mod process;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::http::{FaultServer, Faults};
use patchd::cli::ctl::exit;
use process::support::{self, TestBus, NOBODY};
use process::{Device, DeviceSpec, Ended, QUIET};

const SIZE: usize = 8 << 20;

/// The codes of docs/admin.md's "Exit status" table.
fn documented_codes() -> BTreeSet<u8> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/admin.md")).unwrap();
    let start = doc.find("### Exit status").expect("Exit status section");
    doc[start..]
        .lines()
        .skip(1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(1)?.trim().parse().ok())
        .collect()
}

#[test]
fn the_exit_table_is_the_documented_one() {
    let code: BTreeSet<u8> = exit::TABLE.iter().map(|(c, _)| *c).collect();
    assert_eq!(
        code,
        documented_codes(),
        "src/cli/ctl/exit.rs vs docs/admin.md"
    );
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_patchctl"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for (c, what) in exit::TABLE {
        assert!(
            help.contains(&format!("{c:<3} {what}")),
            "--help lacks {c}: {help}"
        );
    }
}

struct Row {
    code: u8,
    what: &'static str,
    got: i32,
    out: String,
}

async fn run(bus: &str, uid: Option<u32>, args: &[&str]) -> (i32, String) {
    let exe = env!("CARGO_BIN_EXE_patchctl");
    let mut cmd = match uid {
        Some(uid) => {
            let mut c = tokio::process::Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .args(["--clear-groups", "--", exe]);
            c
        }
        None => tokio::process::Command::new(exe),
    };
    let out = cmd
        .arg("--bus-address")
        .arg(bus)
        .args(args)
        .env_remove("PATCHCTL_BUS_ADDRESS")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run patchctl");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

// Long on purpose: one daemon walked through every code in order, each step named by the
// code it provokes (a daemon per code would cost a minute each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exit_status_against_the_running_daemon() {
    if !support::need_root("running patchctl as nobody (setpriv)") {
        return;
    }
    let Some(bus) = TestBus::start() else {
        return;
    };
    let server = FaultServer::start().await;
    let top = tempfile::tempdir().unwrap();
    let dev = Device::new(
        top.path(),
        &DeviceSpec {
            image_size: SIZE,
            uncompressed: true,
            url: Some(server.url()),
            policy: QUIET.into(),
            ..DeviceSpec::default()
        },
    );
    for (path, bytes) in dev.repo_files() {
        server.add(&path, bytes);
    }
    let mut d = dev.spawn(&bus.address, &[]);
    let addr = bus.address.clone();
    let mut rows: Vec<Row> = Vec::new();
    let mut row = |code: u8, what: &'static str, (got, out): (i32, String)| {
        rows.push(Row {
            code,
            what,
            got,
            out,
        });
    };
    // The daemon is up once status answers.
    let mut up = false;
    for _ in 0..200 {
        if run(&addr, None, &["status"]).await.0 == 0 {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "patchd never answered\n{}", dev.log());

    row(exit::OK, "status", run(&addr, None, &["status"]).await);
    row(
        exit::USAGE,
        "an unknown option",
        run(&addr, None, &["status", "--no-such-option"]).await,
    );
    row(
        exit::FAILED,
        "mark-good with nothing on trial",
        run(&addr, None, &["mark-good"]).await,
    );
    row(
        exit::NOT_AUTHORIZED,
        "hold as nobody",
        run(&addr, Some(NOBODY), &["hold", "--reason", "sneaky"]).await,
    );
    row(
        exit::INVALID_ARGUMENT,
        "install of a version with a space",
        run(&addr, None, &["install", "1.0 beta"]).await,
    );
    row(
        exit::NOT_FOUND,
        "install of a release nobody published",
        run(&addr, None, &["install", "9.9.9"]).await,
    );
    // A bus where nobody owns patchd's name, and no bus at all.
    let empty = TestBus::start().expect("second bus");
    let no_daemon = run(&empty.address, None, &["status"]).await;
    assert!(
        no_daemon
            .1
            .contains("is patchd running? (systemctl status patchd)"),
        "hint when the name has no owner: {}",
        no_daemon.1
    );
    row(
        exit::UNAVAILABLE,
        "status with no patchd on the bus",
        no_daemon,
    );
    let no_bus = run("unix:path=/nonexistent/bus", None, &["status"]).await;
    assert!(!no_bus.1.contains("is patchd running"), "{}", no_bus.1);
    row(exit::UNAVAILABLE, "status with no bus", no_bus);

    // A mirror that flips a byte of the image: the staging job fails.
    server.set(Faults {
        corrupt: vec![100_000],
        ..Faults::default()
    });
    row(
        exit::JOB_FAILED,
        "install from a corrupting mirror",
        run(&addr, None, &["install", "2.0.0"]).await,
    );

    // A slow mirror: the staging runs while a second install asks.
    server.set(Faults {
        chunk_delay: Some(Duration::from_millis(250)),
        ..Faults::default()
    });
    let (c, o) = run(&addr, None, &["install", "2.0.0", "--no-wait"]).await;
    assert_eq!(c, 0, "install --no-wait: {o}\n{}", dev.log());
    row(
        exit::BUSY,
        "install while a staging runs",
        run(&addr, None, &["install", "2.0.0"]).await,
    );
    let (c, o) = run(&addr, None, &["cancel"]).await;
    assert_eq!(c, 0, "cancel: {o}");
    let e = process::wait_until(&mut d, &dev, Duration::from_secs(60), "cancelled", |dev| {
        dev.state_kind() != "staging"
    })
    .await;
    assert!(matches!(e, Ended::Reached), "{e:?}\n{}", dev.log());

    // A good mirror: staged, and the only window is a minute on Mondays far away.
    server.set(Faults::default());
    let (c, o) = run(&addr, None, &["install", "2.0.0"]).await;
    assert_eq!(c, 0, "install: {o}\n{}", dev.log());
    row(
        exit::REFUSED,
        "switch outside the maintenance window",
        run(&addr, None, &["switch"]).await,
    );

    // One byte of an audit record changed behind the daemon's back.
    let log = dev.audit_path();
    let mut bytes = std::fs::read(&log).unwrap();
    let at = bytes
        .windows(8)
        .position(|w| w == b"\"reason\"")
        .expect("a reason field")
        + 11;
    bytes[at] ^= 0x01;
    std::fs::write(&log, &bytes).unwrap();
    row(
        exit::AUDIT_BROKEN,
        "audit verify of an edited log",
        run(&addr, None, &["audit", "verify"]).await,
    );

    // The reader of stdout gone before patchctl writes: SIGPIPE, 141 in the shell.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_patchctl"))
        .args(["--bus-address", &addr, "history"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let st = child.wait().unwrap();
    let got = st.signal().map_or(st.code().unwrap_or(-1), |s| 128 + s);
    row(
        exit::SIGPIPE,
        "history into a closed pipe",
        (got, String::new()),
    );

    d.kill();
    let mut wrong = Vec::new();
    for r in &rows {
        if r.got != i32::from(r.code) {
            wrong.push(format!(
                "{} ({}): exit {}, documented {}\n{}",
                r.what, r.code, r.got, r.code, r.out
            ));
        }
    }
    assert!(wrong.is_empty(), "{}\n{}", wrong.join("\n"), dev.log());
    let provoked: BTreeSet<u8> = rows.iter().map(|r| r.code).collect();
    assert_eq!(
        provoked,
        documented_codes(),
        "every documented code is provoked"
    );
}
