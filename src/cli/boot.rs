//! `patchd boot status|try SLOT [--attempts N]|mark-good|mark-bad SLOT|reset --primary SLOT`:
//! the low-level command for integrators and rescue work, usable without the daemon.
//!
//! The binary embeds [`BootArgs`] as a subcommand and calls [`run_and_print`].

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::boot::config::BackendKind;
use crate::boot::uboot_reset::{self, ResetBase, ResetReport};
use crate::boot::{open, BootConfig, BootError, SlotBootInfo, UbootBootloader, UbootEnv};
use crate::names::SlotName;
use crate::paths::Paths;

#[derive(Debug, Clone, Args)]
pub struct BootArgs {
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Config file holding the `[boot]` table (default /etc/patchd/patchd.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: BootCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum BootCommand {
    /// Show the booted slot, the primary slot and every slot's counters and flags.
    Status,
    /// Try SLOT on the next boot, keeping the current primary as the fallback.
    Try {
        slot: SlotName,
        /// Boot attempts before falling back.
        #[arg(long, default_value_t = 1)]
        attempts: u32,
    },
    /// Mark the booted slot good: it becomes primary, counters cleared.
    MarkGood,
    /// Mark SLOT bad: never booted again until it is tried anew.
    MarkBad { slot: SlotName },
    /// Rewrite the bootloader state from scratch (also over an unreadable environment):
    /// PRIMARY good, every other slot unused (never chosen, not shown as bad; systemd-boot:
    /// its entry is blessed bad).
    ///
    /// U-Boot: the board's other variables are kept; both raw copies are saved under
    /// /var/lib/patchd/uboot-env-backup/ first. When every copy is corrupt the reset is
    /// refused unless --from-defaults or --force says what the rest of the environment is.
    Reset {
        #[arg(long)]
        primary: SlotName,
        /// U-Boot: take every variable but the A/B ones from this default environment
        /// (`name=value` lines, as `u-boot-initial-env`).
        #[arg(long, value_name = "FILE", conflicts_with = "force")]
        from_defaults: Option<PathBuf>,
        /// U-Boot: over corrupt copies, write only the A/B variables (the rest is lost;
        /// the backup keeps the raw copies).
        #[arg(long)]
        force: bool,
    },
    /// File backend only (the simulated device): do what the bootloader does at power-on
    /// (walk the order, take an attempt from a slot on trial) and record the chosen
    /// slot as booted. Run it while patchd is stopped, then start patchd again.
    SimulateReboot,
}

#[derive(Debug, thiserror::Error)]
pub enum BootCliError {
    #[error("{path}: {source}")]
    ReadConfig {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Config { path: String, why: String },
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
}

/// What a `patchd boot` run did and saw; printed as text or JSON (field names are stable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootReport {
    pub backend: String,
    /// What was changed, e.g. `try b (1 attempt)`; absent for `status`.
    pub action: Option<String>,
    pub booted: Option<SlotName>,
    /// Why the booted slot is unknown, when it is.
    pub booted_error: Option<String>,
    pub primary: Option<SlotName>,
    pub slots: Vec<SlotBootInfo>,
    /// What a U-Boot reset kept, lost and backed up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset: Option<ResetReport>,
}

/// Read just the `[boot]` table of a patchd config file.
pub fn load_boot_config(path: &Path) -> Result<BootConfig, BootCliError> {
    let disp = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| BootCliError::ReadConfig {
        path: disp.clone(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| BootCliError::Config {
        path: disp.clone(),
        why: e.to_string(),
    })?;
    let boot = table
        .get("boot")
        .cloned()
        .ok_or_else(|| BootCliError::Config {
            path: disp.clone(),
            why: "no [boot] table".to_string(),
        })?;
    boot.try_into()
        .map_err(|e: toml::de::Error| BootCliError::Config {
            path: disp,
            why: format!("[boot]: {e}"),
        })
}

/// Carry out the command and report the resulting state.
pub fn run(args: &BootArgs, paths: &Paths) -> Result<BootReport, BootCliError> {
    let cfg_path = args.config.clone().unwrap_or_else(|| paths.config_file());
    let cfg = load_boot_config(&cfg_path)?;
    let bl = open(&cfg, paths)?;
    let mut reset = None;
    let action = match &args.command {
        BootCommand::Status => None,
        BootCommand::Try { slot, attempts } => {
            bl.try_slot(slot, *attempts)?;
            let plural = if *attempts == 1 { "" } else { "s" };
            Some(format!("try {slot} ({attempts} attempt{plural})"))
        }
        BootCommand::MarkGood => {
            let booted = bl.booted_slot()?;
            bl.mark_good(&booted)?;
            Some(format!("mark-good {booted}"))
        }
        BootCommand::MarkBad { slot } => {
            bl.mark_bad(slot)?;
            Some(format!("mark-bad {slot}"))
        }
        BootCommand::Reset {
            primary,
            from_defaults,
            force,
        } => {
            reset = reset_state(
                &cfg,
                bl.as_ref(),
                paths,
                primary,
                from_defaults.as_deref(),
                *force,
            )?;
            Some(format!("reset (primary {primary})"))
        }
        BootCommand::SimulateReboot => {
            if cfg.backend != BackendKind::File {
                return Err(BootError::Refused(format!(
                    "simulate-reboot is for the file backend only (this is {}); reboot the machine",
                    cfg.backend.as_str()
                ))
                .into());
            }
            let chosen =
                crate::boot::FileBootloader::new(paths.resolve(&cfg.file.path), cfg.slots.clone())
                    .simulate_reboot()?;
            Some(format!("simulated reboot: booted {chosen}"))
        }
    };
    if let Some(a) = &action {
        tracing::info!(backend = bl.kind(), action = %a, "boot state changed by command");
    }
    let (booted, booted_error) = match bl.booted_slot() {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(e.to_string())),
    };
    Ok(BootReport {
        backend: bl.kind().to_string(),
        action,
        booted,
        booted_error,
        primary: bl.primary_slot().ok(),
        slots: bl.slots()?,
        reset,
    })
}

/// Write a fresh A/B state with `primary` good (`patchd boot reset`, `patchd init`).
/// U-Boot keeps the board's other variables and backs both raw copies up first
/// (`from_defaults`/`force` say what to keep over corrupt copies); the other backends
/// refuse those two options.
pub fn reset_state(
    cfg: &BootConfig,
    bl: &dyn crate::boot::Bootloader,
    paths: &Paths,
    primary: &SlotName,
    from_defaults: Option<&Path>,
    force: bool,
) -> Result<Option<ResetReport>, BootCliError> {
    if cfg.backend == BackendKind::Uboot {
        let ub =
            UbootBootloader::new(UbootEnv::from_config(&cfg.uboot, paths)?, cfg.slots.clone())?;
        let base = match (from_defaults, force) {
            (Some(f), _) => ResetBase::Defaults {
                file: f.to_path_buf(),
                vars: uboot_reset::read_defaults(f)?,
            },
            (None, true) => ResetBase::Nothing,
            (None, false) => ResetBase::Current,
        };
        let backups = paths.state_dir().join("uboot-env-backup");
        return Ok(Some(uboot_reset::reset(
            &ub,
            primary,
            &base,
            &backups,
            jiff::Timestamp::now(),
        )?));
    }
    if from_defaults.is_some() || force {
        return Err(BootError::Refused(format!(
            "--from-defaults and --force apply to the U-Boot backend only (this is {})",
            cfg.backend.as_str()
        ))
        .into());
    }
    bl.reset(primary)?;
    Ok(None)
}

/// Text rendering: one header block, then one aligned row per slot.
pub fn render_text(r: &BootReport) -> String {
    let mut out = String::new();
    if let Some(a) = &r.action {
        out.push_str(&format!("done:     {a}\n"));
    }
    out.push_str(&format!("backend:  {}\n", r.backend));
    match (&r.booted, &r.booted_error) {
        (Some(b), _) => out.push_str(&format!("booted:   {b}\n")),
        (None, Some(e)) => out.push_str(&format!("booted:   unknown ({e})\n")),
        (None, None) => out.push_str("booted:   unknown\n"),
    }
    if let Some(z) = &r.reset {
        out.push_str(&render_reset(z));
    }
    let primary = r.primary.as_ref().map_or("none", SlotName::as_str);
    out.push_str(&format!("primary:  {primary}\n\n"));
    let width = r
        .slots
        .iter()
        .map(|s| s.slot.as_str().len())
        .max()
        .unwrap_or(4)
        .max(4);
    out.push_str(&format!(
        "{:<width$}  {:<7}  {:<5}  {:<5}  {}\n",
        "SLOT", "PRIMARY", "GOOD", "BAD", "TRIES-LEFT"
    ));
    for s in &r.slots {
        let yn = |b: bool| if b { "yes" } else { "no" };
        let tries = s.tries_left.map_or("-".to_string(), |n| n.to_string());
        out.push_str(&format!(
            "{:<width$}  {:<7}  {:<5}  {:<5}  {}\n",
            s.slot.as_str(),
            yn(s.primary),
            yn(s.good),
            yn(s.bad),
            tries
        ));
    }
    out
}

pub(super) fn render_reset(z: &ResetReport) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let mut out = String::new();
    for c in &z.copies {
        out.push_str(&format!(
            "backup:   {} ({}) -> {}\n",
            c.copy,
            c.state,
            c.backup.display()
        ));
    }
    out.push_str(&format!(
        "kept:     {} (from {})\n",
        list(&z.kept),
        z.source
    ));
    let note = if z.lost_unverified {
        " (read from copies without a valid CRC; the backup holds them)"
    } else {
        ""
    };
    out.push_str(&format!("lost:     {}{note}\n", list(&z.lost)));
    out
}

/// Run and print to stdout.
pub fn run_and_print(args: &BootArgs, paths: &Paths) -> Result<BootReport, BootCliError> {
    let report = run(args, paths)?;
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&report)
            .map_err(|e| BootCliError::Output(std::io::Error::other(e)))?;
        s.push('\n');
        s
    } else {
        render_text(&report)
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(BootCliError::Output)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Top {
        #[command(flatten)]
        boot: BootArgs,
    }

    #[test]
    fn file_backend_through_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        std::fs::create_dir_all(dir.path().join("etc/patchd")).unwrap();
        std::fs::write(
            paths.config_file(),
            "[boot]\nbackend = \"file\"\n[boot.file]\npath = \"/var/lib/patchd/boot.json\"\n",
        )
        .unwrap();
        let a = SlotName::new("a").unwrap();
        crate::boot::FileBootloader::new(
            paths.resolve("/var/lib/patchd/boot.json"),
            vec![a.clone(), SlotName::new("b").unwrap()],
        )
        .init(&a)
        .unwrap();
        let args = Top::try_parse_from(["x", "try", "b", "--attempts", "2"])
            .unwrap()
            .boot;
        let r = run(&args, &paths).unwrap();
        assert_eq!(r.action.as_deref(), Some("try b (2 attempts)"));
        assert_eq!(r.slots[1].tries_left, Some(2));
        let text = render_text(&r);
        assert!(text.contains("b     no       no     no     2"), "{text}");
        let args = Top::try_parse_from(["x", "mark-bad", "a"]).unwrap().boot;
        assert!(run(&args, &paths).is_err(), "only good slot marked bad");
        let args = Top::try_parse_from(["x", "status", "--json"]).unwrap().boot;
        let r = run(&args, &paths).unwrap();
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["primary"], "a");
        assert_eq!(json["booted"], "a");
    }

    #[test]
    fn config_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("patchd.toml");
        for (text, want) in [
            ("[other]\nx = 1\n", "no [boot] table"),
            ("[boot]\nbackend = \"grub\"\nbogus = 1\n", "bogus"),
            ("[boot]\nbackend = \"grub\"\nslots = [\"A\"]\n", "slot"),
            ("not toml [", "patchd.toml"),
        ] {
            std::fs::write(&f, text).unwrap();
            let e = load_boot_config(&f).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("patchd.toml"), "{e}");
        }
        assert!(load_boot_config(&dir.path().join("missing.toml")).is_err());
    }
}
