//! Manifest-side eligibility: does a release fit this device at all? This is the one
//! implementation; the switch decision (`policy::Policy::decide`) asks it for every
//! release, and [`super::discover`] for its stand-alone lookup. (Whether and when to
//! install it — windows, rollout buckets, holds — is the policy room's question.)

use semver::Version;

use super::summary::ReleaseSummary;

/// The device as a release's requirements see it: what it is (product, hardware,
/// channel) and what it runs (version, anti-rollback floor). Not `policy::DeviceFacts`,
/// which is the device's configured identity without what it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceProfile {
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
    #[error("{}", hardware_words(supported, device.as_deref()))]
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

fn hardware_words(supported: &[String], device: Option<&str>) -> String {
    let list = supported.join(", ");
    match device {
        Some(d) => format!("release is for hardware {list}; this device is {d}"),
        None => format!(
            "release is for hardware {list}; this device has no hardware id \
             (set [device] hardware)"
        ),
    }
}

/// Every reason `s` is not for `dev`; empty means eligible on the manifest side.
pub fn check(s: &ReleaseSummary, dev: &DeviceProfile) -> Vec<Ineligible> {
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
    if !s.channels.contains(&dev.channel) {
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
        if dev.running_version.as_ref().is_none_or(|r| r < min) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Kind, Severity};

    fn summary() -> ReleaseSummary {
        ReleaseSummary {
            product: "acme".into(),
            hardware: vec!["rev2".into()],
            version: "2.0.0".parse().unwrap(),
            security_version: 4,
            min_version: Some("1.5.0".parse().unwrap()),
            kind: Kind::Security,
            severity: Severity::Critical,
            cves: vec![],
            channels: vec!["stable".into()],
            withdrawn: false,
            paused: false,
            size: 1,
        }
    }

    fn dev() -> DeviceProfile {
        DeviceProfile {
            product: "acme".into(),
            hardware: Some("rev2".into()),
            channel: "stable".into(),
            running_version: Some("1.6.0".parse().unwrap()),
            security_floor: 4,
        }
    }

    #[test]
    fn eligible_when_everything_fits() {
        assert_eq!(check(&summary(), &dev()), vec![]);
    }

    #[test]
    fn every_reason_is_reported() {
        let mut s = summary();
        s.withdrawn = true;
        s.channels = vec!["staging".into()];
        s.hardware = vec!["rev9".into()];
        let mut d = dev();
        d.product = "other".into();
        d.running_version = Some("2.0.0".parse().unwrap());
        d.security_floor = 5;
        let why = check(&s, &d);
        assert_eq!(why.len(), 6, "{why:?}");
        assert!(why.contains(&Ineligible::Withdrawn));
        assert!(why.contains(&Ineligible::BelowSecurityFloor {
            release: 4,
            floor: 5
        }));
    }

    #[test]
    fn hardware_mismatch_is_worded_for_people() {
        let mut s = summary();
        s.hardware = vec!["rev9".into(), "rev10".into()];
        let mut d = dev();
        let why = check(&s, &d)[0].to_string();
        assert_eq!(
            why,
            "release is for hardware rev9, rev10; this device is rev2"
        );
        d.hardware = None;
        let why = check(&s, &d)[0].to_string();
        assert!(
            why.contains("has no hardware id (set [device] hardware)"),
            "{why}"
        );
        assert!(!why.contains("None") && !why.contains('"'), "{why}");
    }

    #[test]
    fn unknown_running_version_fails_min_version_but_not_newer() {
        let mut d = dev();
        d.running_version = None;
        let why = check(&summary(), &d);
        assert!(matches!(
            why.as_slice(),
            [Ineligible::BelowMinVersion { .. }]
        ));
        let mut s = summary();
        s.min_version = None;
        assert_eq!(check(&s, &d), vec![]);
    }

    #[test]
    fn no_hardware_list_means_any_hardware() {
        let mut s = summary();
        s.hardware.clear();
        let mut d = dev();
        d.hardware = None;
        assert_eq!(check(&s, &d), vec![]);
    }
}
