//! Policy: the one switch decision. May a release be staged now, may the device switch
//! to it now, and every reason why not.
//!
//! [`Policy::decide`] is the entry point every caller uses (the engine's switch, `check`,
//! `list`, status and the demo): it takes the [`Facts`] of one release (categorization
//! and rollout from the signed summary and manifest, device facts, the running version
//! and floor, holds, approval, inhibitors, the external reboot lock) and returns a
//! [`Verdict`] with all reasons, as [`WhyNot`] values:
//!
//! ```no_run
//! use patchd::policy::*;
//! # fn f(now: jiff::Timestamp, release: ReleaseFacts) -> Result<(), PolicyError> {
//! let policy = Policy {
//!     schedule: Schedule::parse("Europe/Berlin", &["Mon-Fri 01:00-03:00", "Sat,Sun 02:00-06:00"])?,
//!     urgency: default_rules(),
//!     stage_outside_windows: true,
//!     stage_spread: DEFAULT_STAGE_SPREAD,
//! };
//! let device = DeviceFacts {
//!     machine_id: "0123…".into(), product: "appliance".into(), hardware: None,
//!     channel: "stable".into(), tags: vec!["canary".into()],
//! };
//! let running: semver::Version = "1.0.0".parse().unwrap();
//! let v = policy.decide(&Facts {
//!     now, device: &device, release: &release, running: Some(&running),
//!     security_floor: 0, floor_overridden: false, failed_here: None, manifest_problem: None,
//!     holds: &[], approved: false, force: false, inhibitors: &[], lock: &LockState::NotConfigured,
//! });
//! for why in &v.switch { println!("{why}"); } // e.g. "waiting until 2026-11-28T01:00:00Z: …"
//! # Ok(()) }
//! ```
//!
//! Eligibility (product, hardware, channel, withdrawn, minimum version, floor, newer) is
//! the manifest's own rule (`manifest::check_eligibility`) and is asked here, once per
//! decision. The timing rules behind the decision are pure functions of plain values:
//! [`window`] (maintenance windows, DST-correct), [`rollout`] (stages, buckets,
//! pause/withdraw), [`holds`], [`urgency`] (kind/severity → immediate/window/approval).
//! [`inhibit`] asks the system for reboot inhibitors (logind sessions and inhibitor locks
//! over D-Bus, a command) and [`lock`] is the external reboot lock; both are inputs the
//! caller gathers right before a switch. The engine owns persistence (holds, approvals).
//!
//! Order of the timing rules for a switch (the first one that is not `Allowed` is the
//! answer): clock sanity → withdrawal → expired metadata (the trusted metadata the
//! release's facts came from) → holds → publisher pause → rollout stage → urgency
//! (approval) → maintenance window (skipped for `immediate`). Staging uses the same order
//! but ignores approval and, when `stage_outside_windows` (default), the window.

mod config;
pub use config::{InhibitorConfig, PolicyConfig, RawInhibitors, RawPolicy};
mod decide;
pub mod decision;
pub mod holds;
pub mod inhibit;
pub mod lock;
pub mod next;
mod reason;
pub mod rollout;
pub mod urgency;
pub mod window;

pub use decide::{Facts, Verdict};
pub use decision::Decision;
pub use holds::Hold;
pub use lock::LockState;
pub use next::{Opportunity, Standing, WaitFor};
pub use reason::WhyNot;
pub use rollout::{bucket, stage_delay, stage_includes, RolloutPlan, RolloutStage, RolloutState};
pub use urgency::{default_rules, urgency_for, Kind, Severity, Urgency, UrgencyRule};
pub use window::{time_zone, Schedule, Window};

use jiff::Timestamp;
use semver::Version;

use crate::manifest::{Manifest, ReleaseSummary};

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

/// What policy needs to know about the device: who it is for eligibility (product,
/// hardware, channel) and for rollout bucketing (machine id, tags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    pub machine_id: String,
    pub product: String,
    /// The device's hardware-compatibility id, if it has one.
    pub hardware: Option<String>,
    pub channel: String,
    pub tags: Vec<String>,
}

/// What policy needs to know about a release: its signed summary (categorization,
/// version, channels, hardware, floor) and, once its manifest was verified, its rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseFacts {
    /// Stable release identity used for bucketing (`product/version`).
    pub id: String,
    pub summary: ReleaseSummary,
    pub rollout: Option<RolloutPlan>,
    /// How long the signed metadata that vouched for these facts stays valid (`None`:
    /// not enforced, as for an offline bundle under `[offline] allow_expired`).
    pub vouched: Option<Vouched>,
    /// Since when this device knows of the release (the engine's memory of its checks;
    /// `None`: not known, which never delays staging). Staging is spread only when the
    /// device knew of the release before its stage opened.
    pub known_since: Option<Timestamp>,
}

/// The validity of the trusted metadata a check read a release's facts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vouched {
    /// The earliest expiry of the roles that vouched for the release (root, timestamp,
    /// snapshot and the targets roles that listed it).
    pub until: Timestamp,
    /// When the check that verified that metadata ran.
    pub checked: Timestamp,
}

/// The device's policy settings (built from `config`).
#[derive(Debug, Clone)]
pub struct Policy {
    pub schedule: Schedule,
    pub urgency: Vec<UrgencyRule>,
    /// Download and stage outside maintenance windows (default true).
    pub stage_outside_windows: bool,
    /// When a rollout stage opens by time, each device it adds starts staging after its
    /// own delay in [0, this) ([`stage_delay`]), so a stage's downloads do not all
    /// start in the same minute (default 30 min; zero: at once).
    pub stage_spread: jiff::SignedDuration,
}

/// The default of [`Policy::stage_spread`] (`[policy] stage_spread`).
pub const DEFAULT_STAGE_SPREAD: jiff::SignedDuration = jiff::SignedDuration::from_secs(30 * 60);

impl Default for Policy {
    fn default() -> Self {
        Self {
            schedule: Schedule::always(),
            urgency: default_rules(),
            stage_outside_windows: true,
            stage_spread: DEFAULT_STAGE_SPREAD,
        }
    }
}

impl ReleaseFacts {
    /// The facts of a release from its signed summary and, when known, rollout plan.
    pub fn new(summary: ReleaseSummary, rollout: Option<RolloutPlan>) -> Self {
        Self {
            id: format!("{}/{}", summary.product, summary.version),
            summary,
            rollout,
            vouched: None,
            known_since: None,
        }
    }

    /// The facts with the time this device first learned of the release.
    pub fn with_known_since(mut self, t: Option<Timestamp>) -> Self {
        self.known_since = t;
        self
    }

    /// The facts with the validity of the metadata that vouched for them.
    pub fn with_vouched(mut self, vouched: Option<Vouched>) -> Self {
        self.vouched = vouched;
        self
    }

    /// Release id used for bucketing: `product/version`.
    pub fn release_id(m: &Manifest) -> String {
        format!("{}/{}", m.product, m.version)
    }

    /// The policy view of a verified manifest.
    pub fn from_manifest(m: &Manifest) -> Self {
        Self::new(ReleaseSummary::of(m), Some(RolloutPlan::from_manifest(m)))
    }

    pub fn version(&self) -> &Version {
        &self.summary.version
    }
}

/// The wait for a check that renews expired metadata (no end by itself).
fn stale(v: Vouched) -> Decision {
    Decision::wait(
        format!(
            "the repository's signed metadata expired at {} (last successful check at {}); waiting for a check to renew it",
            decision::whole_seconds(v.until),
            decision::whole_seconds(v.checked)
        ),
        None,
    )
}

impl Policy {
    /// Timing rules shared by staging and switching; `Ok` carries the rollout reason,
    /// `Err` the answer and which rule gave it.
    fn common(
        &self,
        now: Timestamp,
        device: &DeviceFacts,
        release: &ReleaseFacts,
        holds: &[Hold],
    ) -> Result<String, (Decision, WaitFor)> {
        check_clock(now).map_err(|d| (d, WaitFor::Clock))?;
        let h = holds::decide(holds, release.version(), now);
        let rollout = match &release.rollout {
            None => Decision::allowed("no staged rollout"),
            Some(plan) => plan.decide(now, &device.tags, bucket(&device.machine_id, &release.id)),
        };
        // Withdrawal beats a hold: it is final for this release.
        if matches!(rollout, Decision::Blocked { .. }) {
            return Err((rollout, WaitFor::Withdrawn));
        }
        // Expired metadata vouches for nothing: the publisher may have paused, withdrawn
        // or closed the gate since (TUF's freeze attack, when someone blocks the repository).
        if let Some(v) = release.vouched.filter(|v| now >= v.until) {
            return Err((stale(v), WaitFor::Stale));
        }
        if !h.is_allowed() {
            return Err((h, WaitFor::Hold));
        }
        let paused = release
            .rollout
            .as_ref()
            .is_some_and(|p| p.state == RolloutState::Paused);
        // The gate's answer, not the stage schedule's (that one says when to ask again).
        let gated = release.rollout.as_ref().is_some_and(|p| {
            p.gate_wait(now, &device.tags, bucket(&device.machine_id, &release.id))
                .is_some_and(|g| g == rollout)
        });
        match rollout {
            Decision::Allowed { reason } => Ok(reason),
            other if paused => Err((other, WaitFor::Paused)),
            other if gated => Err((other, WaitFor::Gate)),
            other => Err((other, WaitFor::Rollout)),
        }
    }

    /// The timing rules for staging (the release's fit is [`Policy::decide`]'s part):
    /// may it be downloaded and staged into the inactive slot now?
    pub fn may_stage(
        &self,
        now: Timestamp,
        device: &DeviceFacts,
        release: &ReleaseFacts,
        holds: &[Hold],
    ) -> Decision {
        let rollout = match self.common(now, device, release, holds) {
            Ok(r) => r,
            Err((d, _)) => return d,
        };
        if let Some(start) = self.stage_start(device, release).filter(|s| now < *s) {
            return Decision::wait(
                format!(
                    "staging starts at {} (spread over {} after this device's rollout stage opened)",
                    decision::whole_seconds(start),
                    crate::duration::format(&self.stage_spread.unsigned_abs())
                ),
                Some(start),
            );
        }
        if self.stage_outside_windows || self.schedule.is_open(now) {
            return Decision::allowed(format!("staging allowed; {rollout}"));
        }
        self.window_wait(now, "staging only inside maintenance windows")
    }

    /// When this device starts staging `release` if its rollout stage opened by time
    /// while it already knew of the release: the opening plus its [`stage_delay`].
    /// `None`: no spread (no stages, paused or withdrawn, not in any stage, or the device
    /// learned of the release only after its stage had opened — its check was jittered).
    pub fn stage_start(&self, device: &DeviceFacts, release: &ReleaseFacts) -> Option<Timestamp> {
        let plan = release.rollout.as_ref()?;
        if plan.state != RolloutState::Active || self.stage_spread.is_zero() {
            return None;
        }
        let b = bucket(&device.machine_id, &release.id);
        let opened = plan.device_start(&device.tags, b)?;
        if release.known_since.is_none_or(|k| k >= opened) {
            return None;
        }
        let delay = stage_delay(&device.machine_id, &release.id, self.stage_spread);
        opened.checked_add(delay).ok()
    }

    /// The timing rules for a switch (fit, inhibitors and the reboot lock are
    /// [`Policy::decide`]'s part): may the device switch to the staged release now?
    /// `approved`: an admin approved this release (needed when its urgency is `approval`).
    pub fn may_switch(
        &self,
        now: Timestamp,
        device: &DeviceFacts,
        release: &ReleaseFacts,
        holds: &[Hold],
        approved: bool,
    ) -> Decision {
        self.switch_gate(now, device, release, holds, approved).0
    }

    /// [`Policy::may_switch`] and the rule that answered when it is not `Allowed`.
    pub(crate) fn switch_gate(
        &self,
        now: Timestamp,
        device: &DeviceFacts,
        release: &ReleaseFacts,
        holds: &[Hold],
        approved: bool,
    ) -> (Decision, Option<WaitFor>) {
        let rollout = match self.common(now, device, release, holds) {
            Ok(r) => r,
            Err((d, w)) => return (d, Some(w)),
        };
        let (kind, severity) = (release.summary.kind, release.summary.severity);
        let urgency = urgency_for(&self.urgency, kind, severity);
        let what = format!("{severity} {kind}");
        match urgency {
            Urgency::Immediate => {
                return (
                    Decision::allowed(format!(
                        "{what} release: urgency rule says immediate; {rollout}"
                    )),
                    None,
                )
            }
            Urgency::Approval if !approved => {
                return (
                    Decision::blocked(format!(
                        "{what} release needs admin approval (urgency rule), none given"
                    )),
                    Some(WaitFor::Approval),
                )
            }
            Urgency::Approval | Urgency::Window => {}
        }
        if self.schedule.is_always_open() {
            let d = Decision::allowed(format!("no maintenance windows configured; {rollout}"));
            return (d, None);
        }
        if let Some(w) = self.schedule.open_window(now) {
            let d = Decision::allowed(format!("maintenance window {w} is open; {rollout}"));
            return (d, None);
        }
        let d = self.window_wait(
            now,
            &format!("{what} release waits for a maintenance window"),
        );
        (d, Some(WaitFor::Window))
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
