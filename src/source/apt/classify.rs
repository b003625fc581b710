//! Categorizing: each package's kind from its candidate's origins and its severity from
//! the rules, then the patch set as one release whose kind, severity and CVEs are the
//! most urgent (and the union) over its packages — so urgency rules, holds and windows
//! treat it as they treat an image release.

use sha2::{Digest, Sha256};

use super::parse::Origin;
use crate::manifest::{Kind, PackageChange, PackageStanding, ReleaseSummary, Severity};
use crate::sourceconf::{AptConfig, Urgency};

/// Security when any origin of the candidate matches a security pattern, bugfix when
/// one matches a bugfix pattern, feature otherwise.
pub fn kind(origins: &[Origin], cfg: &AptConfig) -> Kind {
    let any = |pats: &[crate::sourceconf::OriginPattern]| {
        origins
            .iter()
            .any(|o| pats.iter().any(|p| p.matches(|f| o.get(f))))
    };
    if any(&cfg.security_origins) {
        Kind::Security
    } else if any(&cfg.bugfix_origins) {
        Kind::Bugfix
    } else {
        Kind::Feature
    }
}

/// The first rule matching the package, else the urgency (changelog or tracker) as a
/// severity: security upgrades at least medium, anything without an urgency low.
pub fn severity(
    package: &str,
    kind: Kind,
    origins: &[Origin],
    urgency: Option<Urgency>,
    cfg: &AptConfig,
) -> Severity {
    for r in &cfg.severity {
        let origin_ok = r
            .origin
            .as_ref()
            .is_none_or(|p| origins.iter().any(|o| p.matches(|f| o.get(f))));
        let package_ok = r
            .package
            .as_deref()
            .is_none_or(|g| crate::sourceconf::glob(g, package));
        let urgency_ok = r
            .urgency
            .is_none_or(|min| urgency.is_some_and(|u| u >= min));
        let kind_ok = r.kind.is_none_or(|k| k == kind);
        if origin_ok && package_ok && urgency_ok && kind_ok {
            return r.severity;
        }
    }
    let from_urgency = urgency.map_or(Severity::Low, Urgency::severity);
    if kind == Kind::Security {
        from_urgency.max(Severity::Medium)
    } else {
        from_urgency
    }
}

/// The patch set's identity: the sha256 of its included packages' names, architectures
/// and both versions, sorted — the same set hashes the same on every device.
pub fn content_hash(packages: &[PackageChange]) -> String {
    let mut lines: Vec<String> = packages
        .iter()
        .filter(|p| p.standing == PackageStanding::Included)
        .map(|p| format!("{} {} {} {}\n", p.name, p.arch, p.installed, p.candidate))
        .collect();
    lines.sort();
    let mut h = Sha256::new();
    for l in &lines {
        h.update(l.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The patch set as one release for `product` on `channel`, dated `date`: version
/// `YYYY.M.D+<12 hex digits of the content hash>`; `None` when nothing is included.
pub fn release(
    packages: &[PackageChange],
    date: jiff::civil::Date,
    product: &str,
    channel: &str,
    size: u64,
) -> Option<(ReleaseSummary, String)> {
    let included: Vec<&PackageChange> = packages
        .iter()
        .filter(|p| p.standing == PackageStanding::Included)
        .collect();
    let kind = included.iter().map(|p| p.kind).min()?;
    let severity = included.iter().map(|p| p.severity).max()?;
    let mut cves: Vec<String> = included.iter().flat_map(|p| p.cves.clone()).collect();
    cves.sort();
    cves.dedup();
    let hash = content_hash(packages);
    let mut version = semver::Version::new(
        u64::try_from(date.year()).unwrap_or(0),
        u64::try_from(date.month()).unwrap_or(0),
        u64::try_from(date.day()).unwrap_or(0),
    );
    version.build = semver::BuildMetadata::new(&hash[..12]).unwrap_or_default();
    let n = included.len();
    let mut text = format!(
        "{date} patch set: {n} package{}",
        if n == 1 { "" } else { "s" }
    );
    let count = |s: PackageStanding| packages.iter().filter(|p| p.standing == s).count();
    let extra: Vec<String> = [
        (count(PackageStanding::Held), "held by apt-mark"),
        (count(PackageStanding::NotOffered), "not offered"),
    ]
    .into_iter()
    .filter(|(c, _)| *c > 0)
    .map(|(c, w)| format!("{c} {w}"))
    .collect();
    if !extra.is_empty() {
        text.push_str(&format!(" ({})", extra.join(", ")));
    }
    let summary = ReleaseSummary {
        product: product.to_string(),
        hardware: Vec::new(),
        version,
        security_version: 0,
        min_version: None,
        kind,
        severity,
        cves,
        channels: vec![channel.to_string()],
        withdrawn: false,
        paused: false,
        size,
    };
    Some((summary, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sourceconf::{RawApt, RawSeverityRule};

    fn origin(pairs: &[(&'static str, &str)]) -> Origin {
        Origin {
            fields: pairs.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        }
    }

    fn change(
        name: &str,
        kind: Kind,
        severity: Severity,
        standing: PackageStanding,
    ) -> PackageChange {
        PackageChange {
            name: name.into(),
            arch: "amd64".into(),
            installed: "1.0-1".into(),
            candidate: "1.0-2".into(),
            origin: "x/y".into(),
            kind,
            severity,
            cves: vec![format!("CVE-2026-{:04}", name.len())],
            standing,
            staged: None,
        }
    }

    #[test]
    fn origins_give_kinds() {
        let cfg = AptConfig::default();
        let sec = origin(&[("label", "Debian-Security"), ("suite", "stable-security")]);
        let upd = origin(&[("origin", "Debian"), ("suite", "stable-updates")]);
        let bpo = origin(&[("origin", "Debian"), ("suite", "bookworm-backports")]);
        assert_eq!(kind(&[upd.clone(), sec], &cfg), Kind::Security);
        assert_eq!(kind(&[upd], &cfg), Kind::Bugfix);
        assert_eq!(kind(&[bpo], &cfg), Kind::Feature);
        assert_eq!(kind(&[], &cfg), Kind::Feature);
    }

    #[test]
    fn rules_then_urgency() {
        let cfg = AptConfig::from_raw(RawApt {
            severity: Some(vec![
                RawSeverityRule {
                    package: Some("openssl*".into()),
                    severity: Some(Severity::Critical),
                    ..Default::default()
                },
                RawSeverityRule {
                    origin: Some("suite=*-updates".into()),
                    urgency: Some(Urgency::High),
                    severity: Some(Severity::Medium),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        })
        .unwrap();
        let upd = [origin(&[("suite", "stable-updates")])];
        assert_eq!(
            severity("openssl", Kind::Bugfix, &[], None, &cfg),
            Severity::Critical
        );
        assert_eq!(
            severity("curl", Kind::Bugfix, &upd, Some(Urgency::Emergency), &cfg),
            Severity::Medium
        );
        assert_eq!(
            severity("curl", Kind::Bugfix, &upd, Some(Urgency::Low), &cfg),
            Severity::Low
        );
        assert_eq!(
            severity("curl", Kind::Security, &[], None, &cfg),
            Severity::Medium
        );
        assert_eq!(
            severity("curl", Kind::Security, &[], Some(Urgency::Emergency), &cfg),
            Severity::Critical
        );
    }

    #[test]
    fn the_set_is_its_most_urgent_package_and_held_ones_do_not_count() {
        let date: jiff::civil::Date = "2026-12-07".parse().unwrap();
        let pkgs = vec![
            change(
                "bar",
                Kind::Bugfix,
                Severity::Low,
                PackageStanding::Included,
            ),
            change(
                "foo",
                Kind::Security,
                Severity::High,
                PackageStanding::Included,
            ),
            change(
                "heldpkg",
                Kind::Security,
                Severity::Critical,
                PackageStanding::Held,
            ),
        ];
        let (s, text) = release(&pkgs, date, "srv", "stable", 10).unwrap();
        assert_eq!((s.kind, s.severity), (Kind::Security, Severity::High));
        assert_eq!(s.cves, ["CVE-2026-0003"]);
        assert_eq!(
            text,
            "2026-12-07 patch set: 2 packages (1 held by apt-mark)"
        );
        assert!(
            s.version.to_string().starts_with("2026.12.7+"),
            "{}",
            s.version
        );
        // Order does not matter; a different held package does not change the identity.
        let mut other = pkgs.clone();
        other.reverse();
        other[0].name = "otherheld".into();
        assert_eq!(
            release(&other, date, "srv", "stable", 10)
                .unwrap()
                .0
                .version,
            s.version
        );
        other[1].candidate = "1.0-3".into();
        assert_ne!(
            release(&other, date, "srv", "stable", 10)
                .unwrap()
                .0
                .version,
            s.version
        );
        let none = [change(
            "x",
            Kind::Feature,
            Severity::Low,
            PackageStanding::NotOffered,
        )];
        assert!(release(&none, date, "srv", "stable", 0).is_none());
    }
}
