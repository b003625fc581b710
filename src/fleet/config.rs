//! `[fleet]`: which failure-domain group this device belongs to, which reboot lock it
//! asks before switching, what it does when that lock cannot be reached, and how it
//! backs off between asks. The lock backends' own sections (`[fleet.fleetlock]`,
//! `[fleet.etcd]`) are
//! read by the list of backends, [`super::backends`].

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::backends::{self, LockSettings};
use crate::duration;
use crate::setting::InvalidSetting;

/// `[fleet]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    pub group: Option<String>,
    pub lock: Option<String>,
    pub when_unreachable: Option<WhenUnreachable>,
    #[serde(default, with = "duration::option")]
    pub timeout: Option<Duration>,
    #[serde(default, with = "duration::option")]
    pub retry_min: Option<Duration>,
    #[serde(default, with = "duration::option")]
    pub retry_max: Option<Duration>,
    pub fleetlock: Option<RawFleetLock>,
    /// `[fleet.etcd]`, checked key by key by the etcd backend
    /// (`super::etcd::EtcdSettings::from_table`) so each error names its key.
    pub etcd: Option<toml::Table>,
}

/// `[fleet.fleetlock]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleetLock {
    pub url: Option<String>,
    pub ca_bundle: Option<PathBuf>,
}

/// What a device does with a staged release when the lock service does not answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenUnreachable {
    /// Stay staged, do not reboot, ask again with backoff (fail safe).
    #[default]
    Wait,
    /// Reboot without a slot (a fleet that prefers patching to coordination).
    Reboot,
}

/// `[fleet]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetConfig {
    pub group: String,
    /// `None`: no reboot lock (`lock = "none"`, the default).
    pub lock: Option<LockSettings>,
    pub when_unreachable: WhenUnreachable,
    /// Bound of each request to the lock service.
    pub timeout: Duration,
    /// First wait before asking again; doubles per refusal up to `retry_max`, each
    /// wait randomised to 50–100 % so a group does not ask in lockstep.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            group: "default".into(),
            lock: None,
            when_unreachable: WhenUnreachable::Wait,
            timeout: Duration::from_secs(10),
            retry_min: Duration::from_secs(30),
            retry_max: Duration::from_secs(600),
        }
    }
}

/// Group names as FleetLock servers and etcd keys take them.
fn group_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl FleetConfig {
    pub fn from_raw(r: RawFleet) -> Result<Self, InvalidSetting> {
        let d = Self::default();
        let group = r.group.clone().unwrap_or(d.group);
        if !group_ok(&group) {
            return Err(InvalidSetting::new(
                "fleet.group",
                format!("{group:?} is not a group name (1 to 64 of a-z A-Z 0-9 - _ .)"),
            ));
        }
        let c = Self {
            lock: backends::settings(r.lock.as_deref().unwrap_or("none"), &r)?,
            group,
            when_unreachable: r.when_unreachable.unwrap_or_default(),
            timeout: r.timeout.unwrap_or(d.timeout),
            retry_min: r.retry_min.unwrap_or(d.retry_min),
            retry_max: r.retry_max.unwrap_or(d.retry_max),
        };
        let fmt = duration::format;
        let (lo, hi) = (Duration::from_secs(1), Duration::from_secs(300));
        if !(lo..=hi).contains(&c.timeout) {
            return Err(InvalidSetting::new(
                "fleet.timeout",
                format!("{} is outside 1s..=5m", fmt(&c.timeout)),
            ));
        }
        if c.retry_min < lo {
            return Err(InvalidSetting::new(
                "fleet.retry_min",
                format!("{} is shorter than 1s", fmt(&c.retry_min)),
            ));
        }
        if c.retry_max < c.retry_min {
            return Err(InvalidSetting::new(
                "fleet.retry_max",
                format!(
                    "{} is shorter than fleet.retry_min ({})",
                    fmt(&c.retry_max),
                    fmt(&c.retry_min)
                ),
            ));
        }
        Ok(c)
    }

    /// The wait before ask number `failures + 1`: `retry_min` doubled per failure up to
    /// `retry_max`, then randomised to 50–100 %.
    pub fn backoff(&self, failures: u32) -> Duration {
        use rand::Rng;
        let nominal = self
            .retry_min
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(self.retry_max);
        nominal.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FleetConfig, InvalidSetting> {
        FleetConfig::from_raw(toml::from_str(text).unwrap())
    }

    #[test]
    fn defaults_to_no_lock_in_group_default() {
        let c = parse("").unwrap();
        assert_eq!(c, FleetConfig::default());
        assert!(c.lock.is_none());
    }

    #[test]
    fn fleetlock_needs_a_well_formed_url() {
        let c = parse("lock = \"fleetlock\"\n[fleetlock]\nurl = \"http://lock.example:8080/\"\n")
            .unwrap();
        assert!(matches!(c.lock, Some(LockSettings::FleetLock(_))));
        let e = parse("lock = \"fleetlock\"\n").unwrap_err();
        assert_eq!(e.key, "fleet.fleetlock.url");
        let e = parse("lock = \"fleetlock\"\n[fleetlock]\nurl = \"lock:8080\"\n").unwrap_err();
        assert_eq!(e.key, "fleet.fleetlock.url", "{e}");
        let e = parse("lock = \"zookeeper\"\n").unwrap_err();
        assert!(e.to_string().contains("zookeeper"), "{e}");
    }

    #[test]
    fn bad_group_and_backoff_are_named() {
        assert_eq!(parse("group = \"a b\"").unwrap_err().key, "fleet.group");
        let e = parse("retry_min = \"10s\"\nretry_max = \"5s\"").unwrap_err();
        assert_eq!(e.key, "fleet.retry_max");
        let c = parse("retry_min = \"2s\"\nretry_max = \"8s\"").unwrap();
        for n in 0..40 {
            let d = c.backoff(n);
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_secs(8),
                "{d:?}"
            );
        }
        assert!(c.backoff(10) >= Duration::from_secs(4));
    }
}
