//! The audit events of component steps (one record per step; listed in
//! `audit::events`), and how a step becomes an audit entry.

use super::apply::StepEvent;
use crate::audit::{Actor, Entry};

pub const SKIPPED_EVENT: &str = "component_skipped";
pub const STAGED_EVENT: &str = "component_staged";
pub const SWITCHED_EVENT: &str = "component_switched";
pub const HEALTH_FAILED_EVENT: &str = "component_health_failed";
pub const FAILED_EVENT: &str = "component_failed";
pub const ROLLED_BACK_EVENT: &str = "component_rolled_back";
pub const ROLLBACK_FAILED_EVENT: &str = "component_rollback_failed";
pub const NOT_ROLLED_BACK_EVENT: &str = "component_not_rolled_back";
pub const RECONCILED_EVENT: &str = "component_reconciled";
pub const COMMITTED_EVENT: &str = "component_committed";

impl StepEvent {
    /// The audit entry of this step: its release, and the component, its version and
    /// the step's detail as fields.
    pub fn entry(&self) -> Entry {
        Entry::new(self.event, Actor::Daemon, self.detail.as_str())
            .release(self.release.as_str())
            .field("component", self.component.as_str())
            .field("component_version", self.version.as_str())
    }
}
