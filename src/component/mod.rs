//! Components of a release beside the OS slot images: how each install method stages,
//! switches, reads back and rolls back a component, and how a release's components are
//! installed in order under one verdict (docs/components.md).
//!
//! One trait, [`Installer`], per install method: `app-bundle` ([`AppBundles`]: an A/B
//! pair of directories behind an atomically replaced symlink) and `handler`
//! ([`Handler`]: the device's own executable, given the payload on stdin), `firmware`
//! ([`Firmware`]: a cabinet handed to the system's fwupd over D-Bus) and `sysext`
//! ([`Sysexts`]: systemd-sysext images, A/B copies behind one link). [`SimInstaller`]
//! is the in-memory twin for engine tests. [`apply`] runs a release's components: plan
//! (unchanged ones skipped), stage all, switch in order, health-check what switched
//! without a reboot, and on the first failure roll back in reverse order; a journal
//! (written atomically before every switch) lets [`reconcile`] finish an interrupted
//! release at start-up from what the system shows.
//!
//! A new method (firmware through fwupd, systemd-sysext) is one file here implementing
//! [`Installer`] and its variant of `manifest::ComponentMethod` (with the variant's
//! arms in that enum's own methods); whoever builds the device's [`Installers`] offers
//! it with [`Installers::with`].

mod app_bundle;
mod apply;
pub mod config;
mod device;
pub mod events;
mod firmware;
mod fwupd;
mod handler;
mod installed;
mod journal;
mod payload;
mod plan;
mod restart;
mod sim;
mod sysext;
pub mod sysext_release;

pub use app_bundle::{AppBundles, APPS_DIR};
pub use apply::{
    apply, commit, end_probation, roll_back_release, Applied, ApplyError, Hooks, Step, StepEvent,
};
pub use config::{ComponentsConfig, HandlerInput, RawComponents};
pub use device::{installers_for, HandlersByName};
pub use firmware::{Firmware, FIRMWARE_DIR};
pub use fwupd::FwupdBus;
pub use handler::{parse_progress, Handler, HandlerSettings, Progress};
pub use installed::{list_installed, InstalledComponent};
pub use journal::{not_in_effect, reconcile, Journal, JournalEntry, Reconciled, StepState};
pub use payload::{
    payload_path, prune_staged, staged_dir, staged_payload, store_payload, PayloadFile,
};
pub use plan::{plan, plan_lines, Action, PlannedStep};
pub use restart::Restarter;
pub use sim::SimInstaller;
pub use sysext::{check_release, SysextSettings, Sysexts, EXTENSIONS_DIR, SYSEXT_DIR};

use std::path::Path;
use std::sync::Arc;

use crate::manifest::{Component, ComponentMethod};

/// What the system shows installed for one component.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Installed {
    pub version: String,
    /// sha256 of the payload it was installed from ("" when not known).
    pub sha256: String,
    /// The copy in use for A/B methods (`a` or `b`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<String>,
    /// The release that installed it ("" when installed by hand).
    #[serde(default)]
    pub origin: String,
}

/// One component to install now: the manifest entry, the verified payload, the release.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    pub component: &'a Component,
    /// The payload, verified against its TUF target.
    pub file: &'a Path,
    /// The release version (recorded as the component's origin).
    pub release: &'a str,
    /// The OS slot the release goes to (given to handlers).
    pub slot: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error("component {name}: {what}: {source}")]
    Io {
        name: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("component {name}: payload: {source}")]
    Extract {
        name: String,
        #[source]
        source: crate::slot::extract::ExtractError,
    },
    #[error("component {name}: handler {path} refused: {why}")]
    HandlerRefused {
        name: String,
        path: String,
        why: String,
    },
    #[error("component {name}: {why}")]
    Failed { name: String, why: String },
    #[error("component {name}: install method {method} is not configured on this device")]
    NotConfigured { name: String, method: String },
}

impl ComponentError {
    pub(crate) fn io(name: &str, what: impl Into<String>, source: std::io::Error) -> Self {
        ComponentError::Io {
            name: name.to_string(),
            what: what.into(),
            source,
        }
    }

    pub(crate) fn failed(name: &str, why: impl Into<String>) -> Self {
        ComponentError::Failed {
            name: name.to_string(),
            why: why.into(),
        }
    }
}

/// One install method. Every step is idempotent: a step repeated after a power cut ends
/// where one uninterrupted run would.
pub trait Installer: Send + Sync {
    /// What the system shows installed for `name` now (read back, not from memory);
    /// `None` when the component is not installed.
    fn installed(&self, name: &str) -> Result<Option<Installed>, ComponentError>;
    /// Whether [`Installer::installed`] reads the system itself. A method that only
    /// knows its own record (a handler) returns false: a step a power cut or a failure
    /// interrupted is then rolled back by the journal's step state.
    fn reads_back(&self) -> bool {
        true
    }
    /// Why this device has nothing for `job` to install onto (`None`: it has). Asked
    /// before staging; a reason skips the component, said so in the audit log (a
    /// firmware cabinet no present device matches).
    fn skip_reason(&self, _job: &Job<'_>) -> Result<Option<String>, ComponentError> {
        Ok(None)
    }
    /// Is `c` the one in effect now? Asked for the release's verdict after the reboot:
    /// a component the new boot did not take up (an extension the booted OS refused to
    /// merge) fails the verdict like a failed health check. `Ok(Err(why))`: not in
    /// effect. The default compares what [`Installer::installed`] reads back.
    fn in_effect(&self, c: &Component) -> Result<Result<(), String>, ComponentError> {
        Ok(match self.installed(&c.name)? {
            Some(i) if i.sha256 == c.sha256 => Ok(()),
            Some(i) => Err(format!("the system shows version {} installed", i.version)),
            None => Err("the system shows it not installed".into()),
        })
    }
    /// Prepare the new content without touching what is in use.
    fn stage(&self, job: &Job<'_>) -> Result<(), ComponentError>;
    /// Make the staged content the one in use.
    fn switch(&self, job: &Job<'_>) -> Result<(), ComponentError>;
    /// Return to `before` (what [`Installer::installed`] showed before staging; `None`:
    /// not installed). Only called for rollbacks the component's manifest entry allows.
    fn roll_back(&self, c: &Component, before: Option<&Installed>) -> Result<(), ComponentError>;
}

/// The installers of this device, one per method it offers.
#[derive(Clone, Default)]
pub struct Installers {
    by_method: std::collections::HashMap<ComponentMethod, Arc<dyn Installer>>,
}

impl Installers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Offer `method` through `installer`.
    pub fn with(mut self, method: ComponentMethod, installer: Arc<dyn Installer>) -> Self {
        self.by_method.insert(method, installer);
        self
    }

    /// The installer of `c`'s method, or why there is none.
    pub fn for_method(&self, c: &Component) -> Result<Arc<dyn Installer>, ComponentError> {
        self.by_method
            .get(&c.method)
            .cloned()
            .ok_or_else(|| ComponentError::NotConfigured {
                name: c.name.clone(),
                method: c.method.to_string(),
            })
    }
}

pub(crate) fn io_err(name: &str, what: &str) -> impl FnOnce(std::io::Error) -> ComponentError {
    let name = name.to_string();
    let what = what.to_string();
    move |source| ComponentError::Io { name, what, source }
}
