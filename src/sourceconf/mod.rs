//! The `[source]` section: where releases come from. `repository` (the default) is the
//! signed TUF repository of `[repository]`, for image-based devices; `apt` is the
//! system's own apt, for package-based servers (`[source.apt]`, `apt`).
//!
//! A room of its own below `config` (which merges the files and hands this section
//! here) and below `source` (which builds the chosen source from it), so both can use
//! it without running back up the layers.

mod apt;
mod pattern;

use serde::{Deserialize, Serialize};

pub use apt::{
    AptConfig, ChangelogSource, ConffilePolicy, OriginPattern, RawApt, RawSeverityRule,
    SeverityRule, Urgency,
};
pub use pattern::glob;

use crate::setting::InvalidSetting;

/// `[source] kind`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The signed TUF repository of `[repository]`.
    #[default]
    Repository,
    /// The system's apt: pending package upgrades as one patch set.
    Apt,
}

/// `[source]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub kind: Option<SourceKind>,
    pub apt: Option<RawApt>,
}

/// `[source]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SourceConfig {
    pub kind: SourceKind,
    pub apt: AptConfig,
}

impl SourceConfig {
    pub fn from_raw(raw: RawSource) -> Result<Self, InvalidSetting> {
        Ok(Self {
            kind: raw.kind.unwrap_or_default(),
            apt: AptConfig::from_raw(raw.apt.unwrap_or_default())?,
        })
    }
}
