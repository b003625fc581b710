//! The daemon's composition root (DESIGN layer 8): configuration → backends → engine →
//! D-Bus → wait for signals. It stands above `engine` and `dbus` so that neither has to
//! know the other's wiring.
//!
//! The binary only parses arguments and calls [`run`]. There is no "unverified mode":
//! without a trusted root the daemon refuses to start rather than install anything.

mod bundles;
pub mod fleet;
pub mod health;
pub mod metrics_feed;
pub mod reboot;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use self::health::PlanHealth;
use crate::audit::{AuditError, AuditLog};
use crate::boot::{BootError, Bootloader};
use crate::clock::SystemClock;
use crate::config::RepoSource;
use crate::config::{Config, ConfigError};
use crate::dbus::{Bus, ManagerBackend, ServiceOptions};
use crate::engine::runner::{EngineParts, EngineSettings, RunExit};
use crate::engine::EngineError;
use crate::engine::EngineHandle;
use crate::fetch::{ByteSource, FileSource, HttpSource};
use crate::health::{ExecSettings, HealthPlan, SystemdUnits};
use crate::health::{FixedUnits, UnitQuery};
use crate::names::SlotName;
use crate::paths::Paths;
use crate::policy::{DeviceFacts, PolicyError};
use crate::slot::stage::StageOptions;
use crate::slot::{SlotBackend, SlotError};
use crate::source::RepoUpdates;
use crate::trust::client::Limits;
use crate::trust::TufClient;
use reboot::{SimulatedReboot, SyscallReboot, SystemdReboot};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("[boot] in the configuration: {0}")]
    BootConfig(String),
    #[error("bootloader: {0}")]
    Boot(#[from] BootError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("slots: {0}")]
    NoSlots(&'static str),
    #[error("slots: {0}")]
    Slots(#[from] SlotError),
    #[error("repository: {0}")]
    Repository(String),
    #[error("D-Bus service: {0}")]
    Dbus(String),
    #[error("[fleet] reboot lock: {0}")]
    Fleet(String),
}

/// Exit status for a configuration patchd cannot run with (sysexits' `EX_CONFIG`): the
/// unit's `RestartPreventExitStatus=78` keeps systemd from restarting into it every few
/// seconds; fixing the configuration and `systemctl restart patchd` starts it again.
pub const EXIT_CONFIG: u8 = 78;

impl DaemonError {
    /// The process exit status for this error: [`EXIT_CONFIG`] when only a changed
    /// configuration can help, 1 when a restart may (the bus was not up yet, a device
    /// was busy).
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(_)
            | DaemonError::Policy(_)
            | DaemonError::BootConfig(_)
            | DaemonError::NoSlots(_)
            | DaemonError::Repository(_)
            | DaemonError::Fleet(_) => EXIT_CONFIG,
            _ => 1,
        }
    }
}

/// Engine tunables from the validated configuration.
pub fn settings_from(cfg: &Config) -> EngineSettings {
    let probation = (!cfg.health.probation.is_zero()).then_some(cfg.health.probation);
    EngineSettings {
        check_interval: (!cfg.repository.check_interval.is_zero())
            .then_some(cfg.repository.check_interval),
        check_jitter: cfg.repository.check_jitter,
        health_deadline: cfg.health.deadline,
        probation,
        probation_check_every: cfg.health.probation_interval,
        boot_attempts: cfg
            .boot_config
            .as_ref()
            .map_or(EngineSettings::default().boot_attempts, |b| b.attempts),
        retry_after: cfg.fetch.retry_after,
        retry_after_max: cfg.fetch.retry_after_max,
        ..EngineSettings::default()
    }
}

/// Device facts for the switch decision: product, channel and the hardware id (the same
/// resolution the repository port uses) for eligibility; machine id from the configured
/// file and tags for rollout bucketing.
pub fn device_facts(cfg: &Config, paths: &Paths) -> Result<DeviceFacts, DaemonError> {
    let p = paths.resolve(&cfg.device.machine_id_path);
    let machine_id = std::fs::read_to_string(&p)
        .map_err(|source| DaemonError::Io {
            what: format!("machine id {}", p.display()),
            source,
        })?
        .trim()
        .to_string();
    Ok(DeviceFacts {
        machine_id,
        product: cfg.device.product.clone().unwrap_or_default(),
        hardware: crate::inventory::hardware_id::resolve(cfg.device.hardware.as_deref(), paths)
            .map(|h| h.id),
        channel: cfg.device.channel.clone(),
        tags: cfg.device.tags.clone(),
    })
}

/// The configured slots (`slot::open` builds them from `[slots]`).
fn build_slots(
    cfg: &Config,
    paths: &Paths,
    booted: &SlotName,
) -> Result<Vec<Arc<dyn SlotBackend>>, DaemonError> {
    let sc = cfg.slots.as_ref().ok_or(DaemonError::NoSlots(
        "the configuration has no [slots] section",
    ))?;
    Ok(crate::slot::open(sc, paths, booted)?)
}

/// The source of releases `[source] kind` names: the system's apt, or the verified
/// repository from `[repository]` (`None` when no repository is configured).
fn build_updates(
    cfg: &Config,
    paths: &Paths,
    slots: &[Arc<dyn SlotBackend>],
    booted: Option<&SlotName>,
) -> Result<Option<Arc<dyn crate::engine::ports::Updates>>, DaemonError> {
    if cfg.source.kind == crate::sourceconf::SourceKind::Apt {
        let mut apt = cfg.source.apt.clone();
        for p in [&mut apt.root, &mut apt.config, &mut apt.feed]
            .into_iter()
            .flatten()
        {
            *p = paths.resolve(&*p);
        }
        let mut updates = crate::source::AptUpdates::new(
            apt,
            cfg.device.product.clone().unwrap_or_default(),
            cfg.device.channel.clone(),
            paths.cache_dir().join("apt"),
        );
        if let Some(b) = booted {
            let snaps = crate::source::apt::layout::snapshots_for(cfg.slots.as_ref(), paths, b);
            if let Some(s) = snaps {
                updates = updates.with_snapshots(s);
            }
            if let Err(e) = updates.recover() {
                tracing::error!(error = %e, "deleting the partial snapshot of an interrupted staging failed");
            }
        }
        return Ok(Some(Arc::new(updates)));
    }
    Ok(build_repository(cfg, paths, slots)?
        .map(|u| Arc::new(u) as Arc<dyn crate::engine::ports::Updates>))
}

/// The verified repository from `[repository]`, or `None` when no source is configured.
/// Fails closed: without trusted metadata and without the configured trusted root file
/// the daemon does not start (it never installs unverified releases).
fn build_repository(
    cfg: &Config,
    paths: &Paths,
    slots: &[Arc<dyn SlotBackend>],
) -> Result<Option<RepoUpdates>, DaemonError> {
    let Some(source) = &cfg.repository.source else {
        tracing::warn!("no [repository] url or dir configured: not checking for updates");
        return Ok(None);
    };
    let product = cfg.device.product.clone().ok_or(DaemonError::Repository(
        "device.product must be set when a repository is configured".into(),
    ))?;
    let hardware = crate::inventory::hardware_id::resolve(cfg.device.hardware.as_deref(), paths);
    match &hardware {
        Some(h) => {
            tracing::info!(hardware = %h.id, source = %h.source, "hardware compatibility id")
        }
        None => tracing::info!(
            "no hardware compatibility id ([device] hardware unset, no device tree or DMI name): \
             only releases published without --hardware fit this device"
        ),
    }
    let limits = Limits::default();
    let tuf_dir = bundles::trust_dir(cfg, paths, &limits)?;
    let client = TufClient::load(&tuf_dir, Arc::new(SystemClock), limits)
        .map_err(|e| DaemonError::Repository(format!("{}: {e}", tuf_dir.display())))?;
    let (metadata, targets): (Arc<dyn ByteSource>, Arc<dyn ByteSource>) = match source {
        RepoSource::Dir(d) => {
            let d = paths.resolve(d);
            (
                Arc::new(FileSource::new(d.join("metadata"))),
                Arc::new(FileSource::new(d.join("targets"))),
            )
        }
        RepoSource::Url(u) => {
            let mut opts = cfg.fetch.http_options();
            if !opts.min_rate.is_on() {
                tracing::warn!("{}", crate::config::NO_MIN_RATE);
            }
            if let Some(ca) = &cfg.repository.ca_bundle {
                let p = paths.resolve(ca);
                opts.extra_ca_pem = Some(std::fs::read(&p).map_err(|source| DaemonError::Io {
                    what: format!("repository.ca_bundle {}", p.display()),
                    source,
                })?);
            }
            let base = u.to_string();
            let base = base.trim_end_matches('/');
            let http = |sub: &str| {
                HttpSource::new(&format!("{base}/{sub}/"), opts.clone())
                    .map_err(|e| DaemonError::Repository(format!("{base}: {e}")))
            };
            (Arc::new(http("metadata")?), Arc::new(http("targets")?))
        }
    };
    let updates = RepoUpdates::new(
        client,
        metadata,
        targets,
        product,
        hardware.map(|h| h.id),
        cfg.device.channel.clone(),
        slots.to_vec(),
        stage_options(cfg),
    )
    .with_component_dir(crate::component::staged_dir(paths));
    Ok(Some(updates))
}

fn stage_options(cfg: &Config) -> StageOptions {
    let mut opts = StageOptions::default();
    if let Some(c) = cfg.slots.as_ref().and_then(|s| s.checkpoint_every) {
        opts.checkpoint_every = c;
    }
    opts
}

/// How the daemon is reached and watched.
pub struct DaemonOptions {
    pub service: ServiceOptions,
    /// The `patchd` binary that runs health checks under the reaper
    /// (`patchd __health-exec`); `None` runs them directly (process-group kill only).
    pub health_reaper: Option<PathBuf>,
}

/// Build every backend from the configuration and start the engine. `bus` is where
/// systemd is asked to reboot: the system bus, or the private bus of `--bus-address`
/// (tests serve a fake systemd there).
/// The running engine and the tasks around it.
struct Started {
    handle: EngineHandle,
    task: tokio::task::JoinHandle<RunExit>,
    /// Keeps `[metrics] textfile` current; it holds an engine handle, so it is stopped
    /// before the engine is asked to stop.
    metrics: Option<metrics_feed::MetricsTask>,
}

async fn start(
    paths: &Paths,
    bus: &Bus,
    health_reaper: Option<PathBuf>,
) -> Result<Started, DaemonError> {
    let cfg = crate::config::load(paths)?;
    let policy = cfg.policy.to_policy();
    if cfg.policy.windows.is_empty() {
        tracing::warn!("{}", crate::config::NO_WINDOWS);
    }
    let boot_cfg = cfg.boot_config.as_ref().ok_or(DaemonError::BootConfig(
        "the configuration has no [boot] section".into(),
    ))?;
    let simulated = boot_cfg.backend == crate::boot::BackendKind::File;
    let bootloader: Arc<dyn Bootloader> = Arc::from(crate::boot::open(boot_cfg, paths)?);
    let booted = bootloader.booted_slot()?;
    let slots = build_slots(&cfg, paths, &booted)?;
    let state_dir = paths.state_dir();
    crate::fsutil::ensure_dir(&state_dir, 0o700).map_err(|source| DaemonError::Io {
        what: state_dir.display().to_string(),
        source,
    })?;
    let updates = build_updates(&cfg, paths, &slots, Some(&booted))?;
    let bundles = bundles::build_bundles(&cfg, paths, &slots, stage_options(&cfg));
    let mut audit = AuditLog::open(paths.resolve(&cfg.audit.path), cfg.audit.limits)?;
    // The head file is written after every append; a log longer than its head holds
    // records nobody vouched for (one after a power cut, or forged ones). Record that
    // before anything else is appended, so the head catching up does not hide it.
    audit.record_head_lag(crate::clock::Clock::now(&SystemClock))?;
    // Without configured unit checks systemd is never asked: a missing system bus
    // (containers, tests) must not keep the daemon from starting.
    let units: Arc<dyn UnitQuery> = if cfg.health.units.is_empty() {
        Arc::new(FixedUnits(Default::default()))
    } else {
        Arc::new(
            SystemdUnits::system()
                .await
                .map_err(|e| DaemonError::BootConfig(format!("systemd over D-Bus: {e}")))?,
        )
    };
    let login = crate::policy::inhibit::Logind::system().await.ok();
    let audit = Arc::new(Mutex::new(audit));
    let clock: Arc<dyn crate::clock::Clock> = Arc::new(SystemClock);
    let metrics = cfg
        .metrics
        .textfile
        .as_ref()
        .map(|t| (paths.resolve(t), audit.clone(), clock.clone()));
    let labels = metrics_feed::Labels {
        product: cfg.device.product.clone().unwrap_or_default(),
        channel: cfg.device.channel.clone(),
        // The failure domain, so fleet-wide queries can group outcomes by it.
        group: Some(cfg.fleet.group.clone()),
        packages: cfg.source.kind == crate::sourceconf::SourceKind::Apt,
    };
    let components = crate::engine::ports::DeviceComponents {
        apps_dir: paths.resolve(&cfg.components.apps_dir),
        ..crate::engine::ports::DeviceComponents::with(
            crate::component::installers_for(&cfg.components, paths),
            paths,
        )
    };
    let parts = EngineParts {
        components,
        paths: paths.clone(),
        clock: clock.clone(),
        bootloader,
        slots: slots
            .iter()
            .cloned()
            .map(crate::slot::engine_view)
            .collect(),
        updates,
        bundles: bundles.map(|b| Arc::new(b) as Arc<dyn crate::engine::ports::Bundles>),
        policy,
        device: device_facts(&cfg, paths)?,
        health: Arc::new(PlanHealth {
            plan: HealthPlan {
                exec: ExecSettings::detect(health_reaper).await,
                ..HealthPlan::from_config(&cfg.health, paths)
            },
            units,
        }),
        audit: audit.clone(),
        reboot: {
            let port = SystemdReboot {
                inhibitors: cfg.policy.inhibitors.clone(),
                login: login.map(|l| Arc::new(l) as Arc<dyn crate::policy::inhibit::LoginQuery>),
                paths: paths.clone(),
                bus: bus.clone(),
                kernel: Arc::new(SyscallReboot),
                audit: Some(audit),
                clock,
            };
            if simulated && matches!(bus, Bus::Address(_)) {
                Arc::new(SimulatedReboot(port)) as Arc<dyn crate::engine::ports::Reboot>
            } else {
                Arc::new(port)
            }
        },
        device_config: cfg.device.clone(),
        settings: settings_from(&cfg),
        fleet: fleet::reboot_slots(&cfg, paths)?,
        #[cfg(feature = "failpoints")]
        failpoints: crate::failpoint::FailPoints::from_env(),
    };
    let (handle, task) = crate::engine::start(parts).await?;
    let metrics = metrics.map(|(path, audit, clock)| {
        metrics_feed::spawn(path, labels, audit, clock, handle.clone())
    });
    Ok(Started {
        handle,
        task,
        metrics,
    })
}

/// Run the daemon until SIGTERM/SIGINT or until the engine stops (reboot requested):
/// engine, D-Bus service, sd-notify readiness and watchdog.
pub async fn run(paths: Paths, opts: DaemonOptions) -> Result<RunExit, DaemonError> {
    let watchdog = Watchdog::default();
    let r = run_until_stopped(paths, opts, &watchdog).await;
    watchdog.stop();
    r
}

/// Pings systemd's watchdog from the first `READY=1` on, in degraded mode too (the
/// daemon is alive and answering), until the process ends.
#[derive(Default)]
struct Watchdog(std::sync::OnceLock<Option<tokio::task::JoinHandle<()>>>);

impl Watchdog {
    /// Say `READY=1` (with `extra`) and start pinging if systemd asked for it.
    fn ready(&self, extra: &[sd_notify::NotifyState]) {
        let mut states = vec![sd_notify::NotifyState::Ready];
        states.extend_from_slice(extra);
        notify(&states);
        self.0.get_or_init(|| {
            watchdog_timeout().map(|timeout| {
                // Ping at half the timeout, as systemd recommends.
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(timeout / 2);
                    loop {
                        tick.tick().await;
                        notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                })
            })
        });
    }

    fn stop(&self) {
        if let Some(Some(h)) = self.0.get() {
            h.abort();
        }
    }
}

/// How a run in degraded mode ended.
enum DegradedExit {
    /// `patchctl repair` fixed the damage: start normally.
    Repaired,
    /// SIGTERM/SIGINT.
    Stopped,
}

async fn run_until_stopped(
    paths: Paths,
    opts: DaemonOptions,
    watchdog: &Watchdog,
) -> Result<RunExit, DaemonError> {
    loop {
        let cfg = crate::config::load(&paths)?;
        let now = crate::clock::Clock::now(&SystemClock);
        if let Some(damage) = crate::repair::diagnose(&cfg, &paths, now) {
            match run_degraded(&paths, &cfg, damage, &opts, watchdog).await? {
                DegradedExit::Repaired => continue,
                DegradedExit::Stopped => return Ok(RunExit::Shutdown),
            }
        }
        return run_engine(paths, opts, watchdog).await;
    }
}

/// Serve D-Bus without an engine: status names `damage`, reads are answered, writes are
/// refused, `Repair` fixes it. Never exits by itself on the damage (no restart loop).
async fn run_degraded(
    paths: &Paths,
    cfg: &Config,
    damage: crate::repair::Damage,
    opts: &DaemonOptions,
    watchdog: &Watchdog,
) -> Result<DegradedExit, DaemonError> {
    let bootloader: Option<Arc<dyn Bootloader>> = cfg.boot_config.as_ref().and_then(|b| {
        crate::boot::open(b, paths)
            .map(Arc::from)
            .map_err(|e| tracing::warn!(error = %e, "degraded mode: bootloader not readable"))
            .ok()
    });
    let audit = AuditLog::open(paths.resolve(&cfg.audit.path), cfg.audit.limits)
        .map_err(|e| tracing::error!(error = %e, "degraded mode: audit log cannot be opened"))
        .ok();
    let repaired = Arc::new(tokio::sync::Notify::new());
    let backend = Arc::new(crate::dbus::degraded::DegradedBackend::new(
        damage,
        paths.clone(),
        bootloader,
        audit,
        repaired.clone(),
        {
            let (cfg, paths) = (cfg.clone(), paths.clone());
            Box::new(move || {
                crate::repair::diagnose(&cfg, &paths, crate::clock::Clock::now(&SystemClock))
            })
        },
    ));
    tracing::error!(problem = %backend.problem(), "starting in degraded mode");
    backend.record_start();
    let service = crate::dbus::serve(backend.clone(), opts.service.clone())
        .await
        .map_err(|e| DaemonError::Dbus(e.to_string()))?;
    watchdog.ready(&[sd_notify::NotifyState::Status(
        "degraded: see patchctl status",
    )]);
    let exit = tokio::select! {
        _ = repaired.notified() => DegradedExit::Repaired,
        _ = shutdown_signal() => DegradedExit::Stopped,
    };
    if matches!(exit, DegradedExit::Repaired) {
        // Let the Repair reply reach the caller before the name is released.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    service.shutdown().await;
    Ok(exit)
}

async fn run_engine(
    paths: Paths,
    opts: DaemonOptions,
    watchdog: &Watchdog,
) -> Result<RunExit, DaemonError> {
    let Started {
        handle,
        mut task,
        metrics,
    } = start(&paths, &opts.service.bus, opts.health_reaper.clone()).await?;
    let backend: Arc<dyn ManagerBackend> = Arc::new(handle.clone());
    let backend_keep = backend.clone();
    let service = crate::dbus::serve(backend, opts.service)
        .await
        .map_err(|e| DaemonError::Dbus(e.to_string()))?;
    watchdog.ready(&[]);
    tracing::info!("patchd running");
    let exit = tokio::select! {
        r = &mut task => Some(r),
        _ = shutdown_signal() => None,
    };
    notify(&[sd_notify::NotifyState::Stopping]);
    service.shutdown().await;
    let exit = match exit {
        Some(r) => {
            // The engine ended (a reboot was asked for): its last state reaches the file
            // before the process exits.
            if let Some(m) = metrics {
                m.finish(std::time::Duration::from_secs(5)).await;
            }
            r
        }
        None => {
            tracing::info!("stopping on signal");
            if let Some(m) = metrics {
                m.finish(std::time::Duration::from_secs(5)).await;
            }
            // The engine stops when its last handle is gone; it persists each state
            // change atomically, so an interrupted step resumes on the next start.
            drop(handle);
            drop(backend_keep);
            match tokio::time::timeout(std::time::Duration::from_secs(30), &mut task).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("engine did not stop within 30s; leaving it");
                    task.abort();
                    Ok(RunExit::Shutdown)
                }
            }
        }
    }
    .map_err(|e| DaemonError::Io {
        what: "engine task".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(exit)
}

/// The service watchdog systemd asks for, as sd_watchdog_enabled(3) reads it:
/// `WATCHDOG_USEC` set and positive, and `WATCHDOG_PID` either unset or our own pid.
/// (sd-notify's `watchdog_enabled` insists on `WATCHDOG_PID`.)
fn watchdog_timeout() -> Option<std::time::Duration> {
    watchdog_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<std::time::Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    match pid.map(|p| p.trim().parse::<u32>()) {
        None => {}
        Some(Ok(p)) if p == me => {}
        Some(_) => return None,
    }
    Some(std::time::Duration::from_micros(usec))
}

fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!(error = %e, "sd_notify");
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_settings_take_the_configured_boot_attempts() {
        let cfg = crate::config::load_strs(&[(
            "patchd.toml",
            "[boot]\nbackend = \"file\"\nattempts = 3\n",
        )])
        .unwrap();
        assert_eq!(settings_from(&cfg).boot_attempts, 3);
    }

    #[test]
    fn daemon_without_trusted_root_fails_closed() {
        let top = tempfile::tempdir().unwrap();
        let paths = Paths::new(top.path());
        let cfg = crate::config::load_strs(&[(
            "patchd.toml",
            "[device]\nproduct = \"p\"\n[repository]\ndir = \"/repo\"\n\
             trusted_root = \"/etc/patchd/missing-root.json\"\n",
        )])
        .unwrap();
        let e = build_updates(&cfg, &paths, &[], None)
            .err()
            .expect("must refuse");
        let msg = e.to_string();
        assert!(msg.contains("missing-root.json"), "{msg}");
        assert!(!paths.state_dir().join("tuf/root.json").exists());
    }

    #[test]
    fn daemon_refuses_missing_or_single_slot_config() {
        let top = tempfile::tempdir().unwrap();
        let paths = Paths::new(top.path());
        let a = SlotName::new("a").unwrap();
        let none = crate::config::load_strs(&[("patchd.toml", "")]).unwrap();
        assert!(matches!(
            build_slots(&none, &paths, &a),
            Err(DaemonError::NoSlots(_))
        ));
        let one = crate::config::load_strs(&[(
            "patchd.toml",
            "[slots]\nbackend = \"file\"\n[[slots.slot]]\nname = \"a\"\npath = \"/a.img\"\n",
        )])
        .unwrap();
        let msg = build_slots(&one, &paths, &a)
            .err()
            .expect("one slot")
            .to_string();
        assert!(msg.contains("at least two"), "{msg}");
    }

    #[test]
    fn watchdog_follows_sd_watchdog_enabled() {
        use std::time::Duration;
        assert_eq!(
            watchdog_from(Some("400000"), None, 7),
            Some(Duration::from_millis(400))
        );
        assert_eq!(
            watchdog_from(Some("400000"), Some("7"), 7),
            Some(Duration::from_millis(400))
        );
        assert_eq!(watchdog_from(Some("400000"), Some("8"), 7), None);
        assert_eq!(watchdog_from(Some("400000"), Some("x"), 7), None);
        assert_eq!(watchdog_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_from(Some("soon"), None, 7), None);
        assert_eq!(watchdog_from(None, Some("7"), 7), None);
    }
}
