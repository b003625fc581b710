//! `[fleet.etcd]`: where the etcd cluster is, how to talk to it, how long a slot outlives
//! a silent device. Checked here (the room owns its section); the `[fleet]` parser hands
//! the table to [`EtcdSettings::from_table`] when `lock = "etcd"`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize, Serializer};

use crate::duration;
use crate::setting::{self, InvalidSetting};

/// The keys of `[fleet.etcd]`, for the configuration schema.
pub const KEYS: &[&str] = &[
    "endpoints",
    "ca",
    "cert",
    "key",
    "lease_ttl",
    "prefix",
    "request_timeout",
];

/// Where the keys live unless `prefix` says otherwise.
pub const DEFAULT_PREFIX: &str = "/patchd/reboot";
/// Long enough for a server to reboot (firmware, POST, boot) and renew it, so a slot
/// is held across the reboot; a device that vanished frees it after this long.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(600);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// etcd raises shorter TTLs to 1.5 election timeouts (2 s with its defaults) anyway.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);

/// `[fleet.etcd]`, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtcdSettings {
    /// Client URLs of the members, tried in order (the last one that answered first).
    #[serde(serialize_with = "urls")]
    pub endpoints: Vec<Url>,
    /// CA bundle (PEM) the members' certificates must chain to; with it set, only it is
    /// trusted, not the system roots.
    pub ca: Option<PathBuf>,
    /// Client certificate and its key (PEM), for clusters with `--client-cert-auth`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(with = "duration")]
    pub lease_ttl: Duration,
    /// Key prefix: `<prefix>/<group>/slots`, `<prefix>/<group>/holders/<device id>`.
    pub prefix: String,
    /// Bound on each operation (over all endpoints together).
    #[serde(with = "duration")]
    pub request_timeout: Duration,
}

fn urls<S: Serializer>(v: &[Url], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(Url::as_str))
}

/// `[fleet.etcd]` as written: every key optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcd {
    pub endpoints: Option<Vec<String>>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(default, with = "duration::option")]
    pub lease_ttl: Option<Duration>,
    pub prefix: Option<String>,
    #[serde(default, with = "duration::option")]
    pub request_timeout: Option<Duration>,
}

fn key(name: &str) -> String {
    format!("fleet.etcd.{name}")
}

impl EtcdSettings {
    /// The section as a TOML table: each key read on its own, so a wrong type or an
    /// unknown key is named (`fleet.etcd.lease_ttl: …`).
    pub fn from_table(t: &toml::Table) -> Result<Self, InvalidSetting> {
        let mut raw = RawEtcd::default();
        for (name, value) in t {
            let bad = |why: String| InvalidSetting::new(key(name), why);
            let text = || match value {
                toml::Value::String(s) => Ok(s.clone()),
                other => Err(bad(format!(
                    "expected a string, found {}",
                    other.type_str()
                ))),
            };
            match name.as_str() {
                "endpoints" => {
                    let list = value.as_array().ok_or_else(|| {
                        bad(format!(
                            "expected a list of URLs, found {}",
                            value.type_str()
                        ))
                    })?;
                    let urls = list
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| bad("every endpoint must be a URL string".into()))?;
                    raw.endpoints = Some(urls);
                }
                "ca" => raw.ca = Some(text()?.into()),
                "cert" => raw.cert = Some(text()?.into()),
                "key" => raw.key = Some(text()?.into()),
                "prefix" => raw.prefix = Some(text()?),
                "lease_ttl" => raw.lease_ttl = Some(duration::parse(&text()?).map_err(bad)?),
                "request_timeout" => {
                    raw.request_timeout = Some(duration::parse(&text()?).map_err(bad)?)
                }
                _ => {
                    let known: Vec<String> = KEYS.iter().map(|k| format!("`{k}`")).collect();
                    return Err(bad(format!(
                        "unknown key; expected one of {}",
                        known.join(", ")
                    )));
                }
            }
        }
        Self::from_raw(raw)
    }

    /// Defaults filled in; endpoints present and http(s), TLS files absolute and the
    /// certificate with its key, TTL and timeout usable together.
    pub fn from_raw(r: RawEtcd) -> Result<Self, InvalidSetting> {
        let endpoints = r.endpoints.unwrap_or_default();
        if endpoints.is_empty() {
            return Err(InvalidSetting::new(
                key("endpoints"),
                "at least one etcd client URL is needed, e.g. [\"https://10.0.0.1:2379\"]",
            ));
        }
        let endpoints = endpoints
            .iter()
            .map(|e| endpoint(e))
            .collect::<Result<Vec<_>, _>>()?;
        for (name, p) in [("ca", &r.ca), ("cert", &r.cert), ("key", &r.key)] {
            if let Some(p) = p {
                setting::absolute(&key(name), p)?;
            }
        }
        match (&r.cert, &r.key) {
            (Some(_), None) => {
                return Err(InvalidSetting::new(
                    key("cert"),
                    "set without fleet.etcd.key",
                ))
            }
            (None, Some(_)) => {
                return Err(InvalidSetting::new(
                    key("key"),
                    "set without fleet.etcd.cert",
                ))
            }
            _ => {}
        }
        if r.ca.is_some() || r.cert.is_some() {
            if let Some(plain) = endpoints.iter().find(|u| u.scheme() == "http") {
                return Err(InvalidSetting::new(
                    key("endpoints"),
                    format!("{plain} is plain http while TLS files are set; use https"),
                ));
            }
        }
        let lease_ttl = r.lease_ttl.unwrap_or(DEFAULT_LEASE_TTL);
        if lease_ttl < MIN_LEASE_TTL || lease_ttl.subsec_nanos() != 0 {
            return Err(InvalidSetting::new(
                key("lease_ttl"),
                format!(
                    "{} must be whole seconds, at least {}",
                    duration::format(&lease_ttl),
                    duration::format(&MIN_LEASE_TTL)
                ),
            ));
        }
        let request_timeout = r.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        if request_timeout.is_zero() || request_timeout > lease_ttl {
            return Err(InvalidSetting::new(
                key("request_timeout"),
                format!(
                    "{} must be longer than 0s and at most lease_ttl ({}): a keep-alive \
                     that may take longer than the lease lets the slot lapse",
                    duration::format(&request_timeout),
                    duration::format(&lease_ttl)
                ),
            ));
        }
        let prefix = r.prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
        if prefix.is_empty() || prefix.ends_with('/') || prefix.chars().any(char::is_control) {
            return Err(InvalidSetting::new(
                key("prefix"),
                format!("{prefix:?} must be non-empty, without a trailing / or control characters"),
            ));
        }
        Ok(Self {
            endpoints,
            ca: r.ca,
            cert: r.cert,
            key: r.key,
            lease_ttl,
            prefix,
            request_timeout,
        })
    }

    /// Settings for these endpoints with every default, for callers that build them in
    /// code (tests, tools).
    pub fn for_endpoints(endpoints: &[&str]) -> Result<Self, InvalidSetting> {
        Self::from_raw(RawEtcd {
            endpoints: Some(endpoints.iter().map(|e| (*e).to_owned()).collect()),
            ..RawEtcd::default()
        })
    }
}

fn endpoint(text: &str) -> Result<Url, InvalidSetting> {
    let bad = |why: String| InvalidSetting::new(key("endpoints"), format!("{text:?}: {why}"));
    let mut u = Url::parse(text).map_err(|e| bad(e.to_string()))?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
        return Err(bad("not an http:// or https:// URL with a host".into()));
    }
    if u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() {
        return Err(bad(
            "no user, query or fragment: only scheme, host, port (and a path prefix)".into(),
        ));
    }
    // The gateway's paths are joined onto it: a base with a path prefix keeps it.
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    Ok(u)
}

/// A TLS file named by `name`, read, or the error naming key and path.
pub(super) fn read_file(name: &str, p: &Path) -> Result<Vec<u8>, InvalidSetting> {
    std::fs::read(p)
        .map_err(|e| InvalidSetting::new(key(name), format!("cannot read {}: {e}", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Table {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_and_every_key() {
        let s =
            EtcdSettings::from_table(&table(r#"endpoints = ["http://127.0.0.1:2379"]"#)).unwrap();
        assert_eq!(s.endpoints[0].as_str(), "http://127.0.0.1:2379/");
        assert_eq!(
            (s.lease_ttl, s.request_timeout, s.prefix.as_str()),
            (DEFAULT_LEASE_TTL, DEFAULT_REQUEST_TIMEOUT, DEFAULT_PREFIX)
        );
        let s = EtcdSettings::from_table(&table(
            r#"endpoints = ["https://a:2379", "https://b:2379/gw"]
               ca = "/etc/patchd/etcd-ca.pem"
               cert = "/etc/patchd/etcd.pem"
               key = "/etc/patchd/etcd.key"
               lease_ttl = "15m"
               prefix = "/fleet/locks"
               request_timeout = "5s""#,
        ))
        .unwrap();
        assert_eq!(s.endpoints[1].as_str(), "https://b:2379/gw/");
        assert_eq!(s.lease_ttl, Duration::from_secs(900));
        assert_eq!(s.key.as_deref(), Some(Path::new("/etc/patchd/etcd.key")));
        let shown = serde_json::to_value(&s).unwrap();
        assert_eq!(shown["endpoints"][0], "https://a:2379/");
        assert_eq!(shown["lease_ttl"], "15m");
    }

    #[test]
    fn each_error_names_its_key() {
        let cases = [
            ("", "fleet.etcd.endpoints"),
            (r#"endpoints = "http://a:2379""#, "fleet.etcd.endpoints"),
            (r#"endpoints = ["ftp://a"]"#, "fleet.etcd.endpoints"),
            (
                r#"endpoints = ["http://a"]
                ca = "/ca.pem""#,
                "fleet.etcd.endpoints",
            ),
            (
                r#"endpoints = ["https://a"]
                ca = "ca.pem""#,
                "fleet.etcd.ca",
            ),
            (
                r#"endpoints = ["https://a"]
                cert = "/c.pem""#,
                "fleet.etcd.cert",
            ),
            (
                r#"endpoints = ["https://a"]
                key = "/k.pem""#,
                "fleet.etcd.key",
            ),
            (
                r#"endpoints = ["http://a"]
                lease_ttl = "1s""#,
                "fleet.etcd.lease_ttl",
            ),
            (
                r#"endpoints = ["http://a"]
                lease_ttl = 30"#,
                "fleet.etcd.lease_ttl",
            ),
            (
                r#"endpoints = ["http://a"]
                lease_ttl = "10s"
                request_timeout = "1m""#,
                "fleet.etcd.request_timeout",
            ),
            (
                r#"endpoints = ["http://a"]
                prefix = "/x/""#,
                "fleet.etcd.prefix",
            ),
            (
                r#"endpoints = ["http://a"]
                slots = 2"#,
                "fleet.etcd.slots",
            ),
        ];
        for (text, want) in cases {
            let e = EtcdSettings::from_table(&table(text)).unwrap_err();
            assert_eq!(e.key, want, "{text}: {e}");
        }
    }

    #[test]
    fn the_raw_type_knows_exactly_the_listed_keys() {
        let e = toml::from_str::<RawEtcd>("__probe = 1")
            .unwrap_err()
            .to_string();
        for k in KEYS {
            assert!(e.contains(&format!("`{k}`")), "{k} missing from {e}");
        }
    }
}
