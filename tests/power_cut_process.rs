//! Crashes of the real `patchd run` process at every persisted step of an update. The
//! daemon is built with the `failpoints` feature; `PATCHD_FAILPOINT=NAME#N` makes it
//! abort() (SIGABRT, nothing more written) the Nth time it reaches NAME. Each point is
//! crashed twice: once followed by a plain restart (what systemd's `Restart=` does;
//! the update must then commit), once by a power cycle of the simulated bootloader and
//! a restart (a power cut; committed, or rolled back when the trial boot was already
//! used up — the release is then blocked). After every
//! crash the on-disk state must be sane — state file valid, audit chain intact, the
//! primary (and any armed trial) slot holds verified content whose bytes match its
//! record — and the update must end committed (or cleanly rolled back).
//!
//! Run with `cargo test --features failpoints --test power_cut_process`
//! (tests/suites/power-cut does so in CI).

#[cfg(not(feature = "failpoints"))]
#[test]
fn power_cut_process_needs_failpoints_feature() {
    println!(
        "skipped: process crash tests need `--features failpoints` \
         (tests/suites/power-cut runs them)"
    );
}

#[cfg(feature = "failpoints")]
mod process;

#[cfg(feature = "failpoints")]
mod crashes {
    use std::os::unix::process::ExitStatusExt;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use patchd::boot::Bootloader;
    use patchd::engine::StateKind;
    use patchd::slot::SlotState;
    use sha2::Digest;

    use super::process::*;

    const SIZE: usize = 64 * 1024;

    /// One fail point occurrence: in the `start`-th process, the `nth` time `name` hit.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Point {
        start: usize,
        name: String,
        nth: u32,
    }

    /// What a crash may leave on disk.
    fn check_invariants(dev: &Device) -> Result<(), String> {
        dev.state()
            .map_err(|e| format!("state file unreadable: {e}"))?;
        let report = patchd::audit::AuditLog::open(dev.audit_path(), Default::default())
            .and_then(|l| l.verify())
            .map_err(|e| format!("audit log: {e}"))?;
        if !report.is_intact() {
            return Err(format!("audit chain broken: {report}"));
        }
        let bl = dev.bootloader();
        let info = bl.slots().map_err(|e| format!("bootloader: {e}"))?;
        for i in &info {
            let st = dev.slot_status(i.slot.as_str());
            let must_boot = i.primary || i.tries_left.is_some_and(|t| t > 0);
            if must_boot && !st.state.is_bootable() {
                return Err(format!(
                    "slot {} may boot next (primary {}, tries {:?}) but is {:?}",
                    i.slot, i.primary, i.tries_left, st.state
                ));
            }
            if st.state.is_bootable() && i.slot.as_str() == "b" {
                let bytes = std::fs::read(dev.paths.resolve("/var/lib/slots/b.img"))
                    .map_err(|e| e.to_string())?;
                let size = st.size.unwrap_or(0) as usize;
                let sha = hex::encode(sha2::Sha256::digest(&bytes[..size.min(bytes.len())]));
                if Some(sha.as_str()) != st.sha256.as_deref() {
                    return Err(format!(
                        "slot b is recorded {:?} but its bytes do not match",
                        st.state
                    ));
                }
            }
        }
        Ok(())
    }

    fn seen_file(dev: &Device, start: usize) -> std::path::PathBuf {
        dev.top.join(format!("seen.{start}"))
    }

    fn read_seen(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Run the update with at most one crash at `arm`; return how it ended and the
    /// fail points each process reached.
    async fn story(
        bus: &SessionBus,
        top: &Path,
        arm: Option<&Point>,
        power_cut: bool,
    ) -> Result<(String, Vec<Vec<String>>), String> {
        let dev = Device::new(
            top,
            &DeviceSpec {
                image_size: SIZE,
                ..DeviceSpec::default()
            },
        );
        let mut seen = Vec::new();
        let mut crashed = false;
        for start in 0..8 {
            let sf = seen_file(&dev, start);
            let sf_s = sf.display().to_string();
            let spec = arm
                .filter(|p| p.start == start)
                .map(|p| format!("{}#{}", p.name, p.nth));
            let mut env = vec![("PATCHD_FAILPOINTS_SEEN", sf_s.as_str())];
            if let Some(s) = &spec {
                env.push(("PATCHD_FAILPOINT", s.as_str()));
            }
            let mut d = dev.spawn(&bus.address, &env);
            let end = wait_until(&mut d, &dev, Duration::from_secs(60), "an end", |dev| {
                matches!(dev.state(), Ok(Some(s))
                    if s.lifecycle.kind() == StateKind::Committed
                    || (s.lifecycle.kind() == StateKind::RolledBack
                        && dev.bootloader().booted_slot().is_ok_and(|b| b.as_str() == "a")
                        && s.pending.is_none()))
            })
            .await;
            // A fail point right after the final write may still fire: give it time.
            let end = match end {
                Ended::Reached => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    match d.try_wait() {
                        Some(st) => {
                            d.0 = None;
                            Ended::Exited(st)
                        }
                        None => Ended::Reached,
                    }
                }
                e => e,
            };
            seen.push(read_seen(&sf));
            match end {
                Ended::Reached => {
                    d.stop(Duration::from_secs(40))
                        .ok_or("patchd did not stop on SIGTERM")?;
                    check_invariants(&dev)?;
                    let doc = dev.state()?.ok_or("no state")?;
                    let how = match doc.lifecycle.kind() {
                        StateKind::Committed => {
                            if doc.committed.as_ref().map(|c| c.version.as_str()) != Some("2.0.0") {
                                return Err(format!("committed something else: {doc:?}"));
                            }
                            if dev.slot_status("b").state != SlotState::Good {
                                return Err("committed but slot b is not good".into());
                            }
                            "committed"
                        }
                        _ => {
                            if !doc.is_blocked("2.0.0") {
                                return Err(format!("rolled back without blocking: {doc:?}"));
                            }
                            "rolled back"
                        }
                    };
                    if arm.is_some() && !crashed {
                        return Err("the armed fail point was never reached".into());
                    }
                    return Ok((how.to_string(), seen));
                }
                Ended::Exited(st) if st.signal() == Some(libc::SIGABRT) => {
                    if spec.is_none() {
                        return Err(format!("patchd aborted unarmed:\n{}", tail(&dev.log(), 30)));
                    }
                    crashed = true;
                    check_invariants(&dev).map_err(|e| format!("after the crash: {e}"))?;
                    if power_cut {
                        dev.power_cycle();
                    }
                }
                Ended::Exited(st) if st.success() => {
                    // It asked the (fake) systemd to reboot.
                    check_invariants(&dev).map_err(|e| format!("before the reboot: {e}"))?;
                    dev.power_cycle();
                }
                Ended::Exited(st) => {
                    return Err(format!("patchd exited {st}:\n{}", tail(&dev.log(), 30)));
                }
            }
        }
        Err(format!("no end after 8 starts; state {}", dev.state_kind()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_process_crash_at_every_persisted_step_recovers() {
        let Some(bus) = SessionBus::start() else {
            return;
        };
        let systemd = FakeSystemd::default();
        let _sd = systemd.serve(&bus.address).await;
        let started = Instant::now();

        // An uninterrupted update first, to learn the fail points each process passes.
        let top = tempfile::tempdir().unwrap();
        let (how, seen) = story(&bus, top.path(), None, false).await.unwrap();
        assert_eq!(how, "committed");
        let mut points = Vec::new();
        for (start, names) in seen.iter().enumerate() {
            let mut counts = std::collections::BTreeMap::<&str, u32>::new();
            for n in names {
                let nth = counts.entry(n).or_default();
                points.push(Point {
                    start,
                    name: n.clone(),
                    nth: *nth,
                });
                *nth += 1;
            }
        }
        let names: Vec<&str> = points.iter().map(|p| p.name.as_str()).collect();
        for must in [
            "saved:staging",
            "saved:staged",
            "saved:switching",
            "saved:committed",
        ] {
            assert!(names.contains(&must), "{must} not reached: {names:?}");
        }
        println!("{} fail points: {names:?}", points.len());

        for p in &points {
            let top = tempfile::tempdir().unwrap();
            let (how, _) = story(&bus, top.path(), Some(p), false)
                .await
                .unwrap_or_else(|e| panic!("crash + restart at {p:?}: {e}"));
            assert_eq!(how, "committed", "crash + restart at {p:?}");
            let top = tempfile::tempdir().unwrap();
            let (cut, _) = story(&bus, top.path(), Some(p), true)
                .await
                .unwrap_or_else(|e| panic!("power cut at {p:?}: {e}"));
            println!(
                "crash at {} (process {}, #{}): restart → {how}, power cut → {cut}",
                p.name, p.start, p.nth
            );
        }
        println!(
            "{} crash runs in {:.0?}",
            2 * points.len(),
            started.elapsed()
        );
    }
}
