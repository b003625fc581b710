//! Policy: when may a release be staged and when may the device switch to it.
//!
//! Every question is a pure function of plain values (no I/O except reboot inhibitors)
//! and answers with a [`Decision`] carrying a human reason:
//!
//! ```no_run
//! use patchd::policy::*;
//! # fn f(now: jiff::Timestamp) -> Result<(), PolicyError> {
//! let policy = Policy {
//!     schedule: Schedule::parse("Europe/Berlin", &["Mon-Fri 01:00-03:00", "Sat,Sun 02:00-06:00"])?,
//!     urgency: default_rules(),
//!     stage_outside_windows: true,
//! };
//! let device = DeviceFacts { machine_id: "0123…".into(), channel: "stable".into(), tags: vec!["canary".into()] };
//! let release = ReleaseFacts {
//!     id: "appliance/2.0.0".into(), version: "2.0.0".into(),
//!     kind: Kind::Security, severity: Severity::High,
//!     channels: vec!["stable".into()], rollout: None,
//! };
//! let d = policy.may_switch(now, &device, &release, &[], false);
//! println!("{d}"); // e.g. "waiting until 2026-11-28T01:00:00Z: outside maintenance windows …"
//! # Ok(()) }
//! ```
//!
//! Rooms: [`window`] (maintenance windows, DST-correct), [`rollout`] (stages, buckets,
//! pause/withdraw), [`holds`], [`urgency`] (kind/severity → immediate/window/approval),
//! [`inhibit`] (reboot inhibitors: logind sessions and inhibitor locks over D-Bus, a
//! command). The engine owns persistence (holds, approvals) and acts on the decisions.
//!
//! Order of checks for a switch (the first one that is not `Allowed` is the answer):
//! clock sanity → channel → publisher pause/withdraw → holds → rollout stage → urgency
//! (approval) → maintenance window (skipped for `immediate`). Staging uses the same order
//! but ignores approval and, when `stage_outside_windows` (default), the window.
//! Reboot inhibitors are asked separately, right before the reboot ([`inhibit`]).

mod config;
pub use config::{InhibitorConfig, PolicyConfig, RawInhibitors, RawPolicy};
pub mod decision;
pub mod holds;
pub mod inhibit;
pub mod rollout;
pub mod urgency;
pub mod window;

pub use decision::Decision;
pub use holds::Hold;
pub use rollout::{bucket, stage_includes, RolloutPlan, RolloutStage, RolloutState};
pub use urgency::{default_rules, urgency_for, Kind, Severity, Urgency, UrgencyRule};
pub use window::{time_zone, Schedule, Window};

use jiff::Timestamp;

use crate::manifest::Manifest;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("maintenance window {window:?}: {why}")]
    BadWindow { window: String, why: String },
    #[error("time zone {name:?}: {why}")]
    BadTimeZone { name: String, why: String },
}

/// Earliest wall clock we believe (before this the clock is unset or its battery died).
pub const CLOCK_MIN: Timestamp = Timestamp::constant(1_704_067_200, 0); // 2024-01-01T00:00:00Z
/// Latest wall clock we believe.
pub const CLOCK_MAX: Timestamp = Timestamp::constant(7_258_118_400, 0); // 2200-01-01T00:00:00Z

/// Refuse time-based decisions on an implausible clock: a device that booted with its
/// clock at 1970 would otherwise see every window and rollout stage wrongly, and one in
/// the far future would expire every hold.
pub fn check_clock(now: Timestamp) -> Result<(), Decision> {
    if now < CLOCK_MIN {
        Err(Decision::blocked(format!(
            "system clock reads {now}, before {CLOCK_MIN}: not trusting it for windows, rollout or holds"
        )))
    } else if now >= CLOCK_MAX {
        Err(Decision::blocked(format!(
            "system clock reads {now}, after {CLOCK_MAX}: not trusting it for windows, rollout or holds"
        )))
    } else {
        Ok(())
    }
}

/// What policy needs to know about the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    pub machine_id: String,
    pub channel: String,
    pub tags: Vec<String>,
}

/// What policy needs to know about a release (taken from its verified manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseFacts {
    /// Stable release identity used for bucketing (e.g. `product/version`).
    pub id: String,
    pub version: String,
    pub kind: Kind,
    pub severity: Severity,
    /// Channels the release is published in (empty = any channel).
    pub channels: Vec<String>,
    pub rollout: Option<RolloutPlan>,
}

/// The device's policy settings (built from `config`).
#[derive(Debug, Clone)]
pub struct Policy {
    pub schedule: Schedule,
    pub urgency: Vec<UrgencyRule>,
    /// Download and stage outside maintenance windows (default true).
    pub stage_outside_windows: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            schedule: Schedule::always(),
            urgency: default_rules(),
            stage_outside_windows: true,
        }
    }
}

fn channel_decision(device: &DeviceFacts, release: &ReleaseFacts) -> Decision {
    if release.channels.is_empty() || release.channels.contains(&device.channel) {
        Decision::allowed("channel matches")
    } else {
        Decision::blocked(format!(
            "release is in channel(s) {}, device follows {}",
            release.channels.join(","),
            device.channel
        ))
    }
}

impl ReleaseFacts {
    /// Release id used for bucketing: `product/version`.
    pub fn release_id(m: &Manifest) -> String {
        format!("{}/{}", m.product, m.version)
    }

    /// The policy view of a verified manifest.
    pub fn from_manifest(m: &Manifest) -> Self {
        Self {
            id: Self::release_id(m),
            version: m.version.to_string(),
            kind: m.kind,
            severity: m.severity,
            channels: m.channels.clone(),
            rollout: Some(RolloutPlan::from_manifest(m)),
        }
    }
}

impl Policy {
    /// Checks shared by staging and switching; `Ok` carries the rollout reason.
    fn common(
        &self,
        now: Timestamp,
        device: &DeviceFacts,
        release: &ReleaseFacts,
        holds: &[Hold],
    ) -> Result<String, Decision> {
        check_clock(now)?;
        let c = channel_decision(device, release);
        if !c.is_allowed() {
            return Err(c);
        }
        let h = holds::decide(holds, &release.version, now);
        let rollout = match &release.rollout {
            None => Decision::allowed("no staged rollout"),
            Some(plan) => plan.decide(now, &device.tags, bucket(&device.machine_id, &release.id)),
        };
        // Withdrawal beats a hold: it is final for this release.
        if matches!(rollout, Decision::Blocked { .. }) {
            return Err(rollout);
        }
        if !h.is_allowed() {
            return Err(h);
        }
        match rollout {
            Decision::Allowed { reason } => Ok(reason),
            other => Err(other),
        }
    }

    /// May the release be downloaded and staged into the inactive slot now?
    pub fn may_stage(
        &self,
        now: Timestamp,
        device: &DeviceFacts,
        release: &ReleaseFacts,
        holds: &[Hold],
    ) -> Decision {
        let rollout = match self.common(now, device, release, holds) {
            Ok(r) => r,
            Err(d) => return d,
        };
        if self.stage_outside_windows || self.schedule.is_open(now) {
            return Decision::allowed(format!("staging allowed; {rollout}"));
        }
        self.window_wait(now, "staging only inside maintenance windows")
    }

    /// May the device switch to (and reboot into) the staged release now? `approved`:
    /// an admin approved this release (needed when its urgency is `approval`).
    /// Reboot inhibitors are checked separately, right before rebooting.
    pub fn may_switch(
        &self,
        now: Timestamp,
        device: &DeviceFacts,
        release: &ReleaseFacts,
        holds: &[Hold],
        approved: bool,
    ) -> Decision {
        let rollout = match self.common(now, device, release, holds) {
            Ok(r) => r,
            Err(d) => return d,
        };
        let urgency = urgency_for(&self.urgency, release.kind, release.severity);
        let what = format!("{} {}", release.severity, release.kind);
        match urgency {
            Urgency::Immediate => {
                return Decision::allowed(format!(
                    "{what} release: urgency rule says immediate; {rollout}"
                ))
            }
            Urgency::Approval if !approved => {
                return Decision::blocked(format!(
                    "{what} release needs admin approval (urgency rule), none given"
                ))
            }
            Urgency::Approval | Urgency::Window => {}
        }
        if self.schedule.is_always_open() {
            return Decision::allowed(format!("no maintenance windows configured; {rollout}"));
        }
        if let Some(w) = self.schedule.open_window(now) {
            return Decision::allowed(format!("maintenance window {w} is open; {rollout}"));
        }
        self.window_wait(
            now,
            &format!("{what} release waits for a maintenance window"),
        )
    }

    fn window_wait(&self, now: Timestamp, why: &str) -> Decision {
        match self.schedule.next_open(now) {
            Some(t) => Decision::wait(
                format!("{why}; next window opens at {t} ({})", self.schedule),
                Some(t),
            ),
            None => Decision::wait(format!("{why}; no window opens ({})", self.schedule), None),
        }
    }
}
