//! Maintenance windows: parsing, midnight crossing, DST changes, merging, bad input.

use jiff::{civil::DateTime, tz::TimeZone, SignedDuration, Timestamp};
use patchd::policy::{PolicyError, Schedule, Window};
use proptest::prelude::*;

fn at(tz: &str, dt: &str) -> Timestamp {
    let dt: DateTime = dt.parse().unwrap();
    TimeZone::get(tz)
        .unwrap()
        .to_ambiguous_zoned(dt)
        .compatible()
        .unwrap()
        .timestamp()
}

fn utc(s: &str) -> Timestamp {
    s.parse().unwrap()
}

#[test]
fn weekday_windows_open_and_close() {
    let s = Schedule::parse(
        "Europe/Berlin",
        &["Mon-Fri 01:00-03:00", "Sat,Sun 02:00-06:00"],
    )
    .unwrap();
    // 2026-11-30 is a Monday.
    assert!(s.is_open(at("Europe/Berlin", "2026-11-30T01:00")));
    assert!(s.is_open(at("Europe/Berlin", "2026-11-30T02:59:59")));
    assert!(!s.is_open(at("Europe/Berlin", "2026-11-30T03:00")));
    assert!(!s.is_open(at("Europe/Berlin", "2026-11-30T00:59")));
    // Saturday 01:30 is outside (weekend window starts at 02:00).
    assert!(!s.is_open(at("Europe/Berlin", "2026-11-28T01:30")));
    assert!(s.is_open(at("Europe/Berlin", "2026-11-28T05:00")));
    assert_eq!(
        s.next_open(at("Europe/Berlin", "2026-11-28T01:30")),
        Some(at("Europe/Berlin", "2026-11-28T02:00"))
    );
    // From Sunday after its window: next is Monday 01:00.
    assert_eq!(
        s.next_open(at("Europe/Berlin", "2026-11-29T07:00")),
        Some(at("Europe/Berlin", "2026-11-30T01:00"))
    );
    assert_eq!(
        s.current_window_end(at("Europe/Berlin", "2026-11-28T03:00")),
        Some(at("Europe/Berlin", "2026-11-28T06:00"))
    );
    assert_eq!(
        s.current_window_end(at("Europe/Berlin", "2026-11-28T07:00")),
        None
    );
}

#[test]
fn window_across_midnight_belongs_to_its_start_day() {
    let s = Schedule::parse("Europe/Berlin", &["Fri 23:00-01:00"]).unwrap();
    // Friday 2026-11-27 23:30 and Saturday 00:30 are inside; Saturday 23:30 is not.
    assert!(s.is_open(at("Europe/Berlin", "2026-11-27T23:30")));
    assert!(s.is_open(at("Europe/Berlin", "2026-11-28T00:30")));
    assert!(!s.is_open(at("Europe/Berlin", "2026-11-28T01:00")));
    assert!(!s.is_open(at("Europe/Berlin", "2026-11-28T23:30")));
    assert!(
        !s.is_open(at("Europe/Berlin", "2026-11-27T00:30")),
        "Friday 00:30 belongs to Thursday"
    );
    assert_eq!(
        s.current_window_end(at("Europe/Berlin", "2026-11-27T23:30")),
        Some(at("Europe/Berlin", "2026-11-28T01:00"))
    );
    assert_eq!(
        s.next_open(at("Europe/Berlin", "2026-11-28T02:00")),
        Some(at("Europe/Berlin", "2026-12-04T23:00"))
    );
    let full = Schedule::parse("UTC", &["Sun 00:00-24:00"]).unwrap();
    assert!(full.is_open(utc("2026-11-29T23:59:59Z")));
    assert!(!full.is_open(utc("2026-11-30T00:00:00Z")));
}

#[test]
fn spring_forward_shortens_the_window() {
    // Europe/Berlin skips 02:00-03:00 on Sunday 2026-03-29.
    let s = Schedule::parse("Europe/Berlin", &["Sun 02:00-06:00"]).unwrap();
    let start = s.next_open(utc("2026-03-28T12:00:00Z")).unwrap();
    assert_eq!(start, utc("2026-03-29T01:00:00Z"), "opens at 03:00 CEST");
    let end = s.current_window_end(start).unwrap();
    assert_eq!(end, utc("2026-03-29T04:00:00Z"), "closes at 06:00 CEST");
    assert_eq!(end.duration_since(start), SignedDuration::from_hours(3));
    assert!(!s.is_open(utc("2026-03-29T00:59:59Z")));
}

#[test]
fn fall_back_lengthens_the_window() {
    // Europe/Berlin repeats 02:00-03:00 on Sunday 2026-10-25.
    let s = Schedule::parse("Europe/Berlin", &["Sun 02:00-06:00"]).unwrap();
    let start = s.next_open(utc("2026-10-24T12:00:00Z")).unwrap();
    assert_eq!(start, utc("2026-10-25T00:00:00Z"), "first 02:00 (CEST)");
    let end = s.current_window_end(start).unwrap();
    assert_eq!(end, utc("2026-10-25T05:00:00Z"), "06:00 CET");
    assert_eq!(end.duration_since(start), SignedDuration::from_hours(5));
}

#[test]
fn window_inside_skipped_hour_moves_later_by_the_gap() {
    let s = Schedule::parse("America/New_York", &["daily 02:10-02:50"]).unwrap();
    // 2026-03-08: New York skips 02:00-03:00, so the window runs 03:10-03:50 EDT.
    let next = s.next_open(utc("2026-03-08T05:00:00Z")).unwrap();
    assert_eq!(next, utc("2026-03-08T07:10:00Z"));
    assert_eq!(
        s.current_window_end(next),
        Some(utc("2026-03-08T07:50:00Z"))
    );
}

#[test]
fn midnight_window_across_dst_change() {
    // Sat 23:00 → Sun 04:00 over the Berlin spring-forward night: 4 real hours.
    let s = Schedule::parse("Europe/Berlin", &["Sat 23:00-04:00"]).unwrap();
    let start = s.next_open(utc("2026-03-28T12:00:00Z")).unwrap();
    assert_eq!(start, utc("2026-03-28T22:00:00Z"));
    assert_eq!(
        s.current_window_end(start),
        Some(utc("2026-03-29T02:00:00Z"))
    );
}

#[test]
fn overlapping_windows_merge() {
    let s = Schedule::parse(
        "UTC",
        &["Mon 01:00-03:00", "Mon 02:30-04:00", "Mon 04:00-05:00"],
    )
    .unwrap();
    assert_eq!(
        s.current_window_end(utc("2026-11-30T01:30:00Z")),
        Some(utc("2026-11-30T05:00:00Z"))
    );
}

#[test]
fn day_ranges_wrap_and_names_are_flexible() {
    let w: Window = "fri-MON 10:00-11:00".parse().unwrap();
    let s = Schedule::new("UTC", vec![w]).unwrap();
    for (d, open) in [
        ("2026-11-27", true),  // Fri
        ("2026-11-28", true),  // Sat
        ("2026-11-30", true),  // Mon
        ("2026-12-01", false), // Tue
    ] {
        assert_eq!(s.is_open(utc(&format!("{d}T10:30:00Z"))), open, "{d}");
    }
    assert!("Saturday,sunday 01:00-02:00".parse::<Window>().is_ok());
}

#[test]
fn no_windows_means_always_open() {
    let s = Schedule::always();
    assert!(s.is_open(utc("2026-11-30T13:00:00Z")));
    assert_eq!(
        s.next_open(utc("2026-11-30T13:00:00Z")),
        Some(utc("2026-11-30T13:00:00Z"))
    );
    assert_eq!(s.current_window_end(utc("2026-11-30T13:00:00Z")), None);
}

#[test]
fn bad_windows_are_refused_with_the_reason() {
    for (bad, needle) in [
        ("Mon 25:00-03:00", "start time"),
        ("Mon 01:00-24:01", "end time"),
        ("Mon 01:60-02:00", "start time"),
        ("Xyz 01:00-02:00", "unknown day"),
        ("Mon-Xyz 01:00-02:00", "unknown day"),
        ("Mon 01:00-01:00", "equal"),
        ("Mon", "DAYS HH:MM-HH:MM"),
        ("Mon 01:00", "time range"),
        ("Mon 01:00-02:00 extra", "DAYS HH:MM-HH:MM"),
        ("", "DAYS HH:MM-HH:MM"),
        ("Mon 1:0-2:00", "start time"),
    ] {
        let e = bad.parse::<Window>().unwrap_err();
        assert!(
            matches!(&e, PolicyError::BadWindow { window, why } if window == bad && why.contains(needle)),
            "{bad:?}: {e}"
        );
    }
}

#[test]
fn bad_time_zone_is_refused() {
    let e = Schedule::parse("Mars/Olympus_Mons", &["Mon 01:00-02:00"]).unwrap_err();
    assert!(matches!(e, PolicyError::BadTimeZone { .. }), "{e}");
    assert!(e.to_string().contains("Mars/Olympus_Mons"));
}

#[test]
fn clock_at_the_ends_of_time_does_not_panic() {
    let s = Schedule::parse("Europe/Berlin", &["daily 01:00-03:00", "Fri 23:00-01:00"]).unwrap();
    for t in [Timestamp::MIN, Timestamp::MAX, Timestamp::UNIX_EPOCH] {
        let _ = s.is_open(t);
        let _ = s.next_open(t);
        let _ = s.current_window_end(t);
    }
    assert!(s.next_open(Timestamp::UNIX_EPOCH).is_some());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// next_open is the first open instant: open there, closed just before, and never
    /// later than a week away; current_window_end closes the window.
    #[test]
    fn next_open_is_the_first_open_instant(secs in 1_704_067_200i64..1_893_456_000i64,
                                            zone in prop::sample::select(vec!["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"])) {
        let s = Schedule::parse(zone, &["Mon-Fri 01:00-03:00", "Sat,Sun 02:00-06:00", "Fri 23:00-00:30"]).unwrap();
        let now = Timestamp::from_second(secs).unwrap();
        let next = s.next_open(now).unwrap();
        prop_assert!(next >= now);
        prop_assert!(next.duration_since(now) <= SignedDuration::from_hours(24 * 7));
        prop_assert!(s.is_open(next));
        if next > now {
            prop_assert!(!s.is_open(now));
            prop_assert!(!s.is_open(next - SignedDuration::from_secs(1)));
        }
        let end = s.current_window_end(next).unwrap();
        prop_assert!(end > next);
        prop_assert!(!s.is_open(end));
        prop_assert!(s.is_open(end - SignedDuration::from_secs(1)));
    }
}
