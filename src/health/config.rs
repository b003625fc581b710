//! `[health]` of the configuration: owned here, parsed and merged by `config`.

use std::time::Duration;

use serde::Serialize;

use super::{CommandCheck, HttpProbe};
use crate::duration;

/// `[health]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthConfig {
    pub commands: Vec<CommandCheck>,
    pub units: Vec<String>,
    pub http: Vec<HttpProbe>,
    /// Timeout of each check that does not set its own.
    #[serde(with = "duration")]
    pub check_timeout: Duration,
    /// All checks must pass within this time after boot, else roll back.
    #[serde(with = "duration")]
    pub deadline: Duration,
    /// Keep checking this long after commit (0 = off); a failure rolls back.
    #[serde(with = "duration")]
    pub probation: Duration,
    #[serde(with = "duration")]
    pub probation_interval: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            commands: Vec::new(),
            units: Vec::new(),
            http: Vec::new(),
            check_timeout: Duration::from_secs(60),
            deadline: Duration::from_secs(600),
            probation: Duration::ZERO,
            probation_interval: Duration::from_secs(3600),
        }
    }
}
