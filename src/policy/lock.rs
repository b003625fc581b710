//! The external reboot lock: one more input to the switch decision, for a fleet that
//! lets only so many devices of a group reboot at a time (etcd / FleetLock reboot
//! slots). Nothing acquires a lock yet; the engine passes [`LockState::NotConfigured`]
//! until a lock client exists, and [`super::Policy::decide`] already honours the other
//! states, so the client only has to report what it found.

use jiff::Timestamp;

/// What the external reboot lock says about this device right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LockState {
    /// No external lock is configured: nothing to wait for.
    #[default]
    NotConfigured,
    /// This device holds a reboot slot: the reboot may go ahead.
    Held,
    /// The slot is not ours (others hold every slot of `group`, or the lock service did
    /// not answer): the switch waits and asks again at `retry_at` when known.
    Waiting {
        group: String,
        /// Who holds the slots, when the service says.
        holders: Vec<String>,
        retry_at: Option<Timestamp>,
    },
}

impl LockState {
    /// Why the lock holds a switch back, if it does.
    pub fn blocker(&self) -> Option<String> {
        match self {
            LockState::NotConfigured | LockState::Held => None,
            LockState::Waiting {
                group,
                holders,
                retry_at,
            } => {
                let mut s = format!("waiting for a reboot slot in group {group}");
                if !holders.is_empty() {
                    s.push_str(&format!(" (held by {})", holders.join(", ")));
                }
                if let Some(t) = retry_at {
                    s.push_str(&format!("; asking again at {t}"));
                }
                Some(s)
            }
        }
    }
}
