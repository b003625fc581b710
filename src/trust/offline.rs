//! `[offline]` of the configuration: how this device treats an offline bundle's
//! metadata. Owned here because it relaxes one trust rule (expiry) and nothing else;
//! `config` parses and merges the files and hands the section to
//! [`OfflineConfig::from_raw`].

use serde::{Deserialize, Serialize};

use crate::setting::InvalidSetting;

/// `[offline]` as written in one file (or merged): every key optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOffline {
    pub allow_expired: Option<bool>,
    pub max_bundle_size: Option<u64>,
}

/// `[offline]`: the device's policy for bundles brought on a medium.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OfflineConfig {
    /// Accept a bundle whose timestamp, snapshot or targets metadata has expired (a
    /// medium carried for weeks). Versions, rollback and the security floor are still
    /// checked; an expired root is still refused; every acceptance is audited.
    pub allow_expired: bool,
    /// Bytes the daemon copies from one bundle at most (metadata and images together).
    pub max_bundle_size: u64,
}

/// 64 GiB: larger than any image a slot takes, small enough to refuse a stream that
/// never ends before the disk fills.
pub const DEFAULT_MAX_BUNDLE_SIZE: u64 = 64 << 30;

impl Default for OfflineConfig {
    fn default() -> Self {
        Self {
            allow_expired: false,
            max_bundle_size: DEFAULT_MAX_BUNDLE_SIZE,
        }
    }
}

impl OfflineConfig {
    pub fn from_raw(raw: RawOffline) -> Result<Self, InvalidSetting> {
        let d = Self::default();
        let max_bundle_size = raw.max_bundle_size.unwrap_or(d.max_bundle_size);
        // Below this not even the metadata of a one-release bundle fits.
        if max_bundle_size < 1 << 20 {
            return Err(InvalidSetting::new(
                "offline.max_bundle_size",
                format!("{max_bundle_size} bytes is below the minimum of 1048576 (1 MiB)"),
            ));
        }
        Ok(Self {
            allow_expired: raw.allow_expired.unwrap_or(d.allow_expired),
            max_bundle_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_refuse_expired_metadata_and_bound_the_size() {
        let c = OfflineConfig::from_raw(RawOffline::default()).unwrap();
        assert!(!c.allow_expired);
        assert_eq!(c.max_bundle_size, DEFAULT_MAX_BUNDLE_SIZE);
        let c = OfflineConfig::from_raw(RawOffline {
            allow_expired: Some(true),
            max_bundle_size: Some(2 << 20),
        })
        .unwrap();
        assert!(c.allow_expired);
        assert_eq!(c.max_bundle_size, 2 << 20);
        let e = OfflineConfig::from_raw(RawOffline {
            allow_expired: None,
            max_bundle_size: Some(10),
        })
        .unwrap_err();
        assert_eq!(e.key, "offline.max_bundle_size");
    }
}
