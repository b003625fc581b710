//! `[health]` of the configuration: owned here; `config` parses and merges the files and
//! hands the merged section to [`HealthConfig::from_raw`].

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{valid_unit_name, CommandCheck, HttpProbe};
use crate::duration;
use crate::setting::InvalidSetting;

/// `[health]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthConfig {
    pub commands: Vec<CommandCheck>,
    pub units: Vec<String>,
    pub http: Vec<HttpProbe>,
    /// Timeout of each check that does not set its own.
    #[serde(with = "duration")]
    pub check_timeout: Duration,
    /// All checks must pass within this time after boot, else roll back.
    #[serde(with = "duration")]
    pub deadline: Duration,
    /// Keep checking this long after commit (0 = off); a failure rolls back.
    #[serde(with = "duration")]
    pub probation: Duration,
    #[serde(with = "duration")]
    pub probation_interval: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            commands: Vec::new(),
            units: Vec::new(),
            http: Vec::new(),
            check_timeout: Duration::from_secs(60),
            deadline: Duration::from_secs(600),
            probation: Duration::ZERO,
            probation_interval: Duration::from_secs(3600),
        }
    }
}

/// `[health]` as written: every key optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub command: Option<Vec<CommandCheck>>,
    pub units: Option<Vec<String>>,
    pub http: Option<Vec<HttpProbe>>,
    #[serde(default, with = "duration::option")]
    pub check_timeout: Option<Duration>,
    #[serde(default, with = "duration::option")]
    pub deadline: Option<Duration>,
    #[serde(default, with = "duration::option")]
    pub probation: Option<Duration>,
    #[serde(default, with = "duration::option")]
    pub probation_interval: Option<Duration>,
}

impl HealthConfig {
    /// Defaults filled in; check names unique, commands absolute, statuses and unit
    /// names valid, time limits positive.
    pub fn from_raw(h: RawHealth) -> Result<Self, InvalidSetting> {
        let d = Self::default();
        let c = Self {
            commands: h.command.unwrap_or_default(),
            units: h.units.unwrap_or_default(),
            http: h.http.unwrap_or_default(),
            check_timeout: h.check_timeout.unwrap_or(d.check_timeout),
            deadline: h.deadline.unwrap_or(d.deadline),
            probation: h.probation.unwrap_or(d.probation),
            probation_interval: h.probation_interval.unwrap_or(d.probation_interval),
        };
        let mut names = BTreeSet::new();
        let mut unique = |key: &str, name: &str| {
            if name.is_empty() || !names.insert(name.to_owned()) {
                Err(InvalidSetting::new(
                    key,
                    format!("check name {name:?} empty or used twice"),
                ))
            } else {
                Ok(())
            }
        };
        for cmd in &c.commands {
            unique("health.command", &cmd.name)?;
            if !cmd.run.first().is_some_and(|p| Path::new(p).is_absolute()) {
                return Err(InvalidSetting::new(
                    "health.command",
                    format!("check {:?}: run must start with an absolute path", cmd.name),
                ));
            }
        }
        for p in &c.http {
            unique("health.http", &p.name)?;
            if !(100..=599).contains(&p.status) {
                return Err(InvalidSetting::new(
                    "health.http",
                    format!(
                        "check {:?}: status {} is not an HTTP status",
                        p.name, p.status
                    ),
                ));
            }
        }
        if let Some(u) = c.units.iter().find(|u| !valid_unit_name(u)) {
            return Err(InvalidSetting::new(
                "health.units",
                format!("{u:?} is not a systemd unit name (e.g. nginx.service)"),
            ));
        }
        for (key, t) in [
            ("health.check_timeout", c.check_timeout),
            ("health.deadline", c.deadline),
        ] {
            if t.is_zero() {
                return Err(InvalidSetting::new(key, "must be longer than 0s"));
            }
        }
        if !c.probation.is_zero() && c.probation_interval < Duration::from_secs(1) {
            return Err(InvalidSetting::new(
                "health.probation_interval",
                "must be at least 1s",
            ));
        }
        Ok(c)
    }
}
