//! patchd — an update daemon for servers and appliance fleets.
//!
//! The library holds all logic; the binaries in `src/bin/` only parse arguments and call
//! into it. Module map and lifecycle: see `shared/DESIGN.md` (kept in sync with
//! `docs/design.md` when it changes).

pub mod audit;
pub mod boot;
pub mod cli;
pub mod clock;
pub mod component;
pub mod config;
pub mod daemon;
pub mod dbus;
pub mod delta;
pub mod demo;
pub mod duration;
pub mod engine;
#[cfg(feature = "failpoints")]
pub mod failpoint;
pub mod fetch;
pub mod fleet;
pub mod fsutil;
pub mod health;
pub mod inventory;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod names;
pub mod paths;
pub mod policy;
pub mod publish;
pub mod repair;
pub mod setting;
pub mod sigpipe;
pub mod slot;
pub mod source;
pub mod sourceconf;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod trust;
