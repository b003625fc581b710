//! Boot control: which slot boots next, try-once counting, good/bad flags.
//!
//! Backends: GRUB environment block, U-Boot environment, systemd-boot (BLS boot counting),
//! and a JSON file for the simulated device. Each write is crash-safe: a power cut leaves
//! either the old or the new environment.

pub mod ab;
pub mod ab_vars;
pub mod bls;
pub mod config;
pub mod detect;
pub mod file;
pub mod grubenv;
pub mod uboot;
mod uboot_env;
mod uboot_inspect;
pub mod uboot_reset;

use serde::{Deserialize, Serialize};

pub use bls::SystemdBoot;
pub use config::{BackendKind, BootConfig};
pub use file::{simulate_reboot, FileBootloader};
pub use grubenv::GrubBootloader;
pub use uboot::{UbootBootloader, UbootEnv};

use crate::names::SlotName;
use crate::paths::Paths;

/// What the bootloader knows about one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotBootInfo {
    pub slot: SlotName,
    /// Boot attempts left while the slot is on trial; `None` when not on trial.
    pub tries_left: Option<u32>,
    /// Marked good (committed) in the bootloader.
    pub good: bool,
    /// Marked bad: never chosen again until reinstalled.
    pub bad: bool,
    /// The slot that boots when no trial is pending.
    pub primary: bool,
}

/// One bootloader backend. The engine sees only this trait.
pub trait Bootloader: Send + Sync {
    /// Backend kind for inventory and logs: `grub`, `uboot`, `systemd-boot`, `file`.
    fn kind(&self) -> &'static str;
    /// The slot the running system was booted from.
    fn booted_slot(&self) -> Result<SlotName, BootError>;
    /// The slot that boots when no trial is pending.
    fn primary_slot(&self) -> Result<SlotName, BootError>;
    /// Make `slot` the one to try on the next boot with `attempts` attempts, keeping the
    /// current primary as the fallback.
    fn try_slot(&self, slot: &SlotName, attempts: u32) -> Result<(), BootError>;
    /// Mark `slot` (the booted one) good: it becomes primary, counters cleared.
    fn mark_good(&self, slot: &SlotName) -> Result<(), BootError>;
    /// Mark `slot` bad: it is never chosen again until reinstalled (`try_slot` again).
    fn mark_bad(&self, slot: &SlotName) -> Result<(), BootError>;
    /// Counters and flags of every slot.
    fn slots(&self) -> Result<Vec<SlotBootInfo>, BootError>;
    /// Admin-requested reset: write a fresh environment with `primary` good and first and
    /// every other slot unused (GRUB, U-Boot, file: listed after it with no attempts, not
    /// bad; systemd-boot: its entry blessed bad), even over one that could not be parsed.
    fn reset(&self, primary: &SlotName) -> Result<(), BootError> {
        Err(BootError::Refused(format!(
            "{} backend cannot reset (asked for primary {primary})",
            self.kind()
        )))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Format { path: String, why: String },
    #[error("unknown slot {0}")]
    UnknownSlot(SlotName),
    #[error("booted slot: {0}")]
    Detection(String),
    #[error("{0}")]
    Refused(String),
}

/// Open the configured bootloader; every path in `cfg` is resolved under `paths`.
pub fn open(cfg: &BootConfig, paths: &Paths) -> Result<Box<dyn Bootloader>, BootError> {
    if cfg.slots.len() < 2 {
        return Err(BootError::Refused(format!(
            "[boot] slots: need at least two slots, got {}",
            ab::join(&cfg.slots)
        )));
    }
    let detector = detect::Detector::new(paths, &cfg.slots, &cfg.detect);
    match cfg.backend {
        BackendKind::File => Ok(Box::new(
            FileBootloader::new(paths.resolve(&cfg.file.path), cfg.slots.clone())
                .with_detector(detector),
        )),
        BackendKind::Grub => Ok(Box::new(
            GrubBootloader::new(paths.resolve(&cfg.grub.env), cfg.slots.clone())?
                .with_detector(detector),
        )),
        BackendKind::Uboot => Ok(Box::new(
            UbootBootloader::new(UbootEnv::from_config(&cfg.uboot, paths)?, cfg.slots.clone())?
                .with_detector(detector),
        )),
        BackendKind::SystemdBoot => Ok(Box::new(
            SystemdBoot::new(&cfg.systemd_boot, paths, cfg.slots.clone())?.with_detector(detector),
        )),
    }
}
