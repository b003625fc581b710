//! Phased rollout, interpreting the manifest's `rollout` fields: stages by device tag and
//! by percentage of devices, each opening `after_secs` after the release was published;
//! publisher pause and withdrawal.
//!
//! A stage includes a device that carries one of its `tags` **or** whose bucket is below
//! its `percent` (the manifest's definition). A device may switch once the earliest stage
//! that includes it has opened. No stages: everyone on the channel, right away.
//!
//! A guarded release (`rollout.guarded`) needs one more thing: a rollout gate, signed by
//! the publisher's guard into the targets metadata, that is unexpired and open up to the
//! device's stage. Without one the rollout is frozen where the last gate left it; devices
//! that already switched are not affected (this only decides entering).

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Decision;
pub use crate::manifest::RolloutStage;
use crate::manifest::{Manifest, RolloutGate};

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

/// The rollout fields of a release manifest, as plain values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutPlan {
    pub published: Timestamp,
    #[serde(default)]
    pub stages: Vec<RolloutStage>,
    #[serde(default)]
    pub state: RolloutState,
    /// The manifest says the guard gates this rollout.
    #[serde(default)]
    pub guarded: bool,
    /// The gate signed in the targets metadata, if any (only read when `guarded`).
    #[serde(default)]
    pub gate: Option<RolloutGate>,
}

/// sha256(machine id, 0x00, release id): the device's rollout hash for a release.
fn rollout_hash(machine_id: &str, release_id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(machine_id.trim().as_bytes());
    h.update([0u8]);
    h.update(release_id.as_bytes());
    h.finalize().into()
}

/// The device's deterministic bucket in [0, 100) for a release: the first 8 bytes of
/// sha256(machine id, 0x00, release id) as a big-endian integer, mod 100. Stable for a
/// device and release, independent across releases, uniform over machine ids.
pub fn bucket(machine_id: &str, release_id: &str) -> u8 {
    let d = rollout_hash(machine_id, release_id);
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(b) % 100) as u8
}

/// The device's staging delay in [0, `spread`) after its rollout stage opened, to the
/// second: bytes 8..16 of the same hash as [`bucket`], mod the spread. Stable for a
/// device and release (also across restarts), independent across releases, and
/// independent of the bucket — the devices a stage adds (a range of buckets) spread over
/// the whole interval, not over a slice of it.
pub fn stage_delay(machine_id: &str, release_id: &str, spread: SignedDuration) -> SignedDuration {
    let secs = u64::try_from(spread.as_secs()).unwrap_or(0);
    if secs == 0 {
        return SignedDuration::ZERO;
    }
    let d = rollout_hash(machine_id, release_id);
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[8..16]);
    let delay = u64::from_be_bytes(b) % secs;
    SignedDuration::from_secs(i64::try_from(delay).unwrap_or(0))
}

/// Does `stage` include a device with these tags and this bucket?
pub fn stage_includes(stage: &RolloutStage, device_tags: &[String], bucket: u8) -> bool {
    stage.tags.iter().any(|t| device_tags.contains(t)) || bucket < stage.percent
}

fn describe(stage: &RolloutStage) -> String {
    match (stage.tags.is_empty(), stage.percent) {
        (true, p) => format!("{p}% of devices"),
        (false, 0) => format!("tags {}", stage.tags.join(",")),
        (false, p) => format!("tags {} and {p}% of devices", stage.tags.join(",")),
    }
}

fn after(stage: &RolloutStage) -> SignedDuration {
    SignedDuration::from_secs(i64::try_from(stage.after_secs).unwrap_or(i64::MAX))
}

impl RolloutPlan {
    /// The plan a verified manifest carries.
    pub fn from_manifest(m: &Manifest) -> Self {
        Self {
            published: m.published,
            stages: m.rollout.stages.clone(),
            state: if m.withdrawn {
                RolloutState::Withdrawn
            } else if m.rollout.paused {
                RolloutState::Paused
            } else {
                RolloutState::Active
            },
            guarded: m.rollout.guarded,
            gate: None,
        }
    }

    /// The plan with the gate signed beside the manifest's target.
    pub fn with_gate(mut self, gate: Option<RolloutGate>) -> Self {
        self.gate = gate;
        self
    }

    /// The index (in manifest order, from 0) of the stage this device enters by: the
    /// first that includes it. No stages: everyone enters by stage 0. The `stage` label
    /// of the outcome metrics and the unit of the rollout gate.
    pub fn device_stage(&self, device_tags: &[String], bucket: u8) -> Option<usize> {
        if self.stages.is_empty() {
            return Some(0);
        }
        self.stages
            .iter()
            .position(|s| stage_includes(s, device_tags, bucket))
    }

    /// For a guarded release, why the gate does not let this device in at `now`
    /// (`None`: unguarded, or the gate allows its stage).
    pub fn gate_wait(
        &self,
        now: Timestamp,
        device_tags: &[String],
        bucket: u8,
    ) -> Option<Decision> {
        if !self.guarded {
            return None;
        }
        let stage = self.device_stage(device_tags, bucket)?;
        let reason = match self.gate {
            None => "guarded rollout has no rollout gate signed by the publisher's guard (frozen: no stage open)".to_string(),
            Some(g) if !g.is_open(now) => format!(
                "rollout gate expired at {} (frozen at stage {})",
                super::decision::whole_seconds(g.expires),
                g.open_to
            ),
            Some(g) if stage > g.open_to => format!(
                "rollout gate is open up to stage {} until {}; this device enters by stage {stage}",
                g.open_to,
                super::decision::whole_seconds(g.expires)
            ),
            Some(_) => return None,
        };
        Some(Decision::wait(reason, None))
    }

    /// When this device's stage opens (`None`: no stage includes it).
    pub fn device_start(&self, device_tags: &[String], bucket: u8) -> Option<Timestamp> {
        if self.stages.is_empty() {
            return Some(self.published);
        }
        self.stages
            .iter()
            .filter(|s| stage_includes(s, device_tags, bucket))
            .map(|s| {
                self.published
                    .checked_add(after(s))
                    .unwrap_or(Timestamp::MAX)
            })
            .min()
    }

    /// The name of the earliest stage that includes this device, as status says it:
    /// "the canary stage", "the 25% stage" (`None`: no stages, or none includes it).
    pub fn stage_name(&self, device_tags: &[String], bucket: u8) -> Option<String> {
        let s = self
            .stages
            .iter()
            .filter(|s| stage_includes(s, device_tags, bucket))
            .min_by_key(|s| s.after_secs)?;
        let mine: Vec<&str> = s
            .tags
            .iter()
            .filter(|t| device_tags.contains(t))
            .map(String::as_str)
            .collect();
        Some(if mine.is_empty() {
            format!("the {}% stage", s.percent)
        } else {
            format!("the {} stage", mine.join("/"))
        })
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
                    .filter(|s| stage_includes(s, device_tags, bucket))
                    .min_by_key(|s| s.after_secs)
                    .map_or("all devices".to_string(), describe);
                if let Some(wait) = self.gate_wait(now, device_tags, bucket) {
                    return wait;
                }
                let gate = match (self.guarded, self.gate) {
                    (true, Some(g)) => format!(
                        "; rollout gate open up to stage {} until {}",
                        g.open_to,
                        super::decision::whole_seconds(g.expires)
                    ),
                    _ => String::new(),
                };
                Decision::allowed(format!("in rollout stage ({stage}; bucket {bucket}){gate}"))
            }
            Some(t) => Decision::wait(
                format!(
                    "rollout stage for this device (bucket {bucket}) opens at {}",
                    super::decision::whole_seconds(t)
                ),
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
