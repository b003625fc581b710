//! The lifecycle state machine: one persisted state, one transition at a time.
//!
//! - [`state`]: the states of shared/DESIGN.md and their checked transitions;
//! - [`statefile`]: the versioned, atomically replaced state document;
//! - [`ports`]: the traits through which the engine drives the other rooms;
//! - [`check`]: categorization and the why-not reasons;
//! - [`runner`]: the task that owns the state (commands, jobs, policy evaluation);
//! - `reconcile`: start-up repair of what a crash or power cut interrupted;
//! - [`handle`]: [`EngineHandle`], the API the D-Bus service and the demo use;
//! - `next`: the `Next:` sentence of status (what happens next, and when).
//!
//! The ports are implemented elsewhere: `source` (releases), `daemon::health` and
//! `daemon::reboot`; `repair` diagnoses damaged files before an engine starts.

pub mod check;
pub mod handle;
mod next;
pub mod ports;
mod reconcile;
pub mod runner;
pub mod state;
pub mod statefile;

pub use handle::{
    AvailableRelease, CheckOutcome, EngineError, EngineHandle, FleetStatus, InstallStarted,
    JobOutcome, JobRecord, NextStep, SlotView, StatusSnapshot,
};
pub use ports::{Actor, StageMethod, StageReport};
pub use runner::{start, EngineParts, EngineSettings, RunExit};
pub use state::{IllegalTransition, Lifecycle, ReleaseRef, StateKind};
