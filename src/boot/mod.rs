//! Boot control: which slot boots next, try-once counting, good/bad flags.
//!
//! Backends: GRUB environment block, U-Boot environment, systemd-boot (BLS boot counting),
//! and a JSON file for the simulated device. Each write is crash-safe: a power cut leaves
//! either the old or the new environment.

use serde::{Deserialize, Serialize};

use crate::names::SlotName;

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
