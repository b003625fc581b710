//! `patchctl status` and the release lists of `list` and `check` for people: what runs,
//! what happens next and when (the daemon's sentence), the last check and outcome, and
//! releases grouped into installable, waiting and not applicable.
//!
//! Times are printed without fractions of a second, in the maintenance windows' time
//! zone and in UTC, and relative to the daemon's clock when the status was made.

use std::fmt::Write as _;

use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::output::{progress, table};
use crate::dbus::types::{AvailableView, StatusView};
use crate::policy::next::{ago, full, in_span};

/// The clock and zone times are shown with.
struct Clock {
    now: Timestamp,
    tz: TimeZone,
    zone: String,
}

impl Clock {
    fn of(s: &StatusView) -> Self {
        let zone = if s.time_zone.is_empty() {
            "UTC".to_string()
        } else {
            s.time_zone.clone()
        };
        // A zone the daemon knows but this machine's database does not: UTC only.
        let (tz, zone) = match crate::policy::time_zone(&zone) {
            Ok(tz) => (tz, zone),
            Err(_) => (TimeZone::UTC, "UTC".to_string()),
        };
        Clock {
            now: s.as_of.unwrap_or_else(Timestamp::now),
            tz,
            zone,
        }
    }

    fn at(&self, t: Timestamp) -> String {
        full(t, &self.tz, &self.zone)
    }

    /// "2026-11-25 12:00:00 UTC, 3 min ago" / "…, in 2 d 14 h".
    fn rel(&self, t: Timestamp) -> String {
        let r = if t > self.now {
            in_span(self.now, t)
        } else {
            ago(self.now, t)
        };
        format!("{}, {r}", self.at(t))
    }
}

fn or_dash(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "-".into())
}

/// The fleet reboot slot in one line: its state in words, the group and the next ask.
pub fn fleet_line(s: &StatusView) -> Option<String> {
    let f = s.fleet.as_ref()?;
    let c = Clock::of(s);
    let mut t = match f.state.as_str() {
        "held" => format!("held in group {} ({})", f.group, f.backend),
        "kept" => format!(
            "kept in group {} after a failed update: the group waits (patchctl fleet release)",
            f.group
        ),
        "free" => format!("none held; group {} ({})", f.group, f.backend),
        _ => f
            .text
            .clone()
            .unwrap_or_else(|| format!("{} in group {}", f.state, f.group)),
    };
    if let Some(s) = f.since.filter(|_| f.state == "held" || f.state == "kept") {
        let _ = write!(t, ", since {}", c.rel(s));
    }
    if let Some(r) = f.retry_at {
        let _ = write!(t, "; asks again {}", c.rel(r));
    }
    Some(t)
}

/// `patchctl status` for people.
pub fn status(s: &StatusView) -> String {
    let c = Clock::of(s);
    let mut kv: Vec<(&str, String)> = vec![("State", s.state.clone())];
    if let Some(n) = &s.next {
        kv.push(("Next", n.text.clone()));
    }
    let booted = s.booted_slot.clone().unwrap_or_else(|| "?".into());
    let mut current = format!("{} (slot {booted})", or_dash(&s.current_version));
    if let Some(back) = &s.rolling_back_to {
        let _ = write!(current, ", rolling back to {back} at the next boot");
    }
    kv.push(("Current", current));
    if s.staged_version.is_some() {
        kv.push(("Staged", or_dash(&s.staged_version)));
    }
    kv.push((
        "Security floor",
        format!(
            "{} (releases with a lower security version are refused)",
            s.security_floor
        ),
    ));
    if let Some(o) = &s.last_outcome {
        kv.push(("Last outcome", o.clone()));
    }
    if let Some(l) = &s.last_stage {
        kv.push(("Last staging", l.clone()));
    }
    if let Some(p) = &s.progress {
        kv.push(("Job", progress(p)));
    }
    kv.push(("Available", available_line(&s.available)));
    // The plan of the newest release that fits, one line per component.
    if let Some(a) = s.available.iter().find(|a| a.group != "not_applicable") {
        for line in &a.components {
            kv.push(("Component", format!("{} {line}", a.version)));
        }
    }
    for l in super::packages::patch_set_lines(&s.available) {
        kv.push(("Patch set", l));
    }
    if s.holds.is_empty() {
        kv.push(("Hold", "none".into()));
    }
    for h in &s.holds {
        let mut t = format!("{:?} by {}", h.reason, h.by);
        match h.until {
            Some(u) => {
                let _ = write!(t, " until {}", c.rel(u));
            }
            None => t.push_str(" until released"),
        }
        if let Some(m) = &h.max_version {
            let _ = write!(t, ", up to {m}");
        }
        kv.push(("Hold", t));
    }
    if let Some(f) = fleet_line(s) {
        kv.push(("Reboot slot", f));
    }
    kv.push((
        "Next window",
        s.next_window
            .map(|t| c.rel(t))
            .unwrap_or_else(|| "-".into()),
    ));
    kv.push(("Last check", last_check(s, &c)));
    if let Some(e) = &s.last_error {
        kv.push(("Last error", e.clone()));
    }
    for warning in &s.warnings {
        kv.push(("WARNING", warning.clone()));
    }
    let w = kv.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (k, v) in kv {
        let _ = writeln!(out, "{:<w$} {v}", format!("{k}:"), w = w);
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = s
        .slots
        .iter()
        .map(|sl| {
            vec![
                sl.name.clone(),
                sl.state.clone(),
                or_dash(&sl.version),
                if sl.booted { "yes".into() } else { "".into() },
            ]
        })
        .collect();
    out.push_str(&table(&["SLOT", "STATE", "VERSION", "BOOTED"], &rows));
    out
}

/// The releases that fit, in one line ("2.0.0 (high security, installable)").
fn available_line(list: &[AvailableView]) -> String {
    let fitting: Vec<String> = list
        .iter()
        .filter(|a| a.group != "not_applicable")
        .map(|a| {
            let group = if a.group.is_empty() {
                String::new()
            } else {
                format!(", {}", a.group.replace('_', " "))
            };
            format!("{} ({} {}{group})", a.version, a.severity, a.kind)
        })
        .collect();
    if fitting.is_empty() {
        "none".to_owned()
    } else {
        fitting.join(", ")
    }
}

/// "2026-11-25 12:00:00 UTC, 3 min ago: 2 releases found", or the failure with its error.
fn last_check(s: &StatusView, c: &Clock) -> String {
    match &s.last_check_outcome {
        Some(o) => {
            let when = o.at.map(|t| c.rel(t)).unwrap_or_else(|| "?".into());
            match &o.error {
                Some(e) => {
                    let good = o.last_good.map_or("never".into(), |t| c.rel(t));
                    format!("{when}: FAILED: {e} (last good check: {good})")
                }
                None if o.found == 1 => format!("{when}: 1 release found"),
                None => format!("{when}: {} releases found", o.found),
            }
        }
        None => s
            .last_check
            .map(|t| c.rel(t))
            .unwrap_or_else(|| "never".into()),
    }
}

/// `list` and `check`: releases grouped as installable, waiting (with until when) and
/// not applicable (blocked, with why), each reason once, with the publisher's summary.
pub fn release_groups(s: &StatusView) -> String {
    let c = Clock::of(s);
    let group = |g: &str| -> Vec<&AvailableView> {
        s.available
            .iter()
            .filter(|a| a.group == g || (g == "installable" && a.group.is_empty()))
            .collect()
    };
    let (inst, wait, na) = (
        group("installable"),
        group("waiting"),
        group("not_applicable"),
    );
    let mut out = String::new();
    if inst.is_empty() && wait.is_empty() {
        out.push_str("No updates available.\n");
    }
    let sections: [(&str, &[&AvailableView]); 3] = [
        ("Installable", &inst),
        ("Waiting", &wait),
        ("Not applicable", &na),
    ];
    for (title, list) in sections {
        if list.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(out, "{title}:");
        out.push_str(&group_table(list, |a| why_line(a, &c)));
    }
    out
}

/// Why a release is where it is, one line (none for an installable one).
fn why_line(a: &AvailableView, c: &Clock) -> Option<String> {
    let reasons = a.reasons.join("; ");
    match a.group.as_str() {
        "waiting" => Some(match (&a.when, a.until) {
            (Some(w), _) => w.clone(),
            (None, Some(t)) => format!("until {}: {reasons}", c.rel(t)),
            (None, None) => format!("until an admin or the publisher acts: {reasons}"),
        }),
        "not_applicable" => Some(format!("blocked: {reasons}")),
        _ => None,
    }
}

/// One group as a table, each row followed by its reason line.
fn group_table(list: &[&AvailableView], why: impl Fn(&AvailableView) -> Option<String>) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            vec![
                a.version.clone(),
                a.kind.clone(),
                a.severity.clone(),
                if a.cves.is_empty() {
                    "-".into()
                } else {
                    a.cves.join(",")
                },
                a.description.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let t = table(&["VERSION", "KIND", "SEVERITY", "CVES", "SUMMARY"], &rows);
    let mut out = String::new();
    for (i, line) in t.lines().enumerate() {
        let _ = writeln!(out, "  {line}");
        if let Some(w) = i
            .checked_sub(1)
            .and_then(|r| list.get(r))
            .and_then(|a| why(a))
        {
            let _ = writeln!(out, "      {w}");
        }
        if let Some(a) = i.checked_sub(1).and_then(|r| list.get(r)) {
            for c in &a.components {
                let _ = writeln!(out, "      {c}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(version: &str, group: &str, reasons: &[&str]) -> AvailableView {
        AvailableView {
            version: version.into(),
            kind: "security".into(),
            severity: "high".into(),
            group: group.into(),
            reasons: reasons.iter().map(|r| r.to_string()).collect(),
            description: Some("fixes".into()),
            ..AvailableView::default()
        }
    }

    #[test]
    fn releases_are_grouped_with_their_reasons_once() {
        let s = StatusView {
            as_of: Some("2026-11-26T09:00:00Z".parse().unwrap()),
            available: vec![
                view("3.0.0", "waiting", &["needs approval"]),
                view("2.0.0", "installable", &[]),
                view(
                    "1.0.0",
                    "not_applicable",
                    &["not newer than the running 1.0.0"],
                ),
            ],
            ..StatusView::default()
        };
        let out = release_groups(&s);
        let inst = out.find("Installable:").unwrap();
        let wait = out.find("Waiting:").unwrap();
        let na = out.find("Not applicable:").unwrap();
        assert!(inst < wait && wait < na, "{out}");
        assert!(
            out.contains("blocked: not newer than the running 1.0.0"),
            "{out}"
        );
        assert_eq!(out.matches("not newer").count(), 1, "{out}");
        assert!(!out[na..].contains("waiting"), "{out}");
    }
}
