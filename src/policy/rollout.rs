//! Phased rollout: device-tag stages first, then percentages over time since publish.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Decision;

/// Publisher's switch for a release.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutState {
    #[default]
    Active,
    /// Devices that have not switched wait until the publisher resumes.
    Paused,
    /// Devices that have not switched never switch to this release.
    Withdrawn,
}

/// One rollout stage. A device is in the stage when it has one of `tags` (if any are
/// given) and its bucket is below `percent` (if given); a stage with neither is everyone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutStage {
    /// Time after publication when this stage opens (`"0s"`, `"24h"`, `"P2D"`).
    pub after: SignedDuration,
    #[serde(default)]
    pub tags: Vec<String>,
    /// 0–100; devices whose bucket is below it.
    #[serde(default)]
    pub percent: Option<u8>,
}

/// The rollout fields of a release manifest, as plain values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutPlan {
    pub published: Timestamp,
    #[serde(default)]
    pub stages: Vec<RolloutStage>,
    #[serde(default)]
    pub state: RolloutState,
}

/// The device's deterministic bucket in [0, 100) for a release: the first 8 bytes of
/// sha256(machine id, 0x00, release id) as a big-endian integer, mod 100. Stable for a
/// device and release, independent across releases, uniform over machine ids.
pub fn bucket(machine_id: &str, release_id: &str) -> u8 {
    let mut h = Sha256::new();
    h.update(machine_id.trim().as_bytes());
    h.update([0u8]);
    h.update(release_id.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(b) % 100) as u8
}

impl RolloutStage {
    pub fn includes(&self, device_tags: &[String], bucket: u8) -> bool {
        let tag_ok = self.tags.is_empty() || self.tags.iter().any(|t| device_tags.contains(t));
        let pct_ok = self.percent.map_or(true, |p| bucket < p);
        tag_ok && pct_ok
    }

    fn describe(&self) -> String {
        match (self.tags.is_empty(), self.percent) {
            (true, None) => "all devices".to_string(),
            (true, Some(p)) => format!("{p}% of devices"),
            (false, None) => format!("tags {}", self.tags.join(",")),
            (false, Some(p)) => format!("{p}% of tags {}", self.tags.join(",")),
        }
    }
}

impl RolloutPlan {
    /// When this device's stage opens (`None`: no stage includes it).
    pub fn device_start(&self, device_tags: &[String], bucket: u8) -> Option<Timestamp> {
        if self.stages.is_empty() {
            return Some(self.published);
        }
        self.stages
            .iter()
            .filter(|s| s.includes(device_tags, bucket))
            .filter_map(|s| self.published.checked_add(s.after).ok())
            .min()
    }

    /// May this device take the release at `now`? (Pause and withdrawal included.)
    pub fn decide(&self, now: Timestamp, device_tags: &[String], bucket: u8) -> Decision {
        match self.state {
            RolloutState::Withdrawn => {
                return Decision::blocked("release withdrawn by the publisher")
            }
            RolloutState::Paused => return Decision::wait("rollout paused by the publisher", None),
            RolloutState::Active => {}
        }
        match self.device_start(device_tags, bucket) {
            Some(t) if now >= t => {
                let stage = self
                    .stages
                    .iter()
                    .filter(|s| s.includes(device_tags, bucket))
                    .min_by_key(|s| s.after)
                    .map_or("all devices".to_string(), |s| s.describe());
                Decision::allowed(format!("in rollout stage ({stage}, bucket {bucket})"))
            }
            Some(t) => Decision::wait(
                format!("rollout stage for this device (bucket {bucket}) opens at {t}"),
                Some(t),
            ),
            None => Decision::wait(
                format!(
                    "not in any rollout stage yet (bucket {bucket}, tags [{}])",
                    device_tags.join(",")
                ),
                None,
            ),
        }
    }
}
