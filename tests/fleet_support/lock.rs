//! One group's reboot slots, as a FleetLock server or the etcd semaphore gives them: at
//! most `slots` holders at once. A staged device asks for a slot only while a
//! maintenance window is open (at its next policy evaluation), keeps it from the switch
//! through the reboot and the health checks, and releases it at steady state; when every
//! slot is taken it asks again after a delay.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::rngs::StdRng;
use rand::Rng;

use super::Windows;

/// One device's time in a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub device: usize,
    pub from: i64,
    pub until: i64,
}

pub struct Semaphore<'a> {
    pub slots: usize,
    /// Seconds a device keeps its slot.
    pub hold: i64,
    /// Delay before asking again, drawn uniformly from this range.
    pub retry: (i64, i64),
    pub evaluate_every: i64,
    pub windows: &'a Windows,
}

impl Semaphore<'_> {
    /// Every device of one group through the semaphore; `ready` holds (device, the time
    /// it is staged and its rollout stage is open).
    pub fn run_group(&self, ready: &[(usize, i64)], rng: &mut StdRng) -> Vec<Hold> {
        let mut asks: BinaryHeap<Reverse<(i64, usize)>> = ready
            .iter()
            .map(|&(d, t)| Reverse((self.next_ask(t, rng), d)))
            .collect();
        let mut holders: Vec<i64> = Vec::with_capacity(self.slots);
        let mut out = Vec::with_capacity(ready.len());
        while let Some(Reverse((t, d))) = asks.pop() {
            holders.retain(|&until| until > t);
            if !self.windows.is_open(t) {
                asks.push(Reverse((self.next_ask(t, rng), d)));
                continue;
            }
            if holders.len() < self.slots {
                holders.push(t + self.hold);
                out.push(Hold {
                    device: d,
                    from: t,
                    until: t + self.hold,
                });
                continue;
            }
            // No slot frees before the earliest holder is done, so every ask before
            // then fails: skip them (the same retry draws, fewer heap operations).
            let free = holders.iter().copied().min().unwrap_or(t);
            let mut next = t;
            while next < free {
                next += rng.gen_range(self.retry.0..=self.retry.1);
            }
            asks.push(Reverse((next, d)));
        }
        out
    }

    /// When a device ready at `t` next evaluates its policy inside a window.
    fn next_ask(&self, t: i64, rng: &mut StdRng) -> i64 {
        let tick = rng.gen_range(0..self.evaluate_every.max(1));
        let at = t + tick;
        if self.windows.is_open(at) {
            at
        } else {
            self.windows.next_open(at) + tick
        }
    }
}

/// The most holders at any one instant, counted from the holds alone (a slot freed at
/// `until` is free for an ask at `until`).
pub fn max_concurrent(holds: &[Hold]) -> usize {
    let mut ev: Vec<(i64, i32)> = holds
        .iter()
        .flat_map(|h| [(h.from, 1), (h.until, -1)])
        .collect();
    ev.sort_unstable();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in ev {
        now += d;
        max = max.max(now);
    }
    max as usize
}
