//! [`WhyNot`]: one reason a release is not going in now, as status, `list`, the audit log
//! and refusals show it. Every reason comes out of [`super::Policy::decide`].

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Decision;

/// Why a release is not going to be installed (or switched to) now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum WhyNot {
    /// The timing rules' answer (window, rollout stage, pause/withdrawal, hold,
    /// urgency/approval, clock sanity), with its reason.
    Policy { decision: Decision },
    /// Below the device's anti-rollback floor.
    BelowSecurityFloor { security_version: u64, floor: u64 },
    /// Failed on this device before; never retried automatically.
    FailedHere { reason: String },
    /// Not newer than what runs now.
    NotNewer { current: String },
    /// A reboot inhibitor is active.
    RebootInhibited { by: String },
    /// The external reboot lock (a fleet's reboot slots) is not ours yet.
    RebootLock { detail: String },
    /// The release does not fit this device (product, hardware, channel, withdrawn,
    /// minimum version), or its manifest could not be verified.
    Manifest { detail: String },
}

impl WhyNot {
    /// A reason of fit: the release is not for this device as it is (not newer, failed
    /// here, below the floor, product, hardware, channel, withdrawn, its manifest).
    pub fn is_fit(&self) -> bool {
        matches!(
            self,
            WhyNot::BelowSecurityFloor { .. }
                | WhyNot::FailedHere { .. }
                | WhyNot::NotNewer { .. }
                | WhyNot::Manifest { .. }
        )
    }

    /// Reasons that also stop staging: all but the timing rules' answer (asked
    /// separately for staging) and what only stops the reboot.
    pub fn blocks_staging(&self) -> bool {
        !matches!(
            self,
            WhyNot::Policy { .. } | WhyNot::RebootInhibited { .. } | WhyNot::RebootLock { .. }
        )
    }
}

impl fmt::Display for WhyNot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WhyNot::Policy { decision } => write!(f, "{decision}"),
            WhyNot::BelowSecurityFloor {
                security_version,
                floor,
            } => write!(
                f,
                "security version {security_version} is below the device floor {floor}"
            ),
            WhyNot::FailedHere { reason } => write!(f, "failed on this device before: {reason}"),
            WhyNot::NotNewer { current } => write!(f, "not newer than the running {current}"),
            WhyNot::RebootInhibited { by } => write!(f, "reboot inhibited by {by}"),
            WhyNot::RebootLock { detail } => write!(f, "reboot lock: {detail}"),
            WhyNot::Manifest { detail } => f.write_str(detail),
        }
    }
}
