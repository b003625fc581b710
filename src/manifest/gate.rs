//! The rollout gate: the guard's signed permission for a guarded release, kept in the
//! release manifest's TUF target `custom` object next to the release summary.
//!
//! Why targets metadata and not the manifest: the guard renews the gate every few
//! minutes. In `custom` a renewal re-signs targets (and snapshot, timestamp) but leaves
//! the manifest file, its hash and the CDN's copy alone, and a device reads the gate from
//! metadata it verifies at every check anyway. Whether a release is guarded at all is
//! the manifest's `rollout.guarded`, so stripping the gate cannot unleash a rollout: a
//! guarded release without a valid gate is frozen.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::parse::ManifestError;

/// Key under which the gate sits in the target's `custom` object.
pub const GATE_KEY: &str = "patchd_gate";

/// Devices may enter the release by stages `0..=open_to` (manifest order, counted
/// from 0) until `expires`; after that the rollout is frozen until the guard renews it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutGate {
    pub open_to: usize,
    pub expires: Timestamp,
}

impl RolloutGate {
    /// Read the gate out of a target's `custom` object (`Ok(None)`: none signed).
    pub fn from_custom(custom: Option<&serde_json::Value>) -> Result<Option<Self>, ManifestError> {
        match custom.and_then(|c| c.get(GATE_KEY)) {
            None => Ok(None),
            Some(v) => Ok(Some(serde_json::from_value(v.clone())?)),
        }
    }

    /// `custom` with this gate set (other keys kept).
    pub fn put_into(&self, custom: &mut serde_json::Value) {
        if !custom.is_object() {
            *custom = serde_json::Value::Object(serde_json::Map::new());
        }
        if let (Some(obj), Ok(v)) = (custom.as_object_mut(), serde_json::to_value(self)) {
            obj.insert(GATE_KEY.to_string(), v);
        }
    }

    /// Whether the gate still holds at `now`.
    pub fn is_open(&self, now: Timestamp) -> bool {
        now < self.expires
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_beside_the_summary_and_refuses_unknown_fields() {
        let g = RolloutGate {
            open_to: 2,
            expires: "2026-01-01T00:10:00Z".parse().unwrap(),
        };
        let mut custom = serde_json::json!({"patchd_release": {"x": 1}});
        g.put_into(&mut custom);
        assert_eq!(custom["patchd_release"]["x"], 1);
        assert_eq!(RolloutGate::from_custom(Some(&custom)).unwrap(), Some(g));
        assert_eq!(RolloutGate::from_custom(None).unwrap(), None);
        let bad = serde_json::json!({"patchd_gate": {"open_to": 1, "expires": "2026-01-01T00:00:00Z", "more": 1}});
        assert!(RolloutGate::from_custom(Some(&bad)).is_err());
        assert!(g.is_open("2026-01-01T00:09:59Z".parse().unwrap()));
        assert!(!g.is_open("2026-01-01T00:10:00Z".parse().unwrap()));
    }
}
