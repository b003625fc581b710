//! The release summary published in the TUF target's `custom` field of each release
//! manifest, so a device can rank releases from signed targets metadata alone and
//! download only the one manifest it picks. The summary is signed (targets metadata)
//! and cross-checked against the manifest once downloaded.

use semver::Version;
use serde::{Deserialize, Serialize};

use super::parse::ManifestError;
use super::types::{Kind, Manifest, Severity};

/// Key under which the summary sits in the target's `custom` object.
pub const CUSTOM_KEY: &str = "patchd_release";

/// What a device needs to decide eligibility without downloading the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSummary {
    pub product: String,
    #[serde(default)]
    pub hardware: Vec<String>,
    pub version: Version,
    pub security_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<Version>,
    pub kind: Kind,
    pub severity: Severity,
    #[serde(default)]
    pub cves: Vec<String>,
    pub channels: Vec<String>,
    pub withdrawn: bool,
    pub paused: bool,
    /// Uncompressed bytes the release writes.
    pub size: u64,
}

impl ReleaseSummary {
    pub fn of(m: &Manifest) -> Self {
        ReleaseSummary {
            product: m.product.clone(),
            hardware: m.hardware.clone(),
            version: m.version.clone(),
            security_version: m.security_version,
            min_version: m.min_version.clone(),
            kind: m.kind,
            severity: m.severity,
            cves: m.cves.clone(),
            channels: m.channels.clone(),
            withdrawn: m.withdrawn,
            paused: m.rollout.paused,
            size: m.installed_size(),
        }
    }

    /// The `custom` object for the manifest's TUF target.
    pub fn to_custom(&self) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        obj.insert(
            CUSTOM_KEY.to_string(),
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null),
        );
        serde_json::Value::Object(obj)
    }

    /// Read the summary out of a target's `custom` object. `Ok(None)` if the target
    /// carries none (not a patchd release).
    pub fn from_custom(custom: Option<&serde_json::Value>) -> Result<Option<Self>, ManifestError> {
        let Some(v) = custom.and_then(|c| c.get(CUSTOM_KEY)) else {
            return Ok(None);
        };
        let s: ReleaseSummary = serde_json::from_value(v.clone())?;
        Ok(Some(s))
    }

    /// Fields of the summary that disagree with the manifest (empty when consistent).
    pub fn mismatches(&self, m: &Manifest) -> Vec<&'static str> {
        let other = ReleaseSummary::of(m);
        let mut out = Vec::new();
        macro_rules! cmp {
            ($($f:ident),*) => {$( if self.$f != other.$f { out.push(stringify!($f)); } )*};
        }
        cmp!(
            product,
            hardware,
            version,
            security_version,
            min_version,
            kind,
            severity,
            cves,
            channels,
            withdrawn,
            paused,
            size
        );
        out
    }
}
