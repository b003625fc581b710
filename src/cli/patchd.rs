//! `patchd`'s command line: the daemon (`patchd`, `patchd run`), `patchd demo`,
//! `patchd --check-config`, `patchd boot …` (the low-level bootloader command),
//! `patchd boot-check` (waits for the daemon's verdict on this boot, for systemd's boot
//! assessment), `patchd audit verify`, `patchd sysext …` (system extensions by hand),
//! and the hidden health-check reaper.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::dbus::{AuthMode, Bus, ServiceOptions};
use crate::paths::Paths;
use clap::{CommandFactory, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "patchd",
    version,
    about = "Update daemon: signed releases, A/B slots, maintenance windows, health checks, automatic rollback, audit trail"
)]
struct Cli {
    /// Check everything `patchd run` needs and print the effective settings: the
    /// configuration (/etc/patchd/patchd.toml and its drop-ins), the machine id, the
    /// trusted root, the bootloader state and the booted slot, the slots, the
    /// directories and their permissions, the repository. Every problem is listed with
    /// its fix; exit status 78 (EX_CONFIG, as `patchd run` uses) when there is any.
    #[arg(long)]
    check_config: bool,
    /// Resolve every device path under this directory (tests, images being built).
    #[arg(long, value_name = "DIR", default_value = "/", env = "PATCHD_ROOT")]
    root: PathBuf,
    /// Use this D-Bus address instead of the system bus (tests): serve on it, or with
    /// boot-check, ask the daemon there.
    #[arg(long, value_name = "ADDR", global = true)]
    bus_address: Option<String>,
    /// Who may call privileged methods: `polkit`, or `uids:0,1000` on a private bus.
    #[arg(long, value_name = "MODE", default_value = "polkit")]
    auth: AuthMode,
    /// Write man pages and shell completions into DIR and exit (packaging).
    #[arg(long, hide = true, value_name = "DIR", exclusive = true)]
    generate_docs: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the default without a subcommand).
    Run,
    /// Bring a new device up: write a commented starting /etc/patchd/patchd.toml for its
    /// slot and boot backends, initialise the bootloader's A/B state (the running slot
    /// primary and good, the other one unused), and record the factory release of the
    /// running slot.
    Init(Box<super::init::InitArgs>),
    /// Run the whole lifecycle on a simulated device (no root, no network needed).
    Demo(crate::demo::DemoArgs),
    /// Low-level bootloader control: status, try, mark-good, mark-bad, reset.
    Boot(super::boot::BootArgs),
    /// Wait for patchd's health verdict on this boot; exit 0 when committed or nothing is
    /// on trial, 1 when patchd is rolling back (patchd-boot-check.service).
    ///
    /// Asks the running daemon over D-Bus (the system bus, or --bus-address) and waits
    /// for its PropertiesChanged signals while the booted slot is on trial (state
    /// verifying). Passes at once when no update awaits a verdict, when the release is
    /// committed, or when a rollback already brought the previous slot back; fails while
    /// patchd rolls back from the booted slot. Ordered before boot-complete.target, so
    /// systemd-bless-boot only blesses boots patchd accepted.
    BootCheck(super::bootcheck::BootCheckArgs),
    /// Audit log: `verify` checks the hash chain, the head file and (with --journal)
    /// the journal's copy, reading the files directly (no daemon needed).
    Audit(super::audit::AuditArgs),
    /// System extensions patchd keeps (maintenance): `check` an image against this OS,
    /// `install` or `roll-back` one by hand with a release's A/B steps, `status`.
    Sysext(super::sysext::SysextArgs),
}

fn init_logging(default: &str) {
    crate::logging::init_command("PATCHD_LOG", default);
}

/// The command line, for documentation generation.
fn command() -> clap::Command {
    Cli::command()
}

/// `patchd` with the process's arguments.
pub fn main() -> ExitCode {
    // The health-check reaper: dispatched before anything else runs (it must stay single
    // threaded) and kept out of clap, so it is in neither --help nor the man page.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == crate::health::reaper::SUBCOMMAND)
    {
        let code = crate::health::reaper::main(&args[2..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX));
    }
    let cli = Cli::parse();
    let daemon = !cli.check_config
        && cli.generate_docs.is_none()
        && matches!(cli.command, None | Some(Command::Run));
    if !daemon {
        crate::sigpipe::restore_default();
    }
    if let Some(dir) = &cli.generate_docs {
        let page = super::config_page::write(dir).map_err(|source| super::docgen::DocgenError {
            path: dir.join("man"),
            source,
        });
        return match super::docgen::generate(command(), &super::manual::patchd(), dir).and(page) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("patchd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let paths = Paths::new(&cli.root);
    if cli.check_config {
        return check_config(&paths);
    }
    match cli.command {
        Some(Command::Init(args)) => match super::init::run(&args, &paths) {
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("patchd init: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Boot(args)) => match super::boot::run_and_print(&args, &paths) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("patchd boot: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::BootCheck(args)) => {
            let bus = cli.bus_address.map_or(Bus::System, Bus::Address);
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("patchd: cannot start runtime: {e}");
                    return ExitCode::from(super::bootcheck::exit::UNAVAILABLE);
                }
            };
            let code = rt.block_on(super::bootcheck::run(
                &bus,
                args.timeout,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            ));
            ExitCode::from(code)
        }
        Some(Command::Audit(args)) => audit(&args, &paths),
        Some(Command::Sysext(args)) => match super::sysext::run(&args, &paths) {
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("patchd sysext: {e:#}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Demo(args)) => {
            init_logging(if args.verbose { "info" } else { "warn" });
            match runtime().map(|rt| rt.block_on(crate::demo::device::run(args))) {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => {
                    eprintln!("demo: FAILED: {e}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("patchd: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None | Some(Command::Run) => {
            let _log = match crate::logging::init("patchd", "info") {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("patchd: logging: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let opts = crate::daemon::DaemonOptions {
                service: ServiceOptions {
                    bus: cli.bus_address.map_or(Bus::System, Bus::Address),
                    auth: cli.auth,
                    ..ServiceOptions::default()
                },
                // Our own binary through /proc: still there after a package upgrade
                // replaced /usr/bin/patchd (current_exe() would then name a deleted file),
                // and a path systemd-run can exec too.
                health_reaper: Some(PathBuf::from(format!("/proc/{}/exe", std::process::id()))),
            };
            match runtime().map(|rt| rt.block_on(crate::daemon::run(paths, opts))) {
                Ok(Ok(exit)) => {
                    tracing::info!(?exit, "engine stopped");
                    ExitCode::SUCCESS
                }
                Ok(Err(e)) => {
                    eprintln!("patchd: {e}");
                    tracing::error!(error = %e, exit = e.exit_code(), "patchd cannot run");
                    ExitCode::from(e.exit_code())
                }
                Err(e) => {
                    eprintln!("patchd: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `patchd --check-config`: the report on stdout; problems also on stderr (one line
/// each), so a failing check is visible where errors are read; exit 78 on any.
fn check_config(paths: &Paths) -> ExitCode {
    let report = super::preflight::check(paths);
    print!("{}", report.render());
    if let Err(e) = &report.config {
        eprintln!("patchd: configuration error: {e}");
    }
    for f in &report.findings {
        if let Err((problem, fix)) = &f.result {
            eprintln!("patchd: {}: {problem} (fix: {fix})", f.what);
        }
    }
    if report.failures() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::daemon::EXIT_CONFIG)
    }
}

/// `err` and its sources, `outer: inner: …` (what anyhow's `{:#}` printed here before).
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn audit(args: &super::audit::AuditArgs, paths: &Paths) -> ExitCode {
    use super::audit::{exit, AuditCmd};
    let AuditCmd::Verify(v) = &args.cmd;
    let opened = match &v.log {
        Some(p) => crate::audit::AuditLog::open(p, crate::audit::AuditLimits::default())
            .map_err(|e| chain(&e)),
        None => crate::config::load(paths)
            .map_err(|e| chain(&e))
            .and_then(|cfg| {
                crate::audit::AuditLog::open(paths.resolve(&cfg.audit.path), cfg.audit.limits)
                    .map_err(|e| chain(&e))
            }),
    };
    match opened {
        Ok(log) => ExitCode::from(super::audit::run(
            v,
            &log,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        )),
        Err(e) => {
            eprintln!("patchd audit verify: {e}");
            ExitCode::from(exit::FAILED)
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}
