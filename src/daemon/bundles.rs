//! The device's trusted metadata directory, set up once from the configured root, and
//! the offline bundle port over it (`source::BundleOpener`): a device without a
//! repository URL installs from bundles with the same trusted root.

use std::path::PathBuf;
use std::sync::Arc;

use super::DaemonError;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::paths::Paths;
use crate::slot::stage::StageOptions;
use crate::slot::SlotBackend;
use crate::source::BundleOpener;
use crate::trust::client::Limits;
use crate::trust::TufClient;

/// The trusted metadata directory, initialised from `repository.trusted_root` the first
/// time (later roots come by rotation, never from the file again).
pub(super) fn trust_dir(
    cfg: &Config,
    paths: &Paths,
    limits: &Limits,
) -> Result<PathBuf, DaemonError> {
    let tuf_dir = paths.state_dir().join("tuf");
    if !tuf_dir.join("root.json").exists() {
        let root_file = paths.resolve(&cfg.repository.trusted_root);
        let bytes = std::fs::read(&root_file).map_err(|e| {
            DaemonError::Repository(format!(
                "no trusted metadata in {} and the trusted root {} (repository.trusted_root) cannot be read: {e}",
                tuf_dir.display(),
                root_file.display()
            ))
        })?;
        TufClient::init(&tuf_dir, &bytes, limits)
            .map_err(|e| DaemonError::Repository(format!("{}: {e}", root_file.display())))?;
    }
    Ok(tuf_dir)
}

/// Offline bundles, when the device has a product and a trusted root; `None` (logged)
/// otherwise: `install --bundle` then fails closed.
pub(super) fn build_bundles(
    cfg: &Config,
    paths: &Paths,
    slots: &[Arc<dyn SlotBackend>],
    opts: StageOptions,
) -> Option<BundleOpener> {
    let product = cfg.device.product.clone()?;
    let limits = Limits::default();
    let trust_dir = match trust_dir(cfg, paths, &limits) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "offline bundles not offered");
            return None;
        }
    };
    let hardware = crate::inventory::hardware_id::resolve(cfg.device.hardware.as_deref(), paths);
    Some(BundleOpener {
        trust_dir,
        clock: Arc::new(SystemClock),
        limits,
        offline: cfg.offline.clone(),
        work_dir: paths.cache_dir().join("bundle"),
        product,
        hardware: hardware.map(|h| h.id),
        channel: cfg.device.channel.clone(),
        slots: slots.to_vec(),
        opts,
    })
}
