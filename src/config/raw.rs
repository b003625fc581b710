//! Layers 1 and 2: each file as written, then the files merged.
//!
//! A file is parsed into [`RawConfig`] — every key optional, unknown keys refused, values
//! that can be checked alone (windows, URLs, durations, enums) checked while parsing — so
//! an error carries the file and line. The sections' raw types belong to their rooms
//! (`policy::RawPolicy`, `health::RawHealth`, …); only `[device]` and `[repository]`,
//! which tie the rooms together, are defined here.
//!
//! Merging works on the files' TOML tables: a later file wins per key, tables merge key
//! by key at every depth, anything else (arrays too) is replaced whole. The merged table
//! is read into [`RawConfig`] once more; it cannot hold anything the files did not.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::audit::RawAudit;
use crate::fetch::RawFetch;
use crate::health::{HttpUrl, RawHealth};
use crate::metrics::RawMetrics;
use crate::policy::RawPolicy;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub device: Option<RawDevice>,
    pub repository: Option<RawRepository>,
    pub policy: Option<RawPolicy>,
    pub health: Option<RawHealth>,
    pub boot: Option<toml::Table>,
    pub slots: Option<toml::Table>,
    pub audit: Option<RawAudit>,
    pub metrics: Option<RawMetrics>,
    pub fetch: Option<RawFetch>,
    pub offline: Option<crate::trust::RawOffline>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    pub product: Option<String>,
    pub channel: Option<String>,
    pub tags: Option<Vec<String>>,
    pub machine_id_path: Option<PathBuf>,
    pub hardware: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRepository {
    pub url: Option<HttpUrl>,
    pub dir: Option<PathBuf>,
    pub trusted_root: Option<PathBuf>,
    pub ca_bundle: Option<PathBuf>,
    #[serde(default, with = "crate::duration::option")]
    pub check_interval: Option<Duration>,
    #[serde(default, with = "crate::duration::option")]
    pub check_jitter: Option<Duration>,
    pub allow_http: Option<bool>,
}

/// Apply `later` on top of `a`: sub-tables merge key by key, anything else is replaced.
pub fn deep_merge(a: &mut toml::Table, later: toml::Table) {
    for (k, v) in later {
        match (a.get_mut(&k), v) {
            (Some(toml::Value::Table(at)), toml::Value::Table(bt)) => deep_merge(at, bt),
            (_, v) => {
                a.insert(k, v);
            }
        }
    }
}
