//! `[policy.inhibitors]` of the configuration: owned here, parsed and merged by `config`.

use std::time::Duration;

use serde::Serialize;

use crate::duration;

/// `[policy.inhibitors]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InhibitorConfig {
    /// Wait while users are logged in (logind sessions of class `user`).
    pub sessions: bool,
    /// Wait while a systemd inhibitor lock blocks shutdown.
    pub inhibitor_locks: bool,
    /// Wait while this command exits non-zero.
    pub command: Option<Vec<String>>,
    #[serde(with = "duration")]
    pub command_timeout: Duration,
    /// How long to wait before asking again.
    #[serde(with = "duration")]
    pub recheck: Duration,
}

impl Default for InhibitorConfig {
    fn default() -> Self {
        Self {
            sessions: true,
            inhibitor_locks: true,
            command: None,
            command_timeout: Duration::from_secs(30),
            recheck: Duration::from_secs(300),
        }
    }
}
