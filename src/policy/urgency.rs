//! Urgency rules that map it to when a switch may happen.

use std::fmt;

use serde::{Deserialize, Serialize};

// Kind and severity are the manifest's own types (one categorization everywhere).
pub use crate::manifest::{Kind, Severity};

/// When a matching release may switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    /// As soon as it is staged, even outside maintenance windows.
    Immediate,
    /// In the next maintenance window (the default).
    Window,
    /// Only after an admin approved this release (then in a window).
    Approval,
}

impl fmt::Display for Urgency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Urgency::Immediate => "immediate",
            Urgency::Window => "window",
            Urgency::Approval => "approval",
        })
    }
}

/// `kind` and `min_severity` both optional (absent = any). First matching rule wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrgencyRule {
    #[serde(default)]
    pub kind: Option<Kind>,
    /// Matches this severity or higher.
    #[serde(default)]
    pub min_severity: Option<Severity>,
    pub action: Urgency,
}

impl UrgencyRule {
    pub fn matches(&self, kind: Kind, severity: Severity) -> bool {
        self.kind.map_or(true, |k| k == kind) && self.min_severity.map_or(true, |s| severity >= s)
    }
}

/// Shipped defaults: feature releases need approval; everything else waits for a window.
/// (Critical security releases go `immediate` only when the admin configures it.)
pub fn default_rules() -> Vec<UrgencyRule> {
    vec![UrgencyRule {
        kind: Some(Kind::Feature),
        min_severity: None,
        action: Urgency::Approval,
    }]
}

/// The urgency for a release; `Window` when no rule matches.
pub fn urgency_for(rules: &[UrgencyRule], kind: Kind, severity: Severity) -> Urgency {
    rules
        .iter()
        .find(|r| r.matches(kind, severity))
        .map_or(Urgency::Window, |r| r.action)
}
