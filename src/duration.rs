//! Durations in config files: `"30s"`, `"6h"`, `"1h 30m"`, `"2d"` (a day is 24 h),
//! `"PT90M"` (jiff's friendly or ISO 8601 format); negative durations are refused. Use with `#[serde(with = ...)]`.

use std::time::Duration;

use jiff::SignedDuration;
use serde::{Deserialize, Deserializer, Serializer};

pub fn parse(s: &str) -> Result<Duration, String> {
    let d: SignedDuration = match s.parse() {
        Ok(d) => d,
        // Days ("2d", "1d 12h") are calendar units to jiff; for timers and expiry
        // windows a day is 24 hours.
        Err(e) => s
            .parse::<jiff::Span>()
            .ok()
            .and_then(|span| {
                span.to_duration(jiff::SpanRelativeTo::days_are_24_hours())
                    .ok()
            })
            .ok_or_else(|| {
                format!("invalid duration {s:?} (use e.g. \"30s\", \"10m\", \"6h\", \"2d\"): {e}")
            })?,
    };
    Duration::try_from(d).map_err(|_| format!("duration {s:?} must not be negative"))
}

pub fn format(d: &Duration) -> String {
    match SignedDuration::try_from(*d) {
        Ok(sd) => format!("{sd:#}"),
        Err(_) => format!("{}s", d.as_secs()),
    }
}

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(d))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map_err(serde::de::Error::custom)
}

/// The same for `Option<Duration>`.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| parse(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_friendly_and_iso() {
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("PT2H").unwrap(), Duration::from_secs(7200));
        assert!(parse("-5s").unwrap_err().contains("negative"));
        assert!(parse("soon").is_err());
        assert_eq!(
            parse(&format(&Duration::from_secs(5400))).unwrap(),
            Duration::from_secs(5400)
        );
    }
}
