//! `[source.apt]`: which apt to ask, how its origins map to kinds, and the severity
//! rules. Checked once at load, so the scan cannot meet a bad pattern.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::pattern::glob;
use crate::manifest::{Kind, Severity};
use crate::setting::{absolute, InvalidSetting};

/// Where the changelogs (and the CVE ids in them) come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangelogSource {
    /// `apt-get download` of the candidate .deb from the configured (signed) archive into
    /// patchd's cache, then its `/usr/share/doc/<pkg>/changelog.Debian.gz`: works
    /// offline with a local mirror, and apt checks the file against the signed index.
    #[default]
    Download,
    /// No changelogs: CVE ids only from the feed, severity only from the rules.
    None,
}

/// Which version of a configuration file (conffile) an upgrade keeps when the admin
/// changed it and the package ships a new one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConffilePolicy {
    /// The admin's (`dpkg --force-confold`); the package's lands next to it as
    /// `.dpkg-dist`.
    #[default]
    Keep,
    /// The package's (`dpkg --force-confnew`); the admin's is saved as `.dpkg-old`.
    Package,
}

impl ConffilePolicy {
    /// The dpkg option that says it.
    pub fn dpkg_option(self) -> &'static str {
        match self {
            Self::Keep => "--force-confold",
            Self::Package => "--force-confnew",
        }
    }
}

/// The `urgency=` of a Debian changelog entry, least urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    Low,
    Medium,
    High,
    Emergency,
    Critical,
}

impl Urgency {
    /// The changelog's spelling (case-insensitive; Debian policy allows comments after
    /// a space, which are cut off).
    pub fn parse(s: &str) -> Option<Self> {
        match s.split_whitespace().next()?.to_ascii_lowercase().as_str() {
            "low" => Some(Self::Low),
            "medium" => Some(Self::Medium),
            "high" => Some(Self::High),
            "emergency" => Some(Self::Emergency),
            "critical" => Some(Self::Critical),
            _ => None,
        }
    }

    /// The severity an urgency stands for when no rule says otherwise.
    pub fn severity(self) -> Severity {
        match self {
            Self::Low => Severity::Low,
            Self::Medium => Severity::Medium,
            Self::High => Severity::High,
            Self::Emergency | Self::Critical => Severity::Critical,
        }
    }
}

/// An origin pattern as unattended-upgrades writes them: `key=glob` pairs joined by
/// commas, all of which must match (`label=Debian-Security`, `origin=Debian,suite=*-updates`).
/// Keys: `origin` (`o`), `label` (`l`), `suite` (`archive`, `a`), `codename` (`n`),
/// `component` (`c`), `site`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OriginPattern {
    pub text: String,
    pairs: Vec<(&'static str, String)>,
}

impl OriginPattern {
    pub fn parse(key: &str, text: &str) -> Result<Self, InvalidSetting> {
        let mut pairs = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                InvalidSetting::new(key, format!("{text:?}: {part:?} is not key=pattern"))
            })?;
            let field = match k.trim() {
                "origin" | "o" => "origin",
                "label" | "l" => "label",
                "suite" | "archive" | "a" => "suite",
                "codename" | "n" => "codename",
                "component" | "c" => "component",
                "site" => "site",
                other => {
                    return Err(InvalidSetting::new(
                        key,
                        format!(
                            "{text:?}: unknown field {other:?} (use origin, label, suite, \
                             codename, component or site)"
                        ),
                    ))
                }
            };
            pairs.push((field, v.trim().to_string()));
        }
        if pairs.is_empty() {
            return Err(InvalidSetting::new(
                key,
                "an empty origin pattern matches nothing",
            ));
        }
        Ok(Self {
            text: text.to_string(),
            pairs,
        })
    }

    /// Does the origin whose fields `get` returns match? A field the origin lacks
    /// matches only `*`.
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.pairs
            .iter()
            .all(|(f, p)| glob(p, get(f).unwrap_or("")))
    }
}

/// One `[[source.apt.severity]]` rule as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSeverityRule {
    pub origin: Option<String>,
    pub package: Option<String>,
    pub urgency: Option<Urgency>,
    pub kind: Option<Kind>,
    pub severity: Option<Severity>,
}

/// A severity rule: a package matching every condition given gets `severity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeverityRule {
    pub origin: Option<OriginPattern>,
    /// Glob over the package (source or binary) name.
    pub package: Option<String>,
    /// The changelog's highest urgency since the installed version is at least this.
    pub urgency: Option<Urgency>,
    pub kind: Option<Kind>,
    pub severity: Severity,
}

/// `[source.apt]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApt {
    pub root: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub options: Option<Vec<String>>,
    pub update: Option<bool>,
    pub security_origins: Option<Vec<String>>,
    pub bugfix_origins: Option<Vec<String>>,
    pub offer_feature: Option<bool>,
    pub feed: Option<PathBuf>,
    pub changelogs: Option<ChangelogSource>,
    pub severity: Option<Vec<RawSeverityRule>>,
    pub conffiles: Option<ConffilePolicy>,
    pub keep: Option<u32>,
}

/// `[source.apt]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AptConfig {
    /// apt's root directory (`-o Dir=`); `None`: the system's.
    pub root: Option<PathBuf>,
    /// An apt configuration file (`APT_CONFIG`); `None`: the system's.
    pub config: Option<PathBuf>,
    /// More `-o Key=Value` options for every apt call.
    pub options: Vec<String>,
    /// Run `apt-get update` before each scan.
    pub update: bool,
    pub security_origins: Vec<OriginPattern>,
    pub bugfix_origins: Vec<OriginPattern>,
    /// Offer upgrades from other origins (backports, third parties) as `feature`.
    pub offer_feature: bool,
    /// A Debian security tracker JSON file (`security-tracker.debian.org/tracker/data/json`).
    pub feed: Option<PathBuf>,
    pub changelogs: ChangelogSource,
    pub severity: Vec<SeverityRule>,
    /// Staging: which conffile version an upgrade keeps.
    pub conffiles: ConffilePolicy,
    /// Roots kept: 2, the previous root stays bootable as the other slot until the next
    /// staging replaces it; 1, its snapshot is deleted once the new root is committed
    /// and probation ended.
    pub keep: u32,
}

pub const DEFAULT_SECURITY_ORIGINS: [&str; 2] = ["label=Debian-Security", "suite=*-security"];
pub const DEFAULT_BUGFIX_ORIGINS: [&str; 3] =
    ["suite=stable", "suite=oldstable", "suite=*-updates"];

impl Default for AptConfig {
    fn default() -> Self {
        // The defaults parse (a unit test says so); nothing from outside reaches here.
        Self::from_raw(RawApt::default()).unwrap_or(Self {
            root: None,
            config: None,
            options: Vec::new(),
            update: true,
            security_origins: Vec::new(),
            bugfix_origins: Vec::new(),
            offer_feature: false,
            feed: None,
            changelogs: ChangelogSource::Download,
            severity: Vec::new(),
            conffiles: ConffilePolicy::Keep,
            keep: 2,
        })
    }
}

fn patterns(
    key: &str,
    given: Option<Vec<String>>,
    default: &[&str],
) -> Result<Vec<OriginPattern>, InvalidSetting> {
    let texts = given.unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect());
    texts.iter().map(|t| OriginPattern::parse(key, t)).collect()
}

impl AptConfig {
    pub fn from_raw(raw: RawApt) -> Result<Self, InvalidSetting> {
        for (key, p) in [
            ("source.apt.root", &raw.root),
            ("source.apt.config", &raw.config),
            ("source.apt.feed", &raw.feed),
        ] {
            if let Some(p) = p {
                absolute(key, p)?;
            }
        }
        let options = raw.options.unwrap_or_default();
        if let Some(o) = options
            .iter()
            .find(|o| !o.contains('=') || o.starts_with('='))
        {
            return Err(InvalidSetting::new(
                "source.apt.options",
                format!("{o:?} is not Key=Value"),
            ));
        }
        let mut severity = Vec::new();
        for (i, r) in raw.severity.unwrap_or_default().into_iter().enumerate() {
            let key = format!("source.apt.severity[{i}]");
            severity.push(SeverityRule {
                origin: r
                    .origin
                    .map(|o| OriginPattern::parse(&format!("{key}.origin"), &o))
                    .transpose()?,
                package: r.package,
                urgency: r.urgency,
                kind: r.kind,
                severity: r
                    .severity
                    .ok_or_else(|| InvalidSetting::new(format!("{key}.severity"), "missing"))?,
            });
        }
        Ok(Self {
            root: raw.root,
            config: raw.config,
            options,
            update: raw.update.unwrap_or(true),
            security_origins: patterns(
                "source.apt.security_origins",
                raw.security_origins,
                &DEFAULT_SECURITY_ORIGINS,
            )?,
            bugfix_origins: patterns(
                "source.apt.bugfix_origins",
                raw.bugfix_origins,
                &DEFAULT_BUGFIX_ORIGINS,
            )?,
            offer_feature: raw.offer_feature.unwrap_or(false),
            feed: raw.feed,
            changelogs: raw.changelogs.unwrap_or_default(),
            severity,
            conffiles: raw.conffiles.unwrap_or_default(),
            keep: match raw.keep.unwrap_or(2) {
                k @ (1 | 2) => k,
                k => {
                    return Err(InvalidSetting::new(
                        "source.apt.keep",
                        format!(
                            "{k}: 1 (delete the previous root after probation) or 2 \
                             (keep it as the other slot)"
                        ),
                    ))
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_patterns_match_fields() {
        let c = AptConfig::default();
        assert_eq!(c.security_origins.len(), 2);
        assert!(c.update && !c.offer_feature);
        let p = OriginPattern::parse("k", "origin=Debian, suite=*-security").unwrap();
        let fields = |f: &str| match f {
            "origin" => Some("Debian"),
            "suite" => Some("stable-security"),
            _ => None,
        };
        assert!(p.matches(fields));
        assert!(!p.matches(|f| (f == "origin").then_some("Debian")));
    }

    #[test]
    fn keep_is_two_roots_by_default_and_only_one_or_two() {
        assert_eq!(AptConfig::default().keep, 2);
        let keep = |k| {
            AptConfig::from_raw(RawApt {
                keep: Some(k),
                ..Default::default()
            })
        };
        assert_eq!(keep(1).unwrap().keep, 1);
        for k in [0, 3] {
            let e = keep(k).unwrap_err().to_string();
            assert!(
                e.contains("source.apt.keep") && e.contains("1 (delete"),
                "{e}"
            );
        }
    }

    #[test]
    fn bad_settings_name_their_key() {
        let e = OriginPattern::parse("source.apt.security_origins", "flavour=x").unwrap_err();
        assert!(e.to_string().contains("unknown field \"flavour\""), "{e}");
        let raw = RawApt {
            severity: Some(vec![RawSeverityRule {
                package: Some("openssl".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let e = AptConfig::from_raw(raw).unwrap_err();
        assert_eq!(e.key, "source.apt.severity[0].severity");
        let raw = RawApt {
            options: Some(vec!["Dir".into()]),
            ..Default::default()
        };
        assert_eq!(
            AptConfig::from_raw(raw).unwrap_err().key,
            "source.apt.options"
        );
    }

    #[test]
    fn urgency_reads_the_changelog_spelling() {
        assert_eq!(Urgency::parse("HIGH"), Some(Urgency::High));
        assert_eq!(
            Urgency::parse("medium (security fix)"),
            Some(Urgency::Medium)
        );
        assert_eq!(Urgency::parse("whenever"), None);
        assert!(Urgency::Emergency > Urgency::High);
    }
}
