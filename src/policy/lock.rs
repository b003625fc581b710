//! The external reboot lock: one more input to the switch decision, for a fleet that
//! lets only so many devices of a group reboot at a time (etcd / FleetLock reboot
//! slots). The engine asks the lock only once every other input allows the switch, and
//! reports here what it found; [`super::Policy::decide`] turns that into a reason.

use jiff::Timestamp;

/// What the external reboot lock says about this device right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LockState {
    /// No external lock is configured (or not asked yet): nothing to wait for.
    #[default]
    NotConfigured,
    /// This device holds a reboot slot of `group`: the reboot may go ahead.
    Held { group: String },
    /// Others hold every slot of `group`: the switch waits and asks again at
    /// `retry_at`.
    Waiting {
        group: String,
        /// Slots of the group, when the service says.
        slots: Option<u32>,
        /// Who holds the slots, when the service says.
        holders: Vec<String>,
        /// The service's own words for the refusal (FleetLock's `kind: value`).
        said: Option<String>,
        retry_at: Option<Timestamp>,
    },
    /// The lock service did not answer. With `waits` (the fail-safe default) the device
    /// stays staged and does not reboot; without, it reboots without a slot.
    Unreachable {
        group: String,
        detail: String,
        waits: bool,
        retry_at: Option<Timestamp>,
    },
    /// This device keeps its slot of `group` because its update to `version` failed:
    /// the group stays paused (and so does this device) until an operator releases it.
    Kept {
        group: String,
        version: String,
        reason: String,
    },
}

impl LockState {
    /// When the lock is asked again, if it is waited for.
    pub fn retry_at(&self) -> Option<Timestamp> {
        match self {
            LockState::Waiting { retry_at, .. } | LockState::Unreachable { retry_at, .. } => {
                *retry_at
            }
            _ => None,
        }
    }

    /// Why the lock holds a switch back, if it does.
    pub fn blocker(&self) -> Option<String> {
        match self {
            LockState::NotConfigured | LockState::Held { .. } => None,
            LockState::Unreachable { waits: false, .. } => None,
            LockState::Waiting {
                group,
                slots,
                holders,
                said,
                ..
            } => {
                let mut s = format!("waiting for a reboot slot in group {group}");
                let taken = match (slots, holders.is_empty()) {
                    (Some(n), false) => Some(format!(
                        "{} of {n} taken by {}",
                        holders.len(),
                        holders.join(", ")
                    )),
                    (None, false) => Some(format!("taken by {}", holders.join(", "))),
                    (Some(n), true) => Some(format!("all {n} taken")),
                    (None, true) => said.as_ref().map(|w| format!("the lock service says: {w}")),
                };
                if let Some(t) = taken {
                    s.push_str(&format!(" ({t})"));
                }
                Some(s)
            }
            LockState::Unreachable { group, detail, .. } => Some(format!(
                "the reboot lock of group {group} cannot be reached ({detail}); staged, not \
                 rebooting without a slot"
            )),
            LockState::Kept {
                group,
                version,
                reason,
            } => Some(format!(
                "this device keeps its reboot slot in group {group} because {version} failed \
                 ({reason}), so the group waits for an operator: patchctl fleet release"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_names_the_group_the_count_and_the_holders() {
        let w = LockState::Waiting {
            group: "db-eu1".into(),
            slots: Some(2),
            holders: vec!["a".into(), "b".into()],
            said: None,
            retry_at: None,
        };
        assert_eq!(
            w.blocker().unwrap(),
            "waiting for a reboot slot in group db-eu1 (2 of 2 taken by a, b)"
        );
        let said = LockState::Waiting {
            group: "g".into(),
            slots: None,
            holders: vec![],
            said: Some("failed_lock: all 2 slots taken".into()),
            retry_at: None,
        };
        assert!(said.blocker().unwrap().contains("says: failed_lock"));
        let down = |waits| LockState::Unreachable {
            group: "g".into(),
            detail: "connection refused".into(),
            waits,
            retry_at: None,
        };
        assert!(down(true).blocker().unwrap().contains("not rebooting"));
        assert_eq!(down(false).blocker(), None);
    }
}
