//! The release manifest document, schema version 2 (see docs/manifest.md); version 1
//! (no components: the OS image only) is still read.

use jiff::Timestamp;
use semver::Version;
use serde::{Deserialize, Serialize};

/// The newest manifest schema this build reads and writes (2: components).
pub const SCHEMA_VERSION: u32 = 2;
/// The oldest schema still read: version 1 manifests carry slot images only.
pub const MIN_SCHEMA_VERSION: u32 = 1;

/// The schema a manifest needs: 1 while it has no components, so devices running a
/// build from before components still read a release that does not use them.
pub fn schema_for(components: &[super::component::Component]) -> u32 {
    if components.is_empty() {
        MIN_SCHEMA_VERSION
    } else {
        SCHEMA_VERSION
    }
}

/// One release of one product: what it is, whom it is for, and what to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Schema of this document; readers refuse versions they do not know.
    pub schema_version: u32,
    /// Product identifier; a device installs only releases of its own product.
    pub product: String,
    /// Hardware-compatibility strings; a device must carry one of them. Empty means any
    /// hardware of the product.
    #[serde(default)]
    pub hardware: Vec<String>,
    pub version: Version,
    /// Anti-rollback floor: a device never installs a release whose security version is
    /// below the one it has committed.
    pub security_version: u64,
    pub kind: Kind,
    pub severity: Severity,
    #[serde(default)]
    pub cves: Vec<String>,
    /// One line for admins.
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes_url: Option<String>,
    pub published: Timestamp,
    /// Lowest running version this release may be installed over (e.g. because of a
    /// data migration); absent means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<Version>,
    pub images: Vec<Image>,
    /// Components beside the images (schema 2), installed in `order` (docs/components.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<super::component::Component>,
    #[serde(default)]
    pub rollout: Rollout,
    /// Channels (e.g. `staging`, `stable`) the release is offered on.
    pub channels: Vec<String>,
    #[serde(default)]
    pub withdrawn: bool,
}

/// Why a release exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Security,
    Bugfix,
    Feature,
}

/// How urgent a release is. Ordered from least to most urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// One payload of a release, installed into one slot class of one component. A release
/// of today has one `os` component with a `rootfs` image; later releases may carry
/// several components (application bundles, firmware) in the same list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Component this image belongs to (e.g. `os`).
    pub component: String,
    /// Slot class it is written to (e.g. `rootfs`, `boot`).
    pub slot_class: String,
    /// TUF target path of the (possibly compressed) payload; its signed length and
    /// hashes come from TUF targets metadata.
    pub target: String,
    pub format: ImageFormat,
    pub compression: Compression,
    /// Size of the payload after decompression.
    pub size: u64,
    /// Lowercase hex sha256 of the payload after decompression.
    pub sha256: String,
    /// Static deltas to this image from earlier releases' images (docs/delta.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<DeltaRef>,
    /// Chunk index and chunk store of this image, for dynamic deltas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<ChunksRef>,
}

/// A static delta: applies to the image whose sha256 (after decompression) is
/// `from_sha256`; `target` is the TUF target of the delta file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaRef {
    pub from_version: String,
    pub from_sha256: String,
    pub target: String,
}

/// The TUF targets of an image's chunk index and chunk store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunksRef {
    pub index: String,
    pub store: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// A block image written byte for byte.
    Raw,
    /// A tar archive unpacked into a file-system slot.
    Tar,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Zstd,
}

/// Phased rollout. Interpreting it (bucketing, time) is the policy room's job; the
/// manifest only carries and validates it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// Publisher stopped the rollout: devices that have not started must not start.
    #[serde(default)]
    pub paused: bool,
    /// Stages in order. Empty means: everyone on the channel, right away.
    #[serde(default)]
    pub stages: Vec<RolloutStage>,
    /// The publisher's guard gates this rollout: a device enters a stage only while a
    /// gate the guard signs into the targets metadata allows it (docs/fleet.md). Absent
    /// in older manifests, and left out when false, so unguarded manifests stay as they were.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub guarded: bool,
}

/// From `after_secs` past the publish time on, devices carrying one of `tags` and the
/// first `percent` per cent of all devices (by deterministic bucket) are eligible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutStage {
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub percent: u8,
    #[serde(default)]
    pub after_secs: u64,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Security => "security",
            Kind::Bugfix => "bugfix",
            Kind::Feature => "feature",
        }
    }
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "security" => Ok(Kind::Security),
            "bugfix" => Ok(Kind::Bugfix),
            "feature" => Ok(Kind::Feature),
            _ => Err(format!("unknown kind {s:?} (security, bugfix, feature)")),
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "low" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            _ => Err(format!(
                "unknown severity {s:?} (critical, high, medium, low)"
            )),
        }
    }
}

/// TUF target path of a release's manifest: `releases/<product>/<version>/manifest.json`.
pub fn release_target_path(product: &str, version: &Version) -> String {
    format!("releases/{product}/{version}/manifest.json")
}

/// Inverse of [`release_target_path`]: `(product, version)` when `path` names a release
/// manifest, `None` for any other target.
pub fn parse_release_target_path(path: &str) -> Option<(&str, Version)> {
    let rest = path.strip_prefix("releases/")?;
    let rest = rest.strip_suffix("/manifest.json")?;
    let (product, version) = rest.split_once('/')?;
    if product.is_empty() || version.contains('/') {
        return None;
    }
    Some((product, Version::parse(version).ok()?))
}

impl Manifest {
    /// Where this release's manifest lives in the repository.
    pub fn target_path(&self) -> String {
        release_target_path(&self.product, &self.version)
    }

    /// Sum of the uncompressed image sizes (what a device writes).
    pub fn installed_size(&self) -> u64 {
        self.images
            .iter()
            .fold(0u64, |a, i| a.saturating_add(i.size))
    }
}
