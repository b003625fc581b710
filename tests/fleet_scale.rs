//! Scale on paper, checked by simulation: a million devices (random machine ids) through
//! one release's rollout, with the real rollout functions (`policy::bucket`,
//! `RolloutPlan::device_start`, and the whole `Policy::decide` on a sample), the
//! daemon's check schedule, the real maintenance-window computation, a reboot-slot
//! semaphore per group, and the CDN cost of the real client's requests against a
//! repository the real publisher made. Each test asserts its bound and prints its
//! figures (`cargo test --test fleet_scale -- --nocapture`); docs/fleet.md "Scale"
//! quotes them. `FLEET_DEVICES` / `FLEET_SEED` change the fleet (tests/bench/fleet).

mod fleet_support;

use fleet_support::lock::{max_concurrent, Semaphore};
use fleet_support::rollout::{first_good_check, Rollout};
use fleet_support::{bytes, hms, quantile, CheckSchedule, Fleet, Params, Windows};
use fleet_support::{DAY, HOUR, MIN};
use patchd::manifest::{Kind, ReleaseSummary, Severity};
use patchd::policy::{DeviceFacts, Facts, LockState, Policy, ReleaseFacts, RolloutState, Schedule};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One figure as `figure KEY=VALUE`, for tests/bench/fleet to collect.
fn figure(key: &str, value: impl std::fmt::Display) {
    println!("figure {key}={value}");
}

/// Percentage points.
fn pts(part: usize, of: usize) -> f64 {
    100.0 * part as f64 / of.max(1) as f64
}

#[test]
fn stage_shares_match_the_configured_percentages() {
    let (p, f) = (Params::get(), Fleet::get());
    let n = f.ids.len();
    let canaries = f.canary.iter().filter(|c| **c).count();
    println!(
        "fleet: {n} devices, {canaries} tagged canary ({:.3} %), release {}",
        pts(canaries, n),
        p.release
    );
    let mut stages = p.stages.clone();
    stages.sort_by_key(|s| s.after_secs);
    let mut percent = 0u8;
    let mut worst = 0.0f64;
    for s in &stages {
        percent = percent.max(s.percent);
        let opens = s.after_secs as i64;
        let open = |i: usize| f.start[i].is_some_and(|t| t <= opens);
        let all = (0..n).filter(|&i| open(i)).count();
        let untagged = (0..n).filter(|&i| !f.canary[i]).count();
        let untagged_in = (0..n).filter(|&i| !f.canary[i] && open(i)).count();
        let share = pts(untagged_in, untagged);
        // Tagged devices are in from their stage on, whatever their bucket.
        let want_all = f64::from(percent) + pts(canaries, n) * (1.0 - f64::from(percent) / 100.0);
        println!(
            "stage at +{:>3} h ({:>3} % / tags {:?}): {all:>7} devices switched-eligible = {:.3} % \
             of all (expected {want_all:.3} %), untagged {share:.3} % (configured {percent} %)",
            opens / HOUR,
            s.percent,
            s.tags,
            pts(all, n)
        );
        worst = worst.max((share - f64::from(percent)).abs());
        assert!(
            (share - f64::from(percent)).abs() <= 0.5,
            "stage +{opens}s: {share:.3} % of untagged devices, configured {percent} %"
        );
        assert!(
            (pts(all, n) - want_all).abs() <= 0.5,
            "stage +{opens}s: {:.3} % of all devices, expected {want_all:.3} %",
            pts(all, n)
        );
    }
    figure("stage_max_error_pts", format!("{worst:.3}"));
    // Every bucket holds about a hundredth of the fleet (within 5 % of it).
    let mut per = [0usize; 100];
    for b in &f.buckets {
        per[usize::from(*b)] += 1;
    }
    let (lo, hi) = (per.iter().min().unwrap(), per.iter().max().unwrap());
    println!("devices per bucket: {lo}..{hi} (ideal {})", n / 100);
    assert!(*lo as f64 >= 0.95 * n as f64 / 100.0 && *hi as f64 <= 1.05 * n as f64 / 100.0);
    // The next release draws its first 10 % independently: about 10 % of 10 % overlap.
    let next = "acme/2.1.0";
    let both = (0..n)
        .filter(|&i| f.buckets[i] < 10 && patchd::policy::bucket(&f.ids[i], next) < 10)
        .count();
    println!(
        "first 10 % of {} and of {next} overlap: {:.3} % of the fleet (independent: 1 %)",
        p.release,
        pts(both, n)
    );
    assert!((pts(both, n) - 1.0).abs() <= 0.5);
}

fn summary() -> ReleaseSummary {
    ReleaseSummary {
        product: "acme".into(),
        hardware: vec![],
        version: "2.0.0".parse().unwrap(),
        security_version: 2,
        min_version: None,
        kind: Kind::Security,
        severity: Severity::High,
        cves: vec![],
        channels: vec!["stable".into()],
        withdrawn: false,
        paused: false,
        size: 1,
    }
}

#[test]
fn the_whole_switch_decision_agrees_with_the_stage_functions_on_a_sample() {
    let (p, f, w) = (Params::get(), Fleet::get(), Windows::get());
    let policy = Policy {
        schedule: Schedule::parse("UTC", &p.windows).unwrap(),
        ..Policy::default()
    };
    let running: semver::Version = "1.0.0".parse().unwrap();
    let active = ReleaseFacts::new(summary(), Some(p.plan(RolloutState::Active)));
    let paused = ReleaseFacts::new(summary(), Some(p.plan(RolloutState::Paused)));
    // Instants around each stage opening and each window edge of the rollout.
    let mut instants: Vec<i64> = p
        .stages
        .iter()
        .flat_map(|s| [s.after_secs as i64 - 1, s.after_secs as i64 + MIN])
        .collect();
    for &(a, b) in w.spans.iter().filter(|(a, _)| (0..6 * DAY).contains(a)) {
        instants.extend([a - 1, a, a + HOUR, b - 1, b]);
    }
    let mut rng = StdRng::seed_from_u64(p.seed + 7);
    let sample: Vec<usize> = (0..2000).map(|_| rng.gen_range(0..f.ids.len())).collect();
    let (mut switch_yes, mut decisions) = (0, 0);
    for &i in &sample {
        let dev = DeviceFacts {
            machine_id: f.ids[i].clone(),
            product: "acme".into(),
            hardware: None,
            channel: "stable".into(),
            tags: f.tags(i).to_vec(),
        };
        for &t in &instants {
            let facts = |release| Facts {
                now: p.at(t),
                device: &dev,
                release,
                running: Some(&running),
                security_floor: 0,
                floor_overridden: false,
                failed_here: None,
                manifest_problem: None,
                holds: &[],
                approved: false,
                force: false,
                inhibitors: &[],
                lock: &LockState::NotConfigured,
            };
            let v = policy.decide(&facts(&active));
            let stage_open = f.start[i].is_some_and(|s| s <= t);
            assert_eq!(v.may_stage(), stage_open, "device {i} at +{t}s: {v:?}");
            assert_eq!(
                v.may_switch(),
                stage_open && w.is_open(t),
                "device {i} at +{t}s: {v:?}"
            );
            let v = policy.decide(&facts(&paused));
            assert!(!v.may_stage() && !v.may_switch(), "paused: {v:?}");
            switch_yes += usize::from(stage_open && w.is_open(t));
            decisions += 2;
        }
    }
    println!(
        "Policy::decide on {} sampled devices x {} instants ({decisions} decisions): agrees \
         with bucket/stage/window model ({switch_yes} may switch); paused plan: none may",
        sample.len(),
        instants.len()
    );
}

/// Not-yet-switched devices at the pause time `t`, when each stops, and how many still
/// switched before they stopped.
fn pause_at(t: i64, key: &str, label: &str) {
    let (p, r) = (Params::get(), Rollout::get());
    let sched = CheckSchedule::of(p);
    let mut rng = StdRng::seed_from_u64(p.seed.wrapping_add(t as u64));
    let (mut waiting, mut leaked, mut never) = (0usize, 0usize, 0usize);
    let mut delays = Vec::new();
    let seen_from = t + p.cdn_ttl;
    for d in &r.devices {
        if d.switched.is_some_and(|s| s <= t) {
            continue;
        }
        waiting += 1;
        // Cut off from the repository from an hour before the pause on: the device keeps
        // the plan it last saw until the metadata it verified expires (its last good check
        // was before the cut, and that timestamp expires at most one expiry after it), then
        // the decision waits for a check that renews it (`WaitFor::Stale`).
        let offline = rng.gen_bool(p.offline_share);
        let stop = if offline {
            never += 1;
            t - HOUR + p.timestamp_expiry
        } else {
            first_good_check(p, &sched, d.known, seen_from, &mut rng)
        };
        delays.push(stop - t);
        // A cut-off device switches only what it had staged before the cut.
        let could = !offline || d.staging.is_some_and(|s| s < t - HOUR);
        if could && d.switched.is_some_and(|sw| sw < stop) {
            leaked += 1;
        }
    }
    delays.sort_unstable();
    let bound = p.longest_gap() + p.timestamp_expiry;
    let one_gap = p.longest_gap() + p.cdn_ttl;
    let within = |b: i64| delays.partition_point(|&x| x <= b);
    println!(
        "pause at +{} ({}, {label}): {waiting} devices not yet switched; stopped within one check \
         gap ({}) {:.3} %, within gap + timestamp expiry ({}) {:.3} %; delay p50 {} p99 {} \
         p99.9 {} max {}; cut off (stopped by the metadata's expiry) {never}; switched after the pause before seeing it: \
         {leaked} ({:.3} %)",
        hms(t),
        p.at(t).strftime("%a %H:%M"),
        hms(one_gap),
        pts(within(one_gap), waiting),
        hms(bound),
        pts(within(bound), waiting),
        hms(quantile(&delays, 0.5)),
        hms(quantile(&delays, 0.99)),
        hms(quantile(&delays, 0.999)),
        hms(*delays.last().unwrap()),
        pts(leaked, waiting)
    );
    figure(
        &format!("pause_{key}_stopped_pct"),
        format!("{:.3}", pts(within(bound), waiting)),
    );
    figure(
        &format!("pause_{key}_leaked_pct"),
        format!("{:.3}", pts(leaked, waiting)),
    );
    assert!(
        pts(within(bound), waiting) >= 99.0,
        "pause at +{t}s: only {:.3} % stopped within {bound}s",
        pts(within(bound), waiting)
    );
    // Devices whose next check went through stop within one gap.
    let healthy = 100.0 * (1.0 - p.offline_share) * (1.0 - p.check_failure);
    assert!(pts(within(one_gap), waiting) >= healthy - 0.5);
    assert!(*delays.first().unwrap() >= p.cdn_ttl);
}

#[test]
fn a_pause_stops_the_devices_that_have_not_switched_within_a_check_gap_plus_expiry() {
    let p = Params::get();
    println!(
        "checks every {} + up to {} jitter; check failure {} %; offline {} %; CDN cache {}",
        hms(p.check_interval),
        hms(p.check_jitter),
        p.check_failure * 100.0,
        p.offline_share * 100.0,
        hms(p.cdn_ttl)
    );
    // Day 3 12:00: the 50 % stage opened 2 h ago and waits for tonight's window.
    pause_at(
        3 * DAY + 2 * HOUR,
        "midday",
        "mid-day, the 50 % stage staged and waiting",
    );
    // Day 4 00:00: two hours before that window opens.
    pause_at(
        3 * DAY + 14 * HOUR,
        "pre_window",
        "two hours before the window",
    );
}

#[test]
fn no_group_ever_has_more_devices_rebooting_than_its_slots() {
    let (p, r, w) = (Params::get(), Rollout::get(), Windows::get());
    let mut worst = 0;
    for (g, holds) in r.holds.iter().enumerate() {
        let m = max_concurrent(holds);
        assert!(
            m <= p.slots,
            "group {g}: {m} rebooting at once, {} slots",
            p.slots
        );
        worst = worst.max(m);
    }
    figure("max_rebooting_per_group", worst);
    let staged = r.devices.iter().filter(|d| d.staging.is_some()).count();
    let held: usize = r.holds.iter().map(Vec::len).sum();
    assert_eq!(held, staged, "every staged device got a slot once");
    println!(
        "{} groups of {} with {} slots: at most {worst} rebooting at once in any group; {held} \
         slot holds",
        r.holds.len(),
        p.group_size,
        p.slots
    );
    // One group, every member staged before the window: how long until all are through.
    let mut rng = StdRng::seed_from_u64(p.seed + 3);
    let (open, close) = w.span_from(2 * DAY);
    for (g, s, hold) in [
        (10, 1, p.hold),
        (20, 2, p.hold),
        (50, 2, p.hold),
        (50, 5, p.hold),
        (200, 10, p.hold),
        (20, 2, p.hold + DAY),
    ] {
        let sem = Semaphore {
            slots: s,
            hold,
            retry: p.lock_retry,
            evaluate_every: p.evaluate_every,
            windows: w,
        };
        let ready: Vec<(usize, i64)> = (0..g).map(|d| (d, open - HOUR)).collect();
        let holds = sem.run_group(&ready, &mut rng);
        assert_eq!(holds.len(), g);
        assert!(max_concurrent(&holds) <= s);
        let last = holds.iter().map(|h| h.until).max().unwrap();
        let rounds = g.div_ceil(s) as i64;
        let nights = w
            .spans
            .iter()
            .filter(|(a, _)| *a >= open && *a < last)
            .count();
        println!(
            "group of {g:>3}, {s:>2} slots, {:>5} per device: all through {} after the window \
             opened, {nights} night(s) ({rounds} rounds)",
            hms(hold),
            hms(last - open)
        );
        assert!(last - open >= rounds * hold);
        let fits = rounds * (hold + p.lock_retry.1) + p.evaluate_every;
        if open + fits <= close {
            assert!(last - open <= fits, "{g}/{s}: {} > {fits}", last - open);
        }
    }
}

#[test]
fn time_from_publish_to_half_most_and_nearly_all_of_the_fleet_patched() {
    let (p, r, w) = (Params::get(), Rollout::get(), Windows::get());
    let n = r.devices.len();
    let mut done: Vec<i64> = r
        .devices
        .iter()
        .map(|d| d.patched.unwrap_or(i64::MAX))
        .collect();
    done.sort_unstable();
    println!(
        "stages {:?}; windows {:?} UTC; groups of {} with {} slots, {} per reboot",
        p.stages
            .iter()
            .map(|s| format!("{}%/{:?}@+{}h", s.percent, s.tags, s.after_secs / 3600))
            .collect::<Vec<_>>(),
        p.windows,
        p.group_size,
        p.slots,
        hms(p.hold)
    );
    for &(a, b) in w.spans.iter().filter(|(a, _)| (0..6 * DAY).contains(a)) {
        let by = done.partition_point(|&x| x <= b + p.hold);
        println!(
            "  window opening +{} ({}): {:.3} % patched by its close",
            hms(a),
            p.at(a).strftime("%a %H:%M"),
            pts(by, n)
        );
    }
    let mut stages = p.stages.clone();
    stages.sort_by_key(|s| s.after_secs);
    let f = Fleet::get();
    for q in [0.50, 0.95, 0.99] {
        let at = quantile(&done, q);
        println!(
            "{:>2.0} % patched at +{} after publish ({})",
            q * 100.0,
            hms(at),
            p.at(at).strftime("%a %H:%M")
        );
        figure(
            &format!("patched_p{:.0}_h", q * 100.0),
            format!("{:.2}", at as f64 / HOUR as f64),
        );
        // It falls in the first window after the stage that makes the eligible share
        // (as the buckets fell, so a 50 % stage may hold 49.9 %) reach q.
        let stage = stages
            .iter()
            .find(|s| {
                let opens = s.after_secs as i64;
                let eligible = f.start.iter().filter(|t| t.is_some_and(|t| t <= opens));
                eligible.count() as f64 >= q * n as f64
            })
            .unwrap();
        let (open, close) = w.span_from(stage.after_secs as i64);
        assert!(
            at >= open && at <= close + p.hold,
            "{q}: +{at}s outside the window {open}..{close} after the {} % stage",
            stage.percent
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn cdn_requests_and_bytes_from_the_real_check() {
    let p = Params::get();
    let dir = tempfile::tempdir().unwrap();
    let m = fleet_support::cdn::measure(p, dir.path()).await;
    for (what, c) in [
        ("first check of a new device", &m.first),
        ("no change, 1 release listed", &m.no_change),
        ("new release published", &m.release_day),
        ("no change, 2 releases listed", &m.no_change_two),
        ("after a pause", &m.after_pause),
    ] {
        println!(
            "{what}: {} requests, {} body bytes, {} with headers: {}",
            c.count(),
            c.body_bytes(),
            c.wire_bytes(),
            c.describe()
        );
    }
    // The request pattern the figures rest on; a change here changes docs/fleet.md.
    let why = "the check's request pattern changed: update the figures in docs/fleet.md";
    for (c, listed) in [(&m.no_change, 1), (&m.no_change_two, 2)] {
        let md = c.under("metadata/");
        assert_eq!(md.len(), 2, "{why}: {}", c.describe());
        assert_eq!(c.not_found(), vec!["metadata/2.root.json"], "{why}");
        assert_eq!(md[1].0, "metadata/timestamp.json", "{why}");
        // Manifests verified by an earlier check are reused while the signed metadata
        // vouches for the same bytes.
        let manifests = c.under("targets/");
        assert!(
            manifests.is_empty(),
            "{why} ({listed} listed): {}",
            c.describe()
        );
    }
    let first = m.first.under("targets/");
    assert_eq!(first.len(), 1, "{why}: {}", m.first.describe());
    assert!(first[0].0.ends_with("manifest.json"), "{why}");
    assert!(m.after_pause.count() > m.no_change_two.count());
    // A pause re-signs the manifest: new bytes, fetched and verified again.
    let paused = m.after_pause.under("targets/");
    assert_eq!(paused.len(), 1, "{why}: {}", m.after_pause.describe());
    cdn_figures(p, &m);
}

fn cdn_figures(p: &Params, m: &fleet_support::cdn::Measured) {
    use fleet_support::cdn::HEADER_BYTES;
    let n = p.devices as f64;
    let manifest = m.first.under("targets/")[0].2 + HEADER_BYTES;
    let base = m.no_change.wire_bytes();
    println!(
        "per check: {base} B for the two metadata requests, {manifest} B per listed release's \
         manifest when it must be fetched (first check, a daemon restart, a changed manifest; \
         headers {HEADER_BYTES} B per response, assumed)"
    );
    // The schedule model against the formula: checks falling in one hour.
    let sched = CheckSchedule::of(p);
    let mut rng = StdRng::seed_from_u64(p.seed + 11);
    let in_hour = (0..p.devices)
        .filter(|_| sched.residual(&mut rng) < HOUR)
        .count() as f64;
    let formula = n * HOUR as f64 / sched.mean_gap();
    println!(
        "checks in one hour: simulated {in_hour:.0}, formula N x 3600 / mean gap = {formula:.0}"
    );
    assert!((in_hour / formula - 1.0).abs() < 0.01);
    figure("no_change_requests", m.no_change.count());
    figure("no_change_wire_bytes", m.no_change.wire_bytes());
    figure(
        "req_per_s_6h",
        format!("{:.0}", n / sched.mean_gap() * m.no_change.count() as f64),
    );
    for (interval, jitter) in [(HOUR, 30 * MIN), (6 * HOUR, 30 * MIN), (DAY, 30 * MIN)] {
        let s = CheckSchedule { interval, jitter };
        let per_s = n / s.mean_gap();
        for (label, reqs, b) in [
            ("no change (manifests reused)", 2.0, base),
            ("after a restart, 1 release listed", 3.0, base + manifest),
            (
                "after a restart, 5 releases listed",
                7.0,
                base + 5 * manifest,
            ),
        ] {
            println!(
                "{:.0} devices, every {} + {}: {label}: {:.0} req/s, {}/h",
                n,
                hms(interval),
                hms(jitter),
                per_s * reqs,
                bytes(per_s * b as f64 * 3600.0)
            );
        }
    }
    release_day(p, m);
}

/// Release day from the simulated rollout: metadata once per device, then the image
/// when its stage opens.
fn release_day(p: &Params, m: &fleet_support::cdn::Measured) {
    let r = Rollout::get();
    let extra = m.release_day.wire_bytes() as f64 - m.no_change.wire_bytes() as f64;
    println!(
        "published {}; release day metadata: {} extra per device once, {} for the fleet",
        p.published.strftime("%a %Y-%m-%d %H:%M UTC"),
        bytes(extra),
        bytes(extra * p.devices as f64)
    );
    // Without the spread (`stage_spread = "0s"`): a device whose stage opened while it
    // knew of the release stages at the first policy evaluation after the opening.
    let (f, mut rng) = (Fleet::get(), StdRng::seed_from_u64(p.seed + 17));
    let at_once: Vec<i64> = r
        .devices
        .iter()
        .zip(&f.start)
        .filter_map(|(d, open)| d.staging.zip(*open).map(|(s, o)| (d.known, s, o)))
        .map(|(known, s, open)| {
            if known < open {
                open + rng.gen_range(0..p.evaluate_every)
            } else {
                s
            }
        })
        .collect();
    let today: Vec<i64> = r.devices.iter().filter_map(|d| d.staging).collect();
    for (label, size, starts) in [
        ("static delta", p.delta_image, &today),
        ("full image", p.full_image, &today),
        (
            "static delta, stage_spread = 0s (all at the opening)",
            p.delta_image,
            &at_once,
        ),
    ] {
        let secs = (size as f64 / p.link_rate).ceil() as i64;
        let mut per_min = std::collections::BTreeMap::<i64, f64>::new();
        let mut per_hour = std::collections::BTreeMap::<i64, f64>::new();
        for &s in starts {
            // Spread each download over the minutes it spans at the device's rate.
            let mut t = s;
            while t < s + secs {
                let step = (MIN - t.rem_euclid(MIN)).min(s + secs - t);
                let b = step as f64 * size as f64 / secs as f64;
                *per_min.entry(t.div_euclid(MIN)).or_default() += b;
                *per_hour.entry(t.div_euclid(HOUR)).or_default() += b;
                t += step;
            }
        }
        let (pm, pmb) = per_min
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(k, v)| (*k, *v))
            .unwrap();
        let (ph, phb) = per_hour
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(k, v)| (*k, *v))
            .unwrap();
        let total: f64 = per_hour.values().sum();
        println!(
            "{label} ({}, {secs} s per device at {:.0} Mbit/s): total {}; peak hour +{} {} \
             ({:.1} Gbit/s average); peak minute +{} {} ({:.1} Gbit/s)",
            bytes(size as f64),
            p.link_rate * 8.0 / 1e6,
            bytes(total),
            hms(ph * HOUR),
            bytes(phb),
            phb * 8.0 / 3600.0 / 1e9,
            hms(pm * MIN),
            bytes(pmb),
            pmb * 8.0 / 60.0 / 1e9
        );
        assert!((total / (size as f64 * starts.len() as f64) - 1.0).abs() < 1e-6);
        if label == "static delta" {
            figure(
                "release_peak_minute_gbit_delta",
                format!("{:.1}", pmb * 8.0 / 60.0 / 1e9),
            );
        }
    }
    after_reboots(p, r);
}

/// Check load the day after the last window: devices that rebooted into the release
/// check at boot + jitter, so their checks bunch up behind the window.
fn after_reboots(p: &Params, r: &Rollout) {
    let sched = CheckSchedule::of(p);
    let mut rng = StdRng::seed_from_u64(p.seed + 13);
    let last = r.devices.iter().filter_map(|d| d.patched).max().unwrap();
    let (from, to) = (last, last + DAY);
    let mut bins = vec![0u64; (DAY / (10 * MIN)) as usize];
    for d in &r.devices {
        let mut c = match d.switched {
            // Boot a few minutes into the hold (switch, reboot).
            Some(s) => sched.first_after_boot(s + 3 * MIN, &mut rng),
            None => last + sched.residual(&mut rng),
        };
        while c < to {
            if c >= from {
                bins[((c - from) / (10 * MIN)) as usize] += 1;
            }
            c = sched.next(c, &mut rng);
        }
    }
    let peak = *bins.iter().max().unwrap() as f64 / 600.0;
    let mean = p.devices as f64 / sched.mean_gap();
    println!(
        "the day after the last window: peak {peak:.0} checks/s over 10 min, steady mean \
         {mean:.0} checks/s ({:.1} x)",
        peak / mean
    );
}
