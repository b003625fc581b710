//! The Debian security tracker's data (`security-tracker.debian.org/tracker/data/json`,
//! saved by the admin: optional, read offline): for a source package, the CVEs fixed in
//! a version between the installed and the candidate, with the tracker's urgency.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::debversion;
use crate::sourceconf::Urgency;

#[derive(Debug, Deserialize)]
struct Issue {
    #[serde(default)]
    releases: BTreeMap<String, Fix>,
}

#[derive(Debug, Deserialize)]
struct Fix {
    #[serde(default)]
    fixed_version: Option<String>,
    #[serde(default)]
    urgency: Option<String>,
}

/// The tracker data, by source package, then CVE id.
#[derive(Debug, Default)]
pub struct Feed {
    packages: BTreeMap<String, BTreeMap<String, Issue>>,
}

/// What the feed knows about one upgrade.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fixed {
    pub cves: Vec<String>,
    pub urgency: Option<Urgency>,
}

impl Feed {
    pub fn load(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let packages =
            serde_json::from_slice(bytes).map_err(|e| format!("not security tracker JSON: {e}"))?;
        Ok(Self { packages })
    }

    /// CVEs of `source` fixed in a version newer than `installed`, not newer than
    /// `candidate` (in any release the tracker lists).
    pub fn fixed(&self, source: &str, installed: &str, candidate: &str) -> Fixed {
        let mut out = Fixed::default();
        let Some(issues) = self.packages.get(source) else {
            return out;
        };
        for (cve, issue) in issues.iter().filter(|(c, _)| c.starts_with("CVE-")) {
            for fix in issue.releases.values() {
                let Some(v) = fix.fixed_version.as_deref() else {
                    continue;
                };
                if debversion::compare(v, installed) == Ordering::Greater
                    && debversion::compare(v, candidate) != Ordering::Greater
                {
                    if !out.cves.contains(cve) {
                        out.cves.push(cve.clone());
                    }
                    let u = fix
                        .urgency
                        .as_deref()
                        .and_then(|u| Urgency::parse(u.trim_end_matches('*')));
                    out.urgency = out.urgency.max(u);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixes_between_the_versions() {
        let f = Feed::parse(
            br#"{"openssl": {
                "CVE-2024-0001": {"releases": {"bookworm": {"status": "resolved", "fixed_version": "3.0.15-1~deb12u1", "urgency": "high**"}}},
                "CVE-2023-0002": {"releases": {"bookworm": {"status": "resolved", "fixed_version": "3.0.9-1", "urgency": "low"}}},
                "CVE-2025-0003": {"releases": {"bookworm": {"status": "open", "urgency": "medium"}}},
                "TEMP-0000-1": {"releases": {"bookworm": {"fixed_version": "3.0.15-1~deb12u1"}}}
            }}"#,
        )
        .unwrap();
        let got = f.fixed("openssl", "3.0.13-1~deb12u1", "3.0.15-1~deb12u1");
        assert_eq!(got.cves, ["CVE-2024-0001"]);
        assert_eq!(got.urgency, Some(Urgency::High));
        assert_eq!(f.fixed("zlib", "1", "2"), Fixed::default());
        assert!(Feed::parse(b"[1]").is_err());
    }
}
