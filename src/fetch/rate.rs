//! The minimum-rate rule against slow retrieval (the TUF specification's "slow retrieval
//! attack"): a mirror that trickles a byte now and then never trips a stall timer, yet
//! keeps the device busy — and a security fix away — for days.
//!
//! A transfer is abandoned when its average rate over the last `window` falls below
//! `min_rate`, or when it is still running at its deadline (`deadline_floor` plus the
//! time the remaining bytes take at `min_rate`). Both verdicts are
//! [`super::FetchError::SlowRetrieval`]; the caller resumes from its checkpoint later.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// The rule as configured (`[fetch]`); `min_rate == 0` switches it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateRule {
    /// Bytes per second a transfer must average over `window`.
    pub min_rate: u64,
    /// The span the average is taken over; no verdict before a transfer is this old.
    pub window: Duration,
    /// Fixed part of the per-transfer deadline (connection set-up, slow start).
    pub deadline_floor: Duration,
}

impl Default for RateRule {
    fn default() -> Self {
        Self {
            min_rate: 8 * 1024,
            window: Duration::from_secs(60),
            deadline_floor: Duration::from_secs(300),
        }
    }
}

impl RateRule {
    /// No rule at all (tests that throttle on purpose).
    pub fn off() -> Self {
        Self {
            min_rate: 0,
            ..Self::default()
        }
    }

    pub fn is_on(&self) -> bool {
        self.min_rate > 0
    }

    /// How long a transfer of `bytes` may take: the floor plus the bytes at the minimum
    /// rate. `None` when the rule is off.
    pub fn deadline_for(&self, bytes: u64) -> Option<Duration> {
        if !self.is_on() {
            return None;
        }
        let at_min = Duration::from_secs_f64(bytes as f64 / self.min_rate as f64);
        Some(self.deadline_floor.saturating_add(at_min))
    }
}

/// Why a transfer was abandoned, with what it achieved.
#[derive(Debug, Clone, PartialEq)]
pub enum SlowRetrieval {
    /// Not one byte arrived during the whole window.
    NoData {
        secs: u64,
        received: u64,
        expected: u64,
    },
    /// Bytes arrived, but fewer than the minimum rate over the window.
    BelowMinRate {
        rate: f64,
        min_rate: u64,
        secs: u64,
        received: u64,
        expected: u64,
    },
    /// The transfer was still running at its size-derived deadline.
    Deadline {
        secs: u64,
        rate: f64,
        received: u64,
        expected: u64,
    },
}

impl fmt::Display for SlowRetrieval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlowRetrieval::NoData {
                secs,
                received,
                expected,
            } => write!(
                f,
                "no byte at all for {secs} s ({received} of {expected} bytes received)"
            ),
            SlowRetrieval::BelowMinRate {
                rate,
                min_rate,
                secs,
                received,
                expected,
            } => write!(
                f,
                "average rate {} over the last {secs} s is below the minimum {} \
                 ({received} of {expected} bytes received)",
                human_rate(*rate),
                human_rate(*min_rate as f64)
            ),
            SlowRetrieval::Deadline {
                secs,
                rate,
                received,
                expected,
            } => write!(
                f,
                "deadline of {secs} s for this download passed with {received} of {expected} \
                 bytes received (average {})",
                human_rate(*rate)
            ),
        }
    }
}

/// `12 B/s`, `8.0 KiB/s`, `1.5 MiB/s`.
pub fn human_rate(bps: f64) -> String {
    if bps >= 1024.0 * 1024.0 {
        format!("{:.1} MiB/s", bps / (1024.0 * 1024.0))
    } else if bps >= 1024.0 {
        format!("{:.1} KiB/s", bps / 1024.0)
    } else {
        format!("{bps:.0} B/s")
    }
}

/// A rate in config files: a plain integer (bytes/s) or a string with a `K`, `M` or `G`
/// suffix (powers of 1024, an optional `i`/`B`/`/s` after it): `8192`, `"8K"`, `"8KiB/s"`,
/// `"1.5M"`.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let t = t.strip_suffix('B').unwrap_or(t);
    let t = t.strip_suffix('i').unwrap_or(t);
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1024u64),
        Some((i, 'M' | 'm')) => (&t[..i], 1024 * 1024),
        Some((i, 'G' | 'g')) => (&t[..i], 1024 * 1024 * 1024),
        _ => (t, 1),
    };
    let bad = || format!("invalid rate {s:?} (use bytes per second, e.g. 8192, \"8K\", \"1M\")");
    let num = num.trim();
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    let v: f64 = num.parse().map_err(|_| bad())?;
    let bytes = v * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// Watches one transfer: call [`RateGuard::check`] on every chunk and at least every
/// [`RateGuard::next_check`].
#[derive(Debug)]
pub(crate) struct RateGuard {
    rule: RateRule,
    started: Instant,
    start_pos: u64,
    /// Absolute offset the transfer ends at (for the messages).
    end: u64,
    deadline: Option<Instant>,
    /// `(when, absolute offset)`, oldest first, about `window / 8` apart.
    samples: VecDeque<(Instant, u64)>,
}

impl RateGuard {
    pub(crate) fn new(rule: RateRule, now: Instant, pos: u64, end: u64) -> Self {
        let deadline = rule
            .deadline_for(end.saturating_sub(pos))
            .and_then(|d| now.checked_add(d));
        let mut samples = VecDeque::new();
        samples.push_back((now, pos));
        Self {
            rule,
            started: now,
            start_pos: pos,
            end,
            deadline,
            samples,
        }
    }

    fn step(&self) -> Duration {
        (self.rule.window / 8).max(Duration::from_millis(20))
    }

    /// When the transfer must be complete (`None` with the rule off).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Leave out `d` just spent waiting for the reader, not for the source.
    pub(crate) fn exclude(&mut self, d: Duration) {
        if d.is_zero() {
            return;
        }
        self.started += d;
        if let Some(dl) = self.deadline.as_mut() {
            *dl += d;
        }
        for s in self.samples.iter_mut() {
            s.0 += d;
        }
    }

    /// When the rule next needs a look even if no byte arrives.
    pub(crate) fn next_check(&self, now: Instant) -> Option<Instant> {
        if !self.rule.is_on() {
            return None;
        }
        let next = now + self.step();
        Some(self.deadline.map_or(next, |d| next.min(d)))
    }

    /// The verdict at `now` with the transfer at absolute offset `pos`.
    pub(crate) fn check(&mut self, now: Instant, pos: u64) -> Result<(), SlowRetrieval> {
        if !self.rule.is_on() {
            return Ok(());
        }
        let expected = self.end;
        if let Some(d) = self.deadline {
            if now >= d {
                let secs = now.duration_since(self.started).as_secs_f64();
                return Err(SlowRetrieval::Deadline {
                    secs: secs.round() as u64,
                    rate: pos.saturating_sub(self.start_pos) as f64 / secs.max(0.001),
                    received: pos,
                    expected,
                });
            }
        }
        let window = self.rule.window;
        if now.duration_since(self.started) >= window {
            let Some(edge) = now.checked_sub(window) else {
                return Ok(());
            };
            // Baseline: the newest sample at least one window old.
            while self.samples.len() > 1 && self.samples[1].0 <= edge {
                self.samples.pop_front();
            }
            if let Some(&(t, p)) = self.samples.front() {
                let span = now.duration_since(t).as_secs_f64().max(0.001);
                let got = pos.saturating_sub(p);
                let rate = got as f64 / span;
                if got == 0 {
                    return Err(SlowRetrieval::NoData {
                        secs: span.round() as u64,
                        received: pos,
                        expected,
                    });
                }
                if rate < self.rule.min_rate as f64 {
                    return Err(SlowRetrieval::BelowMinRate {
                        rate,
                        min_rate: self.rule.min_rate,
                        secs: span.round() as u64,
                        received: pos,
                        expected,
                    });
                }
            }
        }
        if self
            .samples
            .back()
            .is_none_or(|&(t, _)| now.duration_since(t) >= self.step())
        {
            self.samples.push_back((now, pos));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(min_rate: u64, window_s: u64) -> RateRule {
        RateRule {
            min_rate,
            window: Duration::from_secs(window_s),
            deadline_floor: Duration::from_secs(1000),
        }
    }

    /// Feed `per_step` bytes every `step` for `steps` steps; the first verdict.
    fn run(
        g: &mut RateGuard,
        t0: Instant,
        step: Duration,
        per_step: u64,
        steps: u32,
    ) -> Option<(u32, SlowRetrieval)> {
        let mut pos = g.start_pos;
        for i in 1..=steps {
            pos += per_step;
            if let Err(e) = g.check(t0 + step * i, pos) {
                return Some((i, e));
            }
        }
        None
    }

    #[test]
    fn a_trickle_below_the_minimum_is_refused_after_one_window() {
        let t0 = Instant::now();
        let mut g = RateGuard::new(rule(8192, 60), t0, 0, 262_159);
        // 1 byte/s, checked every second.
        let (at, e) = run(&mut g, t0, Duration::from_secs(1), 1, 600).expect("refused");
        assert_eq!(at, 60, "refused exactly when the first window is full");
        match &e {
            SlowRetrieval::BelowMinRate {
                rate,
                min_rate,
                secs,
                received,
                expected,
            } => {
                assert!((rate - 1.0).abs() < 0.01, "{rate}");
                assert_eq!(
                    (*min_rate, *secs, *received, *expected),
                    (8192, 60, 60, 262_159)
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            e.to_string(),
            "average rate 1 B/s over the last 60 s is below the minimum 8.0 KiB/s \
             (60 of 262159 bytes received)"
        );
    }

    #[test]
    fn a_fast_transfer_passes_and_a_late_slowdown_is_caught() {
        let t0 = Instant::now();
        let mut g = RateGuard::new(rule(1000, 10), t0, 0, u64::MAX / 2);
        assert!(run(&mut g, t0, Duration::from_secs(1), 5000, 100).is_none());
        // Then 10 B/s: the window still holds fast seconds for a while.
        let t1 = t0 + Duration::from_secs(100);
        let mut pos = 500_000;
        let mut refused = None;
        for i in 1..=30u32 {
            pos += 10;
            if let Err(e) = g.check(t1 + Duration::from_secs(u64::from(i)), pos) {
                refused = Some((i, e));
                break;
            }
        }
        let (at, e) = refused.expect("slowdown refused");
        assert!(
            (5..=11).contains(&at),
            "refused after {at} slow seconds: {e}"
        );
        assert!(matches!(e, SlowRetrieval::BelowMinRate { .. }), "{e:?}");
    }

    #[test]
    fn silence_is_reported_as_no_data_not_as_a_rate() {
        let t0 = Instant::now();
        let mut g = RateGuard::new(rule(1000, 10), t0, 4096, 10_000);
        let e = run(&mut g, t0, Duration::from_secs(1), 0, 20)
            .expect("refused")
            .1;
        assert_eq!(
            e,
            SlowRetrieval::NoData {
                secs: 10,
                received: 4096,
                expected: 10_000
            }
        );
        assert_eq!(
            e.to_string(),
            "no byte at all for 10 s (4096 of 10000 bytes received)"
        );
    }

    #[test]
    fn the_deadline_follows_the_size_and_catches_bursty_servers() {
        let r = RateRule {
            min_rate: 1000,
            window: Duration::from_secs(10),
            deadline_floor: Duration::from_secs(5),
        };
        assert_eq!(r.deadline_for(20_000), Some(Duration::from_secs(25)));
        assert_eq!(RateRule::off().deadline_for(20_000), None);
        let t0 = Instant::now();
        // Resumed at 80 000 of 100 000: the deadline covers the 20 000 left.
        let mut g = RateGuard::new(r, t0, 80_000, 100_000);
        // 1100 B/s passes the rate rule, but 20 000 bytes at 1000 B/s + 5 s = 25 s;
        // deliver only 18 000 in 25 s by going slower near the end.
        let mut pos = 80_000;
        let mut verdict = None;
        for i in 1..=40u64 {
            pos += if i <= 16 { 1100 } else { 10 };
            if let Err(e) = g.check(t0 + Duration::from_secs(i), pos) {
                verdict = Some((i, e));
                break;
            }
        }
        let (_, e) = verdict.expect("refused");
        assert!(
            matches!(
                e,
                SlowRetrieval::Deadline { .. } | SlowRetrieval::BelowMinRate { .. }
            ),
            "{e:?}"
        );
        // A steady 1000 B/s with 100 s budget but no floor: the deadline fires.
        let r = RateRule {
            min_rate: 100,
            window: Duration::from_secs(1000),
            deadline_floor: Duration::from_secs(2),
        };
        let mut g = RateGuard::new(r, t0, 0, 1000);
        let (at, e) = run(&mut g, t0, Duration::from_secs(1), 1, 100).expect("deadline");
        assert_eq!(at, 12);
        assert!(
            e.to_string().starts_with(
                "deadline of 12 s for this download passed with 12 of 1000 bytes received"
            ),
            "{e}"
        );
    }

    #[test]
    fn rule_off_never_refuses() {
        let t0 = Instant::now();
        let mut g = RateGuard::new(RateRule::off(), t0, 0, 1 << 40);
        assert!(run(&mut g, t0, Duration::from_secs(60), 0, 1000).is_none());
        assert_eq!(g.next_check(t0), None);
    }

    #[test]
    fn rates_parse_with_suffixes() {
        assert_eq!(parse_rate("8192"), Ok(8192));
        assert_eq!(parse_rate("8K"), Ok(8192));
        assert_eq!(parse_rate("8k"), Ok(8192));
        assert_eq!(parse_rate("8KiB/s"), Ok(8192));
        assert_eq!(parse_rate("1.5M"), Ok(1_572_864));
        assert_eq!(parse_rate("1G"), Ok(1 << 30));
        assert_eq!(parse_rate("0"), Ok(0));
        for bad in ["", "K", "-1", "8 X", "fast", "1e3", "8KK"] {
            assert!(parse_rate(bad).is_err(), "{bad:?}");
        }
        assert_eq!(human_rate(1.0), "1 B/s");
        assert_eq!(human_rate(8192.0), "8.0 KiB/s");
    }
}
