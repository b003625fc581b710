//! Layer 1: one file as written. Every field optional, unknown keys refused, values that
//! can be checked alone (windows, URLs, durations, enums) checked while parsing so the
//! error carries the file and line.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::health::{CommandCheck, HttpProbe, HttpUrl};
use crate::policy::{UrgencyRule, Window};

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
}

/// `[fetch]`: how downloads from an HTTP(S) repository are bounded.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFetch {
    #[serde(default, deserialize_with = "rate")]
    pub min_rate: Option<u64>,
    #[serde(default, with = "super::duration::option")]
    pub min_rate_window: Option<Duration>,
    #[serde(default, with = "super::duration::option")]
    pub deadline_floor: Option<Duration>,
    #[serde(default, with = "super::duration::option")]
    pub stall_timeout: Option<Duration>,
    #[serde(default, with = "super::duration::option")]
    pub retry_after: Option<Duration>,
    #[serde(default, with = "super::duration::option")]
    pub retry_after_max: Option<Duration>,
}

/// A rate: a plain integer (bytes/s) or a string with a K/M/G suffix.
fn rate<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Rate {
        Int(i64),
        Text(String),
    }
    // Only `[fetch] min_rate` is a rate; toml's error points at the line, not the key.
    let bad = |m: String| serde::de::Error::custom(format!("[fetch] min_rate: {m}"));
    match Rate::deserialize(d).map_err(|_: D::Error| {
        bad("invalid rate (use bytes per second, e.g. 8192, \"8K\", \"1M\")".into())
    })? {
        Rate::Int(i) => u64::try_from(i)
            .map(Some)
            .map_err(|_| bad(format!("rate {i} must not be negative"))),
        Rate::Text(s) => crate::fetch::rate::parse_rate(&s).map(Some).map_err(bad),
    }
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
    #[serde(default, with = "super::duration::option")]
    pub check_interval: Option<Duration>,
    #[serde(default, with = "super::duration::option")]
    pub check_jitter: Option<Duration>,
    pub allow_http: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub time_zone: Option<String>,
    pub windows: Option<Vec<Window>>,
    pub stage_outside_windows: Option<bool>,
    pub urgency: Option<Vec<UrgencyRule>>,
    pub inhibitors: Option<RawInhibitors>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInhibitors {
    pub sessions: Option<bool>,
    pub inhibitor_locks: Option<bool>,
    pub command: Option<Vec<String>>,
    #[serde(default, with = "super::duration::option")]
    pub command_timeout: Option<Duration>,
    #[serde(default, with = "super::duration::option")]
    pub recheck: Option<Duration>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub command: Option<Vec<CommandCheck>>,
    pub units: Option<Vec<String>>,
    pub http: Option<Vec<HttpProbe>>,
    #[serde(default, with = "super::duration::option")]
    pub check_timeout: Option<Duration>,
    #[serde(default, with = "super::duration::option")]
    pub deadline: Option<Duration>,
    #[serde(default, with = "super::duration::option")]
    pub probation: Option<Duration>,
    #[serde(default, with = "super::duration::option")]
    pub probation_interval: Option<Duration>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub path: Option<PathBuf>,
    pub max_size: Option<u64>,
    pub keep: Option<u32>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub textfile: Option<PathBuf>,
}

/// Later value wins.
fn pick<T>(a: &mut Option<T>, b: Option<T>) {
    if b.is_some() {
        *a = b;
    }
}

fn merge_section<T: Default>(a: &mut Option<T>, b: Option<T>, f: impl FnOnce(&mut T, T)) {
    if let Some(b) = b {
        f(a.get_or_insert_with(T::default), b);
    }
}

/// Deep merge: sub-tables merge key by key, anything else (arrays too) is replaced.
fn deep_merge(a: &mut toml::Table, b: toml::Table) {
    for (k, v) in b {
        match (a.get_mut(&k), v) {
            (Some(toml::Value::Table(at)), toml::Value::Table(bt)) => deep_merge(at, bt),
            (_, v) => {
                a.insert(k, v);
            }
        }
    }
}

fn merge_table(a: &mut Option<toml::Table>, b: Option<toml::Table>) {
    if let Some(b) = b {
        deep_merge(a.get_or_insert_with(toml::Table::new), b);
    }
}

impl RawConfig {
    /// Layer 2: apply `later` on top of `self`, key by key. Arrays are replaced whole.
    pub fn merge(&mut self, later: RawConfig) {
        merge_section(&mut self.device, later.device, |a, b| {
            pick(&mut a.product, b.product);
            pick(&mut a.channel, b.channel);
            pick(&mut a.tags, b.tags);
            pick(&mut a.machine_id_path, b.machine_id_path);
            pick(&mut a.hardware, b.hardware);
        });
        merge_section(&mut self.repository, later.repository, |a, b| {
            pick(&mut a.url, b.url);
            pick(&mut a.dir, b.dir);
            pick(&mut a.trusted_root, b.trusted_root);
            pick(&mut a.ca_bundle, b.ca_bundle);
            pick(&mut a.check_interval, b.check_interval);
            pick(&mut a.check_jitter, b.check_jitter);
            pick(&mut a.allow_http, b.allow_http);
        });
        merge_section(&mut self.policy, later.policy, |a, b| {
            pick(&mut a.time_zone, b.time_zone);
            pick(&mut a.windows, b.windows);
            pick(&mut a.stage_outside_windows, b.stage_outside_windows);
            pick(&mut a.urgency, b.urgency);
            merge_section(&mut a.inhibitors, b.inhibitors, |a, b| {
                pick(&mut a.sessions, b.sessions);
                pick(&mut a.inhibitor_locks, b.inhibitor_locks);
                pick(&mut a.command, b.command);
                pick(&mut a.command_timeout, b.command_timeout);
                pick(&mut a.recheck, b.recheck);
            });
        });
        merge_section(&mut self.health, later.health, |a, b| {
            pick(&mut a.command, b.command);
            pick(&mut a.units, b.units);
            pick(&mut a.http, b.http);
            pick(&mut a.check_timeout, b.check_timeout);
            pick(&mut a.deadline, b.deadline);
            pick(&mut a.probation, b.probation);
            pick(&mut a.probation_interval, b.probation_interval);
        });
        merge_table(&mut self.boot, later.boot);
        merge_table(&mut self.slots, later.slots);
        merge_section(&mut self.audit, later.audit, |a, b| {
            pick(&mut a.path, b.path);
            pick(&mut a.max_size, b.max_size);
            pick(&mut a.keep, b.keep);
        });
        merge_section(&mut self.metrics, later.metrics, |a, b| {
            pick(&mut a.textfile, b.textfile);
        });
        merge_section(&mut self.fetch, later.fetch, |a, b| {
            pick(&mut a.min_rate, b.min_rate);
            pick(&mut a.min_rate_window, b.min_rate_window);
            pick(&mut a.deadline_floor, b.deadline_floor);
            pick(&mut a.stall_timeout, b.stall_timeout);
            pick(&mut a.retry_after, b.retry_after);
            pick(&mut a.retry_after_max, b.retry_after_max);
        });
    }
}
