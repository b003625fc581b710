//! `patchd demo`: the whole lifecycle on a simulated device, told for a newcomer.
//!
//! The story is driven through the real engine ([`crate::engine::start`] and [`EngineHandle`]);
//! this module only plays the world around it: the publisher releasing versions, the
//! clock moving, the machine power-cycling when the engine asks for a reboot, and an
//! admin setting a hold. Every claim printed is checked against the engine's status and
//! audit log; the demo fails (exit code 1) when the story did not go as expected.
//!
//! The device is behind [`DemoDevice`], so the story needs no knowledge of backends.
//! This room (layer 8, shared/DESIGN.md) is part of the release binary; [`device`] is the
//! simulated device it runs on.
//! `patchd demo` uses the real simulated twins (image-file slots, the file bootloader,
//! a local repository signed with the publisher library and read through the TUF
//! client, the health runner with a drop-in check).

mod app_story;
pub mod apps;
pub mod device;

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::audit::Filter;
use crate::clock::SimClock;
use crate::engine::handle::{AvailableRelease, EngineError, EngineHandle, StatusSnapshot};
use crate::engine::ports::Actor;
use crate::engine::runner::{EngineParts, RunExit};
use crate::engine::state::{Lifecycle, StateKind};
use crate::names::SlotName;
use crate::policy::{Kind, Severity};

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Keep the simulated device in this directory instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Also print the engine's structured log (tracing) on stderr.
    #[arg(long)]
    pub verbose: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the story went wrong at \"{step}\": {why}")]
    Story { step: String, why: String },
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    #[error("simulated device: {0}")]
    Device(String),
    #[error(
        "the demo cannot run in this build: {0} (the demo never fakes a step; see docs/lifecycle.md)"
    )]
    Missing(String),
    #[error("writing the story: {0}")]
    Output(#[from] std::io::Error),
}

/// A release the demo's publisher puts out.
#[derive(Debug, Clone)]
pub struct DemoRelease {
    pub version: String,
    pub security_version: u64,
    pub kind: Kind,
    pub severity: Severity,
    pub cves: Vec<String>,
    /// False: the image boots but its health check fails.
    pub healthy: bool,
    /// The OS image of this earlier release instead of its own (a release of components
    /// only, when it is the one the device runs).
    pub os_of: Option<String>,
    /// A new version of the app bundle.
    pub app: Option<DemoApp>,
}

/// A version of the demo's app bundle in a release.
#[derive(Debug, Clone)]
pub struct DemoApp {
    pub version: String,
    /// True: its self-test (the app's health check) fails.
    pub broken: bool,
}

/// The simulated world around the engine.
pub trait DemoDevice {
    /// One line saying what the device is made of (backends, where it lives).
    fn describe(&self) -> String;
    /// Maintenance windows as configured, for the story.
    fn windows(&self) -> String;
    fn clock(&self) -> &SimClock;
    /// Fresh engine parts for one boot of the device.
    fn parts(&self) -> Result<EngineParts, DemoError>;
    /// The publisher signs and publishes `r` to the device's repository.
    fn publish(&self, r: &DemoRelease) -> Result<(), DemoError>;
    /// Power the machine off and on; the bootloader picks the slot. Returns it.
    fn power_cycle(&self) -> Result<SlotName, DemoError>;
    /// Whether the device carries the demo's app bundle (its chapters are told only then).
    fn has_app(&self) -> bool {
        false
    }
    /// The app bundle as the system shows it now (`None`: not installed).
    fn app(&self) -> Result<Option<apps::AppView>, DemoError> {
        Ok(None)
    }
    /// Where the app's `current` symlink points, read from the file system.
    fn app_link(&self) -> Result<String, DemoError> {
        Err(DemoError::Device("this device has no app bundle".into()))
    }
    /// The unit starts the app's restart command noted, oldest first.
    fn unit_starts(&self) -> Result<Vec<String>, DemoError> {
        Ok(Vec::new())
    }
    /// The clock moved: the publisher's routine jobs run (re-signing the short-lived
    /// timestamp metadata, as a real repository's cron job does).
    fn time_passed(&self) -> Result<(), DemoError> {
        Ok(())
    }
}

fn story_err(step: &str, why: impl Into<String>) -> DemoError {
    DemoError::Story {
        step: step.to_string(),
        why: why.into(),
    }
}

/// The running engine of the current boot.
struct Boot {
    handle: EngineHandle,
    task: tokio::task::JoinHandle<RunExit>,
}

struct Story<'a, W: Write> {
    dev: &'a dyn DemoDevice,
    out: W,
    boot: Option<Boot>,
}

const ADMIN: Actor = Actor::Uid(1000);
const WAIT: Duration = Duration::from_secs(60);

impl<W: Write> Story<'_, W> {
    fn say(&mut self, text: &str) -> Result<(), DemoError> {
        writeln!(self.out, "{text}")?;
        self.out.flush()?;
        Ok(())
    }

    fn now(&self) -> String {
        let t = crate::clock::Clock::now(self.dev.clock());
        t.to_zoned(jiff::tz::TimeZone::UTC)
            .strftime("%a %Y-%m-%d %H:%M UTC")
            .to_string()
    }

    fn h(&self) -> Result<&EngineHandle, DemoError> {
        self.boot
            .as_ref()
            .map(|b| &b.handle)
            .ok_or_else(|| story_err("engine", "not running"))
    }

    async fn power_on(&mut self) -> Result<(), DemoError> {
        let (handle, task) = crate::engine::start(self.dev.parts()?).await?;
        self.boot = Some(Boot { handle, task });
        Ok(())
    }

    /// Wait until the engine rests in `kind` (no job running).
    async fn until(&mut self, step: &str, kind: StateKind) -> Result<StatusSnapshot, DemoError> {
        let h = self.h()?.clone();
        let r =
            tokio::time::timeout(WAIT, h.wait_for(|s| s.state == kind && s.busy.is_none())).await;
        match r {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(_)) => Err(story_err(
                step,
                format!("engine stopped before reaching {kind}"),
            )),
            Err(_) => Err(story_err(
                step,
                format!("engine did not reach {kind}; it is {}", h.status().state),
            )),
        }
    }

    /// Wait until the engine rests (no job running) in a state `pred` accepts.
    async fn until_where(
        &mut self,
        step: &str,
        what: &str,
        pred: impl Fn(&StatusSnapshot) -> bool,
    ) -> Result<StatusSnapshot, DemoError> {
        let h = self.h()?.clone();
        let r = tokio::time::timeout(WAIT, h.wait_for(|s| s.busy.is_none() && pred(s))).await;
        match r {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(_)) => Err(story_err(step, format!("engine stopped before {what}"))),
            Err(_) => Err(story_err(
                step,
                format!("not {what}; the engine is {}", h.status().state),
            )),
        }
    }

    /// The engine asked for a reboot: wait for it to stop, power-cycle, start again.
    async fn reboot_when_asked(&mut self, step: &str) -> Result<SlotName, DemoError> {
        let Some(boot) = self.boot.take() else {
            return Err(story_err(step, "engine not running"));
        };
        let exit = tokio::time::timeout(WAIT, boot.task)
            .await
            .map_err(|_| story_err(step, "the engine never asked for a reboot"))?
            .map_err(|e| story_err(step, format!("engine task failed: {e}")))?;
        let RunExit::Rebooting { reason } = exit else {
            return Err(story_err(
                step,
                format!("engine stopped without a reboot: {exit:?}"),
            ));
        };
        self.say(&format!("   engine: reboot requested ({reason})"))?;
        let slot = self.dev.power_cycle()?;
        self.say(&format!(
            "   [machine] power cycle … the bootloader starts slot {slot}"
        ))?;
        self.power_on().await?;
        Ok(slot)
    }

    async fn check(&mut self, step: &str) -> Result<Vec<AvailableRelease>, DemoError> {
        let avail = self
            .h()?
            .check(Actor::Policy)
            .await
            .map_err(|e| story_err(step, e.to_string()))?;
        Ok(avail)
    }

    fn table(&mut self, avail: &[AvailableRelease]) -> Result<(), DemoError> {
        for a in avail {
            let mut line = format!(
                "     {:<6} {:<8} {:<8} security_version={} {}",
                a.version,
                a.kind.to_string(),
                a.severity.to_string(),
                a.security_version,
                if a.cves.is_empty() {
                    String::new()
                } else {
                    a.cves.join(",")
                }
            );
            if a.install_now {
                line.push_str("\n            → would be installed now");
            } else {
                for w in &a.why_not {
                    let _ = write!(line, "\n            ✗ {w}");
                }
                if a.may_stage {
                    line.push_str("\n            → may be staged now; the switch waits");
                }
            }
            for c in &a.components {
                let _ = write!(line, "\n            · {c}");
            }
            self.say(&line)?;
        }
        Ok(())
    }

    fn set_clock(&mut self, t: &str) -> Result<(), DemoError> {
        let ts: Timestamp = t
            .parse()
            .map_err(|e| story_err("clock", format!("{t}: {e}")))?;
        self.dev.clock().set(ts);
        self.dev.time_passed()
    }
}

/// What the story ended with (the last line of the demo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub committed: String,
    /// The releases rolled back (blocked here), comma-separated.
    pub rolled_back: String,
    pub audit_records: usize,
}

/// Tell the story on `dev`, writing it to `out`.
///
/// Long on purpose: the demo is a script read top to bottom, each step the next thing an
/// admin would see; its steps are `Story` methods.
pub async fn story(dev: &dyn DemoDevice, out: impl Write) -> Result<Outcome, DemoError> {
    let mut s = Story {
        dev,
        out,
        boot: None,
    };
    let v2 = DemoRelease {
        version: "2.0.0".into(),
        security_version: 2,
        kind: Kind::Security,
        severity: Severity::High,
        cves: vec!["CVE-2026-1234".into()],
        healthy: true,
        os_of: None,
        app: None,
    };
    let v3 = DemoRelease {
        version: "3.0.0".into(),
        security_version: 3,
        kind: Kind::Bugfix,
        severity: Severity::Medium,
        cves: vec![],
        healthy: false,
        os_of: None,
        app: None,
    };
    let v4 = DemoRelease {
        version: "3.0.1".into(),
        security_version: 3,
        kind: Kind::Bugfix,
        severity: Severity::Medium,
        cves: vec![],
        healthy: true,
        os_of: None,
        app: None,
    };

    s.say("patchd demo — the patch lifecycle on a simulated device, run by the real engine")?;
    s.say(&format!("   device: {}", dev.describe()))?;
    s.say(&format!("   maintenance windows: {}", dev.windows()))?;
    s.say("")?;

    // 1. v1 running.
    s.set_clock("2026-11-25T12:00:00Z")?;
    s.power_on().await?;
    let st = s.h()?.status();
    s.say(&format!(
        "1. {}: the device runs {} from slot {}",
        s.now(),
        st.current_version.clone().unwrap_or_else(|| "?".into()),
        st.booted_slot.as_ref().map_or("?", |b| b.as_str()),
    ))?;
    if st.current_version.as_deref() != Some("1.0.0") {
        return Err(story_err(
            "start",
            format!("expected 1.0.0 running, status: {st:?}"),
        ));
    }

    // 2. v2 published, found and categorized.
    dev.publish(&v2)?;
    s.say("2. The publisher signs and publishes 2.0.0 (security fix, high, CVE-2026-1234).")?;
    s.say("   patchd checks the signed repository and categorizes what it finds:")?;
    let avail = s.check("check for 2.0.0").await?;
    s.table(&avail)?;
    let a2 = avail
        .iter()
        .find(|a| a.version == "2.0.0")
        .ok_or_else(|| story_err("check for 2.0.0", "2.0.0 not found"))?;
    if a2.kind != Kind::Security || a2.severity != Severity::High || a2.install_now {
        return Err(story_err(
            "check for 2.0.0",
            format!("unexpected categorization {a2:?}"),
        ));
    }

    // 3. Staged outside the window.
    let st = s.until("stage 2.0.0", StateKind::Staged).await?;
    let staged_slot = match &st.lifecycle {
        Lifecycle::Staged { slot, .. } => slot.clone(),
        _ => return Err(story_err("stage 2.0.0", "not staged")),
    };
    s.say(&format!(
        "3. Outside the window patchd may still download: 2.0.0 is written into the inactive \
         slot {staged_slot} and verified against the signed hash (state: {}; {}).",
        st.state,
        st.last_stage
            .map(|r| r.to_string())
            .unwrap_or_else(|| "method unknown".into())
    ))?;
    if st.booted_slot.as_ref() == Some(&staged_slot) {
        return Err(story_err("stage 2.0.0", "staged into the booted slot"));
    }

    // 4. Waits.
    s.set_clock("2026-11-25T18:00:00Z")?;
    s.check("wait").await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let st = s.h()?.status();
    if st.state != StateKind::Staged {
        return Err(story_err(
            "wait for the window",
            format!("state is {}", st.state),
        ));
    }
    s.say(&format!(
        "4. {}: still staged. Next window opens {}; the switch waits.",
        s.now(),
        st.next_window.map_or("never".into(), |t| t.to_string())
    ))?;

    // 5. Window opens → switch → reboot.
    s.set_clock("2026-11-28T02:10:00Z")?;
    s.say(&format!(
        "5. {}: the window is open. patchd tells the bootloader to try slot {staged_slot} once and reboots.",
        s.now()
    ))?;
    s.check("window opens").await?;
    let booted = s.reboot_when_asked("switch to 2.0.0").await?;
    if booted != staged_slot {
        return Err(story_err("boot 2.0.0", format!("booted {booted}")));
    }

    // 6. Health checks pass → committed.
    s.say("6. After the reboot patchd runs the health checks on the new slot …")?;
    let st = s.until("commit 2.0.0", StateKind::Committed).await?;
    s.say(&format!(
        "   health checks passed: 2.0.0 is committed (slot {booted} marked good). \
         Security floor is now {}.",
        st.security_floor
    ))?;
    if st.current_version.as_deref() != Some("2.0.0") || st.security_floor != 2 {
        return Err(story_err("commit 2.0.0", format!("{st:?}")));
    }

    // 7. v3 fails its health check → rollback.
    dev.publish(&v3)?;
    s.set_clock("2026-11-29T02:05:00Z")?;
    s.say(&format!(
        "7. {}: the publisher releases 3.0.0 (bugfix, medium). Its image has a broken service.",
        s.now()
    ))?;
    let avail = s.check("check for 3.0.0").await?;
    s.table(&avail)?;
    let booted = s.reboot_when_asked("switch to 3.0.0").await?;
    s.say("   health checks on 3.0.0 …")?;
    let boot = s
        .boot
        .as_ref()
        .ok_or_else(|| story_err("verify 3.0.0", "engine not running"))?;
    let h = boot.handle.clone();
    let snap = tokio::time::timeout(WAIT, h.wait_for(|x| x.state == StateKind::RolledBack))
        .await
        .map_err(|_| story_err("verify 3.0.0", "no rollback"))?
        .map_err(|_| story_err("verify 3.0.0", "engine stopped before deciding"))?;
    if let Lifecycle::RolledBack { reason, .. } = &snap.lifecycle {
        s.say(&format!("   ✗ {reason}"))?;
    }
    s.say(&format!(
        "   patchd marks slot {booted} bad, switches back and reboots."
    ))?;
    let back = s.reboot_when_asked("roll back 3.0.0").await?;
    let st = s.until("rolled back", StateKind::RolledBack).await?;
    s.say(&format!(
        "8. Back on slot {back} running {}; 3.0.0 is blocked and never retried automatically.",
        st.current_version.clone().unwrap_or_default()
    ))?;
    if st.current_version.as_deref() != Some("2.0.0")
        || !st.blocked.iter().any(|b| b.version == "3.0.0")
    {
        return Err(story_err("roll back 3.0.0", format!("{st:?}")));
    }
    let avail = s.check("check after rollback").await?;
    s.table(&avail)?;

    // 9. A hold with expiry.
    let until = crate::clock::Clock::now(dev.clock())
        .checked_add(SignedDuration::from_hours(1))
        .map_err(|e| story_err("hold", e.to_string()))?;
    dev.time_passed()?;
    s.h()?
        .hold(ADMIN, "quarter-end change freeze".into(), Some(until), None)
        .await?;
    dev.publish(&v4)?;
    s.say(&format!(
        "9. {}: an admin (uid 1000) sets a hold until {until}: \"quarter-end change freeze\". \
         The publisher releases 3.0.1:",
        s.now()
    ))?;
    let avail = s.check("check under hold").await?;
    s.table(&avail)?;
    let held = avail
        .iter()
        .find(|a| a.version == "3.0.1")
        .is_some_and(|a| {
            a.why_not
                .iter()
                .any(|w| w.to_string().contains("change freeze"))
        });
    if !held {
        return Err(story_err("hold", "3.0.1 not shown as held"));
    }
    s.set_clock("2026-11-29T06:30:00Z")?;
    s.check("hold expires").await?;
    let st = s
        .until("stage 3.0.1 after the hold", StateKind::Staged)
        .await?;
    s.say(&format!(
        "   {}: the hold expired by itself (audited); 3.0.1 is staged in slot {} and waits \
         for the next window ({}).",
        s.now(),
        match &st.lifecycle {
            Lifecycle::Staged { slot, .. } => slot.to_string(),
            _ => "?".into(),
        },
        st.next_window.map_or("none".into(), |t| t.to_string())
    ))?;

    // 10. The next window: 3.0.1 goes in.
    s.set_clock("2026-12-05T02:10:00Z")?;
    s.say(&format!(
        "10. {}: the next window opens; 3.0.1 switches.",
        s.now()
    ))?;
    s.check("window opens for 3.0.1").await?;
    let booted = s.reboot_when_asked("switch to 3.0.1").await?;
    s.until_where("commit 3.0.1", "3.0.1 committed", |x| {
        x.state == StateKind::Committed && x.current_version.as_deref() == Some("3.0.1")
    })
    .await?;
    s.say(&format!(
        "   health checks passed: 3.0.1 is committed (slot {booted})."
    ))?;

    // 11, 12. App patches without a reboot.
    if dev.has_app() {
        s.app_patches().await?;
    }

    // 13. Audit and inventory.
    let h = s.h()?.clone();
    let report = h.verify_audit().await?;
    if !report.is_intact() {
        return Err(story_err("audit", report.to_string()));
    }
    let records = h.history(Filter::default()).await?;
    s.say(&format!(
        "13. The audit log: {} hash-chained records, chain verified. The story as recorded:",
        records.len()
    ))?;
    for r in &records {
        if matches!(
            r.event.as_str(),
            "update_available"
                | "staged"
                | "switching"
                | "committed"
                | "rolled_back"
                | "hold"
                | "hold_expired"
                | "component_staged"
                | "component_switched"
                | "component_committed"
                | "component_rolled_back"
        ) {
            let what = match (r.extra.get("component"), r.extra.get("component_version")) {
                (Some(c), Some(v)) => format!(
                    "{} {}",
                    c.as_str().unwrap_or_default(),
                    v.as_str().unwrap_or_default()
                ),
                _ => r.reason.clone(),
            };
            s.say(&format!(
                "     #{:<3} {:<21} {:<6} {:<9} {}",
                r.seq,
                r.event,
                r.release.clone().unwrap_or_default(),
                r.actor.to_string(),
                what
            ))?;
        }
    }
    if !records.iter().any(|r| r.event == "hold_expired") {
        return Err(story_err("audit", "no hold_expired record"));
    }
    let inv = h.inventory().await?;
    s.say("14. The inventory:")?;
    let text = serde_json::to_string_pretty(&inv).unwrap_or_default();
    for line in text.lines() {
        s.say(&format!("     {line}"))?;
    }
    // The last line reports what the engine says, not what the story hoped for.
    let st = h.status();
    Ok(Outcome {
        committed: st.current_version.unwrap_or_default(),
        rolled_back: st
            .blocked
            .iter()
            .map(|b| b.version.as_str())
            .collect::<Vec<_>>()
            .join(","),
        audit_records: records.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::engine::{release, Harness};

    /// The story logic itself, run against the in-memory device (the real demo runs
    /// it against the real simulated backends).
    struct MemWorld {
        hx: Harness,
        _dir: tempfile::TempDir,
    }

    impl DemoDevice for MemWorld {
        fn describe(&self) -> String {
            "in-memory test device".into()
        }
        fn windows(&self) -> String {
            "Sat,Sun 02:00-05:00 UTC".into()
        }
        fn clock(&self) -> &SimClock {
            &self.hx.clock
        }
        fn parts(&self) -> Result<EngineParts, DemoError> {
            self.hx.parts().map_err(DemoError::Engine)
        }
        fn publish(&self, r: &DemoRelease) -> Result<(), DemoError> {
            self.hx
                .dev
                .publish(release(&r.version, r.security_version, r.kind, r.severity));
            if !r.healthy {
                self.hx.dev.set_unhealthy(&r.version);
            }
            Ok(())
        }
        fn power_cycle(&self) -> Result<SlotName, DemoError> {
            self.hx.dev.power_cycle();
            Ok(self.hx.dev.booted())
        }
    }

    #[tokio::test]
    async fn story_runs_through_the_engine() {
        let dir = tempfile::tempdir().unwrap();
        let mut hx = Harness::new(dir.path(), "1.0.0", "2026-11-25T12:00:00Z".parse().unwrap());
        hx.policy.schedule =
            crate::policy::Schedule::parse("UTC", &["Sat,Sun 02:00-05:00"]).unwrap();
        let world = MemWorld { hx, _dir: dir };
        let mut out = Vec::new();
        let o = story(&world, &mut out).await;
        let text = String::from_utf8_lossy(&out);
        let o = o.unwrap_or_else(|e| panic!("{e}\n--- story so far ---\n{text}"));
        println!("{text}");
        assert_eq!(o.committed, "3.0.1");
        assert_eq!(o.rolled_back, "3.0.0");
        assert!(text.contains("outside the maintenance window") || text.contains("window"));
        assert!(text.contains("quarter-end change freeze"));
    }
}
