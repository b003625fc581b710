//! Categorization: every release a check found, with why it is or is not going in now.
//!
//! The reasons are the switch decision's ([`Policy::decide`]); this file gathers its
//! inputs from the engine's memory (state file: floor and its overrides, failures here,
//! holds, approvals) and turns its verdicts into what status and `list` show.

use jiff::Timestamp;
use semver::Version;

use super::handle::AvailableRelease;
use super::ports::Offered;
use super::statefile::StateDoc;
use crate::policy::{DeviceFacts, Facts, LockState, Policy, Verdict, WaitFor, WhyNot};

/// Everything the decision needs besides the release.
pub struct Context<'a> {
    pub doc: &'a StateDoc,
    /// The release running now, parsed once.
    pub running: Option<&'a Version>,
    pub policy: &'a Policy,
    pub device: &'a DeviceFacts,
    pub lock: &'a LockState,
    pub now: Timestamp,
}

impl Context<'_> {
    /// The decision for `c`. `force` (admin override) skips the window, rollout and
    /// approval answers but never a hold, withdrawal or eligibility; `inhibitors` are
    /// the reboot inhibitors active now (empty when not asked).
    pub fn decide(&self, c: &Offered, force: bool, inhibitors: &[String]) -> Verdict {
        let version = c.version().to_string();
        let doc = self.doc;
        self.policy.decide(&Facts {
            now: self.now,
            device: self.device,
            release: &c.facts,
            running: self.running,
            security_floor: doc.security_floor,
            floor_overridden: doc.floor_overrides.contains(&version),
            failed_here: doc
                .blocked
                .iter()
                .find(|b| b.version == version)
                .map(|b| b.reason.as_str()),
            manifest_problem: c.manifest_problem.as_deref(),
            holds: &doc.holds,
            approved: doc.approved.contains(&version),
            force,
            inhibitors,
            lock: self.lock,
        })
    }

    /// Categorize every release, newest first.
    pub fn categorize(&self, offered: &[Offered]) -> Vec<AvailableRelease> {
        let mut sorted: Vec<&Offered> = offered.iter().collect();
        sorted.sort_by(|a, b| b.version().cmp(a.version()));
        sorted
            .into_iter()
            .map(|c| {
                let v = self.decide(c, false, &[]);
                let s = &c.facts.summary;
                AvailableRelease {
                    version: s.version.to_string(),
                    security_version: s.security_version,
                    kind: s.kind,
                    severity: s.severity,
                    cves: s.cves.clone(),
                    size: s.size,
                    published: c.published,
                    install_now: v.may_switch(),
                    may_stage: v.may_stage(),
                    standing: v.standing(),
                    description: c.summary.clone(),
                    when: v.next.as_ref().map(|o| {
                        o.describe(self.now, &self.policy.schedule, &s.version.to_string())
                    }),
                    next: v.next.clone(),
                    stage_at: self
                        .policy
                        .stage_start(self.device, &c.facts)
                        // Only while the spread is all staging waits for.
                        .filter(|t| {
                            !v.may_stage()
                                && *t > self.now
                                && v.next.as_ref().is_some_and(|o| {
                                    matches!(o.waiting_for, None | Some(WaitFor::Window))
                                })
                        }),
                    packages: c.packages.clone(),
                    // The policy's own words ("staging only inside maintenance windows;
                    // next window opens at …"), without the decision's "waiting until" prefix.
                    stage_wait: v.stage.first().map(|w| match w {
                        WhyNot::Policy { decision } => decision.reason().to_string(),
                        other => other.to_string(),
                    }),
                    why_not: v.switch,
                    components: Vec::new(),
                }
            })
            .collect()
    }
}

/// The release policy would stage: the newest one nothing forbids staging.
pub fn stage_target(available: &[AvailableRelease]) -> Option<&AvailableRelease> {
    available.iter().find(|a| a.may_stage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::ReleaseSummary;
    use crate::policy::{Hold, Kind, ReleaseFacts, Schedule, Severity, Standing, WhyNot};

    fn cand(v: &str, sv: u64) -> Offered {
        Offered {
            facts: ReleaseFacts::new(
                ReleaseSummary {
                    product: "demo".into(),
                    hardware: vec![],
                    version: v.parse().unwrap(),
                    security_version: sv,
                    min_version: None,
                    kind: Kind::Security,
                    severity: Severity::High,
                    cves: vec!["CVE-2026-0001".into()],
                    channels: vec!["stable".into()],
                    withdrawn: false,
                    paused: false,
                    size: 10,
                },
                None,
            ),
            published: None,
            manifest_problem: None,
            summary: None,
            components: Vec::new(),
            packages: Vec::new(),
        }
    }
    fn now() -> Timestamp {
        "2026-11-25T12:00:00Z".parse().unwrap()
    }
    /// Maintenance window on weekend nights: closed at `now()` (a Wednesday noon).
    fn weekend_window() -> Policy {
        Policy {
            schedule: Schedule::parse("UTC", &["Sat,Sun 02:00-05:00"]).unwrap(),
            ..Policy::default()
        }
    }

    /// The inputs of one categorization (owned, so each test states only what differs).
    struct World {
        doc: StateDoc,
        running: Version,
        policy: Policy,
        device: DeviceFacts,
        lock: LockState,
    }

    impl World {
        fn new(running: &str, policy: Policy) -> Self {
            World {
                doc: StateDoc::default(),
                running: running.parse().unwrap(),
                policy,
                device: DeviceFacts {
                    machine_id: "m1".into(),
                    product: "demo".into(),
                    hardware: None,
                    channel: "stable".into(),
                    tags: vec![],
                },
                lock: LockState::NotConfigured,
            }
        }
        fn ctx(&self) -> Context<'_> {
            Context {
                doc: &self.doc,
                running: Some(&self.running),
                policy: &self.policy,
                device: &self.device,
                lock: &self.lock,
                now: now(),
            }
        }
    }

    fn hold(reason: &str, max: Option<&str>) -> Hold {
        Hold {
            reason: reason.into(),
            by: "uid:1000".into(),
            created: now(),
            until: None,
            max_version: max.map(|m| m.parse().unwrap()),
        }
    }

    #[test]
    fn every_engine_and_policy_reason_shows() {
        let mut w = World::new("1.0.0", Policy::default());
        w.doc.security_floor = 5;
        w.doc.block("3.0.0", "health check failed", now());
        w.doc.holds.push(hold("quarter close", Some("2.5.0")));
        let cands = [
            cand("1.0.0", 5),
            cand("2.0.0", 4),
            cand("3.0.0", 6),
            cand("2.4.0", 5),
        ];
        let av = w.ctx().categorize(&cands);
        let get = |v: &str| av.iter().find(|a| a.version == v).unwrap();
        assert!(matches!(
            get("1.0.0").why_not[..],
            [WhyNot::NotNewer { .. }]
        ));
        assert!(matches!(
            get("2.0.0").why_not[..],
            [WhyNot::BelowSecurityFloor { floor: 5, .. }]
        ));
        // Failed here: not applicable, so the hold (a timing rule) is not listed too.
        let r3 = &get("3.0.0").why_not;
        assert!(
            matches!(r3[..], [WhyNot::FailedHere { .. }]),
            "one reason: {r3:?}"
        );
        assert_eq!(get("3.0.0").standing, Standing::NotApplicable);
        assert_eq!(get("2.4.0").standing, Standing::Installable);
        assert!(get("2.4.0").install_now, "{:?}", get("2.4.0"));
        assert_eq!(av[0].version, "3.0.0", "newest first");
        assert_eq!(stage_target(&av).unwrap().version, "2.4.0");
    }

    #[test]
    fn an_older_release_shows_no_window_wait() {
        let w = World::new("2.0.0", weekend_window());
        let av = w.ctx().categorize(&[cand("1.0.0", 5), cand("3.0.0", 5)]);
        let get = |v: &str| av.iter().find(|a| a.version == v).unwrap();
        assert!(
            matches!(get("1.0.0").why_not[..], [WhyNot::NotNewer { .. }]),
            "{:?}",
            get("1.0.0").why_not
        );
        assert!(
            get("3.0.0")
                .why_not
                .iter()
                .any(|w| w.to_string().starts_with("waiting until")),
            "a newer release still shows the window: {:?}",
            get("3.0.0").why_not
        );
    }

    #[test]
    fn versions_sort_numerically() {
        let w = World::new("1.0.0", Policy::default());
        let av = w.ctx().categorize(&[cand("1.9.0", 1), cand("1.10.0", 1)]);
        assert_eq!(av[0].version, "1.10.0");
    }

    #[test]
    fn window_blocks_switch_not_staging_and_force_overrides_it() {
        let w = World::new("1.0.0", weekend_window());
        let ctx = w.ctx();
        let av = ctx.categorize(&[cand("2.0.0", 1)]);
        assert!(!av[0].install_now);
        assert!(
            av[0].why_not[0].to_string().contains("window"),
            "{:?}",
            av[0].why_not
        );
        assert_eq!(stage_target(&av).unwrap().version, "2.0.0");
        assert!(ctx.decide(&cand("2.0.0", 1), true, &[]).may_switch());

        let mut c = cand("2.0.0", 1);
        c.manifest_problem = Some("manifest hash mismatch".into());
        let av = ctx.categorize(&[c]);
        assert!(stage_target(&av).is_none());
    }

    #[test]
    fn holds_are_not_overridden_by_force() {
        let mut w = World::new("1.0.0", Policy::default());
        w.doc.holds.push(hold("freeze", None));
        assert!(!w.ctx().decide(&cand("2.0.0", 1), true, &[]).may_switch());
    }
}
