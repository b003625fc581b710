//! Expired trusted metadata holding a release back: the switch decision waits
//! (`policy::WaitFor::Stale`) until a check renews the metadata; this file records each
//! such wait once in the audit log, not at every policy evaluation.

use jiff::Timestamp;

use super::{Actor, Runner};
use crate::policy::WaitFor;

/// The audit event of a release held back by expired metadata.
const STALE_EVENT: &str = "metadata_expired";

impl Runner {
    /// Audit the release the lifecycle is on when the decision waits for renewed
    /// metadata: once per release and expiry (a check that renews the metadata and a
    /// later expiry is a new occurrence).
    pub(crate) fn audit_stale_wait(&mut self) {
        let Some(version) = self.doc.lifecycle.release().map(|r| r.version.clone()) else {
            return;
        };
        // The wait's own wording, found once; nothing to audit unless it is this wait.
        let Some(why) = self
            .available
            .iter()
            .find(|a| a.version == version)
            .and_then(|a| a.next.as_ref())
            .filter(|o| o.waiting_for == Some(WaitFor::Stale))
            .map(|o| o.detail.clone())
        else {
            return;
        };
        let Some(until) = self
            .offered(&version)
            .and_then(|c| c.facts.vouched)
            .map(|v| v.until)
        else {
            return;
        };
        let key: (String, Timestamp) = (version, until);
        if self.stale_audited.as_ref() == Some(&key) {
            return;
        }
        tracing::warn!(release = %key.0, %why, "release held back: trusted metadata expired");
        let fields = [("expires", serde_json::Value::from(until.to_string()))];
        self.audit_with(STALE_EVENT, &Actor::Policy, Some(&why), None, None, &fields);
        self.stale_audited = Some(key);
    }
}
