//! The story's app chapters: a release of components only patches the app bundle `web`
//! without a reboot, and a second one whose app fails its health check is rolled back
//! alone. Every claim is checked against the engine's status, the audit log and what
//! the device's file system shows.

use std::io::Write;

use super::{apps, story_err, DemoApp, DemoError, DemoRelease, Story};
use crate::audit::{Filter, Record};
use crate::engine::state::{Lifecycle, StateKind};
use crate::names::SlotName;
use crate::policy::{Kind, Severity};

/// What chapter 11 left for chapter 12.
struct Applied {
    booted: Option<SlotName>,
    slot: String,
    os: String,
    after: apps::AppView,
}

impl<W: Write> Story<'_, W> {
    /// Audit records after `seq`.
    async fn records_after(&self, seq: u64) -> Result<Vec<Record>, DemoError> {
        let all = self.h()?.history(Filter::default()).await?;
        Ok(all.into_iter().filter(|r| r.seq > seq).collect())
    }

    async fn last_seq(&self) -> Result<u64, DemoError> {
        let all = self.h()?.history(Filter::default()).await?;
        Ok(all.last().map_or(0, |r| r.seq))
    }

    /// The engine did not ask for a reboot since `seq`, and the machine still runs
    /// `slot`.
    fn no_reboot(
        &self,
        step: &str,
        since: &[Record],
        slot: &Option<SlotName>,
    ) -> Result<(), DemoError> {
        let boot = self
            .boot
            .as_ref()
            .ok_or_else(|| story_err(step, "engine not running"))?;
        if boot.task.is_finished() {
            return Err(story_err(step, "the engine stopped (asked for a reboot?)"));
        }
        if let Some(r) = since
            .iter()
            .find(|r| matches!(r.event.as_str(), "reboot" | "switching"))
        {
            return Err(story_err(step, format!("audit record {}: {r:?}", r.event)));
        }
        let now = boot.handle.status().booted_slot;
        if &now != slot {
            return Err(story_err(step, format!("booted {now:?}, was {slot:?}")));
        }
        Ok(())
    }

    /// The app's symlink names the copy the installer reads back, holding `version`.
    fn app_is(&self, step: &str, version: &str) -> Result<apps::AppView, DemoError> {
        let v = self
            .dev
            .app()?
            .ok_or_else(|| story_err(step, "the app bundle is not installed"))?;
        let link = self.dev.app_link()?;
        if v.version != version || link != v.copy {
            return Err(story_err(
                step,
                format!("app {v:?} behind current -> {link}, expected version {version}"),
            ));
        }
        Ok(v)
    }

    /// The audit records `since` have these component steps of `release`, in order.
    fn audited_steps(
        &self,
        step: &str,
        since: &[Record],
        release: &str,
        want: &[&str],
    ) -> Result<(), DemoError> {
        let got: Vec<&str> = since
            .iter()
            .filter(|r| r.release.as_deref() == Some(release))
            .filter(|r| {
                !r.event.starts_with("component_")
                    || r.extra.get("component").and_then(|c| c.as_str()) == Some(apps::APP)
            })
            .map(|r| r.event.as_str())
            .filter(|e| want.contains(e))
            .collect();
        if got != want {
            return Err(story_err(
                step,
                format!("audit shows {got:?}, expected {want:?}"),
            ));
        }
        Ok(())
    }

    /// Chapters 11 and 12: app-bundle patches in releases of components only.
    pub(super) async fn app_patches(&mut self) -> Result<(), DemoError> {
        let done = self.app_patch_applied().await?;
        self.app_patch_rolled_back(done).await
    }

    /// Chapter 11: web 1.1 applied and committed without a reboot.
    async fn app_patch_applied(&mut self) -> Result<Applied, DemoError> {
        let dev = self.dev;
        let step = "app 1.1";
        let before = dev
            .app()?
            .ok_or_else(|| story_err(step, "the factory app bundle is not installed"))?;
        let st = self.h()?.status();
        let (booted, os) = (
            st.booted_slot.clone(),
            st.current_version.unwrap_or_default(),
        );
        let slot = booted.as_ref().map_or("?", |b| b.as_str()).to_string();
        dev.publish(&DemoRelease {
            version: "3.1.0".into(),
            security_version: 3,
            kind: Kind::Security,
            severity: Severity::High,
            cves: vec!["CVE-2026-4242".into()],
            healthy: true,
            os_of: Some(os.clone()),
            app: Some(DemoApp {
                version: "1.1".into(),
                broken: false,
            }),
        })?;
        self.set_clock("2026-12-05T02:40:00Z")?;
        self.say(&format!(
            "11. {}: the publisher releases 3.1.0, a security fix in the app only: web {} → 1.1 \
             (CVE-2026-4242). Its OS image is the one running ({os}), so no reboot is needed.",
            self.now(),
            before.version
        ))?;
        let seq = self.last_seq().await?;
        let starts = dev.unit_starts()?.len();
        let avail = self.check("check for 3.1.0").await?;
        let new: Vec<_> = avail.into_iter().filter(|a| a.version == "3.1.0").collect();
        self.table(&new)?;
        self.until_where(step, "3.1.0 committed", |x| {
            x.state == StateKind::Committed && x.current_version.as_deref() == Some("3.1.0")
        })
        .await?;
        let after = self.app_is(step, "1.1")?;
        self.say(&format!(
            "   patchd unpacks web 1.1 into the spare copy {}, points web/current at it and \
             restarts its unit:",
            after.copy
        ))?;
        let new_starts = dev.unit_starts()?;
        for l in new_starts.iter().skip(starts) {
            self.say(&format!("     [unit] {l}"))?;
        }
        if after.copy == before.copy
            || new_starts.len() != starts + 1
            || !new_starts.last().is_some_and(|l| l.contains("web 1.1"))
        {
            return Err(story_err(
                step,
                format!("app {after:?} (was {before:?}), unit starts {new_starts:?}"),
            ));
        }
        let since = self.records_after(seq).await?;
        self.no_reboot(step, &since, &booted)?;
        self.audited_steps(
            step,
            &since,
            "3.1.0",
            &[
                "component_staged",
                "component_switched",
                "component_committed",
                "committed",
            ],
        )?;
        self.say(&format!(
            "   the health checks pass on the running system: 3.1.0 is committed without a \
             reboot (still slot {slot}, OS {os}). Audit: component_staged, component_switched, \
             component_committed, committed."
        ))?;
        Ok(Applied {
            booted,
            slot,
            os,
            after,
        })
    }

    /// Chapter 12: web 1.2 fails its health check and is rolled back alone.
    async fn app_patch_rolled_back(&mut self, done: Applied) -> Result<(), DemoError> {
        let Applied {
            booted,
            slot,
            os,
            after,
        } = done;
        let dev = self.dev;
        let step = "app 1.2";
        dev.publish(&DemoRelease {
            version: "3.2.0".into(),
            security_version: 3,
            kind: Kind::Bugfix,
            severity: Severity::Medium,
            cves: vec![],
            healthy: true,
            os_of: Some(os.clone()),
            app: Some(DemoApp {
                version: "1.2".into(),
                broken: true,
            }),
        })?;
        self.set_clock("2026-12-05T03:10:00Z")?;
        self.say(&format!(
            "12. {}: the publisher releases 3.2.0 (bugfix, medium): web 1.2, whose config has a typo.",
            self.now()
        ))?;
        let seq = self.last_seq().await?;
        let starts = dev.unit_starts()?.len();
        let avail = self.check("check for 3.2.0").await?;
        let new: Vec<_> = avail.into_iter().filter(|a| a.version == "3.2.0").collect();
        self.table(&new)?;
        let st = self
            .until_where(step, "3.2.0 rolled back", |x| {
                x.state == StateKind::RolledBack
                    && x.lifecycle.release().is_some_and(|r| r.version == "3.2.0")
            })
            .await?;
        let new_starts = dev.unit_starts()?;
        let unit = |i: usize| new_starts.get(starts + i).cloned().unwrap_or_default();
        self.say("   patchd switches web to 1.2 as before and runs the health checks:")?;
        self.say(&format!("     [unit] {}", unit(0)))?;
        if let Lifecycle::RolledBack { reason, .. } = &st.lifecycle {
            self.say(&format!("   ✗ {reason}"))?;
        }
        let back = self.app_is(step, "1.1")?;
        self.say(&format!(
            "   The app alone goes back: web/current -> {} (web 1.1) again, its unit restarted:",
            back.copy
        ))?;
        self.say(&format!("     [unit] {}", unit(1)))?;
        self.say(&format!(
            "   The OS slot {slot} was never touched and nothing rebooted; 3.2.0 is rolled back \
             and blocked here."
        ))?;
        if back != after
            || new_starts.len() != starts + 2
            || !new_starts.last().is_some_and(|l| l.contains("web 1.1"))
            || st.current_version.as_deref() != Some("3.1.0")
            || !st.blocked.iter().any(|b| b.version == "3.2.0")
        {
            return Err(story_err(
                step,
                format!("app {back:?}, unit starts {new_starts:?}, status {st:?}"),
            ));
        }
        let since = self.records_after(seq).await?;
        self.no_reboot(step, &since, &booted)?;
        self.audited_steps(
            step,
            &since,
            "3.2.0",
            &[
                "component_staged",
                "component_switched",
                "component_rolled_back",
                "rolled_back",
            ],
        )?;
        let cause = since
            .iter()
            .find(|r| r.event == "rolled_back")
            .and_then(|r| r.extra.get("cause"))
            .and_then(|c| c.as_str());
        if cause != Some("health") {
            return Err(story_err(step, format!("rolled_back cause {cause:?}")));
        }
        self.say(
            "   Audit: component_staged, component_switched, component_rolled_back, rolled_back \
             (cause health).",
        )?;
        Ok(())
    }
}
