//! Configuration: `/etc/patchd/patchd.toml` plus drop-ins; raw → merged → validated.
//!
//! ```no_run
//! # fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let paths = patchd::paths::Paths::default();
//! let cfg: patchd::config::Config = patchd::config::load(&paths)?;
//! let policy = cfg.policy.to_policy()?;         // policy::Policy for decisions
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
//!    file name; a later file wins per key (arrays are replaced whole, not appended);
//!    the `[boot]` and `[slots]` tables merge key by key;
//! 3. validated ([`Config`]): defaults filled in, cross-key rules checked (time zone
//!    exists, URL or directory but not both, plain http only with `allow_http`, absolute
//!    paths, unit names).
//!
//! A missing main file means all defaults; a file that does not parse is an error naming
//! the file and line, never skipped. Files in the drop-in directory not ending in `.toml`
//! are ignored (package manager leftovers such as `.dpkg-old`).
//!
//! Paths in the config are device paths; callers resolve them with
//! [`crate::paths::Paths::resolve`] so tests and the demo run under a temporary root.
//!
//! `[boot]` is validated as [`crate::boot::BootConfig`] ([`Config::boot_config`]; `None`
//! when the section is absent). Its tables merge key by key at every depth across
//! drop-ins (`[boot.grub]` in a drop-in keeps `[boot.detect]` from the main file).
//! `[slots]` is validated as [`crate::slot::SlotsConfig`] (merged the same way).
//! All keys with defaults: `docs/configuration.md`.

pub use crate::duration;
pub use crate::health::HealthConfig;
pub use crate::policy::InhibitorConfig;
pub mod raw;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::audit::AuditLimits;
use crate::boot::BootConfig;
use crate::health::{valid_unit_name, HttpUrl};
use crate::paths::Paths;
use crate::policy::{self, Policy, PolicyError, Schedule, UrgencyRule, Window};
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

/// `[policy]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyConfig {
    pub time_zone: String,
    pub windows: Vec<Window>,
    pub stage_outside_windows: bool,
    pub urgency: Vec<UrgencyRule>,
    pub inhibitors: InhibitorConfig,
}

impl PolicyConfig {
    pub fn to_policy(&self) -> Result<Policy, PolicyError> {
        Ok(Policy {
            schedule: Schedule::new(&self.time_zone, self.windows.clone())?,
            urgency: self.urgency.clone(),
            stage_outside_windows: self.stage_outside_windows,
        })
    }
}

/// `[audit]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditConfig {
    pub path: PathBuf,
    pub limits: AuditLimits,
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct MetricsConfig {
    /// Prometheus node-exporter textfile to write (none = off).
    pub textfile: Option<PathBuf>,
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
        let r = crate::fetch::RateRule::default();
        Self {
            min_rate: r.min_rate,
            min_rate_window: r.window,
            deadline_floor: r.deadline_floor,
            stall_timeout: crate::fetch::HttpOptions::default().stall_timeout,
            retry_after: Duration::from_secs(5 * 60),
            retry_after_max: Duration::from_secs(3600),
        }
    }
}

impl FetchConfig {
    /// The rule the fetch room enforces.
    pub fn rate_rule(&self) -> crate::fetch::RateRule {
        crate::fetch::RateRule {
            min_rate: self.min_rate,
            window: self.min_rate_window,
            deadline_floor: self.deadline_floor,
        }
    }

    /// Production HTTP options with these bounds.
    pub fn http_options(&self) -> crate::fetch::HttpOptions {
        crate::fetch::HttpOptions {
            stall_timeout: self.stall_timeout,
            min_rate: self.rate_rule(),
            ..crate::fetch::HttpOptions::default()
        }
    }
}

/// What `min_rate = 0` means, said where admins look.
pub const NO_MIN_RATE: &str = "[fetch] min_rate = 0: the minimum-rate rule is off, so a slow \
     or hostile mirror can keep a download (and the device busy) running indefinitely";

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    /// Files read, in merge order.
    pub sources: Vec<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        // Validating the empty configuration cannot fail (all defaults are valid); fall
        // back to a hand-built value anyway rather than panicking.
        validate(RawConfig::default(), Vec::new()).unwrap_or_else(|_| unreachable_default())
    }
}

fn unreachable_default() -> Config {
    Config {
        device: DeviceConfig {
            product: None,
            channel: "stable".into(),
            tags: vec![],
            machine_id_path: "/etc/machine-id".into(),
            hardware: None,
        },
        repository: RepositoryConfig {
            source: None,
            trusted_root: DEFAULT_TRUSTED_ROOT.into(),
            ca_bundle: None,
            check_interval: Duration::from_secs(6 * 3600),
            check_jitter: Duration::from_secs(1800),
            allow_http: false,
        },
        policy: PolicyConfig {
            time_zone: "UTC".into(),
            windows: vec![],
            stage_outside_windows: true,
            urgency: policy::default_rules(),
            inhibitors: InhibitorConfig::default(),
        },
        health: HealthConfig::default(),
        boot_config: None,
        boot: toml::Table::new(),
        slots: None,
        audit: AuditConfig {
            path: DEFAULT_AUDIT_PATH.into(),
            limits: AuditLimits::default(),
        },
        metrics: MetricsConfig::default(),
        fetch: FetchConfig::default(),
        sources: vec![],
    }
}

pub const DEFAULT_TRUSTED_ROOT: &str = "/usr/share/patchd/root.json";
pub const DEFAULT_AUDIT_PATH: &str = "/var/lib/patchd/audit.log";

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    (line, col)
}

/// Parse one file's text (layer 1). `path` is only used in errors.
pub fn parse_str(path: &Path, text: &str) -> Result<RawConfig, ConfigError> {
    toml::from_str::<RawConfig>(text).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })
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
    let mut merged = RawConfig::default();
    let mut sources = Vec::new();
    let main = paths.config_file();
    let mut files = vec![main];
    files.extend(dropin_files(paths)?);
    for f in files {
        if let Some(text) = read_file(&f)? {
            merged.merge(parse_str(&f, &text)?);
            sources.push(f);
        }
    }
    validate(merged, sources)
}

/// Load from explicit texts (tests, the demo): `(name, toml)` in merge order.
pub fn load_strs(files: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut merged = RawConfig::default();
    let mut sources = Vec::new();
    for (name, text) in files {
        let p = PathBuf::from(name);
        merged.merge(parse_str(&p, text)?);
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

fn validate(raw: RawConfig, sources: Vec<PathBuf>) -> Result<Config, ConfigError> {
    let invalid = |key: &str, why: String| ConfigError::Invalid {
        key: key.to_string(),
        why,
        files: sources.clone(),
    };
    let abs = |key: &str, p: &Path| -> Result<(), ConfigError> {
        if p.is_absolute() {
            Ok(())
        } else {
            Err(invalid(
                key,
                format!("{} is not an absolute path", p.display()),
            ))
        }
    };
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };

    let d = raw.device.unwrap_or_default();
    let device = DeviceConfig {
        product: d.product,
        channel: d.channel.unwrap_or_else(|| "stable".into()),
        tags: d.tags.unwrap_or_default(),
        machine_id_path: d
            .machine_id_path
            .unwrap_or_else(|| "/etc/machine-id".into()),
        hardware: d.hardware,
    };
    if let Some(h) = &device.hardware {
        // The publisher's rule for the same string, so any id that can be configured
        // can also be published (`patchpub add --hardware`).
        match crate::manifest::check_name("device.hardware", h) {
            Ok(()) => {}
            Err(crate::manifest::ManifestError::Field { why, .. }) => {
                return Err(invalid("device.hardware", why));
            }
            Err(e) => return Err(invalid("device.hardware", e.to_string())),
        }
    }
    if let Some(p) = &device.product {
        if !name_ok(p) {
            return Err(invalid(
                "device.product",
                format!("{p:?}: use 1-64 of a-z A-Z 0-9 - _ ."),
            ));
        }
    }
    if !name_ok(&device.channel) {
        return Err(invalid(
            "device.channel",
            format!("{:?}: use 1-64 of a-z A-Z 0-9 - _ .", device.channel),
        ));
    }
    if let Some(t) = device.tags.iter().find(|t| !name_ok(t)) {
        return Err(invalid(
            "device.tags",
            format!("{t:?}: use 1-64 of a-z A-Z 0-9 - _ ."),
        ));
    }
    abs("device.machine_id_path", &device.machine_id_path)?;

    let r = raw.repository.unwrap_or_default();
    let allow_http = r.allow_http.unwrap_or(false);
    let source = match (r.url, r.dir) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "repository",
                "set either url or dir, not both".to_string(),
            ))
        }
        (Some(u), None) => {
            if u.is_plain_http() && !allow_http {
                return Err(invalid(
                    "repository.url",
                    format!("{u} is plain http; use https, or set allow_http = true on a trusted network"),
                ));
            }
            Some(RepoSource::Url(u))
        }
        (None, Some(d)) => {
            abs("repository.dir", &d)?;
            Some(RepoSource::Dir(d))
        }
        (None, None) => None,
    };
    let repository = RepositoryConfig {
        source,
        trusted_root: r
            .trusted_root
            .unwrap_or_else(|| DEFAULT_TRUSTED_ROOT.into()),
        ca_bundle: r.ca_bundle,
        check_interval: r.check_interval.unwrap_or(Duration::from_secs(6 * 3600)),
        check_jitter: r.check_jitter.unwrap_or(Duration::from_secs(1800)),
        allow_http,
    };
    abs("repository.trusted_root", &repository.trusted_root)?;
    if let Some(c) = &repository.ca_bundle {
        abs("repository.ca_bundle", c)?;
    }
    if repository.check_interval < Duration::from_secs(60) {
        return Err(invalid(
            "repository.check_interval",
            "must be at least 1m".to_string(),
        ));
    }
    if repository.source.is_some() && device.product.is_none() {
        return Err(invalid(
            "device.product",
            "required when a repository is configured".to_string(),
        ));
    }

    let p = raw.policy.unwrap_or_default();
    let i = p.inhibitors.unwrap_or_default();
    let di = InhibitorConfig::default();
    let inhibitors = InhibitorConfig {
        sessions: i.sessions.unwrap_or(di.sessions),
        inhibitor_locks: i.inhibitor_locks.unwrap_or(di.inhibitor_locks),
        command: i.command,
        command_timeout: i.command_timeout.unwrap_or(di.command_timeout),
        recheck: i.recheck.unwrap_or(di.recheck),
    };
    if let Some(c) = &inhibitors.command {
        match c.first() {
            Some(p) if Path::new(p).is_absolute() => {}
            _ => {
                return Err(invalid(
                    "policy.inhibitors.command",
                    "must be a non-empty argv whose first element is an absolute path".to_string(),
                ))
            }
        }
    }
    if inhibitors.recheck < Duration::from_secs(1) {
        return Err(invalid(
            "policy.inhibitors.recheck",
            "must be at least 1s".to_string(),
        ));
    }
    let policy = PolicyConfig {
        time_zone: p.time_zone.unwrap_or_else(|| "UTC".into()),
        windows: p.windows.unwrap_or_default(),
        stage_outside_windows: p.stage_outside_windows.unwrap_or(true),
        urgency: p.urgency.unwrap_or_else(policy::default_rules),
        inhibitors,
    };
    policy::time_zone(&policy.time_zone).map_err(|e| invalid("policy.time_zone", e.to_string()))?;

    let h = raw.health.unwrap_or_default();
    let dh = HealthConfig::default();
    let health = HealthConfig {
        commands: h.command.unwrap_or_default(),
        units: h.units.unwrap_or_default(),
        http: h.http.unwrap_or_default(),
        check_timeout: h.check_timeout.unwrap_or(dh.check_timeout),
        deadline: h.deadline.unwrap_or(dh.deadline),
        probation: h.probation.unwrap_or(dh.probation),
        probation_interval: h.probation_interval.unwrap_or(dh.probation_interval),
    };
    let mut names = std::collections::BTreeSet::new();
    for c in &health.commands {
        if !names.insert(c.name.as_str()) || c.name.is_empty() {
            return Err(invalid(
                "health.command",
                format!("check name {:?} empty or used twice", c.name),
            ));
        }
        match c.run.first() {
            Some(p) if Path::new(p).is_absolute() => {}
            _ => {
                return Err(invalid(
                    "health.command",
                    format!("check {:?}: run must start with an absolute path", c.name),
                ))
            }
        }
    }
    for p in &health.http {
        if !names.insert(p.name.as_str()) || p.name.is_empty() {
            return Err(invalid(
                "health.http",
                format!("check name {:?} empty or used twice", p.name),
            ));
        }
        if !(100..=599).contains(&p.status) {
            return Err(invalid(
                "health.http",
                format!(
                    "check {:?}: status {} is not an HTTP status",
                    p.name, p.status
                ),
            ));
        }
    }
    if let Some(u) = health.units.iter().find(|u| !valid_unit_name(u)) {
        return Err(invalid(
            "health.units",
            format!("{u:?} is not a systemd unit name (e.g. nginx.service)"),
        ));
    }
    for (key, d) in [
        ("health.check_timeout", health.check_timeout),
        ("health.deadline", health.deadline),
    ] {
        if d.is_zero() {
            return Err(invalid(key, "must be longer than 0s".to_string()));
        }
    }
    if !health.probation.is_zero() && health.probation_interval < Duration::from_secs(1) {
        return Err(invalid(
            "health.probation_interval",
            "must be at least 1s".to_string(),
        ));
    }

    let a = raw.audit.unwrap_or_default();
    let da = AuditLimits::default();
    let audit = AuditConfig {
        path: a.path.unwrap_or_else(|| DEFAULT_AUDIT_PATH.into()),
        limits: AuditLimits {
            max_bytes: a.max_size.unwrap_or(da.max_bytes),
            keep: a.keep.unwrap_or(da.keep),
        },
    };
    abs("audit.path", &audit.path)?;
    audit.limits.validate().map_err(|e| invalid("audit", e))?;

    let metrics = MetricsConfig {
        textfile: raw.metrics.and_then(|m| m.textfile),
    };
    if let Some(t) = &metrics.textfile {
        abs("metrics.textfile", t)?;
    }

    let fr = raw.fetch.unwrap_or_default();
    let df = FetchConfig::default();
    let fetch = FetchConfig {
        min_rate: fr.min_rate.unwrap_or(df.min_rate),
        min_rate_window: fr.min_rate_window.unwrap_or(df.min_rate_window),
        deadline_floor: fr.deadline_floor.unwrap_or(df.deadline_floor),
        stall_timeout: fr.stall_timeout.unwrap_or(df.stall_timeout),
        retry_after: fr.retry_after.unwrap_or(df.retry_after),
        retry_after_max: fr.retry_after_max.unwrap_or(df.retry_after_max),
    };
    if fetch.min_rate > 1 << 30 {
        return Err(invalid(
            "fetch.min_rate",
            format!(
                "{} bytes/s is more than 1G per second; use e.g. \"8K\" (0 turns the rule off)",
                fetch.min_rate
            ),
        ));
    }
    let (lo, hi) = (Duration::from_secs(1), Duration::from_secs(3600));
    if !(lo..=hi).contains(&fetch.min_rate_window) {
        return Err(invalid(
            "fetch.min_rate_window",
            format!(
                "{} is outside 1s..=1h",
                duration::format(&fetch.min_rate_window)
            ),
        ));
    }
    if fetch.deadline_floor < fetch.min_rate_window {
        return Err(invalid(
            "fetch.deadline_floor",
            format!(
                "{} is shorter than fetch.min_rate_window ({}): small downloads would hit \
                 the deadline before their rate is ever judged",
                duration::format(&fetch.deadline_floor),
                duration::format(&fetch.min_rate_window)
            ),
        ));
    }
    if fetch.stall_timeout < lo {
        return Err(invalid(
            "fetch.stall_timeout",
            "must be at least 1s".to_string(),
        ));
    }
    if fetch.retry_after < lo {
        return Err(invalid(
            "fetch.retry_after",
            "must be at least 1s (a failed download is retried after it)".to_string(),
        ));
    }
    if fetch.retry_after_max < fetch.retry_after {
        return Err(invalid(
            "fetch.retry_after_max",
            format!(
                "{} is shorter than fetch.retry_after ({})",
                duration::format(&fetch.retry_after_max),
                duration::format(&fetch.retry_after)
            ),
        ));
    }

    let boot = raw.boot.unwrap_or_default();
    let boot_config = if boot.is_empty() {
        None
    } else {
        Some(
            BootConfig::deserialize(toml::Value::Table(boot.clone()))
                .map_err(|e| invalid("boot", e.message().trim().to_string()))?,
        )
    };
    if let Some(b) = &boot_config {
        if !(1..=crate::boot::ab::MAX_ATTEMPTS).contains(&b.attempts) {
            return Err(invalid(
                "boot.attempts",
                format!(
                    "must be 1..={}, not {} (the GRUB snippet counts down at most that far)",
                    crate::boot::ab::MAX_ATTEMPTS,
                    b.attempts
                ),
            ));
        }
    }

    let slots = match raw.slots {
        None => None,
        Some(t) => {
            let c = crate::slot::SlotsConfig::deserialize(toml::Value::Table(t))
                .map_err(|e| invalid("slots", e.message().trim().to_string()))?;
            c.validate().map_err(|why| invalid("slots", why))?;
            Some(c)
        }
    };

    Ok(Config {
        boot_config,
        device,
        repository,
        policy,
        health,
        boot,
        slots,
        audit,
        metrics,
        fetch,
        sources,
    })
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
