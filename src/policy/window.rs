//! Maintenance windows in an IANA time zone, DST-correct.
//!
//! A window is `DAYS HH:MM-HH:MM`: `Mon-Fri 01:00-03:00`, `Sat,Sun 02:00-06:00`,
//! `daily 22:00-23:30`. `DAYS` are the days the window *starts* on (ranges may wrap,
//! `Fri-Mon`); an end at or before the start means the window ends the next day
//! (`Fri 23:00-01:00` is Friday 23:00 to Saturday 01:00); `24:00` is the end of the day.
//!
//! Times are wall-clock times in the schedule's zone. Each occurrence is resolved with
//! "compatible" disambiguation (as RFC 5545 and `jiff` define it): a start in a skipped hour
//! (spring forward) moves later by the gap, a start in a repeated hour (fall back) takes the
//! first occurrence. So `02:00-06:00` on a spring-forward night is 3 real hours long and on
//! a fall-back night 5; a window entirely inside a skipped hour (`02:10-02:50`) moves later
//! by the gap (`03:10-03:50`), so it still opens that night.

use std::fmt;
use std::str::FromStr;

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::PolicyError;

const DAYS: [(Weekday, &str, &str); 7] = [
    (Weekday::Monday, "mon", "monday"),
    (Weekday::Tuesday, "tue", "tuesday"),
    (Weekday::Wednesday, "wed", "wednesday"),
    (Weekday::Thursday, "thu", "thursday"),
    (Weekday::Friday, "fri", "friday"),
    (Weekday::Saturday, "sat", "saturday"),
    (Weekday::Sunday, "sun", "sunday"),
];

/// One weekly maintenance window (wall-clock times; the zone is the schedule's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Start days, indexed Monday = 0.
    days: [bool; 7],
    /// Minutes after midnight.
    start: u16,
    /// Minutes after midnight, 1..=1440; `<= start` means the next day.
    end: u16,
    text: String,
}

fn day_index(s: &str) -> Option<usize> {
    let l = s.to_ascii_lowercase();
    DAYS.iter()
        .position(|(_, short, long)| l == *short || l == *long)
}

fn parse_hm(s: &str, allow_24: bool) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    if m > 59 {
        return None;
    }
    match (h, m) {
        (24, 0) if allow_24 => Some(1440),
        (0..=23, _) => Some(h * 60 + m),
        _ => None,
    }
}

impl FromStr for Window {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let bad = |why: &str| PolicyError::BadWindow {
            window: s.to_string(),
            why: why.to_string(),
        };
        let mut parts = s.split_whitespace();
        let (Some(days_s), Some(times_s), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(
                "expected `DAYS HH:MM-HH:MM`, e.g. `Mon-Fri 01:00-03:00`",
            ));
        };
        let mut days = [false; 7];
        if matches!(days_s.to_ascii_lowercase().as_str(), "daily" | "*") {
            days = [true; 7];
        } else {
            for item in days_s.split(',') {
                match item.split_once('-') {
                    Some((a, b)) => {
                        let (Some(a), Some(b)) = (day_index(a), day_index(b)) else {
                            return Err(bad(&format!(
                                "unknown day in range {item:?} (use Mon..Sun)"
                            )));
                        };
                        let mut i = a;
                        loop {
                            days[i] = true;
                            if i == b {
                                break;
                            }
                            i = (i + 1) % 7;
                        }
                    }
                    None => {
                        let Some(i) = day_index(item) else {
                            return Err(bad(&format!(
                                "unknown day {item:?} (use Mon..Sun, ranges like Mon-Fri, or daily)"
                            )));
                        };
                        days[i] = true;
                    }
                }
            }
        }
        let Some((a, b)) = times_s.split_once('-') else {
            return Err(bad("expected a time range HH:MM-HH:MM"));
        };
        let start = parse_hm(a, false)
            .ok_or_else(|| bad(&format!("bad start time {a:?} (00:00-23:59)")))?;
        let end =
            parse_hm(b, true).ok_or_else(|| bad(&format!("bad end time {b:?} (00:00-24:00)")))?;
        if start == end {
            return Err(bad("start and end are equal; a window must have a length"));
        }
        Ok(Window {
            days,
            start,
            end,
            text: s.split_whitespace().collect::<Vec<_>>().join(" "),
        })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Window {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Window {
    fn starts_on(&self, wd: Weekday) -> bool {
        self.days[wd.to_monday_zero_offset() as usize]
    }

    /// The real-time interval of the occurrence starting on `day`, if it starts that day
    /// and is non-empty after DST resolution.
    fn occurrence(&self, day: Date, tz: &TimeZone) -> Option<(Timestamp, Timestamp)> {
        if !self.starts_on(day.weekday()) {
            return None;
        }
        let at = |d: Date, min: u16| -> Option<Timestamp> {
            let t = Time::new((min / 60) as i8, (min % 60) as i8, 0, 0).ok()?;
            let z = tz.to_ambiguous_zoned(d.to_datetime(t)).compatible().ok()?;
            Some(z.timestamp())
        };
        let s = at(day, self.start)?;
        let e = if self.end == 1440 {
            at(day.tomorrow().ok()?, 0)?
        } else if self.end <= self.start {
            at(day.tomorrow().ok()?, self.end)?
        } else {
            at(day, self.end)?
        };
        (s < e).then_some((s, e))
    }
}

/// A device's maintenance windows in one time zone. No windows means "always open".
#[derive(Debug, Clone)]
pub struct Schedule {
    tz: TimeZone,
    tz_name: String,
    windows: Vec<Window>,
}

/// Look up an IANA time zone name in the system tz database. UTC (the default) needs no
/// database: appliances and minimal images often ship without /usr/share/zoneinfo, and
/// the daemon must still start there.
pub fn time_zone(name: &str) -> Result<TimeZone, PolicyError> {
    if matches!(name, "UTC" | "Etc/UTC") {
        return Ok(TimeZone::UTC);
    }
    TimeZone::get(name).map_err(|e| PolicyError::BadTimeZone {
        name: name.to_string(),
        why: e.to_string(),
    })
}

impl Schedule {
    pub fn new(tz_name: &str, windows: Vec<Window>) -> Result<Self, PolicyError> {
        Ok(Self {
            tz: time_zone(tz_name)?,
            tz_name: tz_name.to_string(),
            windows,
        })
    }

    /// Parse window strings (e.g. from a test or the command line).
    pub fn parse<S: AsRef<str>>(tz_name: &str, windows: &[S]) -> Result<Self, PolicyError> {
        let w = windows
            .iter()
            .map(|s| s.as_ref().parse())
            .collect::<Result<Vec<Window>, _>>()?;
        Self::new(tz_name, w)
    }

    /// No windows: switching is allowed at any time.
    pub fn always() -> Self {
        Self {
            tz: TimeZone::UTC,
            tz_name: "UTC".to_string(),
            windows: Vec::new(),
        }
    }

    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    pub fn time_zone_name(&self) -> &str {
        &self.tz_name
    }

    /// The schedule's zone (windows are wall-clock times in it).
    pub fn zone(&self) -> &TimeZone {
        &self.tz
    }

    pub fn is_always_open(&self) -> bool {
        self.windows.is_empty()
    }

    /// Occurrences starting from the day before `now`'s local date through `days` later.
    fn occurrences(&self, now: Timestamp, days: u32) -> Vec<(Timestamp, Timestamp, &Window)> {
        let mut out = Vec::new();
        let Ok(mut day) = now.to_zoned(self.tz.clone()).date().yesterday() else {
            return out;
        };
        for _ in 0..=days + 1 {
            for w in &self.windows {
                if let Some((s, e)) = w.occurrence(day, &self.tz) {
                    out.push((s, e, w));
                }
            }
            match day.tomorrow() {
                Ok(d) => day = d,
                Err(_) => break,
            }
        }
        out
    }

    /// The window open at `now`, if any.
    pub fn open_window(&self, now: Timestamp) -> Option<&Window> {
        self.occurrences(now, 0)
            .into_iter()
            .find(|(s, e, _)| *s <= now && now < *e)
            .map(|(_, _, w)| w)
    }

    pub fn is_open(&self, now: Timestamp) -> bool {
        self.is_always_open() || self.open_window(now).is_some()
    }

    /// `now` if a window is open, else the start of the next one (within 8 days; `None` if
    /// no window can ever open, e.g. at the end of the representable time range).
    pub fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        if self.is_open(now) {
            return Some(now);
        }
        self.occurrences(now, 8)
            .into_iter()
            .filter(|(s, _, _)| *s > now)
            .map(|(s, _, _)| s)
            .min()
    }

    /// When the window open at `now` closes, merging windows that overlap or touch.
    /// `None` when no window is open, or when the schedule is always open.
    pub fn current_window_end(&self, now: Timestamp) -> Option<Timestamp> {
        if self.is_always_open() {
            return None;
        }
        let occ = self.occurrences(now, 8);
        let mut end = occ
            .iter()
            .filter(|(s, e, _)| *s <= now && now < *e)
            .map(|(_, e, _)| *e)
            .max()?;
        loop {
            let next = occ
                .iter()
                .filter(|(s, e, _)| *s <= end && end < *e)
                .map(|(_, e, _)| *e)
                .max();
            match next {
                Some(e) if e > end => end = e,
                _ => return Some(end),
            }
        }
    }
}

impl Schedule {
    /// The window open at `t` as real times (opens, closes), windows that overlap or
    /// touch merged; `None` when none is open or the schedule is always open.
    pub fn window_at(&self, t: Timestamp) -> Option<(Timestamp, Timestamp)> {
        let end = self.current_window_end(t)?;
        let start = self
            .occurrences(t, 0)
            .iter()
            .filter(|(s, e, _)| *s <= t && t < *e)
            .map(|(s, _, _)| *s)
            .min()?;
        Some((start, end))
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.windows.is_empty() {
            return f.write_str("always open (no maintenance windows)");
        }
        let w: Vec<String> = self.windows.iter().map(|w| w.to_string()).collect();
        write!(f, "{} ({})", w.join(", "), self.tz_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_needs_no_tz_database() {
        // TimeZone::UTC is jiff's built-in zone; one loaded from the database compares
        // unequal, so this fails if the lookup goes to /usr/share/zoneinfo.
        assert_eq!(time_zone("UTC").expect("UTC is built in"), TimeZone::UTC);
        assert_eq!(
            time_zone("Etc/UTC").expect("UTC is built in"),
            TimeZone::UTC
        );
        assert!(time_zone("Not/AZone").is_err());
    }
}
