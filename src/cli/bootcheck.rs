//! `patchd boot-check`: the bridge between patchd's post-boot health verdict and systemd's
//! boot assessment. `patchd-boot-check.service` runs it before `boot-complete.target`; it
//! succeeds only when the boot needs no verdict or patchd committed the release it booted,
//! so `systemd-bless-boot` never blesses a boot that patchd is rolling back.
//!
//! It is a D-Bus client of the running daemon: it reads `GetStatus`, and waits for
//! `PropertiesChanged` on the manager object (and for the daemon's name to appear, if it
//! is not up yet) instead of polling; a slow re-read every few seconds covers a signal lost
//! while the daemon restarts.

use std::io::Write;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use crate::dbus::proxy::{classify, ErrorKind, ManagerProxy};
use crate::dbus::types::StatusView;
use crate::dbus::{Bus, BUS_NAME, OBJECT_PATH};

/// Exit codes of `patchd boot-check` (documented in `docs/admin.md` and the man page).
pub mod exit {
    /// The boot is good: the release was committed, or there was nothing to verify.
    pub const PASSED: u8 = 0;
    /// patchd judged this boot bad (health checks failed, deadline passed, marked bad)
    /// and is rolling back.
    pub const FAILED: u8 = 1;
    /// Bad command line (clap's own code).
    pub const USAGE: u8 = 2;
    /// No verdict within `--timeout`.
    pub const TIMEOUT: u8 = 3;
    /// The bus could not be reached at all.
    pub const UNAVAILABLE: u8 = 4;
}

const EXIT_HELP: &str = "\
Exit status:
  0  this boot is good: the release was committed, or no update awaits a verdict
  1  patchd judged this boot bad (health checks failed) and is rolling back
  2  bad command line
  3  no verdict within --timeout
  4  the D-Bus bus could not be reached";

/// Wait for patchd's verdict on this boot (systemd boot assessment).
#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = EXIT_HELP)]
pub struct BootCheckArgs {
    /// Give up after this long without a verdict (e.g. 90s, 10m, 1h). Keep it below the
    /// unit's TimeoutStartSec so the reason is printed.
    #[arg(long, value_name = "DURATION", default_value = "25m", value_parser = crate::duration::parse)]
    pub timeout: Duration,
}

/// What the status says about the current boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    Pass(String),
    Fail(String),
    /// No verdict yet; the text says what patchd is doing.
    Wait(String),
}

fn booted_slot(s: &StatusView) -> Option<&crate::dbus::types::SlotView> {
    match &s.booted_slot {
        Some(name) => s.slots.iter().find(|v| &v.name == name),
        None => s.slots.iter().find(|v| v.booted),
    }
}

fn describe(s: &StatusView) -> String {
    let slot = booted_slot(s);
    let name = slot
        .map(|v| v.name.as_str())
        .or(s.booted_slot.as_deref())
        .unwrap_or("?");
    match slot.and_then(|v| v.version.as_deref()) {
        Some(v) => format!("release {v} in slot {name}"),
        None => format!("slot {name}"),
    }
}

/// Judge the current boot from a status snapshot. Only a slot on trial (`verifying`) is
/// waited for; a rollback fails the boot only while the bad slot is the one running.
pub fn assess(s: &StatusView) -> Assessment {
    let what = describe(s);
    match s.state.as_str() {
        "verifying" => {
            let doing = s
                .progress
                .as_ref()
                .map(|p| p.phase.clone())
                .unwrap_or_else(|| "health checks pending".into());
            Assessment::Wait(format!("{what} is on trial: {doing}"))
        }
        "committed" => Assessment::Pass(format!("{what} is committed")),
        "rolled_back" => {
            if booted_slot(s).is_some_and(|v| v.state == "bad") {
                Assessment::Fail(format!(
                    "{what} failed verification; patchd is rolling back to the previous slot"
                ))
            } else {
                Assessment::Pass(format!(
                    "running {what} after a rollback; nothing to verify on this boot"
                ))
            }
        }
        // The engine reconciles before it serves D-Bus: `switching` seen here means this
        // boot runs the old slot and the trial boot is still ahead.
        "switching" => Assessment::Pass(format!(
            "{what} is the known-good slot; the switch to the new release is still ahead"
        )),
        "idle" | "update_available" | "staging" | "staged" => {
            Assessment::Pass(format!("no update awaits a verdict; running {what}"))
        }
        // patchd stopped acting and waits for an admin: it has no verdict on this boot,
        // and blocking boot assessment would let the boot counter condemn a slot on its
        // behalf.
        "failed" => Assessment::Pass(format!(
            "patchd needs an admin ({}); not judging this boot of {what}",
            s.last_error.as_deref().unwrap_or("state failed")
        )),
        other => Assessment::Fail(format!("patchd reports unknown state {other:?}")),
    }
}

/// Why the last `rolled_back` record was written, for the failure message.
async fn rollback_reason(p: &ManagerProxy<'_>) -> Option<String> {
    let mut f = std::collections::HashMap::new();
    f.insert("event", zbus::zvariant::Value::from("rolled_back"));
    f.insert("limit", zbus::zvariant::Value::from(1u32));
    let doc: serde_json::Value = serde_json::from_str(&p.get_history(f).await.ok()?).ok()?;
    doc.as_array()?
        .last()?
        .get("reason")?
        .as_str()
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
}

async fn connect(bus: &Bus) -> zbus::Result<zbus::Connection> {
    match bus {
        Bus::System => zbus::Connection::system().await,
        Bus::Address(a) => {
            zbus::connection::Builder::address(a.as_str())?
                .build()
                .await
        }
    }
}

/// Print a progress line unless it repeats the previous one.
fn say(out: &mut (dyn Write + Send), last: &mut String, msg: String) {
    if msg != *last {
        let _ = writeln!(out, "boot-check: {msg}");
        *last = msg;
    }
}

fn timed_out(err: &mut (dyn Write + Send), timeout: Duration, last: &str) -> u8 {
    let last = if last.is_empty() {
        "no answer from patchd"
    } else {
        last
    };
    let _ = writeln!(
        err,
        "boot-check: no verdict from patchd within {}; last: {last}",
        crate::duration::format(&timeout)
    );
    exit::TIMEOUT
}

/// Seconds between re-reads when no signal arrives (a lost signal costs at most this).
const RECHECK: Duration = Duration::from_secs(5);

/// Run the check; progress goes to `out`, the verdict to `out` (pass) or `err` (fail,
/// timeout). Returns the exit code.
pub async fn run(
    bus: &Bus,
    timeout: Duration,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> u8 {
    let deadline = Instant::now() + timeout;
    let conn = match connect(bus).await {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "boot-check: cannot connect to {bus}: {e}");
            return exit::UNAVAILABLE;
        }
    };
    match watch(&conn, deadline, timeout, out, err).await {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "boot-check: D-Bus: {e}");
            exit::UNAVAILABLE
        }
    }
}

async fn watch(
    conn: &zbus::Connection,
    deadline: Instant,
    timeout: Duration,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> zbus::Result<u8> {
    // Subscribe before the first read, so a change between read and wait is not lost.
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    let mut owners = dbus
        .receive_name_owner_changed_with_args(&[(0, BUS_NAME)])
        .await?;
    let props = zbus::fdo::PropertiesProxy::builder(conn)
        .destination(BUS_NAME)?
        .path(OBJECT_PATH)?
        .build()
        .await?;
    let mut changes = props.receive_properties_changed().await?;
    let manager = ManagerProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    let mut last = String::new();
    loop {
        // Bounded like everything else: a daemon that takes the call but never answers
        // must not outlast --timeout.
        let answer = match tokio::time::timeout_at(deadline, manager.get_status()).await {
            Ok(a) => a,
            Err(_) => return Ok(timed_out(err, timeout, &last)),
        };
        match answer {
            Ok(doc) => match serde_json::from_str::<StatusView>(&doc) {
                Ok(status) => match assess(&status) {
                    Assessment::Pass(m) => {
                        let _ = writeln!(out, "boot-check: {m}");
                        return Ok(exit::PASSED);
                    }
                    Assessment::Fail(m) => {
                        let why = tokio::time::timeout(RECHECK, rollback_reason(&manager))
                            .await
                            .ok()
                            .flatten()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default();
                        let _ = writeln!(err, "boot-check: FAILED: {m}{why}");
                        return Ok(exit::FAILED);
                    }
                    Assessment::Wait(m) => say(out, &mut last, format!("waiting: {m}")),
                },
                Err(e) => say(
                    out,
                    &mut last,
                    format!("patchd sent an unexpected status ({e}); retrying"),
                ),
            },
            Err(e) => match classify(&e) {
                (ErrorKind::Unavailable, _) => say(
                    out,
                    &mut last,
                    "waiting for patchd to appear on the bus".into(),
                ),
                (_, msg) => say(
                    out,
                    &mut last,
                    format!("patchd did not answer ({msg}); retrying"),
                ),
            },
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(timed_out(err, timeout, &last));
        }
        let wake = now + RECHECK.min(deadline - now);
        tokio::select! {
            Some(_) = changes.next() => {}
            Some(_) = owners.next() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dbus::types::{ProgressView, SlotView};

    fn status(state: &str, booted_state: &str) -> StatusView {
        StatusView {
            state: state.into(),
            booted_slot: Some("b".into()),
            slots: vec![
                SlotView {
                    name: "a".into(),
                    state: "good".into(),
                    version: Some("1.0".into()),
                    booted: false,
                },
                SlotView {
                    name: "b".into(),
                    state: booted_state.into(),
                    version: Some("2.0".into()),
                    booted: true,
                },
            ],
            ..StatusView::default()
        }
    }

    #[test]
    fn verdicts_for_each_state() {
        assert!(
            matches!(assess(&status("committed", "good")), Assessment::Pass(m) if m.contains("2.0"))
        );
        assert!(matches!(
            assess(&status("rolled_back", "bad")),
            Assessment::Fail(_)
        ));
        assert!(matches!(
            assess(&status("rolled_back", "good")),
            Assessment::Pass(_)
        ));
        for s in [
            "idle",
            "update_available",
            "staging",
            "staged",
            "switching",
            "failed",
        ] {
            assert!(
                matches!(assess(&status(s, "good")), Assessment::Pass(_)),
                "{s}"
            );
        }
        assert!(matches!(
            assess(&status("exploded", "good")),
            Assessment::Fail(_)
        ));
        let mut v = status("verifying", "verified");
        v.progress = Some(ProgressView {
            phase: "health checks".into(),
            ..ProgressView::default()
        });
        assert_eq!(
            assess(&v),
            Assessment::Wait("release 2.0 in slot b is on trial: health checks".into())
        );
    }
}
