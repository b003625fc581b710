//! When the switch may happen: the next opportunity the switch decision sees, and the
//! plain words status, `list` and a web page show for it.
//!
//! [`Policy::opportunity`] asks the same timing rules as [`Policy::decide`] (it is called
//! from there), first at `now` and then at each time a rule said it would let go, so the
//! answer is the one decision's, not a second computation: "waiting for the canary stage
//! (opens in 3 h), then the window Sat 02:00–05:00 UTC".

use std::fmt::Write as _;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{bucket, Decision, Facts, Policy, Schedule};

/// Which timing rule stops a switch now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitFor {
    /// The system clock is not plausible.
    Clock,
    /// The publisher withdrew the release.
    Withdrawn,
    /// The publisher paused the rollout.
    Paused,
    /// A hold (documented exception).
    Hold,
    /// The device's rollout stage has not opened.
    Rollout,
    /// A guarded rollout's gate does not let the device's stage in (expired, missing,
    /// or not opened that far): frozen until the publisher's guard renews it.
    Gate,
    /// The trusted metadata that vouched for the release expired (the repository was
    /// not reachable, or served nothing newer): until a check renews it.
    Stale,
    /// An urgency rule asks for an admin's approval.
    Approval,
    /// No maintenance window is open.
    Window,
}

/// The next time the device may switch to one release, as the switch decision sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opportunity {
    /// The rule that stops the switch now (`None`: nothing does).
    pub waiting_for: Option<WaitFor>,
    /// When that rule lets go by itself (`None`: not by itself, or not known).
    pub rule_until: Option<Timestamp>,
    /// The earliest time every timing rule allows the switch (`None`: not known, e.g.
    /// until an admin approves or releases a hold).
    pub at: Option<Timestamp>,
    /// The maintenance window `at` falls in, as real times (opens, closes).
    pub window: Option<(Timestamp, Timestamp)>,
    /// For holds the hold reasons, for a rollout wait the stage ("the canary stage"),
    /// otherwise the rule's reason.
    pub detail: String,
}

/// How `list` groups a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Nothing stops it now.
    #[default]
    Installable,
    /// It fits the device and waits for a window, a stage, a hold, an approval.
    Waiting,
    /// It is not for this device now: not newer, withdrawn, failed here, below the
    /// floor, wrong hardware or channel.
    NotApplicable,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Installable => "installable",
            Standing::Waiting => "waiting",
            Standing::NotApplicable => "not_applicable",
        }
    }
}

/// How often the rules are asked again at a later time before giving up (each answer
/// moves the time forward: a stage opens, a hold ends, a window opens).
const STEPS: usize = 16;

impl Policy {
    /// The next opportunity for the release in `f` (timing rules only; the release's fit
    /// is [`Policy::decide`]'s part).
    pub fn opportunity(&self, f: &Facts<'_>) -> Opportunity {
        let approved = f.approved || f.force;
        // Projected times assume the metadata's expiry is renewed by the checks before
        // then; only `now` is judged by the metadata the device holds.
        let renewed = super::ReleaseFacts {
            vouched: None,
            ..f.release.clone()
        };
        let gate = |t: Timestamp| {
            let release = if t > f.now { &renewed } else { f.release };
            self.switch_gate(t, f.device, release, f.holds, approved)
        };
        let (first, waiting_for) = gate(f.now);
        let rule_until = match &first {
            Decision::Wait { until, .. } => *until,
            _ => None,
        };
        let mut t = f.now;
        let mut at = None;
        for _ in 0..STEPS {
            match gate(t).0 {
                Decision::Allowed { .. } => {
                    at = Some(t);
                    break;
                }
                Decision::Wait { until: Some(u), .. } if u > t => t = u,
                _ => break,
            }
        }
        let detail = match waiting_for {
            Some(WaitFor::Hold) => {
                let v = f.release.version();
                let reasons: Vec<&str> = f
                    .holds
                    .iter()
                    .filter(|h| !h.is_expired(f.now) && h.holds_back(v))
                    .map(|h| h.reason.as_str())
                    .collect();
                reasons.join("; ")
            }
            Some(WaitFor::Rollout) => f
                .release
                .rollout
                .as_ref()
                .and_then(|p| {
                    p.stage_name(&f.device.tags, bucket(&f.device.machine_id, &f.release.id))
                })
                .unwrap_or_else(|| "a rollout stage".into()),
            _ => first.reason().to_string(),
        };
        Opportunity {
            waiting_for,
            rule_until,
            at,
            window: at.and_then(|a| self.schedule.window_at(a)),
            detail,
        }
    }
}

impl Opportunity {
    /// The opportunity in plain words at `now`, times in the schedule's zone and UTC:
    /// "switches and reboots in the window Sat 02:00–05:00 UTC, in 1 d 17 h", "window
    /// open until 05:00 UTC", "waiting for the canary stage, in 3 h", "held until …:
    /// quarter-end freeze". `version` names the release for the approval hint.
    pub fn describe(&self, now: Timestamp, schedule: &Schedule, version: &str) -> String {
        let tz = schedule.zone();
        let zone = schedule.time_zone_name();
        let switch_part = |o: &Opportunity| -> String {
            match (o.at, o.window) {
                (Some(at), Some((_, e))) if at <= now => {
                    format!("window open until {}: switches now", clock(e, tz, zone))
                }
                (Some(at), Some((s, e))) => format!(
                    "switches and reboots in the window {}, {}",
                    window_text(s.max(at), e, tz, zone),
                    in_span(now, at)
                ),
                (Some(at), None) if at <= now => "switches now".to_string(),
                (Some(at), None) => {
                    format!("switches at {}, {}", full(at, tz, zone), in_span(now, at))
                }
                (None, _) => String::new(),
            }
        };
        let then = |o: &Opportunity, lead: String| -> String {
            let s = switch_part(o);
            if s.is_empty() || o.at == o.rule_until {
                lead
            } else {
                format!("{lead}; then {s}")
            }
        };
        match self.waiting_for {
            None | Some(WaitFor::Window) => {
                let s = switch_part(self);
                if s.is_empty() {
                    "no maintenance window opens".to_string()
                } else {
                    s
                }
            }
            Some(WaitFor::Rollout) => {
                let lead = match self.rule_until {
                    Some(u) => format!("waiting for {}, {}", self.detail, in_span(now, u)),
                    None => format!("waiting for {} (not in any stage yet)", self.detail),
                };
                then(self, lead)
            }
            Some(WaitFor::Hold) => {
                let lead = match self.rule_until {
                    Some(u) => format!(
                        "held until {} ({}): {}",
                        full(u, tz, zone),
                        in_span(now, u),
                        self.detail
                    ),
                    None => format!(
                        "held until released (patchctl release-hold): {}",
                        self.detail
                    ),
                };
                then(self, lead)
            }
            Some(WaitFor::Approval) => {
                format!("needs an admin's approval (urgency rule): patchctl approve {version}")
            }
            Some(WaitFor::Paused) => "rollout paused by the publisher".to_string(),
            Some(WaitFor::Gate) | Some(WaitFor::Stale) => self.detail.clone(),
            Some(WaitFor::Withdrawn) => "withdrawn by the publisher: never switched to".to_string(),
            Some(WaitFor::Clock) => self.detail.clone(),
        }
    }
}

/// A length of time in words, coarse enough to stay true for a minute: "1 d 17 h",
/// "3 h 20 min", "25 min", "less than a minute".
pub fn span(from: Timestamp, to: Timestamp) -> String {
    let secs = to
        .as_second()
        .saturating_sub(from.as_second())
        .unsigned_abs();
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => "less than a minute".into(),
        (0, 0, m) => format!("{m} min"),
        (0, h, 0) => format!("{h} h"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, 0, _) => format!("{d} d"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

/// "in 1 d 17 h" (or "now" when `t` is not later than `now`).
pub fn in_span(now: Timestamp, t: Timestamp) -> String {
    if t <= now {
        "now".into()
    } else {
        format!("in {}", span(now, t))
    }
}

/// "3 min ago" (or "just now").
pub fn ago(now: Timestamp, t: Timestamp) -> String {
    if t >= now || now.as_second() - t.as_second() < 60 {
        "just now".into()
    } else {
        format!("{} ago", span(t, now))
    }
}

fn is_utc(zone: &str) -> bool {
    matches!(zone, "UTC" | "Etc/UTC")
}

/// `2026-11-28 02:00:00 UTC`, and in the schedule's zone first when that is not UTC:
/// `2026-11-28 03:00:00 CET (02:00:00 UTC)`. Never nanoseconds.
pub fn full(t: Timestamp, tz: &TimeZone, zone: &str) -> String {
    let utc = t.to_zoned(TimeZone::UTC);
    if is_utc(zone) {
        return utc.strftime("%Y-%m-%d %H:%M:%S UTC").to_string();
    }
    let local = t.to_zoned(tz.clone());
    // Zones without a lettered abbreviation print an offset ("+14"): name them instead.
    let abbr = local.strftime("%Z").to_string();
    let name = if abbr.chars().any(|c| c.is_ascii_alphabetic()) {
        abbr
    } else {
        zone.to_string()
    };
    let mut s = format!("{} {name}", local.strftime("%Y-%m-%d %H:%M:%S"));
    let _ = write!(s, " ({})", utc.strftime("%H:%M:%S UTC"));
    s
}

/// `05:00 UTC`, or `05:00 Europe/Berlin (04:00 UTC)`.
fn clock(t: Timestamp, tz: &TimeZone, zone: &str) -> String {
    let hm = |z: &TimeZone| t.to_zoned(z.clone()).strftime("%H:%M").to_string();
    if is_utc(zone) {
        format!("{} UTC", hm(&TimeZone::UTC))
    } else {
        format!("{} {zone} ({} UTC)", hm(tz), hm(&TimeZone::UTC))
    }
}

/// `Sat 02:00–05:00 UTC`, or `Sat 02:00–05:00 Europe/Berlin (Sat 01:00–04:00 UTC)`.
pub fn window_text(start: Timestamp, end: Timestamp, tz: &TimeZone, zone: &str) -> String {
    let range = |z: &TimeZone| {
        format!(
            "{}–{}",
            start.to_zoned(z.clone()).strftime("%a %H:%M"),
            end.to_zoned(z.clone()).strftime("%H:%M")
        )
    };
    if is_utc(zone) {
        format!("{} UTC", range(&TimeZone::UTC))
    } else {
        format!("{} {zone} ({} UTC)", range(tz), range(&TimeZone::UTC))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn spans_are_coarse_words() {
        let now = t("2026-11-26T09:00:00Z");
        assert_eq!(span(now, t("2026-11-28T02:00:00Z")), "1 d 17 h");
        assert_eq!(span(now, t("2026-11-26T12:00:00Z")), "3 h");
        assert_eq!(span(now, t("2026-11-26T09:25:30Z")), "25 min");
        assert_eq!(in_span(now, now), "now");
        assert_eq!(ago(now, t("2026-11-26T08:57:00Z")), "3 min ago");
    }

    #[test]
    fn times_show_the_zone_and_utc_without_nanoseconds() {
        let at = t("2026-11-28T02:00:00.123456789Z");
        assert_eq!(full(at, &TimeZone::UTC, "UTC"), "2026-11-28 02:00:00 UTC");
        let berlin = crate::policy::time_zone("Europe/Berlin").unwrap();
        assert_eq!(
            full(at, &berlin, "Europe/Berlin"),
            "2026-11-28 03:00:00 CET (02:00:00 UTC)"
        );
        let kiri = crate::policy::time_zone("Pacific/Kiritimati").unwrap();
        assert_eq!(
            full(at, &kiri, "Pacific/Kiritimati"),
            "2026-11-28 16:00:00 Pacific/Kiritimati (02:00:00 UTC)"
        );
        assert_eq!(
            window_text(at, t("2026-11-28T05:00:00Z"), &TimeZone::UTC, "UTC"),
            "Sat 02:00–05:00 UTC"
        );
    }
}
