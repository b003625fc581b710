//! The one switch decision: [`Policy::decide`] takes every fact about one release and
//! returns every reason it may not be staged or switched to now. The engine's switch,
//! `check`, `list`, status and the demo all read their reasons from here.

use jiff::Timestamp;
use semver::Version;

use super::{holds, DeviceFacts, Hold, LockState, Opportunity, Policy, ReleaseFacts, Standing};
use super::{WaitFor, WhyNot};
use crate::manifest::{self, DeviceProfile, Ineligible};

/// Everything the decision looks at for one release.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub now: Timestamp,
    pub device: &'a DeviceFacts,
    /// Categorization, rollout and the signed summary of the release.
    pub release: &'a ReleaseFacts,
    /// The release running now; `None` on a device without one (first provisioning).
    pub running: Option<&'a Version>,
    /// The device's anti-rollback floor (highest committed `security_version`).
    pub security_floor: u64,
    /// An admin allowed this release below the floor (audited when granted).
    pub floor_overridden: bool,
    /// Why this release failed on this device before, if it did.
    pub failed_here: Option<&'a str>,
    /// Why its manifest could not be downloaded or verified, if so.
    pub manifest_problem: Option<&'a str>,
    pub holds: &'a [Hold],
    /// An admin approved this release (what `approval` urgency rules ask for).
    pub approved: bool,
    /// Admin override: skips the window, a rollout or hold wait that ends by itself,
    /// approval, inhibitors and the reboot lock; never eligibility, a hold without end,
    /// a withdrawal or a failure here.
    pub force: bool,
    /// Reboot inhibitors active now (asked right before a switch; empty otherwise).
    pub inhibitors: &'a [String],
    /// The external reboot lock.
    pub lock: &'a LockState,
}

/// Every reason not to act on one release now; empty lists mean go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Reasons not to switch to (and reboot into) it now.
    pub switch: Vec<WhyNot>,
    /// Reasons not to download and stage it now.
    pub stage: Vec<WhyNot>,
    /// When the timing rules let the switch happen (`None` when the release does not
    /// fit the device: then no time would be true).
    pub next: Option<Opportunity>,
}

impl Verdict {
    pub fn may_switch(&self) -> bool {
        self.switch.is_empty()
    }
    pub fn may_stage(&self) -> bool {
        self.stage.is_empty()
    }

    /// How `list` groups the release: installable now, waiting (for a window, a stage,
    /// a hold, an approval), or not applicable (a reason of fit, or withdrawn).
    pub fn standing(&self) -> Standing {
        if self.switch.is_empty() {
            Standing::Installable
        } else if self.switch.iter().any(WhyNot::is_fit)
            || self
                .next
                .as_ref()
                .is_some_and(|o| o.waiting_for == Some(WaitFor::Withdrawn))
        {
            Standing::NotApplicable
        } else {
            Standing::Waiting
        }
    }
}

impl Policy {
    /// The switch decision. Order of reasons: does the release fit the device
    /// (eligibility, decided here and nowhere else), failed here, then the timing rules
    /// ([`Policy::may_switch`] / [`Policy::may_stage`]), then what stops the reboot.
    pub fn decide(&self, f: &Facts<'_>) -> Verdict {
        let mut fit = fit_reasons(f);
        fit.dedup();
        // A release that does not fit the device (not newer, failed here, below the
        // floor, wrong hardware, withdrawn) is never installed, so the timing rules'
        // answer for it would only read as a promise ("waiting until …").
        if !fit.is_empty() {
            return Verdict {
                switch: fit.clone(),
                stage: fit,
                next: None,
            };
        }
        let mut stage = fit.clone();
        let d = self.may_stage(f.now, f.device, f.release, f.holds);
        if !d.is_allowed() {
            stage.push(WhyNot::Policy { decision: d });
        }
        let mut switch = fit;
        let d = self.may_switch(f.now, f.device, f.release, f.holds, f.approved || f.force);
        let held = !holds::decide(f.holds, f.release.version(), f.now).is_allowed();
        let overridable = f.force && matches!(d, super::Decision::Wait { .. }) && !held;
        if !d.is_allowed() && !overridable {
            switch.push(WhyNot::Policy { decision: d });
        }
        if !f.force {
            switch.extend(
                f.inhibitors
                    .iter()
                    .map(|by| WhyNot::RebootInhibited { by: by.clone() }),
            );
            if let Some(detail) = f.lock.blocker() {
                switch.push(WhyNot::RebootLock { detail });
            }
        }
        Verdict {
            switch,
            stage,
            next: Some(self.opportunity(f)),
        }
    }
}

/// Does the release fit the device at all: manifest-side eligibility (product,
/// hardware, channel, withdrawn, minimum version, floor, newer), the manifest's own
/// verification, and the device's memory of a failure.
fn fit_reasons(f: &Facts<'_>) -> Vec<WhyNot> {
    let s = &f.release.summary;
    let profile = DeviceProfile {
        product: f.device.product.clone(),
        hardware: f.device.hardware.clone(),
        channel: f.device.channel.clone(),
        running_version: f.running.cloned(),
        security_floor: f.security_floor,
    };
    let mut fit = Vec::new();
    let mut later = Vec::new();
    for i in manifest::check_eligibility(s, &profile) {
        match i {
            Ineligible::NotNewer { running, .. } => later.push(WhyNot::NotNewer {
                current: running.to_string(),
            }),
            Ineligible::BelowSecurityFloor { .. } if f.floor_overridden => {}
            Ineligible::BelowSecurityFloor { release, floor } => {
                later.push(WhyNot::BelowSecurityFloor {
                    security_version: release,
                    floor,
                })
            }
            other => fit.push(WhyNot::Manifest {
                detail: other.to_string(),
            }),
        }
    }
    if let Some(p) = f.manifest_problem {
        fit.push(WhyNot::Manifest { detail: p.into() });
    }
    // Not newer first, then a failure here, then the floor: the order status showed.
    let (newer, floor): (Vec<_>, Vec<_>) = later
        .into_iter()
        .partition(|w| matches!(w, WhyNot::NotNewer { .. }));
    fit.extend(newer);
    if let Some(reason) = f.failed_here {
        fit.push(WhyNot::FailedHere {
            reason: reason.into(),
        });
    }
    fit.extend(floor);
    fit
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Kind, ReleaseSummary, Severity};
    use crate::policy::{RolloutPlan, RolloutState, Schedule};

    fn now() -> Timestamp {
        "2026-11-25T12:00:00Z".parse().unwrap()
    }
    fn device() -> DeviceFacts {
        DeviceFacts {
            machine_id: "m1".into(),
            product: "acme".into(),
            hardware: None,
            channel: "stable".into(),
            tags: vec![],
        }
    }
    fn release(v: &str) -> ReleaseFacts {
        ReleaseFacts::new(
            ReleaseSummary {
                product: "acme".into(),
                hardware: vec![],
                version: v.parse().unwrap(),
                security_version: 3,
                min_version: None,
                kind: Kind::Security,
                severity: Severity::High,
                cves: vec![],
                channels: vec!["stable".into()],
                withdrawn: false,
                paused: false,
                size: 1,
            },
            None,
        )
    }
    struct In {
        running: Version,
        lock: LockState,
        inhibitors: Vec<String>,
    }
    impl In {
        fn new() -> Self {
            In {
                running: "1.0.0".parse().unwrap(),
                lock: LockState::NotConfigured,
                inhibitors: vec![],
            }
        }
        fn facts<'a>(
            &'a self,
            dev: &'a DeviceFacts,
            r: &'a ReleaseFacts,
            force: bool,
        ) -> Facts<'a> {
            Facts {
                now: now(),
                device: dev,
                release: r,
                running: Some(&self.running),
                security_floor: 0,
                floor_overridden: false,
                failed_here: None,
                manifest_problem: None,
                holds: &[],
                approved: false,
                force,
                inhibitors: &self.inhibitors,
                lock: &self.lock,
            }
        }
    }

    #[test]
    fn a_waiting_reboot_lock_holds_the_switch_not_staging() {
        let p = Policy::default();
        let (dev, r) = (device(), release("2.0.0"));
        let mut i = In::new();
        assert!(p.decide(&i.facts(&dev, &r, false)).switch.is_empty());
        i.lock = LockState::Held {
            group: "rack-7".into(),
        };
        assert!(p.decide(&i.facts(&dev, &r, false)).switch.is_empty());
        i.lock = LockState::Waiting {
            group: "rack-7".into(),
            slots: Some(1),
            holders: vec!["node-3".into()],
            said: None,
            retry_at: None,
        };
        let v = p.decide(&i.facts(&dev, &r, false));
        assert!(v.may_stage(), "{v:?}");
        match &v.switch[..] {
            [w @ WhyNot::RebootLock { .. }] => {
                let s = w.to_string();
                assert!(s.contains("rack-7") && s.contains("node-3"), "{s}");
            }
            other => panic!("expected the lock as the one reason, got {other:?}"),
        }
        // An admin override at the console goes ahead, as it does past inhibitors.
        assert!(p.decide(&i.facts(&dev, &r, true)).may_switch());
    }

    #[test]
    fn eligibility_is_reported_once() {
        let p = Policy::default();
        let dev = DeviceFacts {
            channel: "beta".into(),
            ..device()
        };
        let r = release("2.0.0");
        let i = In::new();
        let v = p.decide(&i.facts(&dev, &r, false));
        assert_eq!(v.switch.len(), 1, "{:?}", v.switch);
        assert!(
            v.switch[0].to_string().contains("not on channel"),
            "{:?}",
            v.switch
        );
        assert!(!v.may_stage());
    }

    #[test]
    fn not_newer_hides_the_timing_rules() {
        let p = Policy {
            schedule: Schedule::parse("UTC", &["Sat,Sun 02:00-05:00"]).unwrap(),
            ..Policy::default()
        };
        let dev = device();
        let old = release("0.9.0");
        let i = In::new();
        let v = p.decide(&i.facts(&dev, &old, false));
        assert!(matches!(v.switch[..], [WhyNot::NotNewer { .. }]), "{v:?}");
        let new = release("2.0.0");
        let v = p.decide(&i.facts(&dev, &new, false));
        assert!(v.may_stage());
        assert!(
            v.switch[0].to_string().starts_with("waiting until"),
            "{v:?}"
        );
        assert!(p.decide(&i.facts(&dev, &new, true)).may_switch());
    }

    #[test]
    fn the_next_opportunity_follows_each_rule_to_the_window() {
        let p = Policy {
            schedule: Schedule::parse("UTC", &["Sat,Sun 02:00-05:00"]).unwrap(),
            ..Policy::default()
        };
        let dev = DeviceFacts {
            tags: vec!["canary".into()],
            ..device()
        };
        let mut r = release("2.0.0");
        r.rollout = Some(RolloutPlan {
            published: now(),
            stages: vec![crate::policy::RolloutStage {
                tags: vec!["canary".into()],
                percent: 0,
                after_secs: 3 * 3600,
            }],
            state: RolloutState::Active,
            guarded: false,
            gate: None,
        });
        let i = In::new();
        let v = p.decide(&i.facts(&dev, &r, false));
        let o = v.next.clone().expect("fits, so it has a time");
        assert_eq!(o.waiting_for, Some(WaitFor::Rollout));
        assert_eq!(o.rule_until, Some("2026-11-25T15:00:00Z".parse().unwrap()));
        assert_eq!(o.at, Some("2026-11-28T02:00:00Z".parse().unwrap()));
        assert_eq!(
            o.describe(now(), &p.schedule, "2.0.0"),
            "waiting for the canary stage, in 3 h; then switches and reboots in the window \
             Sat 02:00–05:00 UTC, in 2 d 14 h"
        );
        assert_eq!(v.standing(), Standing::Waiting);
        // A release that does not fit has no time at all.
        let old = release("0.9.0");
        let v = p.decide(&i.facts(&dev, &old, false));
        assert!(v.next.is_none());
        assert_eq!(v.standing(), Standing::NotApplicable);
    }

    #[test]
    fn floor_override_and_withdrawal() {
        let p = Policy::default();
        let dev = device();
        let r = release("2.0.0");
        let i = In::new();
        let mut f = i.facts(&dev, &r, true);
        f.security_floor = 5;
        assert!(matches!(
            p.decide(&f).switch[..],
            [WhyNot::BelowSecurityFloor { floor: 5, .. }]
        ));
        f.floor_overridden = true;
        assert!(p.decide(&f).may_switch());
        let mut w = release("2.0.0");
        w.rollout = Some(RolloutPlan {
            published: now(),
            stages: vec![],
            state: RolloutState::Withdrawn,
            guarded: false,
            gate: None,
        });
        let f = i.facts(&dev, &w, true);
        assert!(
            !p.decide(&f).may_switch(),
            "force never overrides a withdrawal"
        );
    }
}
