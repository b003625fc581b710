//! One release through the whole fleet: each device learns of it at its first good
//! check after publish, stages it once its rollout stage is open (at that check when the
//! stage was open already; otherwise at the first policy evaluation after its own
//! `stage_spread` delay, the real `policy::stage_delay`; outside windows too: the default
//! `stage_outside_windows`), then asks its group's semaphore for a reboot slot inside a
//! window and is patched when the slot is released (reboot and health checks done).

use std::sync::OnceLock;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::lock::{Hold, Semaphore};
use super::{CheckSchedule, Fleet, Params, Windows};

#[derive(Debug, Clone, Copy, Default)]
pub struct Device {
    /// First good check after publish (the device knows the release and its plan).
    pub known: i64,
    /// When staging starts (download of the image).
    pub staging: Option<i64>,
    /// Slot taken: switch and reboot start.
    pub switched: Option<i64>,
    /// Slot released: healthy on the new release.
    pub patched: Option<i64>,
}

pub struct Rollout {
    pub devices: Vec<Device>,
    /// Every group's holds (group index = device index / group size).
    pub holds: Vec<Vec<Hold>>,
}

impl Rollout {
    pub fn get() -> &'static Rollout {
        static R: OnceLock<Rollout> = OnceLock::new();
        R.get_or_init(|| {
            let p = Params::get();
            run(p, Fleet::get(), Windows::get(), p.seed.wrapping_add(1))
        })
    }
}

/// The first good check at or after `from` for a device whose next check is `first`.
pub fn first_good_check(
    p: &Params,
    sched: &CheckSchedule,
    first: i64,
    from: i64,
    rng: &mut StdRng,
) -> i64 {
    let mut c = first;
    while c < from || rng.gen_bool(p.check_failure) {
        c = sched.next(c, rng);
    }
    c
}

/// The device's staging delay after its stage opened, seconds (the engine's own rule).
pub fn spread_delay(p: &Params, machine_id: &str) -> i64 {
    let spread = jiff::SignedDuration::from_secs(p.stage_spread);
    patchd::policy::stage_delay(machine_id, &p.release, spread).as_secs()
}

pub fn run(p: &Params, fleet: &Fleet, windows: &Windows, seed: u64) -> Rollout {
    let mut rng = StdRng::seed_from_u64(seed);
    let sched = CheckSchedule::of(p);
    let download = (p.delta_image as f64 / p.link_rate).ceil() as i64;
    let mut devices = Vec::with_capacity(fleet.ids.len());
    for i in 0..fleet.ids.len() {
        let first = sched.residual(&mut rng);
        let known = first_good_check(p, &sched, first, 0, &mut rng);
        let staging = fleet.start[i].map(|open| {
            if known >= open {
                known
            } else {
                open + spread_delay(p, &fleet.ids[i]) + rng.gen_range(0..p.evaluate_every)
            }
        });
        devices.push(Device {
            known,
            staging,
            ..Device::default()
        });
    }
    let sem = Semaphore {
        slots: p.slots,
        hold: p.hold,
        retry: p.lock_retry,
        evaluate_every: p.evaluate_every,
        windows,
    };
    let mut holds = Vec::new();
    for (g, members) in devices.chunks(p.group_size).enumerate() {
        let base = g * p.group_size;
        let ready: Vec<(usize, i64)> = members
            .iter()
            .enumerate()
            .filter_map(|(k, d)| d.staging.map(|s| (base + k, s + download)))
            .collect();
        holds.push(sem.run_group(&ready, &mut rng));
    }
    for h in holds.iter().flatten() {
        devices[h.device].switched = Some(h.from);
        devices[h.device].patched = Some(h.until);
    }
    Rollout { devices, holds }
}
