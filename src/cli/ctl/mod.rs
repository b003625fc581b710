//! `patchctl`: the admin command line over D-Bus. The binary only calls [`main`]; the
//! clap definition is [`command`] so man pages and completions come from the same source
//! (see [`super::docgen`]).

mod bundle;
mod complete;
pub mod exit;
mod fleet;
mod messages;
mod output;
mod packages;
mod progress;
mod status_text;
mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use serde_json::Value;
use zbus::zvariant::Value as ZValue;
use zbus::Connection;

use crate::dbus::proxy::{classify, ErrorKind, ManagerProxy};
use crate::dbus::types::StatusView;

/// Control the patchd update daemon.
#[derive(Debug, Parser)]
#[command(name = "patchctl", version, after_long_help = exit::help())]
pub struct Cli {
    /// Talk to patchd on this D-Bus address instead of the system bus.
    #[arg(
        long,
        global = true,
        env = "PATCHCTL_BUS_ADDRESS",
        value_name = "ADDRESS"
    )]
    pub bus_address: Option<String>,

    /// Print machine-readable JSON (read commands and results).
    #[arg(long, global = true)]
    pub json: bool,

    /// Write man pages and shell completions into DIR and exit (packaging).
    #[arg(long, hide = true, value_name = "DIR", exclusive = true)]
    pub generate_docs: Option<PathBuf>,

    #[command(subcommand)]
    pub cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Show state, versions, slots, holds and the running job.
    Status,
    /// Look for new releases now.
    Check,
    /// List available releases with their categorization.
    List {
        /// List what an offline bundle (.tar file or directory) offers instead, verified
        /// by patchd as for `install --bundle`; nothing is installed.
        #[arg(long, value_name = "FILE.tar|DIR")]
        bundle: Option<PathBuf>,
        /// Also list each package patch set's packages (the apt source): installed and
        /// candidate version, origin, kind, severity, CVEs, and whether apt-mark holds it.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Stage a release (default: the newest allowed) into the inactive slot.
    ///
    /// Naming a release also approves it, for urgency rules that ask for an admin's
    /// approval (as `patchctl approve RELEASE` does).
    Install {
        /// Version to install.
        release: Option<String>,
        /// Switch to it right after staging, ignoring the maintenance window. patchctl
        /// returns with status 0 once patchd asks for the reboot (it leaves the bus then).
        #[arg(long)]
        now: bool,
        /// Return once staging started instead of following it to the end.
        #[arg(long)]
        no_wait: bool,
        /// Install from an offline bundle (`patchpub bundle`): a .tar file or a
        /// directory, opened with your rights and passed to patchd as a file descriptor.
        /// patchd verifies it with the device's trusted root like the repository and
        /// offers only the releases it carries; see docs/offline.md.
        #[arg(long, value_name = "FILE.tar|DIR")]
        bundle: Option<PathBuf>,
    },
    /// Switch to the staged release if policy allows it now (window, rollout, holds).
    ///
    /// Refused with exit status 10 and the reasons when it does not. --force overrides
    /// the maintenance window, rollout stage and reboot inhibitors, never a hold: release
    /// it first with `patchctl release-hold`.
    Switch {
        /// Switch outside the maintenance window too (holds still apply).
        #[arg(long)]
        force: bool,
    },
    /// Cancel the running job.
    Cancel,
    /// Go back to the previous release.
    Rollback {
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Commit the booted release without waiting for health checks.
    MarkGood,
    /// Declare the booted release bad and go back.
    MarkBad {
        #[arg(long)]
        reason: String,
    },
    /// Hold updates (a documented exception).
    Hold {
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: String,
        /// Until when: RFC 3339 time or a span such as 7d, 48h.
        #[arg(long)]
        until: Option<String>,
        /// Allow releases up to this version while held.
        #[arg(long, value_name = "VERSION")]
        max_version: Option<String>,
    },
    /// Remove the hold.
    ReleaseHold,
    /// Approve a release that an urgency rule sends to approval.
    ///
    /// The urgency rules of the policy ([policy] urgency; by default: feature releases)
    /// can say a release switches only after an administrator approved it; `list` shows
    /// such a release as waiting with "needs an admin's approval". Once approved it
    /// switches in the next maintenance window like any other release (holds, rollout
    /// stages and the floor still apply). `patchctl install RELEASE` approves the release
    /// it names as well. Audited as `approved`. Exit 6 when no check offered RELEASE, 5
    /// when its urgency rule asks for no approval.
    Approve {
        /// The version to approve.
        release: String,
    },
    /// Allow a release that failed on this device to be tried again after a fix.
    ///
    /// A release that failed here (its health checks, its first boot, its deadline) is
    /// never installed again by itself; `list` shows it under "Not applicable" as
    /// "failed on this device before". After fixing the cause, `retry` lifts that block:
    /// the next check offers the release again and it is installed as policy allows.
    /// Audited as `retry_allowed` with the reason and the failure it lifts. Exit 6 when
    /// RELEASE did not fail here.
    Retry {
        /// The version to allow again.
        release: String,
        /// What was fixed (recorded in the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// Fleet reboot coordination: this device's reboot slot.
    Fleet {
        #[command(subcommand)]
        cmd: fleet::FleetCmd,
    },
    /// Leave degraded mode after a damaged state file or trusted metadata.
    ///
    /// When patchd found its state file (/var/lib/patchd/state.json) or its trusted TUF
    /// metadata (/var/lib/patchd/tuf) damaged at start-up, it runs in degraded mode:
    /// `status` names the file and what is wrong, reads are answered, everything else is
    /// refused. `repair` moves the damaged file aside (kept as NAME.corrupt-TIME, never
    /// deleted), rebuilds the state from the bootloader and the slot status records (or
    /// trusts the shipped root again), prints what was rebuilt and what was lost, records
    /// it in the audit log, and patchd starts normally. Exit 6 when there is nothing to
    /// repair.
    Repair,
    /// Show the audit history.
    History {
        /// Only the last N records.
        #[arg(long, short = 'n')]
        limit: Option<u32>,
        /// Only records since this RFC 3339 time or span ago (e.g. 1d).
        #[arg(long)]
        since: Option<String>,
        /// Only records of this event (install, switch, rollback, hold, …).
        #[arg(long)]
        event: Option<String>,
        /// Only records about this release.
        #[arg(long)]
        release: Option<String>,
    },
    /// Show the inventory: OS, kernel, slots, bootloader, pending patches.
    Inventory,
    /// Audit trail operations.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Follow the running job with a progress bar until it ends.
    ///
    /// Follows the jobs patchd starts by itself too (a periodic check and the staging it
    /// leads to), not only those started with patchctl: without --exit-if-idle it waits
    /// for the next job, follows it and what it leads to, and ends with a summary.
    Watch {
        /// Exit at once if no job is running instead of waiting for one.
        #[arg(long)]
        exit_if_idle: bool,
    },
    /// Show which changes you may make, as polkit answers now (no password prompt).
    ///
    /// One line per polkit action: `yes`, `auth` (only after authenticating as an
    /// administrator: run as root, or through sudo or pkexec) or `no`, with polkit's
    /// reason. The Cockpit page disables its buttons from the same answer.
    Permissions,
    /// Print a shell completion script to standard output.
    ///
    /// The script completes commands and options, release versions (asked from the
    /// running patchd when TAB is pressed, with the same --bus-address) and audit event
    /// names. Install it for bash with `patchctl completions bash >
    /// /etc/bash_completion.d/patchctl`; the Debian package ships all three.
    Completions {
        /// bash, zsh or fish.
        shell: complete::ShellName,
    },
    /// Values for the completion scripts: release versions from the daemon, or audit
    /// event names; one per line.
    #[command(name = "__complete", hide = true)]
    Complete { what: complete::Completing },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Verify the audit log's hash chain and head file (exit 8 when broken).
    Verify {
        /// Accept exactly one record appended after the last head update (what a power
        /// cut between an append and the head update leaves); it is still named.
        #[arg(long)]
        allow_power_cut_lag: bool,
    },
}

/// The clap definition (man pages, completions).
pub fn command() -> clap::Command {
    Cli::command()
}

/// Entry point of the `patchctl` binary.
pub fn main() -> ExitCode {
    crate::sigpipe::restore_default();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    if let Some(dir) = &cli.generate_docs {
        let manual = super::manual::patchctl();
        return match super::docgen::generate_with(command(), &manual, dir, complete::script) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("patchctl: {e}");
                ExitCode::from(exit::FAILED)
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("patchctl: cannot start runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    ExitCode::from(rt.block_on(run(cli)))
}

/// A failure already turned into a message and an exit code.
#[derive(Debug)]
pub struct CtlError {
    pub code: u8,
    pub message: String,
}

impl CtlError {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<zbus::Error> for CtlError {
    fn from(e: zbus::Error) -> Self {
        let (kind, msg) = classify(&e);
        let code = match kind {
            ErrorKind::Busy => exit::BUSY,
            ErrorKind::NotAuthorized => exit::NOT_AUTHORIZED,
            ErrorKind::InvalidArgument => exit::INVALID_ARGUMENT,
            ErrorKind::NotFound => exit::NOT_FOUND,
            ErrorKind::Refused => exit::REFUSED,
            ErrorKind::Unavailable => exit::UNAVAILABLE,
            ErrorKind::Failed | ErrorKind::Other => exit::FAILED,
        };
        let msg = match kind {
            ErrorKind::Unavailable if exit::name_missing(&e) => {
                format!("cannot reach patchd: {msg}\nis patchd running? (systemctl status patchd)")
            }
            ErrorKind::Unavailable => format!("cannot reach patchd: {msg}"),
            ErrorKind::NotAuthorized => format!("not authorized: {msg}"),
            ErrorKind::Busy => format!("busy: {msg}"),
            ErrorKind::Refused => format!("not now: {msg}"),
            _ => msg,
        };
        CtlError::new(code, msg)
    }
}

/// Run one command; returns the exit code (messages already printed).
pub async fn run(cli: Cli) -> u8 {
    let Some(cmd) = cli.cmd.as_ref() else {
        let _ = command().print_help();
        return exit::USAGE;
    };
    // Answered without the daemon.
    match cmd {
        Cmd::Completions { shell } => {
            let script = complete::script(&command(), (*shell).into());
            return print_bytes(&script);
        }
        Cmd::Complete {
            what: complete::Completing::Events,
        } => {
            complete::print_events();
            return exit::OK;
        }
        _ => {}
    }
    let conn = match connect(cli.bus_address.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("patchctl: {}", e.message);
            return e.code;
        }
    };
    match dispatch(&conn, cmd, cli.json).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("patchctl: {}", e.message);
            e.code
        }
    }
}

async fn connect(address: Option<&str>) -> Result<Connection, CtlError> {
    let r = match address {
        Some(a) => match zbus::connection::Builder::address(a) {
            Ok(b) => b.build().await,
            Err(e) => Err(e),
        },
        None => Connection::system().await,
    };
    r.map_err(|e| {
        let bus = address.unwrap_or("the system bus");
        CtlError::new(exit::UNAVAILABLE, format!("cannot connect to {bus}: {e}"))
    })
}

fn parse_json(s: &str) -> Result<Value, CtlError> {
    serde_json::from_str(s)
        .map_err(|e| CtlError::new(exit::FAILED, format!("daemon sent malformed JSON: {e}")))
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// A reply as `--json` asked, or as `human` renders it.
fn show(json: bool, v: &Value, human: impl FnOnce(&Value) -> String) {
    if json {
        print_json(v);
    } else {
        print!("{}", human(v));
    }
}

/// RFC 3339 time, or a span back/forward from now (`7d`, `48h`, `1w`).
fn parse_time(s: &str, future: bool) -> Result<jiff::Timestamp, CtlError> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    let span: jiff::Span = s.parse().map_err(|_| {
        CtlError::new(
            exit::INVALID_ARGUMENT,
            format!("{s:?} is neither an RFC 3339 time nor a span like 7d or 48h"),
        )
    })?;
    let now = jiff::Zoned::now();
    let t = if future {
        now.checked_add(span)
    } else {
        now.checked_sub(span)
    };
    // To the second: a span from now carries the clock's nanoseconds otherwise.
    t.map(|z| jiff::Timestamp::from_second(z.timestamp().as_second()).unwrap_or(z.timestamp()))
        .map_err(|e| CtlError::new(exit::INVALID_ARGUMENT, format!("{s:?}: {e}")))
}

// Long on purpose: one arm per verb, each a D-Bus call and its printing; a verb is read
// (and added) in one place.
async fn dispatch(conn: &Connection, cmd: &Cmd, json: bool) -> Result<u8, CtlError> {
    let p = ManagerProxy::new(conn).await?;
    match cmd {
        Cmd::Status => {
            let v = parse_json(&p.get_status().await?)?;
            if json {
                print_json(&v);
            } else {
                print!("{}", status_text::status(&status_of(v)?));
            }
        }
        Cmd::Check => {
            let v = parse_json(&p.check().await?)?;
            if json {
                print_json(&v);
            } else {
                // The check's own list, with the daemon's clock and time zone from status
                // (whose list may still be the one from before the check).
                let mut s = status_of(parse_json(&p.get_status().await?)?)?;
                s.available = serde_json::from_value(v["available"].clone()).map_err(|e| {
                    CtlError::new(exit::FAILED, format!("unexpected check result: {e}"))
                })?;
                print!("{}", status_text::release_groups(&s));
            }
        }
        Cmd::List {
            bundle: Some(path), ..
        } => return bundle::list(&p, path, json).await,
        Cmd::List {
            bundle: None,
            verbose,
        } => {
            let s = status_of(parse_json(&p.get_status().await?)?)?;
            if json {
                print_json(&serde_json::to_value(&s.available).unwrap_or_default());
            } else {
                print!("{}", status_text::release_groups(&s));
                if *verbose {
                    print!("{}", packages::tables(&s.available));
                }
            }
        }
        Cmd::Install {
            release,
            now,
            no_wait,
            bundle,
        } => {
            let mut opts: HashMap<&str, ZValue<'_>> = HashMap::new();
            if *now {
                opts.insert("switch_now", ZValue::from(true));
            }
            let release = release.clone().unwrap_or_default();
            // Subscribed before the call: a job that ends before the reply is still seen.
            let jobs = p.receive_job_finished().await?;
            // The bundle is opened (with the caller's rights) before the bar is drawn.
            let opened = bundle.as_deref().map(bundle::open).transpose()?;
            // One bar from the call to the job's end: one label per phase throughout.
            let mut bar = progress::Bar::new(json);
            let reply = match opened {
                None => watch::with_progress(&p, p.install(&release, opts), &mut bar).await,
                Some(bundle::Opened { fd, writer }) => {
                    // The descriptor moves into the call: once it ended no read end is
                    // left here, so a writer the daemon stopped reading ends with EPIPE.
                    let call = p.install_bundle(fd.into(), &release, opts);
                    let r = watch::with_progress(&p, call, &mut bar).await;
                    bundle::finish(writer, r.is_ok()).and(r)
                }
            };
            let mut v = match reply {
                Ok(v) => parse_json(&v)?,
                Err(e) => {
                    bar.finish();
                    return Err(e);
                }
            };
            let ver = v["version"].as_str().unwrap_or("release").to_owned();
            let slot = v["slot"].as_str().unwrap_or("?").to_owned();
            let id = v["job"].as_u64().unwrap_or(0);
            if *no_wait {
                bar.finish();
                if json {
                    print_json(&v);
                } else {
                    println!("Installing {ver} into slot {slot} (job {id}).");
                }
                return Ok(exit::OK);
            }
            let job = watch::wait_job(&p, id, jobs, *now, |pv| bar.update(pv)).await;
            bar.finish();
            let job = match job? {
                watch::Waited::Ended(job) => job,
                watch::Waited::Gone => return Ok(messages::rebooting(json, &mut v, &ver, &slot)),
            };
            let job = watch::settled(&p, job.id).await?.unwrap_or(job);
            let state = watch::fresh(&p).await?.state().await?;
            let failed = job.unsuccessful();
            let error = job.error.clone().filter(|_| job.failed());
            if json {
                v["state"] = Value::from(state.clone());
                v["outcome"] = Value::from(job.outcome.clone());
                v["error"] = error.clone().map(Value::from).unwrap_or(Value::Null);
                print_json(&v);
            } else {
                if job.outcome == "cancelled" {
                    println!("Installing {ver} was cancelled (job {id}): {state}.");
                } else if failed {
                    let e = error.as_deref().unwrap_or("no reason given");
                    println!("Installing {ver} failed (job {id}, {state}): {e}");
                } else {
                    println!("Installed {ver} into slot {slot}: {state}.");
                }
                let status = watch::status_json(&p).await?;
                let job = (job.id != 0).then_some(&job);
                println!("{}", progress::summary_lines(&status, job, bar.elapsed()));
            }
            return Ok(if failed { exit::JOB_FAILED } else { exit::OK });
        }
        Cmd::Switch { force } => {
            // Always explicit: the D-Bus default overrides the window, patchctl's asks.
            let mut opts: HashMap<&str, ZValue<'_>> = HashMap::new();
            opts.insert("force", ZValue::from(*force));
            match p.switch(opts).await {
                Ok(()) => done(json, "Switching to the staged release; rebooting."),
                Err(e) => {
                    let mut err = CtlError::from(e);
                    if err.code == exit::REFUSED && !*force {
                        err.message.push_str(
                            "\n(--force switches outside the maintenance window; a hold must be released first)",
                        );
                    }
                    return Err(err);
                }
            }
        }
        Cmd::Cancel => {
            p.cancel().await?;
            done(json, "Cancel requested.");
        }
        Cmd::Rollback { reason } => {
            // What is being left, read first: after the call the daemon is rebooting.
            let from = leaving(&p).await;
            p.rollback(reason).await?;
            done(json, &messages::rolled_back(from.as_deref(), "rolled back"));
        }
        Cmd::Approve { release } => {
            p.approve(release).await?;
            done(
                json,
                &format!("Approved {release}; it switches when the rest of the policy allows (patchctl status says when)."),
            );
        }
        Cmd::Retry { release, reason } => {
            p.retry(release, reason).await?;
            done(
                json,
                &format!(
                    "{release} may be installed again; the next check offers it (patchctl check)."
                ),
            );
        }
        Cmd::Fleet { cmd } => {
            let s = status_of(parse_json(&p.get_status().await?)?)?;
            fleet::run(&p, cmd, &s, json).await?;
        }
        Cmd::Repair => {
            let v = parse_json(&p.repair().await?)?;
            show(json, &v, output::repair_report);
        }
        Cmd::MarkGood => {
            p.mark_good().await?;
            done(json, "Marked the booted release good.");
        }
        Cmd::MarkBad { reason } => {
            let from = leaving(&p).await;
            p.mark_bad(reason).await?;
            done(json, &messages::rolled_back(from.as_deref(), "marked bad"));
        }
        Cmd::Hold {
            reason,
            until,
            max_version,
        } => {
            let until = match until {
                Some(u) => parse_time(u, true)?.to_string(),
                None => String::new(),
            };
            let v = parse_json(
                &p.place_hold(reason, &until, max_version.as_deref().unwrap_or(""))
                    .await?,
            )?;
            show(json, &v, messages::hold_placed);
        }
        Cmd::ReleaseHold => {
            p.release_hold().await?;
            done(json, "Hold released.");
        }
        Cmd::History {
            limit,
            since,
            event,
            release,
        } => {
            let mut f: HashMap<&str, ZValue<'_>> = HashMap::new();
            if let Some(n) = limit {
                f.insert("limit", ZValue::from(*n));
            }
            let since = since.as_deref().map(|s| parse_time(s, false)).transpose()?;
            let since = since.map(|t| t.to_string());
            if let Some(s) = &since {
                f.insert("since", ZValue::from(s.as_str()));
            }
            if let Some(e) = event {
                f.insert("event", ZValue::from(e.as_str()));
            }
            if let Some(r) = release {
                f.insert("release", ZValue::from(r.as_str()));
            }
            let v = parse_json(&p.get_history(f).await?)?;
            show(json, &v, output::history);
        }
        Cmd::Inventory => {
            let v = parse_json(&p.get_inventory().await?)?;
            show(json, &v, output::tree);
        }
        Cmd::Audit {
            cmd: AuditCmd::Verify {
                allow_power_cut_lag,
            },
        } => {
            let v = parse_json(&p.verify_audit().await?)?;
            let intact = v["ok"].as_bool() == Some(true);
            let lag_only = v["power_cut_lag_only"].as_bool() == Some(true);
            let ok = intact || (*allow_power_cut_lag && lag_only);
            let list = |key: &str| output::strings(&v[key]);
            if json {
                print_json(&v);
            } else {
                if intact {
                    println!("Audit log intact ({} records).", v["records"]);
                } else if ok {
                    println!(
                        "Audit log intact but for one record the head file does not vouch for (accepted by --allow-power-cut-lag; {} records).",
                        v["records"]
                    );
                } else {
                    println!(
                        "Audit log BROKEN: {}",
                        v["error"].as_str().unwrap_or("verification failed")
                    );
                }
                let lagging = list("lagging");
                for p in list("problems").iter().filter(|p| !lagging.contains(p)) {
                    println!("  problem: {p}");
                }
                for l in &lagging {
                    println!("  lagging: {l}");
                }
                for w in list("warnings") {
                    println!("  warning: {w}");
                }
            }
            return Ok(if ok { exit::OK } else { exit::AUDIT_BROKEN });
        }
        Cmd::Watch { exit_if_idle } => return watch::watch(&p, json, *exit_if_idle).await,
        Cmd::Permissions => {
            let v = parse_json(&p.get_authorizations().await?)?;
            show(json, &v, output::permissions);
        }
        Cmd::Completions { shell } => {
            return Ok(print_bytes(&complete::script(&command(), (*shell).into())))
        }
        Cmd::Complete { what } => complete::answer(&p, *what).await?,
    }
    Ok(exit::OK)
}

/// The status document as the views read it.
/// The release a rollback leaves, for its message; unknown is fine (the call decides).
async fn leaving(p: &ManagerProxy<'_>) -> Option<String> {
    let text = p.get_status().await.ok()?;
    status_of(parse_json(&text).ok()?).ok()?.current_version
}

fn status_of(v: Value) -> Result<StatusView, CtlError> {
    serde_json::from_value(v)
        .map_err(|e| CtlError::new(exit::FAILED, format!("unexpected status document: {e}")))
}

/// Write `bytes` to stdout; a closed stdout is a failure, not a panic.
fn print_bytes(bytes: &[u8]) -> u8 {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("patchctl: cannot write to standard output: {e}");
            exit::FAILED
        }
    }
}

fn done(json: bool, msg: &str) {
    if json {
        println!("{}", serde_json::json!({ "ok": true }));
    } else {
        println!("{msg}");
    }
}
