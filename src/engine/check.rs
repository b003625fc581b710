//! Categorization: every release a check found, with why it is or is not going in now.
//!
//! Reasons come from three places: the signed manifest (withdrawn, paused, channel,
//! rollout — reported by discovery), the device's policy (window, rollout bucket, urgency)
//! and the engine's own memory (floor, failed here, holds, not newer).

use std::cmp::Ordering;

use jiff::Timestamp;

use super::handle::AvailableRelease;
use super::ports::{active_holds, Candidate, SwitchPolicy, WhyNot};
use super::statefile::StateDoc;

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

/// The engine-side reasons (floor, failed here, holds, not newer) for one release.
pub fn engine_reasons(
    c: &Candidate,
    doc: &StateDoc,
    current: Option<&str>,
    now: Timestamp,
) -> Vec<WhyNot> {
    let mut why = Vec::new();
    if let Some(cur) = current {
        if cmp_versions(&c.version, cur) != Ordering::Greater {
            why.push(WhyNot::NotNewer {
                current: cur.to_string(),
            });
        }
    }
    if let Some(b) = doc.blocked.iter().find(|b| b.version == c.version) {
        why.push(WhyNot::FailedHere {
            reason: b.reason.clone(),
        });
    }
    if c.security_version < doc.security_floor && !doc.floor_overrides.contains(&c.version) {
        why.push(WhyNot::BelowSecurityFloor {
            security_version: c.security_version,
            floor: doc.security_floor,
        });
    }
    for h in active_holds(&doc.holds, now) {
        let applies = match &h.max_version {
            None => true,
            Some(max) => cmp_versions(&c.version, max) == Ordering::Greater,
        };
        if applies {
            let reason = match &h.max_version {
                Some(max) => format!("{} (pinned to at most {max})", h.reason),
                None => h.reason.clone(),
            };
            why.push(WhyNot::Hold {
                reason,
                actor: h.actor.clone(),
            });
        }
    }
    why
}

/// Categorize every candidate, newest first.
pub fn categorize(
    candidates: &[Candidate],
    doc: &StateDoc,
    current: Option<&str>,
    policy: &dyn SwitchPolicy,
    now: Timestamp,
) -> Vec<AvailableRelease> {
    let mut out: Vec<AvailableRelease> = candidates
        .iter()
        .map(|c| {
            let mut why = c.manifest_reasons.clone();
            why.extend(engine_reasons(c, doc, current, now));
            for w in policy.why_not(c, now) {
                if !why.contains(&w) {
                    why.push(w);
                }
            }
            AvailableRelease {
                version: c.version.clone(),
                security_version: c.security_version,
                kind: c.kind,
                severity: c.severity,
                cves: c.cves.clone(),
                size: c.size,
                published: c.published,
                install_now: why.is_empty(),
                why_not: why,
            }
        })
        .collect();
    out.sort_by(|a, b| cmp_versions(&b.version, &a.version));
    out
}

/// Reasons that stop even staging (as opposed to only the switch).
pub fn blocks_staging(w: &WhyNot) -> bool {
    w.blocks_staging() || matches!(w, WhyNot::RolloutStage { .. } | WhyNot::Paused)
}

/// The release policy would stage: the newest one nothing forbids staging.
pub fn stage_target(available: &[AvailableRelease]) -> Option<&AvailableRelease> {
    available
        .iter()
        .find(|a| !a.why_not.iter().any(blocks_staging))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ports::{ReleaseKind, Severity};
    use crate::engine::statefile::Hold;

    struct Always(Vec<WhyNot>);
    impl SwitchPolicy for Always {
        fn why_not(&self, _c: &Candidate, _now: Timestamp) -> Vec<WhyNot> {
            self.0.clone()
        }
        fn next_window(&self, _now: Timestamp) -> Option<Timestamp> {
            None
        }
    }

    fn cand(v: &str, sv: u64) -> Candidate {
        Candidate {
            version: v.into(),
            security_version: sv,
            kind: ReleaseKind::Security,
            severity: Severity::High,
            cves: vec!["CVE-2026-0001".into()],
            size: 10,
            published: None,
            manifest_reasons: vec![],
        }
    }
    fn now() -> Timestamp {
        Timestamp::from_second(1_000_000).unwrap()
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(cmp_versions("1.10.0", "1.9.0"), Ordering::Greater);
        assert_eq!(cmp_versions("1.10", "1.9"), Ordering::Greater);
        assert_eq!(cmp_versions("2", "2"), Ordering::Equal);
        assert_eq!(cmp_versions("2.0.0-rc1", "2.0.0"), Ordering::Less);
    }

    #[test]
    fn every_engine_reason_shows() {
        let mut doc = StateDoc {
            security_floor: 5,
            ..StateDoc::default()
        };
        doc.block("3.0.0", "health check failed", now());
        doc.holds.push(Hold {
            reason: "quarter close".into(),
            actor: "uid:1000".into(),
            since: now(),
            until: None,
            max_version: Some("2.5.0".into()),
        });
        let cands = [
            cand("1.0.0", 5),
            cand("2.0.0", 4),
            cand("3.0.0", 6),
            cand("2.4.0", 5),
        ];
        let av = categorize(&cands, &doc, Some("1.0.0"), &Always(vec![]), now());
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
        assert!(r3.iter().any(|w| matches!(w, WhyNot::Hold { .. })));
        assert!(get("2.4.0").install_now, "{:?}", get("2.4.0"));
        assert_eq!(av[0].version, "3.0.0", "newest first");
        assert_eq!(stage_target(&av).unwrap().version, "2.4.0");
    }

    #[test]
    fn policy_reasons_do_not_block_staging_but_manifest_ones_do() {
        let doc = StateDoc::default();
        let pol = Always(vec![WhyNot::OutsideWindow { next: None }]);
        let av = categorize(&[cand("2.0.0", 1)], &doc, Some("1.0.0"), &pol, now());
        assert!(!av[0].install_now);
        assert_eq!(stage_target(&av).unwrap().version, "2.0.0");

        let mut w = cand("2.0.0", 1);
        w.manifest_reasons.push(WhyNot::Withdrawn);
        let av = categorize(&[w], &doc, Some("1.0.0"), &Always(vec![]), now());
        assert!(stage_target(&av).is_none());
    }

    #[test]
    fn expired_holds_do_not_apply() {
        let mut doc = StateDoc::default();
        doc.holds.push(Hold {
            reason: "freeze".into(),
            actor: "uid:0".into(),
            since: now(),
            until: Some(now()),
            max_version: None,
        });
        let av = categorize(
            &[cand("2.0.0", 1)],
            &doc,
            Some("1.0.0"),
            &Always(vec![]),
            now(),
        );
        assert!(av[0].install_now, "{:?}", av[0].why_not);
    }
}
