//! `[fetch]` of the configuration: owned here; `config` parses and merges the files and
//! hands the merged section to [`FetchConfig::from_raw`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{HttpOptions, RateRule};
use crate::duration;
use crate::setting::InvalidSetting;

/// `[fetch]` as written in one file (or merged): every key optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFetch {
    #[serde(default, deserialize_with = "rate")]
    pub min_rate: Option<u64>,
    #[serde(default, with = "duration::option")]
    pub min_rate_window: Option<Duration>,
    #[serde(default, with = "duration::option")]
    pub deadline_floor: Option<Duration>,
    #[serde(default, with = "duration::option")]
    pub stall_timeout: Option<Duration>,
    #[serde(default, with = "duration::option")]
    pub retry_after: Option<Duration>,
    #[serde(default, with = "duration::option")]
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
        Rate::Text(s) => super::rate::parse_rate(&s).map(Some).map_err(bad),
    }
}

/// `[fetch]`: bounds on downloads from an HTTP(S) repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FetchConfig {
    /// Bytes per second a download must average over `min_rate_window` (0 = off).
    pub min_rate: u64,
    #[serde(with = "duration")]
    pub min_rate_window: Duration,
    /// A download of N bytes must be done within `deadline_floor + N / min_rate`.
    #[serde(with = "duration")]
    pub deadline_floor: Duration,
    /// No byte for this long: drop the connection and resume it.
    #[serde(with = "duration")]
    pub stall_timeout: Duration,
    /// After a staging ended by the network (slow retrieval, a download error), stage
    /// again from the checkpoint this long after the first failure, doubling with each
    /// further failure of the same release up to `retry_after_max`.
    #[serde(with = "duration")]
    pub retry_after: Duration,
    #[serde(with = "duration")]
    pub retry_after_max: Duration,
}

impl Default for FetchConfig {
    fn default() -> Self {
        let r = RateRule::default();
        Self {
            min_rate: r.min_rate,
            min_rate_window: r.window,
            deadline_floor: r.deadline_floor,
            stall_timeout: HttpOptions::default().stall_timeout,
            retry_after: Duration::from_secs(5 * 60),
            retry_after_max: Duration::from_secs(3600),
        }
    }
}

/// What `min_rate = 0` means, said where admins look.
pub const NO_MIN_RATE: &str = "[fetch] min_rate = 0: the minimum-rate rule is off, so a slow \
     or hostile mirror can keep a download (and the device busy) running indefinitely";

impl FetchConfig {
    /// Defaults filled in and the rules between keys checked.
    pub fn from_raw(r: RawFetch) -> Result<Self, InvalidSetting> {
        let d = Self::default();
        let c = Self {
            min_rate: r.min_rate.unwrap_or(d.min_rate),
            min_rate_window: r.min_rate_window.unwrap_or(d.min_rate_window),
            deadline_floor: r.deadline_floor.unwrap_or(d.deadline_floor),
            stall_timeout: r.stall_timeout.unwrap_or(d.stall_timeout),
            retry_after: r.retry_after.unwrap_or(d.retry_after),
            retry_after_max: r.retry_after_max.unwrap_or(d.retry_after_max),
        };
        let fmt = duration::format;
        if c.min_rate > 1 << 30 {
            return Err(InvalidSetting::new(
                "fetch.min_rate",
                format!(
                    "{} bytes/s is more than 1G per second; use e.g. \"8K\" (0 turns the rule off)",
                    c.min_rate
                ),
            ));
        }
        let (lo, hi) = (Duration::from_secs(1), Duration::from_secs(3600));
        if !(lo..=hi).contains(&c.min_rate_window) {
            return Err(InvalidSetting::new(
                "fetch.min_rate_window",
                format!("{} is outside 1s..=1h", fmt(&c.min_rate_window)),
            ));
        }
        if c.deadline_floor < c.min_rate_window {
            return Err(InvalidSetting::new(
                "fetch.deadline_floor",
                format!(
                    "{} is shorter than fetch.min_rate_window ({}): small downloads would hit \
                     the deadline before their rate is ever judged",
                    fmt(&c.deadline_floor),
                    fmt(&c.min_rate_window)
                ),
            ));
        }
        if c.stall_timeout < lo {
            return Err(InvalidSetting::new(
                "fetch.stall_timeout",
                "must be at least 1s",
            ));
        }
        if c.retry_after < lo {
            return Err(InvalidSetting::new(
                "fetch.retry_after",
                "must be at least 1s (a failed download is retried after it)",
            ));
        }
        if c.retry_after_max < c.retry_after {
            return Err(InvalidSetting::new(
                "fetch.retry_after_max",
                format!(
                    "{} is shorter than fetch.retry_after ({})",
                    fmt(&c.retry_after_max),
                    fmt(&c.retry_after)
                ),
            ));
        }
        Ok(c)
    }

    /// The rule the fetch room enforces.
    pub fn rate_rule(&self) -> RateRule {
        RateRule {
            min_rate: self.min_rate,
            window: self.min_rate_window,
            deadline_floor: self.deadline_floor,
        }
    }

    /// Production HTTP options with these bounds.
    pub fn http_options(&self) -> HttpOptions {
        HttpOptions {
            stall_timeout: self.stall_timeout,
            min_rate: self.rate_rule(),
            ..HttpOptions::default()
        }
    }
}
