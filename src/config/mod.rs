//! Configuration: `/etc/patchd/patchd.toml` plus drop-ins; raw → merged → validated.
//!
//! ```no_run
//! # fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let paths = patchd::paths::Paths::default();
//! let cfg: patchd::config::Config = patchd::config::load(&paths)?;
//! let policy = cfg.policy.to_policy();          // policy::Policy, built at validation
//! let audit_path = paths.resolve(&cfg.audit.path);  // config paths are device paths
//! println!("{}", patchd::config::check(&paths)?);  // `patchd --check-config`
//! # let _ = (policy, audit_path); Ok(()) }
//! ```
//!
//! Layers (as zincati does it):
//! 1. raw ([`raw::RawConfig`]): each file parsed alone, every key optional, unknown keys
//!    refused; values that can be checked alone (windows, URLs, durations, enums) are
//!    checked here so errors carry the file and line;
//! 2. merged: the main file, then every `*.toml` in `patchd.toml.d/` in lexical order of
//!    file name; a later file wins per key, tables merge key by key at every depth
//!    (`[boot.grub]` in a drop-in keeps `[boot.detect]` from the main file), arrays are
//!    replaced whole, not appended;
//! 3. validated ([`Config`]): each section is handed to the room that owns it, which fills
//!    in its defaults, checks its rules and returns a ready value —
//!    [`crate::policy::PolicyConfig`] (with the policy's schedule built),
//!    [`crate::health::HealthConfig`], [`crate::fetch::FetchConfig`],
//!    [`crate::audit::AuditConfig`], [`crate::metrics::MetricsConfig`],
//!    [`crate::boot::BootConfig`], [`crate::slot::SlotsConfig`]. This module checks
//!    only `[device]` and `[repository]` and the rules across sections (a repository
//!    needs `device.product`). A room's [`InvalidSetting`] becomes
//!    [`ConfigError::Invalid`] naming the files the value came from.
//!
//! A missing main file means all defaults; a file that does not parse is an error naming
//! the file and line, never skipped. Files in the drop-in directory not ending in `.toml`
//! are ignored (package manager leftovers such as `.dpkg-old`).
//!
//! Paths in the config are device paths; callers resolve them with
//! [`crate::paths::Paths::resolve`] so tests and the demo run under a temporary root.
//! All keys with defaults: `docs/configuration.md`.

pub use crate::audit::{AuditConfig, DEFAULT_AUDIT_PATH};
pub use crate::duration;
pub use crate::fetch::{FetchConfig, NO_MIN_RATE};
pub use crate::health::HealthConfig;
pub use crate::metrics::MetricsConfig;
pub use crate::policy::{InhibitorConfig, PolicyConfig};
pub use crate::trust::OfflineConfig;
pub mod raw;
pub mod sample;
pub mod schema;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::boot::BootConfig;
use crate::health::HttpUrl;
use crate::paths::Paths;
use crate::setting::{absolute, InvalidSetting};
use raw::RawConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file that does not parse (syntax, unknown key, wrong type, bad value).
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// The merged configuration breaks a rule; `files` are those it was merged from.
    #[error("{key}: {why} (configuration from {})", files_list(files))]
    Invalid {
        key: String,
        why: String,
        files: Vec<PathBuf>,
    },
}

fn files_list(files: &[PathBuf]) -> String {
    if files.is_empty() {
        return "built-in defaults".to_string();
    }
    files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `[device]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceConfig {
    /// Product name releases are published under; required when a repository is set.
    pub product: Option<String>,
    pub channel: String,
    pub tags: Vec<String>,
    pub machine_id_path: PathBuf,
    /// Hardware-compatibility id matched against a release's `hardware` list; `None`:
    /// read from the device tree or DMI ([`crate::inventory::hardware_id`]).
    pub hardware: Option<String>,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            product: None,
            channel: "stable".into(),
            tags: Vec::new(),
            machine_id_path: "/etc/machine-id".into(),
            hardware: None,
        }
    }
}

/// Where releases come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RepoSource {
    Url(HttpUrl),
    Dir(PathBuf),
}

/// `[repository]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepositoryConfig {
    /// `None`: no repository configured; patchd does not check for updates.
    pub source: Option<RepoSource>,
    pub trusted_root: PathBuf,
    pub ca_bundle: Option<PathBuf>,
    #[serde(with = "duration")]
    pub check_interval: Duration,
    #[serde(with = "duration")]
    pub check_jitter: Duration,
    pub allow_http: bool,
}

impl Default for RepositoryConfig {
    fn default() -> Self {
        Self {
            source: None,
            trusted_root: DEFAULT_TRUSTED_ROOT.into(),
            ca_bundle: None,
            check_interval: Duration::from_secs(6 * 3600),
            check_jitter: Duration::from_secs(1800),
            allow_http: false,
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Config {
    pub device: DeviceConfig,
    pub repository: RepositoryConfig,
    pub policy: PolicyConfig,
    pub health: HealthConfig,
    /// `[boot]`, validated; `None` when the section is absent.
    pub boot_config: Option<BootConfig>,
    /// The merged `[boot]` table as written (kept for callers that parse it themselves;
    /// prefer `boot_config`).
    pub boot: toml::Table,
    /// `[slots]`, validated; `None` when the section is absent.
    pub slots: Option<crate::slot::SlotsConfig>,
    pub audit: AuditConfig,
    pub metrics: MetricsConfig,
    pub fetch: FetchConfig,
    /// `[offline]`: the policy for offline bundles (`trust::OfflineConfig`).
    pub offline: OfflineConfig,
    /// `[fleet]`: the device's group and its reboot lock (`fleet::config`).
    pub fleet: crate::fleet::config::FleetConfig,
    /// `[source]`: the signed repository (default) or the system's apt.
    pub source: crate::sourceconf::SourceConfig,
    /// `[components]`: app bundles' directory, handler executables (`component::config`).
    pub components: crate::component::ComponentsConfig,
    /// Files read, in merge order.
    pub sources: Vec<PathBuf>,
}

pub const DEFAULT_TRUSTED_ROOT: &str = "/usr/share/patchd/root.json";

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    (line, col)
}

/// Parse one file's text (layer 1) and return its table for merging. `path` is only
/// used in errors.
pub fn parse_str(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    let parse_error = |e: toml::de::Error| {
        let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    };
    // The typed parse finds unknown keys and bad values with their line; the table is
    // what merges.
    toml::from_str::<RawConfig>(text).map_err(parse_error)?;
    let table = toml::from_str::<toml::Table>(text).map_err(parse_error)?;
    // Checked per file: merging lets a later file replace an earlier file's source, so
    // after the merge a file holding both could no longer be told apart.
    if raw::sources_named(&table).len() > 1 {
        return Err(ConfigError::Invalid {
            key: "repository".into(),
            why: "set either url or dir, not both".into(),
            files: vec![path.to_path_buf()],
        });
    }
    Ok(table)
}

fn read_file(path: &Path) -> Result<Option<String>, ConfigError> {
    match fs::read(path) {
        Ok(b) => String::from_utf8(b)
            .map(Some)
            .map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                line: 1,
                column: 1,
                message: format!("not UTF-8: {e}"),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfigError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// The drop-in files that will be read, in merge order.
pub fn dropin_files(paths: &Paths) -> Result<Vec<PathBuf>, ConfigError> {
    let dir = paths.config_dropin_dir();
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ConfigError::Io {
                path: dir,
                source: e,
            })
        }
    };
    let mut files = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| ConfigError::Io {
            path: dir.clone(),
            source: e,
        })?;
        let name = ent.file_name();
        if name.as_encoded_bytes().ends_with(b".toml") && !name.as_encoded_bytes().starts_with(b".")
        {
            files.push(ent.path());
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Read, merge and validate the configuration under `paths`.
pub fn load(paths: &Paths) -> Result<Config, ConfigError> {
    let mut merged = toml::Table::new();
    let mut sources = Vec::new();
    let main = paths.config_file();
    let mut files = vec![main];
    files.extend(dropin_files(paths)?);
    for f in files {
        if let Some(text) = read_file(&f)? {
            raw::merge_file(&mut merged, parse_str(&f, &text)?);
            sources.push(f);
        }
    }
    validate(merged, sources)
}

/// Load from explicit texts (tests, the demo): `(name, toml)` in merge order.
pub fn load_strs(files: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut merged = toml::Table::new();
    let mut sources = Vec::new();
    for (name, text) in files {
        let p = PathBuf::from(name);
        raw::merge_file(&mut merged, parse_str(&p, text)?);
        sources.push(p);
    }
    validate(merged, sources)
}

/// `patchd --check-config`: load and return a human summary (files read and the
/// effective configuration as TOML-like JSON), or the first error.
pub fn check(paths: &Paths) -> Result<CheckReport, ConfigError> {
    let config = load(paths)?;
    Ok(CheckReport { config })
}

/// What an empty `[policy] windows` means, said where admins look (`--check-config`,
/// the daemon's start-up log).
pub const NO_WINDOWS: &str = "no maintenance windows configured ([policy] windows): the window \
     is always open, so patchd switches to a staged release and REBOOTS THIS MACHINE BY ITSELF \
     at any hour; configure windows to schedule reboots";

/// Printable result of [`check`].
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub config: Config,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "configuration OK")?;
        if self.config.sources.is_empty() {
            writeln!(f, "files: none (built-in defaults)")?;
        } else {
            writeln!(
                f,
                "files (merge order): {}",
                files_list(&self.config.sources)
            )?;
        }
        if self.config.policy.windows.is_empty() {
            writeln!(f, "WARNING: {NO_WINDOWS}")?;
        }
        if self.config.fetch.min_rate == 0 {
            writeln!(f, "WARNING: {NO_MIN_RATE}")?;
        }
        let json = serde_json::to_string_pretty(&self.config).map_err(|_| fmt::Error)?;
        write!(f, "effective settings:\n{json}")
    }
}

/// Layer 3: the merged table read once more as [`RawConfig`], each section validated by
/// its room.
fn validate(merged: toml::Table, sources: Vec<PathBuf>) -> Result<Config, ConfigError> {
    let invalid = |e: InvalidSetting| ConfigError::Invalid {
        key: e.key,
        why: e.why,
        files: sources.clone(),
    };
    // Each file parsed alone as RawConfig, so the merge of them does too; an error here
    // would still be reported, not unwrapped.
    let raw = RawConfig::deserialize(toml::Value::Table(merged))
        .map_err(|e| invalid(InvalidSetting::new("configuration", e.message().trim())))?;
    let device = device(raw.device.unwrap_or_default()).map_err(invalid)?;
    let repository = repository(raw.repository.unwrap_or_default()).map_err(invalid)?;
    if repository.source.is_some() && device.product.is_none() {
        return Err(invalid(InvalidSetting::new(
            "device.product",
            "required when a repository is configured",
        )));
    }
    let boot = raw.boot.unwrap_or_default();
    let slots = match raw.slots {
        None => None,
        Some(t) => {
            let c = crate::slot::SlotsConfig::deserialize(toml::Value::Table(t))
                .map_err(|e| invalid(InvalidSetting::new("slots", e.message().trim())))?;
            c.validate()
                .map_err(|why| invalid(InvalidSetting::new("slots", why)))?;
            Some(c)
        }
    };
    Ok(Config {
        boot_config: BootConfig::from_table(&boot).map_err(invalid)?,
        device,
        repository,
        policy: PolicyConfig::from_raw(raw.policy.unwrap_or_default()).map_err(invalid)?,
        health: HealthConfig::from_raw(raw.health.unwrap_or_default()).map_err(invalid)?,
        boot,
        slots,
        audit: AuditConfig::from_raw(raw.audit.unwrap_or_default()).map_err(invalid)?,
        metrics: MetricsConfig::from_raw(raw.metrics.unwrap_or_default()).map_err(invalid)?,
        fetch: FetchConfig::from_raw(raw.fetch.unwrap_or_default()).map_err(invalid)?,
        offline: OfflineConfig::from_raw(raw.offline.unwrap_or_default()).map_err(invalid)?,
        fleet: crate::fleet::config::FleetConfig::from_raw(raw.fleet.unwrap_or_default())
            .map_err(invalid)?,
        source: crate::sourceconf::SourceConfig::from_raw(raw.source.unwrap_or_default())
            .map_err(invalid)?,
        components: crate::component::ComponentsConfig::from_raw(
            raw.components.unwrap_or_default(),
        )
        .map_err(invalid)?,
        sources,
    })
}

/// Product, channel and tags are matched against what publishers write, so they follow
/// the publisher's name rule.
fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn device(d: raw::RawDevice) -> Result<DeviceConfig, InvalidSetting> {
    let def = DeviceConfig::default();
    let device = DeviceConfig {
        product: d.product,
        channel: d.channel.unwrap_or(def.channel),
        tags: d.tags.unwrap_or_default(),
        machine_id_path: d.machine_id_path.unwrap_or(def.machine_id_path),
        hardware: d.hardware,
    };
    let bad_name = |key: &str, v: &str| {
        InvalidSetting::new(key, format!("{v:?}: use 1-64 of a-z A-Z 0-9 - _ ."))
    };
    if let Some(h) = &device.hardware {
        // The publisher's rule for the same string, so any id that can be configured
        // can also be published (`patchpub add --hardware`).
        match crate::manifest::check_name("device.hardware", h) {
            Ok(()) => {}
            Err(crate::manifest::ManifestError::Field { why, .. }) => {
                return Err(InvalidSetting::new("device.hardware", why));
            }
            Err(e) => return Err(InvalidSetting::new("device.hardware", e.to_string())),
        }
    }
    if let Some(p) = device.product.as_deref().filter(|p| !name_ok(p)) {
        return Err(bad_name("device.product", p));
    }
    if !name_ok(&device.channel) {
        return Err(bad_name("device.channel", &device.channel));
    }
    if let Some(t) = device.tags.iter().find(|t| !name_ok(t)) {
        return Err(bad_name("device.tags", t));
    }
    absolute("device.machine_id_path", &device.machine_id_path)?;
    Ok(device)
}

fn repository(r: raw::RawRepository) -> Result<RepositoryConfig, InvalidSetting> {
    let def = RepositoryConfig::default();
    let allow_http = r.allow_http.unwrap_or(false);
    let source = match (r.url, r.dir) {
        (Some(_), Some(_)) => {
            return Err(InvalidSetting::new(
                "repository",
                "set either url or dir, not both",
            ))
        }
        (Some(u), None) => {
            if u.is_plain_http() && !allow_http {
                return Err(InvalidSetting::new(
                    "repository.url",
                    format!("{u} is plain http; use https, or set allow_http = true on a trusted network"),
                ));
            }
            Some(RepoSource::Url(u))
        }
        (None, Some(d)) => {
            absolute("repository.dir", &d)?;
            Some(RepoSource::Dir(d))
        }
        (None, None) => None,
    };
    let repository = RepositoryConfig {
        source,
        trusted_root: r.trusted_root.unwrap_or(def.trusted_root),
        ca_bundle: r.ca_bundle,
        check_interval: r.check_interval.unwrap_or(def.check_interval),
        check_jitter: r.check_jitter.unwrap_or(def.check_jitter),
        allow_http,
    };
    absolute("repository.trusted_root", &repository.trusted_root)?;
    if let Some(c) = &repository.ca_bundle {
        absolute("repository.ca_bundle", c)?;
    }
    if repository.check_interval < Duration::from_secs(60) {
        return Err(InvalidSetting::new(
            "repository.check_interval",
            "must be at least 1m",
        ));
    }
    Ok(repository)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_report_warns_loudly_without_windows() {
        let open = load_strs(&[("patchd.toml", "")]).unwrap();
        let text = CheckReport { config: open }.to_string();
        assert!(text.contains("WARNING: no maintenance windows"), "{text}");
        assert!(text.contains("REBOOTS THIS MACHINE BY ITSELF"), "{text}");
        let windowed =
            load_strs(&[("patchd.toml", "[policy]\nwindows = [\"Sat 02:00-05:00\"]\n")]).unwrap();
        let text = CheckReport { config: windowed }.to_string();
        assert!(!text.contains("WARNING"), "{text}");
    }

    #[test]
    fn fetch_rate_rule_defaults_suffixes_and_refusals() {
        let cfg = |text: &str| load_strs(&[("patchd.toml", text)]);
        let d = cfg("").unwrap().fetch;
        assert_eq!(d.min_rate, 8192);
        assert_eq!(d.min_rate_window, Duration::from_secs(60));
        assert_eq!(d.deadline_floor, Duration::from_secs(300));
        assert_eq!(d.stall_timeout, Duration::from_secs(30));
        assert_eq!(
            (d.retry_after, d.retry_after_max),
            (Duration::from_secs(300), Duration::from_secs(3600))
        );
        let retry = cfg("[fetch]\nretry_after = \"1m\"\nretry_after_max = \"10m\"\n")
            .unwrap()
            .fetch;
        assert_eq!(
            (retry.retry_after, retry.retry_after_max),
            (Duration::from_secs(60), Duration::from_secs(600))
        );
        let set = cfg("[fetch]\nmin_rate = \"16K\"\nmin_rate_window = \"3s\"\n\
             deadline_floor = \"10s\"\nstall_timeout = \"2s\"\n")
        .unwrap()
        .fetch;
        assert_eq!(set.min_rate, 16384);
        let rule = set.http_options();
        assert_eq!(rule.min_rate.window, Duration::from_secs(3));
        assert_eq!(rule.min_rate.deadline_floor, Duration::from_secs(10));
        assert_eq!(rule.stall_timeout, Duration::from_secs(2));
        assert_eq!(
            cfg("[fetch]\nmin_rate = 1000\n").unwrap().fetch.min_rate,
            1000
        );
        // A drop-in changes one key and keeps the others.
        let merged = load_strs(&[
            ("patchd.toml", "[fetch]\nmin_rate = \"1M\"\n"),
            (
                "patchd.toml.d/10.toml",
                "[fetch]\nmin_rate_window = \"2m\"\n",
            ),
        ])
        .unwrap()
        .fetch;
        assert_eq!(
            (merged.min_rate, merged.min_rate_window),
            (1 << 20, Duration::from_secs(120))
        );
        let off = cfg("[fetch]\nmin_rate = 0\n").unwrap();
        let text = CheckReport { config: off }.to_string();
        assert!(text.contains("WARNING: [fetch] min_rate = 0"), "{text}");
        for (bad, key) in [
            ("min_rate = \"fast\"", "invalid rate"),
            ("min_rate = -5", "must not be negative"),
            ("min_rate = \"2G\"", "fetch.min_rate"),
            ("min_rate_window = \"0s\"", "fetch.min_rate_window"),
            ("min_rate_window = \"2h\"", "fetch.min_rate_window"),
            ("min_rate_window = \"10m\"", "fetch.deadline_floor"),
            ("deadline_floor = \"10s\"", "fetch.deadline_floor"),
            ("stall_timeout = \"0s\"", "fetch.stall_timeout"),
            ("retry_after = \"0s\"", "fetch.retry_after"),
            ("retry_after = \"2h\"", "fetch.retry_after_max"),
            ("min_rat = 5", "unknown field"),
        ] {
            let e = cfg(&format!("[fetch]\n{bad}\n")).unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn boot_attempts_are_configurable_within_what_grub_counts() {
        let cfg = |extra: &str| {
            load_strs(&[(
                "patchd.toml",
                &format!("[boot]\nbackend = \"file\"\n{extra}"),
            )])
        };
        let default = cfg("").unwrap();
        assert_eq!(default.boot_config.as_ref().map(|b| b.attempts), Some(1));
        let three = cfg("attempts = 3\n").unwrap();
        assert_eq!(three.boot_config.as_ref().map(|b| b.attempts), Some(3));
        for bad in ["attempts = 0\n", "attempts = 10\n"] {
            let e = cfg(bad).unwrap_err().to_string();
            assert!(e.contains("boot.attempts"), "{bad}: {e}");
        }
    }
}
