//! Holds: documented local exceptions that stop updates, optionally up to a version.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::Decision;

/// One hold. The engine persists holds and audits their creation and expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hold {
    /// Why (shown everywhere status is shown).
    pub reason: String,
    /// Who set it (`uid:1000`, a user name, or `config`).
    pub by: String,
    pub created: Timestamp,
    /// The hold ends by itself at this time.
    #[serde(default)]
    pub until: Option<Timestamp>,
    /// With a pin, releases up to this version (semver) stay allowed; without, all are held.
    #[serde(default)]
    pub max_version: Option<semver::Version>,
}

impl Hold {
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.until.is_some_and(|u| now >= u)
    }

    /// Does this (unexpired) hold stop `version`?
    pub fn holds_back(&self, version: &semver::Version) -> bool {
        self.max_version.as_ref().is_none_or(|max| version > max)
    }

    pub fn describe(&self) -> String {
        let mut s = format!("hold by {}: {}", self.by, self.reason);
        if let Some(m) = &self.max_version {
            s.push_str(&format!(" (pinned to <= {m})"));
        }
        if let Some(u) = self.until {
            s.push_str(&format!(" (until {})", super::decision::whole_seconds(u)));
        }
        s
    }
}

/// Split holds into (still active, expired at `now`). The caller stores the first and
/// writes an audit record for each of the second.
pub fn split_expired(holds: Vec<Hold>, now: Timestamp) -> (Vec<Hold>, Vec<Hold>) {
    holds.into_iter().partition(|h| !h.is_expired(now))
}

/// Whether the holds let `version` through at `now`.
pub fn decide(holds: &[Hold], version: &semver::Version, now: Timestamp) -> Decision {
    let active: Vec<&Hold> = holds
        .iter()
        .filter(|h| !h.is_expired(now) && h.holds_back(version))
        .collect();
    if active.is_empty() {
        return Decision::allowed("no hold applies");
    }
    let reason = active
        .iter()
        .map(|h| h.describe())
        .collect::<Vec<_>>()
        .join("; ");
    // Only time releases a hold by itself; a hold with no expiry waits for an admin.
    let all_expire = active.iter().all(|h| h.until.is_some());
    if all_expire {
        let until = active.iter().filter_map(|h| h.until).max();
        Decision::wait(reason, until)
    } else {
        Decision::blocked(reason)
    }
}
