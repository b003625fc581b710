//! The fleet reboot lock from `[fleet]`: the device id derived from the machine id, the
//! backend's client (`fleet::backends::open`), and the settings the engine needs.

use crate::config::Config;
use crate::engine::ports::RebootSlots;
use crate::fleet::{backends, device_id};
use crate::paths::Paths;

use super::DaemonError;

/// The engine's reboot lock; `None` with `lock = "none"`.
pub fn reboot_slots(cfg: &Config, paths: &Paths) -> Result<Option<RebootSlots>, DaemonError> {
    let Some(settings) = &cfg.fleet.lock else {
        return Ok(None);
    };
    let machine_id = paths.resolve(&cfg.device.machine_id_path);
    let id = device_id::from_file(&machine_id).map_err(|e| DaemonError::Fleet(e.to_string()))?;
    let with = backends::OpenWith {
        id: id.clone(),
        group: cfg.fleet.group.clone(),
        timeout: cfg.fleet.timeout,
        paths: paths.clone(),
    };
    let lock = backends::open(settings, &with).map_err(|e| DaemonError::Fleet(e.to_string()))?;
    tracing::info!(backend = settings.name(), group = %cfg.fleet.group, %id, "reboots coordinated by a fleet lock");
    Ok(Some(RebootSlots {
        lock,
        backend: settings.name().to_owned(),
        config: cfg.fleet.clone(),
    }))
}
