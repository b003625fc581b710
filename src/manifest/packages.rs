//! What a package patch set (the `apt` source) changes, package by package: the detail
//! behind its one release summary, shown by `patchctl list --verbose` and recorded with
//! the release.

use serde::{Deserialize, Serialize};

use super::types::{Kind, Severity};

/// Whether a package's upgrade is part of the patch set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PackageStanding {
    /// In the patch set.
    #[default]
    Included,
    /// `apt-mark hold`: the admin keeps it at the installed version.
    Held,
    /// Kind feature (backports, other origins) while `offer_feature` is off.
    NotOffered,
}

impl PackageStanding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Included => "included",
            Self::Held => "held (apt-mark)",
            Self::NotOffered => "not offered (feature)",
        }
    }
}

/// One pending package upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageChange {
    pub name: String,
    pub arch: String,
    pub installed: String,
    pub candidate: String,
    /// The candidate's origin as `origin/suite` (`Debian-Security/stable-security`).
    pub origin: String,
    pub kind: Kind,
    pub severity: Severity,
    #[serde(default)]
    pub cves: Vec<String>,
    #[serde(default)]
    pub standing: PackageStanding,
    /// The version installed in the snapshot the patch set was staged into, once it was
    /// (read back from the snapshot's dpkg database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<String>,
}
