//! `patchd` as a system daemon: configuration → backends → engine → wait for signals.
//!
//! The binary only parses arguments and calls [`run`]. Pieces that come from rooms not
//! merged yet answer with [`DaemonError::NotAvailable`] naming what is missing; the
//! daemon never starts without them (no "unverified mode").

use std::sync::{Arc, Mutex};

use super::adapters::{PlanHealth, SystemdReboot};
use super::runner::{EngineParts, EngineSettings, RunExit};
use super::EngineError;
use crate::audit::{AuditError, AuditLog};
use crate::boot::{BootConfig, BootError, Bootloader};
use crate::clock::SystemClock;
use crate::config::{Config, ConfigError};
use crate::health::{HealthPlan, SystemdUnits};
use crate::paths::Paths;
use crate::policy::{DeviceFacts, PolicyError};
use crate::slot::Slot;

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
    #[error("{what} is not available in this build yet: {why}")]
    NotAvailable {
        what: &'static str,
        why: &'static str,
    },
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
        ..EngineSettings::default()
    }
}

/// Device facts for rollout bucketing: machine id from the configured file.
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
        channel: cfg.device.channel.clone(),
        tags: cfg.device.tags.clone(),
    })
}

fn open_slots(_cfg: &Config, _paths: &Paths) -> Result<Vec<Arc<dyn Slot>>, DaemonError> {
    Err(DaemonError::NotAvailable {
        what: "slot backends ([slots])",
        why: "the staging room (image-file/block/btrfs slots) is not merged into this build",
    })
}

/// Run the daemon until it is told to stop or asks for a reboot.
pub async fn run(paths: Paths) -> Result<RunExit, DaemonError> {
    let cfg = crate::config::load(&paths)?;
    let policy = cfg.policy.to_policy()?;
    let boot_cfg: BootConfig = toml::Value::Table(cfg.boot.clone())
        .try_into()
        .map_err(|e: toml::de::Error| DaemonError::BootConfig(e.to_string()))?;
    let bootloader: Arc<dyn Bootloader> = Arc::from(crate::boot::open(&boot_cfg, &paths)?);
    let slots = open_slots(&cfg, &paths)?;
    let state_dir = paths.state_dir();
    crate::fsutil::ensure_dir(&state_dir, 0o700).map_err(|source| DaemonError::Io {
        what: state_dir.display().to_string(),
        source,
    })?;
    let audit = AuditLog::open(paths.resolve(&cfg.audit.path), cfg.audit.limits)?;
    let units = SystemdUnits::system()
        .await
        .map_err(|e| DaemonError::BootConfig(format!("systemd over D-Bus: {e}")))?;
    let login = crate::policy::inhibit::Logind::system().await.ok();
    let parts = EngineParts {
        paths: paths.clone(),
        clock: Arc::new(SystemClock),
        bootloader,
        slots,
        // Fail closed until the verified repository (TUF client + manifest discovery +
        // staging pipeline) is wired: checks answer "not available".
        updates: None,
        policy,
        device: device_facts(&cfg, &paths)?,
        health: Arc::new(PlanHealth {
            plan: HealthPlan::from_config(&cfg.health, &paths),
            units: Arc::new(units),
        }),
        audit: Arc::new(Mutex::new(audit)),
        reboot: Arc::new(SystemdReboot {
            inhibitors: cfg.policy.inhibitors.clone(),
            login: login.map(|l| Arc::new(l) as Arc<dyn crate::policy::inhibit::LoginQuery>),
            paths: paths.clone(),
        }),
        device_config: cfg.device.clone(),
        settings: settings_from(&cfg),
        #[cfg(feature = "failpoints")]
        failpoints: Default::default(),
    };
    let (handle, task) = super::start(parts).await?;
    let exit = tokio::select! {
        r = task => r.map_err(|e| DaemonError::Io {
            what: "engine task".into(),
            source: std::io::Error::other(e.to_string()),
        })?,
        _ = shutdown_signal() => {
            tracing::info!("stopping on signal");
            RunExit::Shutdown
        }
    };
    drop(handle);
    Ok(exit)
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
