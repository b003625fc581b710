//! Fleet reboot coordination: before a device reboots into a new release it asks a
//! fleet-wide lock service for a reboot slot, and gives the slot back once it came up
//! healthy. The engine asks through [`RebootLock`] at switch time; `[fleet]` is read by
//! [`config`] and the backends are listed in [`backends`].
//!
//! [`RebootLock`] is the port; [`fleetlock::FleetLockClient`] speaks the FleetLock v1
//! protocol (as Zincati does) over HTTP; [`etcd::EtcdLock`] keeps the semaphore in an
//! etcd v3 cluster (leases free the slots of vanished devices); [`sim::SimLock`] is the
//! in-memory twin;
//! [`device_id`] derives the id a device gives the server. Layer 3: uses `fetch` only
//! for its future type.

pub mod backends;
pub mod config;
pub mod device_id;
pub mod etcd;
pub mod fleetlock;
pub mod sim;

use std::time::Duration;

use crate::fetch::BoxFuture;

/// What the lock service said to a request for a reboot slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockAnswer {
    /// This device holds a slot (newly taken, or already held: locking is recursive).
    Granted,
    /// The service refused for now (all slots of the group taken, …), in its own words.
    Busy { kind: String, value: String },
}

/// Why a request to the lock service failed; each names the URL asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    #[error("fleet lock service {url} unreachable: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("fleet lock service {url} did not answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("fleet lock service {url} answered HTTP {status}: {kind}: {value}")]
    Status {
        url: String,
        status: u16,
        kind: String,
        value: String,
    },
    #[error("fleet lock service {url} sent a malformed reply (HTTP {status}): {detail}")]
    Malformed {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("fleet lock service URL {url} is not usable: {detail}")]
    BadUrl { url: String, detail: String },
    /// A file the client needs (a CA bundle, a certificate) could not be read.
    #[error("fleet lock client: {what}: {detail}")]
    Setup { what: String, detail: String },
}

/// Who holds a group's slots, for status ("2 of 2 taken by a, b"), when a backend can
/// tell (FleetLock cannot; its refusal's own words are shown instead).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Occupancy {
    /// Slots of the group, when known.
    pub slots: Option<u32>,
    pub holders: Vec<String>,
}

/// A fleet-wide reboot lock: take a slot before rebooting, release it once steady.
pub trait RebootLock: Send + Sync {
    /// Ask for a reboot slot. Asking again while holding one is granted again.
    fn acquire(&self) -> BoxFuture<'_, Result<LockAnswer, LockError>>;
    /// Give back this device's slot; fine when it holds none.
    fn release(&self) -> BoxFuture<'_, Result<(), LockError>>;
    /// Who holds the group's slots now; `None` when the backend cannot say.
    fn occupancy(&self) -> BoxFuture<'_, Result<Option<Occupancy>, LockError>> {
        Box::pin(async { Ok(None) })
    }
}

/// The slots of a group as the lock service reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSlots {
    pub group: String,
    pub slots: u32,
    /// Device ids holding a slot.
    pub holders: Vec<String>,
}

impl std::fmt::Display for GroupSlots {
    /// `2 of 2 taken by a, b`, `0 of 3 taken`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of {} taken", self.holders.len(), self.slots)?;
        if !self.holders.is_empty() {
            write!(f, " by {}", self.holders.join(", "))?;
        }
        Ok(())
    }
}
