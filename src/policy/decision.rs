//! The value every policy question answers with.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// A policy answer with a human reason (shown in status, inventory and the audit log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "lowercase")]
pub enum Decision {
    /// Go ahead; `reason` says which rule allowed it (window open, urgent, …).
    Allowed { reason: String },
    /// Not now; ask again at `until` when known (window opens, rollout stage starts, hold
    /// expires), or when an input changes.
    Wait {
        reason: String,
        until: Option<Timestamp>,
    },
    /// Not for this release on this device until an admin or the publisher changes
    /// something (withdrawn, hold pin, wrong channel, approval missing, clock invalid).
    Blocked { reason: String },
}

impl Decision {
    pub fn allowed(reason: impl Into<String>) -> Self {
        Decision::Allowed {
            reason: reason.into(),
        }
    }
    pub fn wait(reason: impl Into<String>, until: Option<Timestamp>) -> Self {
        Decision::Wait {
            reason: reason.into(),
            until,
        }
    }
    pub fn blocked(reason: impl Into<String>) -> Self {
        Decision::Blocked {
            reason: reason.into(),
        }
    }
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
    pub fn reason(&self) -> &str {
        match self {
            Decision::Allowed { reason }
            | Decision::Wait { reason, .. }
            | Decision::Blocked { reason } => reason,
        }
    }
}

/// A time as RFC 3339 to the second: reasons are read by people.
pub(crate) fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allowed { reason } => write!(f, "allowed: {reason}"),
            Decision::Wait {
                reason,
                until: Some(t),
            } => write!(f, "waiting until {}: {reason}", whole_seconds(*t)),
            Decision::Wait {
                reason,
                until: None,
            } => write!(f, "waiting: {reason}"),
            Decision::Blocked { reason } => write!(f, "blocked: {reason}"),
        }
    }
}
