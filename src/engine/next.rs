//! The `Next:` line of status: what the device does next and when, in plain words, from
//! the lifecycle and the switch decision's next opportunity (`policy::Opportunity`, made
//! by `Policy::decide`). The daemon writes the sentence so every client shows the same.

use jiff::Timestamp;

use super::handle::{AvailableRelease, NextStep};
use super::state::Lifecycle;
use crate::names::SlotName;
use crate::policy::next::{full, in_span};
use crate::policy::{LockState, Schedule, Standing, WaitFor};

/// What the sentence is made from (all of it from the engine's memory).
pub(crate) struct NextInputs<'a> {
    pub now: Timestamp,
    pub lifecycle: &'a Lifecycle,
    pub available: &'a [AvailableRelease],
    pub schedule: &'a Schedule,
    /// The long step running now (`check`, `staging`, `health checks`).
    pub busy: Option<&'a str>,
    /// Active reboot inhibitors that hold a due reboot.
    pub reboot_waiting: &'a [String],
    /// The fleet reboot lock, which holds a due reboot while it is not ours.
    pub lock: &'a LockState,
    pub booted: Option<&'a SlotName>,
    /// When the next periodic check is due.
    pub next_check: Option<Timestamp>,
}

fn step(kind: &str, text: String, at: Option<Timestamp>) -> NextStep {
    NextStep {
        kind: kind.into(),
        text,
        at,
    }
}

impl NextInputs<'_> {
    fn time(&self, t: Timestamp) -> String {
        full(t, self.schedule.zone(), self.schedule.time_zone_name())
    }

    fn release(&self, version: &str) -> Option<&AvailableRelease> {
        self.available.iter().find(|a| a.version == version)
    }

    /// The switch timing of `version` as a kind and words ("window", "switches and
    /// reboots in the window …, in 1 d 17 h").
    fn timing(&self, version: &str) -> (String, String, Option<Timestamp>) {
        let Some(a) = self.release(version) else {
            return (
                "available".into(),
                "waits for the next check to confirm it is still offered".into(),
                None,
            );
        };
        let Some(o) = &a.next else {
            let why: Vec<String> = a.why_not.iter().map(|w| w.to_string()).collect();
            return (
                "blocked".into(),
                format!("blocked: {}", why.join("; ")),
                None,
            );
        };
        let mut text = o.describe(self.now, self.schedule, version);
        if o.at.is_some_and(|t| t <= self.now) && !self.reboot_waiting.is_empty() {
            text = format!(
                "{text}; the reboot waits for {}",
                self.reboot_waiting.join(", ")
            );
            return ("reboot_pending".into(), text, o.at);
        }
        if let Some(lock) = self
            .lock
            .blocker()
            .filter(|_| o.at.is_some_and(|t| t <= self.now))
        {
            let retry_at = self.lock.retry_at();
            let again = match retry_at {
                Some(t) => format!("; asks again {} ({})", in_span(self.now, t), self.time(t)),
                None => String::new(),
            };
            // Everything else allows the switch now: the slot is all it waits for.
            let text = format!("{lock}{again}; then switches and reboots");
            return ("reboot_slot".into(), text, retry_at);
        }
        let kind = match o.waiting_for {
            None if o.window.is_some() => "window",
            None => "switch_now",
            Some(WaitFor::Window) => "window",
            Some(WaitFor::Rollout) => "rollout",
            Some(WaitFor::Gate) => "gated",
            Some(WaitFor::Stale) => "stale",
            Some(WaitFor::Hold) => "held",
            Some(WaitFor::Approval) => "approval",
            Some(WaitFor::Paused) => "paused",
            Some(WaitFor::Withdrawn) | Some(WaitFor::Clock) => "blocked",
        };
        (kind.into(), text, o.at.or(o.rule_until))
    }

    /// Nothing in flight: the newest release that fits, or "up to date".
    fn settled(&self, prefix: &str) -> NextStep {
        let fitting = self
            .available
            .iter()
            .find(|a| a.standing != Standing::NotApplicable);
        match fitting {
            Some(a) => {
                let (kind, t, at) = self.timing(&a.version);
                let stage = match (a.may_stage, a.stage_at) {
                    (true, _) => "stages first".to_string(),
                    (false, Some(t)) => format!(
                        "not staged yet, staging starts {} ({})",
                        in_span(self.now, t),
                        self.time(t)
                    ),
                    (false, None) => "not staged yet".to_string(),
                };
                step(
                    &kind,
                    format!("{prefix}{} available ({stage}); {t}", a.version),
                    at,
                )
            }
            None => {
                let check = match self.next_check {
                    Some(t) => format!("; next check {}", in_span(self.now, t)),
                    None => "; checks only when asked (patchctl check)".into(),
                };
                step(
                    "up_to_date",
                    format!("{prefix}up to date{check}"),
                    self.next_check,
                )
            }
        }
    }

    pub(crate) fn next_step(&self) -> NextStep {
        let mut s = self.lifecycle_step();
        if let LockState::Kept { group, .. } = self.lock {
            s.text = format!(
                "{}; keeps its reboot slot in group {group}, so the group waits (patchctl fleet release)",
                s.text
            );
        }
        s
    }

    fn lifecycle_step(&self) -> NextStep {
        match self.lifecycle {
            Lifecycle::Idle {} => self.settled(""),
            Lifecycle::Committed {
                release,
                probation_until: Some(until),
                ..
            } => step(
                "probation",
                format!(
                    "{} committed, on probation until {} ({}): a failing check still rolls back",
                    release.version,
                    self.time(*until),
                    in_span(self.now, *until)
                ),
                Some(*until),
            ),
            Lifecycle::Committed { .. } => self.settled(""),
            Lifecycle::UpdateAvailable { release } => {
                let (kind, t, at) = self.timing(&release.version);
                let staging = match self.busy {
                    Some(b) => format!("stages after the running {b}"),
                    None if self.release(&release.version).is_some_and(|a| a.may_stage) => {
                        "stages now".into()
                    }
                    None => match self.release(&release.version) {
                        Some(AvailableRelease {
                            stage_at: Some(t), ..
                        }) => format!(
                            "staging starts {} ({})",
                            in_span(self.now, *t),
                            self.time(*t)
                        ),
                        Some(AvailableRelease {
                            stage_wait: Some(why),
                            ..
                        }) => format!("staging waits ({why})"),
                        _ => "staging waits".into(),
                    },
                };
                step(
                    &kind,
                    format!("{} available, {staging}; {t}", release.version),
                    at,
                )
            }
            Lifecycle::Staging { release, slot } => {
                let (_, t, at) = self.timing(&release.version);
                step(
                    "staging",
                    format!("staging {} into slot {slot}; then {t}", release.version),
                    at,
                )
            }
            Lifecycle::Staged { release, .. } => {
                let (kind, t, at) = self.timing(&release.version);
                step(&kind, format!("{} staged; {t}", release.version), at)
            }
            Lifecycle::Switching { release, slot, .. } => {
                let waits = if self.reboot_waiting.is_empty() {
                    String::new()
                } else {
                    format!("; the reboot waits for {}", self.reboot_waiting.join(", "))
                };
                step(
                    "reboot_pending",
                    format!(
                        "switching to {} in slot {slot}: reboot pending{waits}",
                        release.version
                    ),
                    None,
                )
            }
            Lifecycle::Verifying {
                release,
                slot,
                from,
                deadline,
            } => step(
                "trial",
                format!(
                    "{} on trial in slot {slot}: health checks must pass by {} ({}), then it is committed; otherwise back to slot {from}",
                    release.version,
                    self.time(*deadline),
                    in_span(self.now, *deadline)
                ),
                Some(*deadline),
            ),
            Lifecycle::RolledBack {
                release,
                bad_slot,
                back_to,
                reason,
            } if self.booted == Some(bad_slot) => step(
                "rollback_pending",
                format!(
                    "rolling back from {} to slot {back_to}: reboot pending ({reason})",
                    release.version
                ),
                None,
            ),
            Lifecycle::RolledBack { release, .. } => self.settled(&format!(
                "{} was rolled back and is not retried (patchctl retry); ",
                release.version
            )),
            Lifecycle::Failed { reason } => step(
                "failed",
                format!("needs an admin: {reason} (patchctl check or patchctl cancel)"),
                None,
            ),
        }
    }
}
