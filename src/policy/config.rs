//! `[policy]` of the configuration: owned here; `config` parses and merges the files and
//! hands the merged section to [`PolicyConfig::from_raw`], which builds the [`Policy`]
//! once — a configuration that validated cannot fail later when the daemon asks for it.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{default_rules, Policy, Schedule, UrgencyRule, Window, DEFAULT_STAGE_SPREAD};
use crate::duration;
use crate::setting::InvalidSetting;

/// `[policy]` as written: every key optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub time_zone: Option<String>,
    pub windows: Option<Vec<Window>>,
    pub stage_outside_windows: Option<bool>,
    #[serde(default, with = "duration::option")]
    pub stage_spread: Option<Duration>,
    pub urgency: Option<Vec<UrgencyRule>>,
    pub inhibitors: Option<RawInhibitors>,
}

/// `[policy.inhibitors]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInhibitors {
    pub sessions: Option<bool>,
    pub inhibitor_locks: Option<bool>,
    pub command: Option<Vec<String>>,
    #[serde(default, with = "duration::option")]
    pub command_timeout: Option<Duration>,
    #[serde(default, with = "duration::option")]
    pub recheck: Option<Duration>,
}

/// `[policy]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyConfig {
    pub time_zone: String,
    pub windows: Vec<Window>,
    pub stage_outside_windows: bool,
    /// Each device's staging delay after a rollout stage opened by time is in [0, this).
    #[serde(with = "duration")]
    pub stage_spread: Duration,
    pub urgency: Vec<UrgencyRule>,
    pub inhibitors: InhibitorConfig,
    /// The windows in their time zone, looked up once at validation.
    #[serde(skip)]
    schedule: Schedule,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            time_zone: "UTC".into(),
            windows: Vec::new(),
            stage_outside_windows: true,
            stage_spread: DEFAULT_STAGE_SPREAD.unsigned_abs(),
            urgency: default_rules(),
            inhibitors: InhibitorConfig::default(),
            schedule: Schedule::always(),
        }
    }
}

impl PolicyConfig {
    pub fn from_raw(p: RawPolicy) -> Result<Self, InvalidSetting> {
        let time_zone = p.time_zone.unwrap_or_else(|| "UTC".into());
        let windows = p.windows.unwrap_or_default();
        let schedule = Schedule::new(&time_zone, windows.clone())
            .map_err(|e| InvalidSetting::new("policy.time_zone", e.to_string()))?;
        Ok(Self {
            time_zone,
            windows,
            stage_outside_windows: p.stage_outside_windows.unwrap_or(true),
            stage_spread: stage_spread(p.stage_spread)?,
            urgency: p.urgency.unwrap_or_else(default_rules),
            inhibitors: InhibitorConfig::from_raw(p.inhibitors.unwrap_or_default())?,
            schedule,
        })
    }

    /// The device policy these settings describe.
    pub fn to_policy(&self) -> Policy {
        Policy {
            schedule: self.schedule.clone(),
            urgency: self.urgency.clone(),
            stage_outside_windows: self.stage_outside_windows,
            // Checked in `from_raw` to fit.
            stage_spread: jiff::SignedDuration::try_from(self.stage_spread)
                .unwrap_or(DEFAULT_STAGE_SPREAD),
        }
    }
}

/// `[policy] stage_spread`: at most a week (a longer spread would keep devices of a stage
/// from staging for longer than stages are usually apart).
fn stage_spread(d: Option<Duration>) -> Result<Duration, InvalidSetting> {
    let d = d.unwrap_or(DEFAULT_STAGE_SPREAD.unsigned_abs());
    if d > Duration::from_secs(7 * 24 * 3600) {
        return Err(InvalidSetting::new(
            "policy.stage_spread",
            "must be at most 7d",
        ));
    }
    Ok(d)
}

/// `[policy.inhibitors]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InhibitorConfig {
    /// Wait while users are logged in (logind sessions of class `user`).
    pub sessions: bool,
    /// Wait while a systemd inhibitor lock blocks shutdown.
    pub inhibitor_locks: bool,
    /// Wait while this command exits non-zero.
    pub command: Option<Vec<String>>,
    #[serde(with = "duration")]
    pub command_timeout: Duration,
    /// How long to wait before asking again.
    #[serde(with = "duration")]
    pub recheck: Duration,
}

impl Default for InhibitorConfig {
    fn default() -> Self {
        Self {
            sessions: true,
            inhibitor_locks: true,
            command: None,
            command_timeout: Duration::from_secs(30),
            recheck: Duration::from_secs(300),
        }
    }
}

impl InhibitorConfig {
    pub fn from_raw(i: RawInhibitors) -> Result<Self, InvalidSetting> {
        let d = Self::default();
        let c = Self {
            sessions: i.sessions.unwrap_or(d.sessions),
            inhibitor_locks: i.inhibitor_locks.unwrap_or(d.inhibitor_locks),
            command: i.command,
            command_timeout: i.command_timeout.unwrap_or(d.command_timeout),
            recheck: i.recheck.unwrap_or(d.recheck),
        };
        if let Some(cmd) = &c.command {
            if !cmd.first().is_some_and(|p| Path::new(p).is_absolute()) {
                return Err(InvalidSetting::new(
                    "policy.inhibitors.command",
                    "must be a non-empty argv whose first element is an absolute path",
                ));
            }
        }
        if c.recheck < Duration::from_secs(1) {
            return Err(InvalidSetting::new(
                "policy.inhibitors.recheck",
                "must be at least 1s",
            ));
        }
        Ok(c)
    }
}

/// Two schedules are the same when they name the same zone and windows (the looked-up
/// zone follows from its name).
impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.time_zone_name() == other.time_zone_name() && self.windows() == other.windows()
    }
}

impl Eq for Schedule {}
