//! The fleet model behind tests/fleet_scale.rs: a million devices with random machine
//! ids, bucketed and staged by the real `policy::rollout` functions, checking on the
//! daemon's own schedule rule, switching only inside windows the real `Schedule`
//! computes, one reboot slot semaphore per group ([`lock`]), and the CDN's share of it
//! from the real client's requests against a real published repository ([`cdn`]).
//!
//! Times are whole seconds after the release was published (publish = 0).

#![allow(dead_code)]

pub mod cdn;
pub mod lock;
pub mod rollout;

use std::sync::OnceLock;

use jiff::{SignedDuration, Timestamp};
use patchd::policy::{bucket, RolloutPlan, RolloutStage, RolloutState, Schedule};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const MIN: i64 = 60;
pub const HOUR: i64 = 3600;
pub const DAY: i64 = 24 * HOUR;

/// Every figure the scenarios share. Defaults are patchd's own (check interval and
/// jitter, evaluation tick, timestamp expiry) or stated assumptions about a fleet.
#[derive(Debug, Clone)]
pub struct Params {
    pub devices: usize,
    pub seed: u64,
    /// Share of devices tagged `canary` (the first stage).
    pub canary_share: f64,
    /// `[repository] check_interval` and `check_jitter` (defaults 6 h, 30 min).
    pub check_interval: i64,
    pub check_jitter: i64,
    /// The engine's policy evaluation tick (`evaluate_every`, 60 s).
    pub evaluate_every: i64,
    /// `[policy] stage_spread` (default 30 min), seconds.
    pub stage_spread: i64,
    pub release: String,
    pub published: Timestamp,
    pub stages: Vec<RolloutStage>,
    /// `[policy] windows`, as the device parses them.
    pub windows: Vec<String>,
    pub group_size: usize,
    pub slots: usize,
    /// From taking the slot to releasing it: switch, reboot, boot, health checks
    /// (probation off, the default).
    pub hold: i64,
    /// Delay before asking for a slot again after all were taken (assumed).
    pub lock_retry: (i64, i64),
    /// patchpub's default timestamp expiry (1 day).
    pub timestamp_expiry: i64,
    /// How long a CDN may serve an old timestamp.json from its cache.
    pub cdn_ttl: i64,
    /// Chance that one check fails (network, CDN error) and waits for the next one.
    pub check_failure: f64,
    /// Share of devices cut off from the repository an hour before a pause.
    pub offline_share: f64,
    /// Download rate of one device, bytes/s.
    pub link_rate: f64,
    /// Image bytes a device fetches: full zstd image and static delta (the Debian pair
    /// measured by tests/bench/delta, README "Performance").
    pub full_image: u64,
    pub delta_image: u64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

impl Params {
    /// The defaults; `FLEET_DEVICES` and `FLEET_SEED` override size and seed (the bench).
    pub fn get() -> &'static Params {
        static P: OnceLock<Params> = OnceLock::new();
        P.get_or_init(|| Params {
            devices: env_or("FLEET_DEVICES", 1_000_000),
            seed: env_or("FLEET_SEED", 18),
            canary_share: 0.001,
            check_interval: 6 * HOUR,
            check_jitter: 30 * MIN,
            evaluate_every: MIN,
            stage_spread: 30 * MIN,
            release: "acme/2.0.0".into(),
            // A Tuesday, 10:00 UTC.
            published: "2026-12-01T10:00:00Z".parse().unwrap(),
            stages: vec![
                stage(&["canary"], 0, 0),
                stage(&[], 1, DAY),
                stage(&[], 10, 2 * DAY),
                stage(&[], 50, 3 * DAY),
                stage(&[], 100, 4 * DAY),
            ],
            windows: vec!["daily 02:00-04:00".into()],
            group_size: 20,
            slots: 2,
            hold: 8 * MIN,
            lock_retry: (60, 90),
            timestamp_expiry: DAY,
            cdn_ttl: MIN,
            check_failure: 0.02,
            offline_share: 0.002,
            link_rate: 50e6 / 8.0,
            full_image: 56_400_000,
            delta_image: 4_470_000,
        })
    }

    pub fn plan(&self, state: RolloutState) -> RolloutPlan {
        RolloutPlan {
            published: self.published,
            stages: self.stages.clone(),
            state,
            guarded: false,
            gate: None,
        }
    }

    pub fn schedule(&self) -> Schedule {
        Schedule::parse("UTC", &self.windows).unwrap()
    }

    /// The longest gap between two checks the schedule allows.
    pub fn longest_gap(&self) -> i64 {
        self.check_interval + self.check_jitter
    }

    pub fn at(&self, secs: i64) -> Timestamp {
        self.published + SignedDuration::from_secs(secs)
    }
}

pub fn stage(tags: &[&str], percent: u8, after: i64) -> RolloutStage {
    RolloutStage {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        percent,
        after_secs: after as u64,
    }
}

/// The devices: machine ids as /etc/machine-id holds them (32 hex digits, random), tags.
pub struct Fleet {
    pub ids: Vec<String>,
    pub canary: Vec<bool>,
    /// `bucket(id, release)`, the real function.
    pub buckets: Vec<u8>,
    /// When each device's stage opens (`RolloutPlan::device_start`), seconds after
    /// publish; `None`: no stage includes it.
    pub start: Vec<Option<i64>>,
}

pub fn canary_tags() -> &'static [String] {
    static T: OnceLock<Vec<String>> = OnceLock::new();
    T.get_or_init(|| vec!["canary".to_string()])
}

impl Fleet {
    pub fn get() -> &'static Fleet {
        static F: OnceLock<Fleet> = OnceLock::new();
        F.get_or_init(|| {
            let p = Params::get();
            let mut rng = StdRng::seed_from_u64(p.seed);
            let mut ids = Vec::with_capacity(p.devices);
            let mut canary = Vec::with_capacity(p.devices);
            for _ in 0..p.devices {
                ids.push(format!("{:032x}", rng.gen::<u128>()));
                canary.push(rng.gen_bool(p.canary_share));
            }
            let buckets: Vec<u8> = ids.iter().map(|id| bucket(id, &p.release)).collect();
            let plan = p.plan(RolloutState::Active);
            let start = (0..p.devices)
                .map(|i| {
                    plan.device_start(tags(canary[i]), buckets[i])
                        .map(|t| t.duration_since(p.published).as_secs())
                })
                .collect();
            Fleet {
                ids,
                canary,
                buckets,
                start,
            }
        })
    }

    pub fn tags(&self, i: usize) -> &'static [String] {
        tags(self.canary[i])
    }
}

pub fn tags(canary: bool) -> &'static [String] {
    if canary {
        canary_tags()
    } else {
        &[]
    }
}

/// The daemon's check schedule (src/engine/runner/mod.rs): the first check at start-up
/// plus a jitter drawn uniformly from [0, check_jitter]; when the timer fires, the next
/// one is set to now + check_interval + a fresh jitter (before the check runs, so a slow
/// or failed check does not shift it).
pub struct CheckSchedule {
    pub interval: i64,
    pub jitter: i64,
}

impl CheckSchedule {
    pub fn of(p: &Params) -> Self {
        Self {
            interval: p.check_interval,
            jitter: p.check_jitter,
        }
    }

    pub fn first_after_boot(&self, boot: i64, rng: &mut StdRng) -> i64 {
        boot + rng.gen_range(0..=self.jitter)
    }

    pub fn next(&self, t: i64, rng: &mut StdRng) -> i64 {
        t + self.interval + rng.gen_range(0..=self.jitter)
    }

    /// Time from `t` to the next check of a device that has been up for many checks:
    /// the equilibrium of the renewal process the rule above makes — a gap drawn with
    /// probability proportional to its length (the gap `t` falls in), `t` uniform in it.
    pub fn residual(&self, rng: &mut StdRng) -> i64 {
        let longest = (self.interval + self.jitter) as f64;
        loop {
            let gap = self.interval + rng.gen_range(0..=self.jitter);
            if rng.gen_bool(gap as f64 / longest) {
                return rng.gen_range(0..=gap);
            }
        }
    }

    /// Mean time between two checks.
    pub fn mean_gap(&self) -> f64 {
        self.interval as f64 + self.jitter as f64 / 2.0
    }
}

/// The maintenance windows as intervals (opens, closes), computed by the real
/// `Schedule::next_open` and `Schedule::window_at` over the simulated span.
pub struct Windows {
    pub spans: Vec<(i64, i64)>,
}

impl Windows {
    pub fn get() -> &'static Windows {
        static W: OnceLock<Windows> = OnceLock::new();
        W.get_or_init(|| {
            let p = Params::get();
            let s = p.schedule();
            let mut spans = Vec::new();
            let mut t = -DAY;
            while t < 30 * DAY {
                let Some(open) = s.next_open(p.at(t)) else {
                    break;
                };
                let (a, b) = s.window_at(open).expect("a window is open when it opens");
                let a = a.duration_since(p.published).as_secs();
                let b = b.duration_since(p.published).as_secs();
                spans.push((a, b));
                t = b;
            }
            Windows { spans }
        })
    }

    pub fn is_open(&self, t: i64) -> bool {
        let i = self.spans.partition_point(|&(_, b)| b <= t);
        self.spans.get(i).is_some_and(|&(a, _)| a <= t)
    }

    /// `t` when a window is open, else when the next one opens.
    pub fn next_open(&self, t: i64) -> i64 {
        let i = self.spans.partition_point(|&(_, b)| b <= t);
        match self.spans.get(i) {
            Some(&(a, _)) => a.max(t),
            None => i64::MAX / 4,
        }
    }

    /// The window open at or next after `t`.
    pub fn span_from(&self, t: i64) -> (i64, i64) {
        let i = self.spans.partition_point(|&(_, b)| b <= t);
        self.spans[i]
    }
}

/// `q`-quantile of sorted values.
pub fn quantile(sorted: &[i64], q: f64) -> i64 {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Seconds as "3 d 04:05" / "04:05:06" relative to publish.
pub fn hms(secs: i64) -> String {
    let sign = if secs < 0 { "-" } else { "" };
    let s = secs.abs();
    let (d, h, m) = (s / DAY, s % DAY / HOUR, s % HOUR / MIN);
    if d > 0 {
        format!("{sign}{d} d {h:02}:{m:02}")
    } else {
        format!("{sign}{h:02}:{m:02}:{:02}", s % MIN)
    }
}

/// Bytes with a binary unit.
pub fn bytes(b: f64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", U[i])
}
