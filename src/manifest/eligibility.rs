//! Manifest-side eligibility: does a release fit this device at all? (Whether and when
//! to install it — windows, rollout buckets, holds — is the policy room's question.)

use semver::Version;

use super::summary::ReleaseSummary;

/// What the device says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    pub product: String,
    /// The device's hardware-compatibility string, if it has one.
    pub hardware: Option<String>,
    pub channel: String,
    /// Version of the release running now (`None` on a device without one, e.g. first
    /// provisioning).
    pub running_version: Option<Version>,
    /// Highest committed `security_version`: the anti-rollback floor.
    pub security_floor: u64,
}

/// Why a release is not for this device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ineligible {
    #[error("release is for product {release:?}, device is {device:?}")]
    WrongProduct { release: String, device: String },
    #[error("release supports hardware {supported:?}, device is {device:?}")]
    Hardware {
        supported: Vec<String>,
        device: Option<String>,
    },
    #[error("release is not on channel {channel:?} (it is on {channels:?})")]
    NotOnChannel {
        channel: String,
        channels: Vec<String>,
    },
    #[error("release was withdrawn by the publisher")]
    Withdrawn,
    #[error("security version {release} is below the device's floor {floor}")]
    BelowSecurityFloor { release: u64, floor: u64 },
    #[error("release needs at least version {min} running, device runs {running:?}")]
    BelowMinVersion {
        min: Version,
        running: Option<Version>,
    },
    #[error("release {release} is not newer than the running {running}")]
    NotNewer { release: Version, running: Version },
}

/// Every reason `s` is not for `dev`; empty means eligible on the manifest side.
pub fn check(s: &ReleaseSummary, dev: &DeviceFacts) -> Vec<Ineligible> {
    let mut out = Vec::new();
    if s.product != dev.product {
        out.push(Ineligible::WrongProduct {
            release: s.product.clone(),
            device: dev.product.clone(),
        });
    }
    let hw_ok = s.hardware.is_empty()
        || dev
            .hardware
            .as_ref()
            .is_some_and(|h| s.hardware.iter().any(|x| x == h));
    if !hw_ok {
        out.push(Ineligible::Hardware {
            supported: s.hardware.clone(),
            device: dev.hardware.clone(),
        });
    }
    if !s.channels.iter().any(|c| *c == dev.channel) {
        out.push(Ineligible::NotOnChannel {
            channel: dev.channel.clone(),
            channels: s.channels.clone(),
        });
    }
    if s.withdrawn {
        out.push(Ineligible::Withdrawn);
    }
    if s.security_version < dev.security_floor {
        out.push(Ineligible::BelowSecurityFloor {
            release: s.security_version,
            floor: dev.security_floor,
        });
    }
    if let Some(min) = &s.min_version {
        if dev.running_version.as_ref().map_or(true, |r| r < min) {
            out.push(Ineligible::BelowMinVersion {
                min: min.clone(),
                running: dev.running_version.clone(),
            });
        }
    }
    if let Some(r) = &dev.running_version {
        if s.version <= *r {
            out.push(Ineligible::NotNewer {
                release: s.version.clone(),
                running: r.clone(),
            });
        }
    }
    out
}
