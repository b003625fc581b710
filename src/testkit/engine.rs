//! An in-memory device for engine tests: a try-once bootloader, slots that remember
//! whether their content was verified, a release list, scripted health verdicts and a
//! reboot that only records the request. The demo does NOT use this: it runs the real
//! file bootloader, image-file slots, signed repository and health runner.
//!
//! Boot semantics (what real try-once bootloaders do): on a power cycle, a slot on
//! trial with attempts left consumes one and boots if the test says it boots; otherwise
//! the primary boots. A trial with no attempts left is ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

use crate::boot::{BootError, Bootloader, SlotBootInfo};
use crate::engine::ports::{
    HealthCheck, HealthVerdict, Offered, PortError, Progress, ProgressSink, Reboot, StageReport,
    Updates,
};
use crate::fetch::BoxFuture;
use crate::manifest::ReleaseSummary;
use crate::names::SlotName;
use crate::policy::{Kind, ReleaseFacts, Severity};
use crate::slot::{Slot, SlotError, SlotState, SlotStatus};

#[derive(Debug)]
struct Dev {
    /// sha256 every staged image gets (`set_same_image`); `None`: unknown.
    image_sha: Option<String>,
    booted: SlotName,
    primary: SlotName,
    trial: Option<(SlotName, u32)>,
    good: BTreeSet<SlotName>,
    bad: BTreeSet<SlotName>,
    slots: BTreeMap<SlotName, SlotStatus>,
    /// Slots whose current content was fully verified.
    verified: BTreeSet<SlotName>,
    releases: Vec<Offered>,
    /// Versions whose health checks fail.
    unhealthy: BTreeSet<String>,
    /// Versions that do not boot.
    unbootable: BTreeSet<String>,
    stage_fails: bool,
    /// While set, staging waits until cleared (tests of Busy and cancel).
    stage_gate: bool,
    /// Times `Updates::stage` was called.
    stages: u32,
    inhibitors: Vec<String>,
    reboot_requests: Vec<String>,
    boots: u64,
    /// While set, checks fail with this error.
    check_fails: Option<String>,
    /// While set, health checks wait until cleared (a trial that lasts).
    health_gate: bool,
    /// While set, reboot requests fail (a reboot that does not happen).
    reboot_fails: bool,
}

/// Handle to the simulated device; clones share it.
#[derive(Debug, Clone)]
pub struct MemDevice {
    dev: Arc<Mutex<Dev>>,
}

pub fn slot_name(s: &str) -> SlotName {
    SlotName::new(s).unwrap_or_else(|e| unreachable!("test slot name {s}: {e}"))
}

/// Product of the simulated device and its releases.
pub const PRODUCT: &str = "demo";

/// A release as discovery would report it (for [`PRODUCT`], on channel `stable`).
/// Test versions are semver literals.
pub fn release(version: &str, security_version: u64, kind: Kind, severity: Severity) -> Offered {
    let version: semver::Version = version
        .parse()
        .unwrap_or_else(|e| unreachable!("test release version {version}: {e}"));
    Offered {
        facts: ReleaseFacts::new(
            ReleaseSummary {
                product: PRODUCT.into(),
                hardware: vec![],
                version,
                security_version,
                min_version: None,
                kind,
                severity,
                cves: if kind == Kind::Security {
                    vec![format!("CVE-2026-{:04}", security_version)]
                } else {
                    vec![]
                },
                channels: vec!["stable".into()],
                withdrawn: false,
                paused: false,
                size: 4096,
            },
            None,
        ),
        published: None,
        manifest_problem: None,
        summary: Some(format!("{severity} {kind} fixes")),
        components: Vec::new(),
        packages: Vec::new(),
    }
}

impl MemDevice {
    /// Two slots `a` (booted, good, running `version`) and `b` (empty).
    pub fn new(version: &str) -> Self {
        let a = slot_name("a");
        let b = slot_name("b");
        let mut slots = BTreeMap::new();
        let mut sa = SlotStatus::empty(a.clone());
        sa.state = SlotState::Good;
        sa.version = Some(version.to_string());
        slots.insert(a.clone(), sa);
        slots.insert(b.clone(), SlotStatus::empty(b.clone()));
        Self {
            dev: Arc::new(Mutex::new(Dev {
                image_sha: None,
                booted: a.clone(),
                primary: a.clone(),
                trial: None,
                good: [a.clone()].into(),
                bad: BTreeSet::new(),
                slots,
                verified: [a].into(),
                releases: vec![],
                unhealthy: BTreeSet::new(),
                unbootable: BTreeSet::new(),
                stage_fails: false,
                stage_gate: false,
                stages: 0,
                inhibitors: vec![],
                reboot_requests: vec![],
                boots: 0,
                check_fails: None,
                health_gate: false,
                reboot_fails: false,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Dev> {
        self.dev.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn publish(&self, c: Offered) {
        self.lock().releases.push(c);
    }
    pub fn set_releases(&self, c: Vec<Offered>) {
        self.lock().releases = c;
    }
    /// Checks fail with `error` while it is set.
    /// Every release carries the OS image the device runs now (a release of components
    /// only): the booted slot and every staged one show the same sha256.
    pub fn set_same_image(&self) {
        let mut d = self.lock();
        let sha = "5a".repeat(32);
        let booted = d.booted.clone();
        if let Some(s) = d.slots.get_mut(&booted) {
            s.sha256 = Some(sha.clone());
        }
        d.image_sha = Some(sha);
    }

    pub fn set_check_fails(&self, error: Option<&str>) {
        self.lock().check_fails = error.map(str::to_owned);
    }
    /// Health checks wait while the gate is set.
    pub fn set_health_gate(&self, g: bool) {
        self.lock().health_gate = g;
    }
    /// Reboot requests fail while set.
    pub fn set_reboot_fails(&self, f: bool) {
        self.lock().reboot_fails = f;
    }
    pub fn set_unhealthy(&self, version: &str) {
        self.lock().unhealthy.insert(version.to_string());
    }
    pub fn set_unbootable(&self, version: &str) {
        self.lock().unbootable.insert(version.to_string());
    }
    pub fn set_stage_fails(&self, f: bool) {
        self.lock().stage_fails = f;
    }
    pub fn set_stage_gate(&self, g: bool) {
        self.lock().stage_gate = g;
    }
    pub fn set_inhibitors(&self, i: Vec<String>) {
        self.lock().inhibitors = i;
    }
    /// How often the engine asked to stage (download) a release.
    pub fn stage_calls(&self) -> u32 {
        self.lock().stages
    }
    pub fn reboot_requests(&self) -> Vec<String> {
        self.lock().reboot_requests.clone()
    }
    pub fn booted(&self) -> SlotName {
        self.lock().booted.clone()
    }
    pub fn primary(&self) -> SlotName {
        self.lock().primary.clone()
    }
    pub fn slot_status(&self, s: &str) -> SlotStatus {
        let d = self.lock();
        d.slots
            .get(&slot_name(s))
            .cloned()
            .unwrap_or_else(|| SlotStatus::empty(slot_name(s)))
    }
    /// Version in the booted slot.
    pub fn running_version(&self) -> Option<String> {
        let d = self.lock();
        d.slots.get(&d.booted).and_then(|s| s.version.clone())
    }
    pub fn is_bad(&self, s: &str) -> bool {
        self.lock().bad.contains(&slot_name(s))
    }
    pub fn tries_left(&self, s: &str) -> Option<u32> {
        let d = self.lock();
        d.trial
            .as_ref()
            .filter(|(t, _)| t.as_str() == s)
            .map(|(_, n)| *n)
    }

    /// Power off and on: the bootloader picks a slot as real try-once loaders do.
    pub fn power_cycle(&self) {
        let mut d = self.lock();
        d.boots += 1;
        let primary = d.primary.clone();
        let mut next = primary.clone();
        if let Some((s, n)) = d.trial.clone() {
            if n > 0 && !d.bad.contains(&s) {
                d.trial = Some((s.clone(), n - 1));
                let version = d.slots.get(&s).and_then(|x| x.version.clone());
                let boots = d.slots.get(&s).is_some_and(|x| x.state.is_bootable())
                    && !version.is_some_and(|v| d.unbootable.contains(&v));
                if boots {
                    next = s;
                }
            }
        }
        d.booted = next;
    }

    pub fn bootloader(&self) -> Arc<dyn Bootloader> {
        Arc::new(MemBoot(self.clone()))
    }
    pub fn slots(&self) -> Vec<Arc<dyn Slot>> {
        ["a", "b"]
            .iter()
            .map(|n| {
                Arc::new(MemSlot {
                    dev: self.clone(),
                    name: slot_name(n),
                }) as Arc<dyn Slot>
            })
            .collect()
    }
    pub fn updates(&self) -> Arc<dyn Updates> {
        Arc::new(MemUpdates(self.clone()))
    }
    pub fn health(&self) -> Arc<dyn HealthCheck> {
        Arc::new(MemHealth(self.clone()))
    }
    pub fn reboot(&self) -> Arc<dyn Reboot> {
        Arc::new(MemReboot(self.clone()))
    }
}

struct MemBoot(MemDevice);

impl Bootloader for MemBoot {
    fn kind(&self) -> &'static str {
        "memory"
    }
    fn booted_slot(&self) -> Result<SlotName, BootError> {
        Ok(self.0.lock().booted.clone())
    }
    fn primary_slot(&self) -> Result<SlotName, BootError> {
        Ok(self.0.lock().primary.clone())
    }
    fn try_slot(&self, slot: &SlotName, attempts: u32) -> Result<(), BootError> {
        let mut d = self.0.lock();
        if !d.slots.contains_key(slot) {
            return Err(BootError::UnknownSlot(slot.clone()));
        }
        d.bad.remove(slot);
        d.trial = Some((slot.clone(), attempts));
        Ok(())
    }
    fn mark_good(&self, slot: &SlotName) -> Result<(), BootError> {
        let mut d = self.0.lock();
        if d.bad.contains(slot) {
            return Err(BootError::Refused(format!("slot {slot} is marked bad")));
        }
        d.primary = slot.clone();
        d.good.insert(slot.clone());
        if d.trial.as_ref().is_some_and(|(s, _)| s == slot) {
            d.trial = None;
        }
        Ok(())
    }
    fn mark_bad(&self, slot: &SlotName) -> Result<(), BootError> {
        let mut d = self.0.lock();
        d.bad.insert(slot.clone());
        d.good.remove(slot);
        if d.trial.as_ref().is_some_and(|(s, _)| s == slot) {
            d.trial = None;
        }
        Ok(())
    }
    fn slots(&self) -> Result<Vec<SlotBootInfo>, BootError> {
        let d = self.0.lock();
        Ok(d.slots
            .keys()
            .map(|s| SlotBootInfo {
                slot: s.clone(),
                tries_left: d.trial.as_ref().filter(|(t, _)| t == s).map(|(_, n)| *n),
                good: d.good.contains(s),
                bad: d.bad.contains(s),
                primary: &d.primary == s,
            })
            .collect())
    }
}

struct MemSlot {
    dev: MemDevice,
    name: SlotName,
}

impl Slot for MemSlot {
    fn name(&self) -> &SlotName {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "memory"
    }
    fn status(&self) -> Result<SlotStatus, SlotError> {
        Ok(self.dev.slot_status(self.name.as_str()))
    }
    fn set_state(&self, state: SlotState) -> Result<SlotStatus, SlotError> {
        let mut d = self.dev.lock();
        if state.is_bootable() && !d.verified.contains(&self.name) {
            let from = d
                .slots
                .get(&self.name)
                .map_or(SlotState::Empty, |s| s.state);
            return Err(SlotError::IllegalState {
                slot: self.name.clone(),
                from,
                to: state,
            });
        }
        if state == SlotState::Incomplete || state == SlotState::Empty {
            d.verified.remove(&self.name);
        }
        let st = d
            .slots
            .entry(self.name.clone())
            .or_insert_with(|| SlotStatus::empty(self.name.clone()));
        st.state = state;
        Ok(st.clone())
    }
}

struct MemUpdates(MemDevice);

impl Updates for MemUpdates {
    fn discover(&self) -> BoxFuture<'_, Result<Vec<Offered>, PortError>> {
        Box::pin(async move {
            let d = self.0.lock();
            match &d.check_fails {
                Some(e) => Err(PortError::new("repository refresh", e).with_cause("check")),
                None => Ok(d.releases.clone()),
            }
        })
    }

    fn stage<'a>(
        &'a self,
        version: &'a semver::Version,
        slot: &'a SlotName,
        progress: ProgressSink,
    ) -> BoxFuture<'a, Result<StageReport, PortError>> {
        Box::pin(async move {
            {
                let mut d = self.0.lock();
                d.stages += 1;
                if &d.booted == slot {
                    return Err(PortError::new(format!("slot {slot}"), "is the booted slot"));
                }
                d.verified.remove(slot);
                let st = d
                    .slots
                    .entry(slot.clone())
                    .or_insert_with(|| SlotStatus::empty(slot.clone()));
                st.state = SlotState::Incomplete;
                st.version = None;
            }
            progress.send_replace(Some(Progress {
                phase: "writing".into(),
                done: 0,
                total: Some(4096),
                rate: None,
            }));
            while self.0.lock().stage_gate {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut d = self.0.lock();
            if d.stage_fails {
                return Err(PortError::new(
                    format!("slot {slot}"),
                    "sha256 mismatch after writing",
                ));
            }
            let Some(c) = d.releases.iter().find(|c| c.version() == version).cloned() else {
                return Err(PortError::new(
                    version.to_string(),
                    "release vanished from the repository",
                ));
            };
            d.verified.insert(slot.clone());
            let image_sha = d.image_sha.clone();
            let st = d
                .slots
                .entry(slot.clone())
                .or_insert_with(|| SlotStatus::empty(slot.clone()));
            st.state = SlotState::Verified;
            st.sha256 = image_sha;
            let size = c.facts.summary.size;
            st.version = Some(c.version().to_string());
            st.size = Some(size);
            st.installed_at = Some(Timestamp::UNIX_EPOCH);
            Ok(StageReport::full(size))
        })
    }
}

struct MemHealth(MemDevice);

impl HealthCheck for MemHealth {
    fn run(&self, _budget: Duration) -> BoxFuture<'_, HealthVerdict> {
        Box::pin(async move {
            while self.0.lock().health_gate {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let d = self.0.lock();
            let v = d.slots.get(&d.booted).and_then(|s| s.version.clone());
            let bad = v.as_ref().is_some_and(|v| d.unhealthy.contains(v));
            HealthVerdict {
                passed: !bad,
                failures: if bad {
                    vec![format!("service check failed on {}", v.unwrap_or_default())]
                } else {
                    vec![]
                },
                warnings: vec![],
            }
        })
    }
}

struct MemReboot(MemDevice);

impl Reboot for MemReboot {
    fn inhibitors(&self) -> BoxFuture<'_, Vec<String>> {
        Box::pin(async move { self.0.lock().inhibitors.clone() })
    }
    fn reboot<'a>(&'a self, reason: &'a str) -> BoxFuture<'a, Result<(), PortError>> {
        Box::pin(async move {
            if self.0.lock().reboot_fails {
                return Err(PortError::new("reboot", "systemd refused to reboot"));
            }
            self.0.lock().reboot_requests.push(reason.to_string());
            Ok(())
        })
    }
}

/// Everything needed to run the real engine against a [`MemDevice`] in a temp root.
pub struct Harness {
    pub dev: MemDevice,
    pub paths: crate::paths::Paths,
    pub clock: crate::clock::SimClock,
    pub policy: crate::policy::Policy,
    pub settings: crate::engine::runner::EngineSettings,
    /// The device's tags (rollout stages by tag).
    pub tags: Vec<String>,
    /// The fleet reboot lock (e.g. a `fleet::sim` twin); `None` by default.
    pub fleet: Option<crate::engine::ports::RebootSlots>,
    /// The component installers (e.g. `component::SimInstaller`s); none by default.
    pub installers: crate::component::Installers,
    #[cfg(feature = "failpoints")]
    pub failpoints: crate::failpoint::FailPoints,
}

impl Harness {
    /// A device running `version` in slot `a`, clock at `now`, no windows, health
    /// deadline 10 minutes, no periodic timers (tests drive everything).
    pub fn new(root: &std::path::Path, version: &str, now: Timestamp) -> Self {
        Self {
            dev: MemDevice::new(version),
            paths: crate::paths::Paths::new(root),
            clock: crate::clock::SimClock::new(now),
            policy: crate::policy::Policy::default(),
            settings: crate::engine::runner::EngineSettings {
                check_interval: None,
                check_jitter: Duration::ZERO,
                evaluate_every: Duration::from_secs(3600),
                health_deadline: Duration::from_secs(600),
                probation: None,
                probation_check_every: Duration::from_secs(3600),
                boot_attempts: 1,
                ..Default::default()
            },
            tags: vec![],
            fleet: None,
            installers: crate::component::Installers::new(),
            #[cfg(feature = "failpoints")]
            failpoints: crate::failpoint::FailPoints::default(),
        }
    }

    pub fn audit_path(&self) -> std::path::PathBuf {
        self.paths.state_dir().join("audit.log")
    }

    pub fn parts(&self) -> Result<crate::engine::runner::EngineParts, crate::engine::EngineError> {
        let dir = self.paths.state_dir();
        crate::fsutil::ensure_dir(&dir, 0o700).map_err(|source| {
            crate::engine::EngineError::Port(PortError::new(dir.display().to_string(), source))
        })?;
        let audit =
            crate::audit::AuditLog::open(self.audit_path(), crate::audit::AuditLimits::default())?;
        Ok(crate::engine::runner::EngineParts {
            paths: self.paths.clone(),
            clock: Arc::new(self.clock.clone()),
            bootloader: self.dev.bootloader(),
            slots: self.dev.slots(),
            updates: Some(self.dev.updates()),
            bundles: None,
            policy: self.policy.clone(),
            device: crate::policy::DeviceFacts {
                machine_id: "0123456789abcdef0123456789abcdef".into(),
                product: PRODUCT.into(),
                hardware: None,
                channel: "stable".into(),
                tags: self.tags.clone(),
            },
            health: self.dev.health(),
            audit: Arc::new(Mutex::new(audit)),
            reboot: self.dev.reboot(),
            device_config: crate::config::DeviceConfig {
                product: Some("demo".into()),
                channel: "stable".into(),
                tags: vec![],
                machine_id_path: "/etc/machine-id".into(),
                hardware: None,
            },
            settings: self.settings.clone(),
            fleet: self.fleet.clone(),
            components: crate::engine::ports::DeviceComponents::with(
                self.installers.clone(),
                &self.paths,
            ),
            #[cfg(feature = "failpoints")]
            failpoints: self.failpoints.clone(),
        })
    }

    pub async fn start(&self) -> Result<RunningEngine, crate::engine::EngineError> {
        crate::engine::runner::start(self.parts()?).await
    }

    pub fn verify_audit(&self) -> Result<crate::audit::VerifyReport, crate::audit::AuditError> {
        crate::audit::AuditLog::open(self.audit_path(), crate::audit::AuditLimits::default())?
            .verify()
    }
}

/// A started engine: its handle and the task running it.
pub type RunningEngine = (
    crate::engine::EngineHandle,
    tokio::task::JoinHandle<crate::engine::RunExit>,
);

/// States in which the engine rests until something changes (a check, the clock, an
/// admin).
pub fn is_resting(s: &crate::engine::StatusSnapshot) -> bool {
    use crate::engine::StateKind as K;
    // A rollback rests only once the old slot runs again (before that a reboot is due).
    let rolled_back_home = match &s.lifecycle {
        crate::engine::Lifecycle::RolledBack { back_to, .. } => {
            s.booted_slot.as_ref() == Some(back_to)
        }
        _ => true,
    };
    s.busy.is_none()
        && rolled_back_home
        && matches!(
            s.state,
            K::Idle | K::UpdateAvailable | K::Staged | K::Committed | K::RolledBack | K::Failed
        )
}

impl Harness {
    /// Start the engine and ask for a check; follow reboots (and simulated power cuts)
    /// by power-cycling the device and starting again, until the engine rests. Returns
    /// the running engine and its resting status.
    pub async fn settle(
        &self,
    ) -> Result<
        (
            crate::engine::EngineHandle,
            tokio::task::JoinHandle<crate::engine::RunExit>,
            crate::engine::StatusSnapshot,
        ),
        String,
    > {
        for _boot in 0..16 {
            let (h, mut task) = self.start().await.map_err(|e| e.to_string())?;
            let checked = h.check(crate::engine::Actor::Policy).await;
            let stopped = matches!(checked, Err(crate::engine::EngineError::Stopped));
            let exit = if stopped {
                tokio::time::timeout(Duration::from_secs(20), task)
                    .await
                    .map_err(|_| "engine did not stop".to_string())?
            } else {
                let waited = tokio::time::timeout(Duration::from_secs(20), async {
                    loop {
                        tokio::select! {
                            exit = &mut task => return Err(exit),
                            snap = h.wait_for(is_resting) => {
                                // A snapshot is published right before the task stops for
                                // a reboot or a cut; rest only if it stays that way.
                                tokio::time::sleep(Duration::from_millis(30)).await;
                                if !task.is_finished() && is_resting(&h.status()) {
                                    return Ok(snap.map(|_| h.status()));
                                }
                                if task.is_finished() {
                                    return Err((&mut task).await);
                                }
                            }
                        }
                    }
                })
                .await
                .map_err(|_| format!("engine never came to rest: {:#?}", h.status()))?;
                match waited {
                    Ok(Ok(snap)) => return Ok((h, task, snap)),
                    Ok(Err(_)) => tokio::time::timeout(Duration::from_secs(20), task)
                        .await
                        .map_err(|_| "engine did not stop".to_string())?,
                    Err(exit) => exit,
                }
            };
            match exit.map_err(|e| format!("engine task failed: {e}"))? {
                crate::engine::RunExit::Rebooting { .. }
                | crate::engine::RunExit::PowerCut { .. } => self.dev.power_cycle(),
                crate::engine::RunExit::Shutdown => return Err("engine shut down".into()),
            }
        }
        Err("no rest after 16 boots".into())
    }

    /// The invariants of issue 6 that must hold whenever the engine is stopped or rests:
    /// a bootable, verified slot is primary or will boot next; the committed release is
    /// not below the floor and is not a failed one; the audit chain verifies; a failed
    /// release was never switched to again after it failed.
    pub fn check_invariants(&self) -> Result<(), String> {
        let d = self.dev.lock();
        let usable = |s: &SlotName| {
            d.slots.get(s).is_some_and(|x| x.state.is_bootable()) && !d.bad.contains(s)
        };
        let next_boot = match &d.trial {
            Some((s, n)) if *n > 0 && !d.bad.contains(s) => s.clone(),
            _ => d.primary.clone(),
        };
        if !usable(&d.primary) && !usable(&next_boot) {
            return Err(format!(
                "no bootable verified slot: primary {} next {} in {:?}, bad {:?}",
                d.primary, next_boot, d.slots, d.bad
            ));
        }
        drop(d);
        let file = crate::engine::statefile::StateFile::new(&self.paths.state_dir());
        let doc = file
            .load(crate::clock::Clock::now(&self.clock))
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        if let Some(c) = &doc.committed {
            if c.security_version < doc.security_floor {
                return Err(format!(
                    "committed {} (security {}) below floor {}",
                    c.version, c.security_version, doc.security_floor
                ));
            }
            if doc.is_blocked(&c.version) {
                return Err(format!("committed release {} is a failed one", c.version));
            }
        }
        let report = self.verify_audit().map_err(|e| e.to_string())?;
        if !report.is_intact() {
            return Err(format!("audit chain broken: {report}"));
        }
        let log =
            crate::audit::AuditLog::open(self.audit_path(), crate::audit::AuditLimits::default())
                .map_err(|e| e.to_string())?;
        let records = log
            .query(&crate::audit::Filter::default())
            .map_err(|e| e.to_string())?;
        for b in &doc.blocked {
            let failed_at = records.iter().position(|r| {
                r.release.as_deref() == Some(b.version.as_str()) && r.event == "rolled_back"
            });
            if let Some(i) = failed_at {
                if records[i..].iter().any(|r| {
                    r.release.as_deref() == Some(b.version.as_str()) && r.event == "switching"
                }) {
                    return Err(format!(
                        "failed release {} was switched to again",
                        b.version
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Harness {
    /// The simulated clock's time.
    pub fn clock_now(&self) -> Timestamp {
        crate::clock::Clock::now(&self.clock)
    }
}
