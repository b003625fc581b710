//! Categorization: every release a check found, with why it is or is not going in now.
//!
//! Reasons come from three places: the signed manifest (withdrawn, paused, channel,
//! rollout — reported by discovery), the device's policy (window, rollout bucket, urgency)
//! and the engine's own memory (floor, failed here, holds, not newer).

use std::cmp::Ordering;

use jiff::Timestamp;

use super::handle::AvailableRelease;
use super::ports::{Candidate, WhyNot};
use super::statefile::StateDoc;
use crate::policy::{Decision, DeviceFacts, Policy};

/// Compare release versions: semver when both parse, else dot-separated numeric parts
/// (non-numeric parts compared as text), so `1.10` sorts after `1.9` either way.
pub fn cmp_versions(a: &str, b: &str) -> Ordering {
    if let (Ok(x), Ok(y)) = (semver::Version::parse(a), semver::Version::parse(b)) {
        return x.cmp(&y);
    }
    let mut pa = a.split(['.', '-', '+']);
    let mut pb = b.split(['.', '-', '+']);
    loop {
        match (pa.next(), pb.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let o = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(n), Ok(m)) => n.cmp(&m),
                    _ => x.cmp(y),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

/// The engine-side reasons (floor, failed here, not newer) for one release.
pub fn engine_reasons(c: &Candidate, doc: &StateDoc, current: Option<&str>) -> Vec<WhyNot> {
    let mut why = Vec::new();
    let version = &c.facts.version;
    if let Some(cur) = current {
        if cmp_versions(version, cur) != Ordering::Greater {
            why.push(WhyNot::NotNewer {
                current: cur.to_string(),
            });
        }
    }
    if let Some(b) = doc.blocked.iter().find(|b| &b.version == version) {
        why.push(WhyNot::FailedHere {
            reason: b.reason.clone(),
        });
    }
    if c.security_version < doc.security_floor && !doc.floor_overrides.contains(version) {
        why.push(WhyNot::BelowSecurityFloor {
            security_version: c.security_version,
            floor: doc.security_floor,
        });
    }
    why
}

/// A release not newer than the running one is never installed, so the policy's
/// window or rollout answer for it would only read as a promise ("waiting until …").
fn never_installed(why: &[WhyNot]) -> bool {
    why.iter().any(|w| matches!(w, WhyNot::NotNewer { .. }))
}

/// Everything the categorization needs besides the candidates.
pub struct Context<'a> {
    pub doc: &'a StateDoc,
    pub current: Option<&'a str>,
    pub policy: &'a Policy,
    pub device: &'a DeviceFacts,
    pub now: Timestamp,
}

impl Context<'_> {
    /// All reasons not to switch to `c` now; `force` (admin override) skips the policy's
    /// window, rollout and approval answers but never a hold, withdrawal or channel.
    pub fn switch_reasons(&self, c: &Candidate, force: bool) -> Vec<WhyNot> {
        let mut why = c.manifest_reasons.clone();
        why.extend(engine_reasons(c, self.doc, self.current));
        if never_installed(&why) {
            return why;
        }
        let approved = force || self.doc.approved.contains(&c.facts.version);
        let d = self
            .policy
            .may_switch(self.now, self.device, &c.facts, &self.doc.holds, approved);
        let overridable = force && matches!(d, Decision::Wait { .. }) && !self.held(c);
        if !d.is_allowed() && !overridable {
            why.push(WhyNot::Policy { decision: d });
        }
        why
    }

    /// May `c` be staged now (engine reasons, then the policy's `may_stage`)?
    pub fn stage_reasons(&self, c: &Candidate) -> Vec<WhyNot> {
        let mut why: Vec<WhyNot> = c.manifest_reasons.clone();
        why.extend(engine_reasons(c, self.doc, self.current));
        if never_installed(&why) {
            return why;
        }
        let d = self
            .policy
            .may_stage(self.now, self.device, &c.facts, &self.doc.holds);
        if !d.is_allowed() {
            why.push(WhyNot::Policy { decision: d });
        }
        why
    }

    fn held(&self, c: &Candidate) -> bool {
        !crate::policy::holds::decide(&self.doc.holds, &c.facts.version, self.now).is_allowed()
    }

    /// Categorize every candidate, newest first.
    pub fn categorize(&self, candidates: &[Candidate]) -> Vec<AvailableRelease> {
        let mut out: Vec<AvailableRelease> = candidates
            .iter()
            .map(|c| {
                let why = self.switch_reasons(c, false);
                let stage = self.stage_reasons(c);
                AvailableRelease {
                    version: c.facts.version.clone(),
                    security_version: c.security_version,
                    kind: c.facts.kind,
                    severity: c.facts.severity,
                    cves: c.cves.clone(),
                    size: c.size,
                    published: c.published,
                    install_now: why.is_empty(),
                    may_stage: stage.is_empty(),
                    why_not: why,
                }
            })
            .collect();
        out.sort_by(|a, b| cmp_versions(&b.version, &a.version));
        out
    }
}

/// The release policy would stage: the newest one nothing forbids staging.
pub fn stage_target(available: &[AvailableRelease]) -> Option<&AvailableRelease> {
    available.iter().find(|a| a.may_stage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Hold, Kind, ReleaseFacts, Schedule, Severity};

    fn cand(v: &str, sv: u64) -> Candidate {
        Candidate {
            facts: ReleaseFacts {
                id: format!("demo/{v}"),
                version: v.into(),
                kind: Kind::Security,
                severity: Severity::High,
                channels: vec![],
                rollout: None,
            },
            security_version: sv,
            cves: vec!["CVE-2026-0001".into()],
            size: 10,
            published: None,
            manifest_reasons: vec![],
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
    fn device() -> DeviceFacts {
        DeviceFacts {
            machine_id: "m1".into(),
            channel: "stable".into(),
            tags: vec![],
        }
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(cmp_versions("1.10.0", "1.9.0"), Ordering::Greater);
        assert_eq!(cmp_versions("1.10", "1.9"), Ordering::Greater);
        assert_eq!(cmp_versions("2", "2"), Ordering::Equal);
        assert_eq!(cmp_versions("2.0.0-rc1", "2.0.0"), Ordering::Less);
    }

    #[test]
    fn every_engine_and_policy_reason_shows() {
        let mut doc = StateDoc {
            security_floor: 5,
            ..StateDoc::default()
        };
        doc.block("3.0.0", "health check failed", now());
        doc.holds.push(Hold {
            reason: "quarter close".into(),
            by: "uid:1000".into(),
            created: now(),
            until: None,
            max_version: Some("2.5.0".parse().unwrap()),
        });
        let policy = Policy::default();
        let dev = device();
        let ctx = Context {
            doc: &doc,
            current: Some("1.0.0"),
            policy: &policy,
            device: &dev,
            now: now(),
        };
        let cands = [
            cand("1.0.0", 5),
            cand("2.0.0", 4),
            cand("3.0.0", 6),
            cand("2.4.0", 5),
        ];
        let av = ctx.categorize(&cands);
        let get = |v: &str| av.iter().find(|a| a.version == v).unwrap();
        assert!(matches!(
            get("1.0.0").why_not[..],
            [WhyNot::NotNewer { .. }]
        ));
        assert!(matches!(
            get("2.0.0").why_not[..],
            [WhyNot::BelowSecurityFloor { floor: 5, .. }]
        ));
        let r3 = &get("3.0.0").why_not;
        assert!(r3.iter().any(|w| matches!(w, WhyNot::FailedHere { .. })));
        assert!(
            r3.iter().any(|w| w.to_string().contains("quarter close")),
            "hold not shown: {r3:?}"
        );
        assert!(get("2.4.0").install_now, "{:?}", get("2.4.0"));
        assert_eq!(av[0].version, "3.0.0", "newest first");
        assert_eq!(stage_target(&av).unwrap().version, "2.4.0");
    }

    #[test]
    fn an_older_release_shows_no_window_wait() {
        let doc = StateDoc::default();
        let policy = weekend_window();
        let dev = device();
        let ctx = Context {
            doc: &doc,
            current: Some("2.0.0"),
            policy: &policy,
            device: &dev,
            now: now(),
        };
        let av = ctx.categorize(&[cand("1.0.0", 5), cand("3.0.0", 5)]);
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
    fn window_blocks_switch_not_staging_and_force_overrides_it() {
        let doc = StateDoc::default();
        let policy = weekend_window();
        let dev = device();
        let ctx = Context {
            doc: &doc,
            current: Some("1.0.0"),
            policy: &policy,
            device: &dev,
            now: now(),
        };
        let av = ctx.categorize(&[cand("2.0.0", 1)]);
        assert!(!av[0].install_now);
        assert!(
            av[0].why_not[0].to_string().contains("window"),
            "{:?}",
            av[0].why_not
        );
        assert_eq!(stage_target(&av).unwrap().version, "2.0.0");
        assert!(ctx.switch_reasons(&cand("2.0.0", 1), true).is_empty());

        let mut w = cand("2.0.0", 1);
        w.manifest_reasons.push(WhyNot::Manifest {
            detail: "not for this hardware".into(),
        });
        let av = ctx.categorize(&[w]);
        assert!(stage_target(&av).is_none());
    }

    #[test]
    fn holds_are_not_overridden_by_force() {
        let mut doc = StateDoc::default();
        doc.holds.push(Hold {
            reason: "freeze".into(),
            by: "uid:0".into(),
            created: now(),
            until: None,
            max_version: None,
        });
        let policy = Policy::default();
        let dev = device();
        let ctx = Context {
            doc: &doc,
            current: Some("1.0.0"),
            policy: &policy,
            device: &dev,
            now: now(),
        };
        assert!(!ctx.switch_reasons(&cand("2.0.0", 1), true).is_empty());
    }
}
