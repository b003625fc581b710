//! The list of reboot lock backends: the name in `[fleet] lock`, the settings each reads
//! from its own sub-section, and how each is opened. A new backend is one variant of
//! [`LockSettings`], one arm in [`settings`] and one in [`open`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::config::RawFleet;
use super::etcd::{EtcdLock, EtcdSettings};
use super::fleetlock::FleetLockClient;
use super::{LockError, RebootLock};
use crate::paths::Paths;
use crate::setting::{absolute, InvalidSetting};

/// One configured backend, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum LockSettings {
    /// A FleetLock v1 server (airlock, the Kubernetes fleetlock, …).
    FleetLock(FleetLockSettings),
    /// An etcd v3 cluster, spoken to directly (a semaphore per group, leases).
    Etcd(EtcdSettings),
}

/// `[fleet.fleetlock]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetLockSettings {
    /// Base URL; the protocol's paths are appended.
    pub url: String,
    /// Extra CA certificates (PEM) for an https lock service, besides the system roots.
    pub ca_bundle: Option<PathBuf>,
}

impl LockSettings {
    /// The backend's name as `[fleet] lock` spells it (status, audit).
    pub fn name(&self) -> &'static str {
        match self {
            LockSettings::FleetLock(_) => "fleetlock",
            LockSettings::Etcd(_) => "etcd",
        }
    }
}

/// The backend `lock` names, with its settings; `None` for `"none"`.
pub fn settings(lock: &str, raw: &RawFleet) -> Result<Option<LockSettings>, InvalidSetting> {
    match lock {
        "none" => Ok(None),
        "fleetlock" => fleetlock(raw).map(|s| Some(LockSettings::FleetLock(s))),
        "etcd" => {
            let table = raw.etcd.clone().unwrap_or_default();
            EtcdSettings::from_table(&table).map(|s| Some(LockSettings::Etcd(s)))
        }
        other => Err(InvalidSetting::new(
            "fleet.lock",
            format!("unknown reboot lock {other:?}: expected none, fleetlock or etcd"),
        )),
    }
}

fn fleetlock(raw: &RawFleet) -> Result<FleetLockSettings, InvalidSetting> {
    let key = "fleet.fleetlock.url";
    let s = raw.fleetlock.clone().unwrap_or_default();
    let url = s.url.ok_or_else(|| {
        InvalidSetting::new(
            key,
            "required with lock = \"fleetlock\": the lock server's URL",
        )
    })?;
    // Only the form is checked here: whether the server answers is the daemon's
    // business at switch time (and a fail-safe wait), not a configuration error.
    let parsed = reqwest::Url::parse(&url).map_err(|e| InvalidSetting::new(key, e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(InvalidSetting::new(
            key,
            format!("{url:?} is not an http:// or https:// URL with a host"),
        ));
    }
    if let Some(ca) = &s.ca_bundle {
        absolute("fleet.fleetlock.ca_bundle", ca)?;
    }
    Ok(FleetLockSettings {
        url,
        ca_bundle: s.ca_bundle,
    })
}

/// What every backend is opened with besides its settings.
pub struct OpenWith {
    /// The device's id towards the lock service (`super::device_id`).
    pub id: String,
    pub group: String,
    pub timeout: Duration,
    /// Where the settings' paths (CA bundles, certificates) are resolved.
    pub paths: Paths,
}

/// A file a backend's settings name, read under the device root.
fn read(with: &OpenWith, key: &str, p: &Path) -> Result<Vec<u8>, LockError> {
    let at = with.paths.resolve(p);
    std::fs::read(&at).map_err(|e| LockError::Setup {
        what: format!("{key} {}", at.display()),
        detail: e.to_string(),
    })
}

/// Build the client of `settings`.
pub fn open(settings: &LockSettings, with: &OpenWith) -> Result<Arc<dyn RebootLock>, LockError> {
    match settings {
        LockSettings::FleetLock(s) => {
            let extra_ca_pem = match &s.ca_bundle {
                Some(p) => Some(read(with, "fleet.fleetlock.ca_bundle", p)?),
                None => None,
            };
            let tls = crate::fetch::TlsOptions {
                extra_ca_pem,
                ..crate::fetch::TlsOptions::default()
            };
            let c = FleetLockClient::with_tls(&s.url, &with.id, &with.group, with.timeout, &tls)?;
            Ok(Arc::new(c))
        }
        LockSettings::Etcd(s) => {
            // The certificate files are the device's, under its root.
            let under_root = |p: &Option<PathBuf>| p.as_deref().map(|p| with.paths.resolve(p));
            let s = EtcdSettings {
                ca: under_root(&s.ca),
                cert: under_root(&s.cert),
                key: under_root(&s.key),
                ..s.clone()
            };
            let c = EtcdLock::new(&s, &with.id, &with.group).map_err(|e| LockError::Setup {
                what: e.key,
                detail: e.why,
            })?;
            Ok(Arc::new(c))
        }
    }
}
