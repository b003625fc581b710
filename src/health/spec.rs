//! What to check (from config): commands, HTTP probes; units are plain names.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A URL restricted to http/https (config values, health probes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(pub reqwest::Url);

impl HttpUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let u = reqwest::Url::parse(s).map_err(|e| format!("invalid URL {s:?}: {e}"))?;
        match u.scheme() {
            "http" | "https" if u.host().is_some() => Ok(Self(u)),
            "http" | "https" => Err(format!("URL {s:?} has no host")),
            other => Err(format!("URL {s:?}: scheme {other:?} is not http or https")),
        }
    }
    pub fn is_plain_http(&self) -> bool {
        self.0.scheme() == "http"
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for HttpUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn yes() -> bool {
    true
}

/// `[[health.command]]`: run `run[0]` with arguments; exit 0 = pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandCheck {
    pub name: String,
    /// argv; `run[0]` must be an absolute path (no shell, no PATH lookup).
    pub run: Vec<String>,
    /// Overrides `health.check_timeout`.
    #[serde(default, with = "crate::duration::option")]
    pub timeout: Option<Duration>,
    /// A failing non-required check is a warning only.
    #[serde(default = "yes")]
    pub required: bool,
}

/// `[[health.http]]`: GET `url`, pass when the status equals `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    pub name: String,
    pub url: HttpUrl,
    #[serde(default = "default_status")]
    pub status: u16,
    #[serde(default, with = "crate::duration::option")]
    pub timeout: Option<Duration>,
    #[serde(default = "yes")]
    pub required: bool,
}

fn default_status() -> u16 {
    200
}

/// A systemd unit name as systemd accepts it (`nginx.service`, `getty@tty1.service`).
pub fn valid_unit_name(s: &str) -> bool {
    const SUFFIXES: [&str; 11] = [
        ".service",
        ".socket",
        ".target",
        ".mount",
        ".automount",
        ".timer",
        ".path",
        ".swap",
        ".slice",
        ".scope",
        ".device",
    ];
    s.len() <= 255
        && SUFFIXES.iter().any(|x| s.ends_with(x) && s.len() > x.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
}
