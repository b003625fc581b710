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
    pub fleet: Option<crate::fleet::config::RawFleet>,
    pub source: Option<crate::sourceconf::RawSource>,
    pub components: Option<crate::component::RawComponents>,
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
    /// `""` clears a URL an earlier file set (`None`, as if never written).
    #[serde(default, deserialize_with = "url_or_empty")]
    pub url: Option<HttpUrl>,
    /// `""` clears a directory an earlier file set.
    #[serde(default, deserialize_with = "dir_or_empty")]
    pub dir: Option<PathBuf>,
    pub trusted_root: Option<PathBuf>,
    pub ca_bundle: Option<PathBuf>,
    #[serde(default, with = "crate::duration::option")]
    pub check_interval: Option<Duration>,
    #[serde(default, with = "crate::duration::option")]
    pub check_jitter: Option<Duration>,
    pub allow_http: Option<bool>,
}

fn url_or_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<HttpUrl>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    HttpUrl::parse(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn dir_or_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let p = PathBuf::deserialize(d)?;
    Ok((!p.as_os_str().is_empty()).then_some(p))
}

/// The keys of `[repository]` that name where releases come from; only one may be set.
pub const SOURCE_KEYS: [&str; 2] = ["url", "dir"];

/// Merge one file's table (`later`) into `a`, as [`deep_merge`] does, except that a
/// file naming a repository source (`url` or `dir`, non-empty) replaces the source an
/// earlier file named: a drop-in with `dir = "/media/repo"` overrides the main file's
/// `url` without having to clear it.
pub fn merge_file(a: &mut toml::Table, later: toml::Table) {
    let names_source = |t: &toml::Table, key: &str| {
        t.get("repository")
            .and_then(toml::Value::as_table)
            .and_then(|r| r.get(key))
            .is_some_and(|v| v.as_str() != Some(""))
    };
    for (key, other) in [("url", "dir"), ("dir", "url")] {
        if names_source(&later, key) && !names_source(&later, other) {
            if let Some(r) = a.get_mut("repository").and_then(toml::Value::as_table_mut) {
                r.remove(other);
            }
        }
    }
    deep_merge(a, later);
}

/// The `[repository]` keys of one file that name a source, for the rule that a single
/// file sets only one of them.
pub fn sources_named(t: &toml::Table) -> Vec<&'static str> {
    let Some(r) = t.get("repository").and_then(toml::Value::as_table) else {
        return Vec::new();
    };
    SOURCE_KEYS
        .into_iter()
        .filter(|k| r.get(*k).is_some_and(|v| v.as_str() != Some("")))
        .collect()
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
