//! `patchpub rollout guard` and `patchpub rollout status`: the command line of the
//! publisher's rollout guard (`publish::guard`). Kept out of the patchpub binary, which
//! holds the other subcommands, so each file stays one job.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use jiff::{SignedDuration, Timestamp};

use crate::publish::guard::{self, GuardSettings, Outcomes, Thresholds};
use crate::publish::{parse_release_name, Repo, RolloutView};

/// `patchpub rollout …`
#[derive(Subcommand)]
pub enum RolloutCmd {
    /// Pause a failing release, or renew its rollout gate; one run, for a timer.
    ///
    /// Asks Prometheus (--prometheus) how many devices entered RELEASE and what became
    /// of them: the sum of patchd_release_outcome by stage and outcome, which every
    /// device exports in its `[metrics] textfile`. Then exactly one of:
    ///
    /// - paused: once at least --min-reported devices have entered, more rolled back or
    ///   failed than --max-failed-ratio (of those that entered) or --max-failed (devices)
    ///   allow. The release is paused as `patchpub pause` does (manifest re-signed), so
    ///   devices that have not switched stop entering it at their next check.
    ///
    /// - renewed / opened_stage_N: healthy. The rollout gate of a guarded release
    ///   (`patchpub add --guarded`) is signed again to expire --gate-ttl from now. It
    ///   opens the next stage when the current stage has --min-committed committed
    ///   devices and the next stage's own time (its `after`) has come. The first run
    ///   opens stage 0.
    ///
    /// - could_not_query: Prometheus did not answer. Nothing is signed: the gate expires
    ///   by itself and the rollout freezes at its stage (devices that switched already
    ///   are not affected). Exit status 3.
    ///
    /// Idempotent: a second run on the same numbers decides the same (a paused release
    /// stays paused and nothing is re-signed; a renewal only moves the expiry;
    /// `patchpub resume` lets the guard renew a paused release again). Every run
    /// appends one JSON line (decision, reason, the counts by stage, the thresholds, the
    /// gate before and after) to --log and fsyncs it. Needs the targets, snapshot and
    /// timestamp keys in --keys, like `patchpub pause`.
    ///
    /// Run it from a timer more often than --gate-ttl, e.g. every 5 minutes with a
    /// 30-minute gate: a missed run or two does not freeze the rollout, a dead guard does.
    ///
    /// Exit status: 0 when a decision was published (or none was needed), 3 when
    /// Prometheus could not be queried, 1 on any other error.
    Guard(GuardArgs),
    /// Show RELEASE's stages, the devices in each, its gate and whether it is paused.
    ///
    /// Per stage: who it includes, when it opens by its schedule, and with --prometheus
    /// the devices that switched (entered), are on trial, committed, rolled back or
    /// failed. Without --prometheus only what the signed metadata knows is shown (stages,
    /// gate, pause). Exit status 3 when --prometheus was given but did not answer.
    Status(StatusArgs),
}

#[derive(Args)]
pub struct GuardArgs {
    /// Release as PRODUCT/VERSION.
    pub release: String,
    /// Prometheus base URL (its HTTP API is queried at /api/v1/query).
    #[arg(long, value_name = "URL", env = "PATCHPUB_PROMETHEUS")]
    pub prometheus: String,
    /// Count only devices on CHANNEL (default: every channel the release is on).
    #[arg(long)]
    pub channel: Option<String>,
    /// Devices that must have entered the release before it can be judged failing.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub min_reported: u64,
    /// Pause when more than RATIO (0 to 1) of the devices that entered rolled back or
    /// failed. 0.1 pauses at 3 of 20.
    #[arg(long, default_value_t = 0.1, value_name = "RATIO", value_parser = ratio)]
    pub max_failed_ratio: f64,
    /// Pause when more than N devices rolled back or failed (besides the ratio).
    #[arg(long, value_name = "N")]
    pub max_failed: Option<u64>,
    /// How long a renewed gate holds (e.g. 30m, 2h); longer than the timer's period.
    #[arg(long, default_value = "30m", value_name = "DURATION", value_parser = crate::duration::parse)]
    pub gate_ttl: Duration,
    /// Committed devices of the current stage needed to open the next stage.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub min_committed: u64,
    /// Give up on Prometheus after DURATION.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = crate::duration::parse)]
    pub timeout: Duration,
    /// Decision log (JSON lines, appended and fsynced).
    #[arg(
        long,
        default_value = "rollout-guard.jsonl",
        value_name = "FILE",
        env = "PATCHPUB_GUARD_LOG"
    )]
    pub log: PathBuf,
}

#[derive(Args)]
pub struct StatusArgs {
    /// Release as PRODUCT/VERSION.
    pub release: String,
    /// Prometheus base URL, for the device counts.
    #[arg(long, value_name = "URL", env = "PATCHPUB_PROMETHEUS")]
    pub prometheus: Option<String>,
    /// Count only devices on CHANNEL.
    #[arg(long)]
    pub channel: Option<String>,
    /// Give up on Prometheus after DURATION.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = crate::duration::parse)]
    pub timeout: Duration,
}

fn ratio(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(format!("{r} is not between 0 and 1"))
    }
}

/// Exit status for "Prometheus could not be queried".
pub const EXIT_NO_QUERY: i32 = 3;

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// Run one `rollout` subcommand; `Ok` carries the exit status.
pub fn run(cmd: &RolloutCmd, repo: &Repo) -> Result<i32> {
    match cmd {
        RolloutCmd::Guard(a) => guard(a, repo),
        RolloutCmd::Status(a) => status(a, repo),
    }
}

fn guard(a: &GuardArgs, repo: &Repo) -> Result<i32> {
    let (product, version) = parse_release_name(&a.release)?;
    let s = GuardSettings {
        prometheus: a.prometheus.clone(),
        timeout: a.timeout,
        channel: a.channel.clone(),
        thresholds: Thresholds {
            min_reported: a.min_reported,
            max_bad_ratio: Some(a.max_failed_ratio),
            max_bad: a.max_failed,
        },
        gate_ttl: SignedDuration::try_from(a.gate_ttl).context("--gate-ttl")?,
        min_committed: a.min_committed,
    };
    let report = runtime()?
        .block_on(guard::run(repo, &product, &version, &s, &a.log))
        .with_context(|| format!("rollout guard for {product}/{version}"))?;
    let r = &report.record;
    let counts = r.counts.map_or_else(String::new, |c| {
        format!(
            " [{} entered: {} on trial, {} committed, {} rolled back, {} failed]",
            c.entered(),
            c.switched,
            c.committed,
            c.rolled_back,
            c.failed
        )
    });
    let line = match &r.error {
        Some(e) => format!("{}: {}: {} ({e})", r.release, r.decision, r.reason),
        None => format!("{}: {}: {}{counts}", r.release, r.decision, r.reason),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    if report.query_failed {
        eprintln!(
            "patchpub: rollout guard: Prometheus could not be queried; the gate was not renewed"
        );
        return Ok(EXIT_NO_QUERY);
    }
    Ok(0)
}

fn who(s: &crate::manifest::RolloutStage) -> String {
    match (s.tags.is_empty(), s.percent) {
        (true, p) => format!("{p}% of devices"),
        (false, 0) => format!("tags {}", s.tags.join(",")),
        (false, p) => format!("tags {} + {p}%", s.tags.join(",")),
    }
}

/// The gate in words at `now`.
pub fn gate_words(v: &RolloutView, now: Timestamp) -> String {
    if !v.manifest.rollout.guarded {
        return "not guarded (no gate)".into();
    }
    match v.gate {
        None => "guarded, no gate signed yet: frozen, no stage open".into(),
        Some(g) if g.is_open(now) => {
            format!("open up to stage {} until {}", g.open_to, g.expires)
        }
        Some(g) => format!("expired at {} (frozen at stage {})", g.expires, g.open_to),
    }
}

fn status(a: &StatusArgs, repo: &Repo) -> Result<i32> {
    let (product, version) = parse_release_name(&a.release)?;
    let v = repo.rollout(&product, &version)?;
    let now = Timestamp::now();
    let mut exit = 0;
    let outcomes: Option<Result<Outcomes, String>> = a.prometheus.as_ref().map(|url| {
        let q =
            guard::prometheus::outcome_query(&product, &version.to_string(), a.channel.as_deref());
        runtime().map_err(|e| e.to_string()).and_then(|rt| {
            rt.block_on(guard::prometheus::query(url, &q, a.timeout))
                .map_err(|e| e.to_string())
        })
    });
    let m = &v.manifest;
    let mut o = String::new();
    let state = if m.withdrawn {
        "withdrawn"
    } else if m.rollout.paused {
        "paused"
    } else {
        "active"
    };
    use std::fmt::Write as _;
    let _ = writeln!(o, "release:   {product}/{version} ({state})");
    let _ = writeln!(o, "published: {}", m.published);
    let _ = writeln!(o, "gate:      {}", gate_words(&v, now));
    let counts = match &outcomes {
        None => {
            let _ = writeln!(o, "devices:   not known without --prometheus");
            None
        }
        Some(Err(e)) => {
            exit = EXIT_NO_QUERY;
            let _ = writeln!(o, "devices:   Prometheus could not be queried: {e}");
            None
        }
        Some(Ok(c)) => {
            let t = c.total();
            let _ = writeln!(
                o,
                "devices:   {} switched, {} on trial, {} committed, {} rolled back, {} failed",
                t.entered(),
                t.switched,
                t.committed,
                t.rolled_back,
                t.failed
            );
            Some(c)
        }
    };
    let _ = writeln!(
        o,
        "{:<6} {:<24} {:<22} {:>8} {:>8} {:>9} {:>11} {:>6}",
        "stage", "includes", "opens", "switched", "on trial", "committed", "rolled back", "failed"
    );
    let stages: Vec<String> = if m.rollout.stages.is_empty() {
        vec!["every device".into()]
    } else {
        m.rollout.stages.iter().map(who).collect()
    };
    for (i, includes) in stages.iter().enumerate() {
        let opens = v.stage_opens(i).unwrap_or(m.published).to_string();
        let cell = |f: fn(&guard::Counts) -> u64| {
            counts.map_or_else(|| "-".to_string(), |c| f(&c.stage(i)).to_string())
        };
        let _ = writeln!(
            o,
            "{i:<6} {includes:<24} {opens:<22} {:>8} {:>8} {:>9} {:>11} {:>6}",
            cell(|c| c.entered()),
            cell(|c| c.switched),
            cell(|c| c.committed),
            cell(|c| c.rolled_back),
            cell(|c| c.failed)
        );
    }
    if let Some(c) = counts.and_then(|c| c.by_stage.get("unknown")) {
        let _ = writeln!(
            o,
            "(devices with an unknown stage: {} switched, {} committed, {} rolled back, {} failed)",
            c.entered(),
            c.committed,
            c.rolled_back,
            c.failed
        );
    }
    let _ = std::io::stdout().lock().write_all(o.as_bytes());
    Ok(exit)
}
