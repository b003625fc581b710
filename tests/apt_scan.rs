//! The `apt` patch source against the real apt, offline: a signed local archive with a
//! security, an updates and a backports origin, a private apt/dpkg tree with older
//! versions installed, and the scan — the right packages, kinds, CVEs (from changelogs
//! and the tracker feed), severities, `apt-mark hold`ed packages left out and shown,
//! backports only when opted in; unsigned, tampered and `[trusted=yes]` archives refused.

mod apt_fixture;

use apt_fixture::{Archive, Entry, Signing, World};
use patchd::engine::ports::{Offered, Updates};
use patchd::manifest::{Kind, PackageChange, PackageStanding, Severity};
use patchd::source::AptUpdates;
use patchd::sourceconf::{AptConfig, RawApt, RawSeverityRule};

fn archives(sec_signing: Signing) -> Vec<Archive> {
    vec![
        Archive {
            dir: "security",
            origin: "TestOS",
            label: "TestOS-Security",
            suite: "stable-security",
            signing: sec_signing,
            packages: vec![
                (
                    "libfoo",
                    vec![
                        Entry("1.0-2", "high", "Fix CVE-2026-1111 and CVE-2026-1112."),
                        Entry("1.0-1", "low", "Initial release; fixed CVE-2020-0001."),
                    ],
                ),
                (
                    "heldpkg",
                    vec![
                        Entry("2.0-2", "emergency", "Fix CVE-2026-7777."),
                        Entry("2.0-1", "low", "Initial release."),
                    ],
                ),
            ],
        },
        Archive {
            dir: "updates",
            origin: "TestOS",
            label: "TestOS",
            suite: "stable-updates",
            signing: Signing::Good,
            packages: vec![
                (
                    "bar",
                    vec![
                        Entry("1.0-2", "medium", "Fix a crash."),
                        Entry("1.0-1", "low", "Initial release."),
                    ],
                ),
                (
                    "qux",
                    vec![
                        Entry("1.0-3", "low", "Translation update."),
                        Entry("1.0-2", "emergency", "Fix data loss, CVE-2026-4444."),
                        Entry("1.0-1", "low", "Initial release; CVE-2019-0002."),
                    ],
                ),
            ],
        },
        Archive {
            dir: "backports",
            origin: "TestOS Backports",
            label: "TestOS Backports",
            suite: "stable-backports",
            signing: Signing::Good,
            packages: vec![(
                "baz",
                vec![
                    Entry("3.0-1~bpo1", "low", "New upstream, fixes CVE-2026-3333."),
                    Entry("1.0-1", "low", "Initial release."),
                ],
            )],
        },
    ]
}

/// The tracker's view: one more CVE fixed in libfoo 1.0-2, one fixed long ago.
const FEED: &str = r#"{"libfoo": {
  "CVE-2026-5555": {"releases": {"stable": {"status": "resolved", "fixed_version": "1.0-2", "urgency": "medium"}}},
  "CVE-2018-0003": {"releases": {"stable": {"status": "resolved", "fixed_version": "0.9-1", "urgency": "high"}}}
}}"#;

struct Setup {
    _tmp: tempfile::TempDir,
    world: World,
}

fn setup(sec_signing: Signing) -> Option<Setup> {
    if let Some(t) = apt_fixture::missing_tool() {
        eprintln!("skipped: {t} is not installed");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let world = World::new(tmp.path(), &tmp.path().join("root"));
    for a in archives(sec_signing) {
        world.archive(&a);
    }
    world.installed(&[
        ("libfoo", "1.0-1", false),
        ("heldpkg", "2.0-1", true),
        ("bar", "1.0-1", false),
        ("qux", "1.0-1", false),
        ("baz", "1.0-1", false),
    ]);
    std::fs::write(tmp.path().join("feed.json"), FEED).unwrap();
    Some(Setup { _tmp: tmp, world })
}

fn config(s: &Setup, offer_feature: bool) -> AptConfig {
    AptConfig::from_raw(RawApt {
        root: Some(s.world.root.clone()),
        security_origins: Some(vec!["label=TestOS-Security".into()]),
        bugfix_origins: Some(vec!["origin=TestOS,suite=stable-updates".into()]),
        offer_feature: Some(offer_feature),
        feed: Some(s.world.top.join("feed.json")),
        severity: Some(vec![RawSeverityRule {
            package: Some("ba?".into()),
            kind: Some(Kind::Bugfix),
            severity: Some(Severity::High),
            ..Default::default()
        }]),
        ..Default::default()
    })
    .unwrap()
}

fn source(s: &Setup, cfg: AptConfig) -> AptUpdates {
    AptUpdates::new(
        cfg,
        "srv".into(),
        "stable".into(),
        s.world.top.join("cache"),
    )
}

fn pkg<'a>(o: &'a Offered, name: &str) -> &'a PackageChange {
    o.packages
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("{name} not listed: {:?}", o.packages))
}

#[tokio::test]
async fn pending_upgrades_become_one_categorized_patch_set() {
    let Some(s) = setup(Signing::Good) else {
        return;
    };
    let src = source(&s, config(&s, false));
    let offered = src.discover().await.unwrap();
    assert_eq!(offered.len(), 1, "one patch set: {offered:?}");
    let o = &offered[0];

    let foo = pkg(o, "libfoo");
    assert_eq!(
        (foo.installed.as_str(), foo.candidate.as_str()),
        ("1.0-1", "1.0-2")
    );
    assert_eq!(foo.origin, "TestOS-Security/stable-security");
    assert_eq!(foo.kind, Kind::Security);
    // Changelog entries after the installed version, and the feed; not the old ones.
    assert_eq!(
        foo.cves,
        ["CVE-2026-1111", "CVE-2026-1112", "CVE-2026-5555"]
    );
    assert_eq!(foo.severity, Severity::High, "changelog urgency=high");
    assert_eq!(foo.standing, PackageStanding::Included);

    let bar = pkg(o, "bar");
    assert_eq!(
        (bar.kind, bar.severity),
        (Kind::Bugfix, Severity::High),
        "by rule"
    );
    assert!(bar.cves.is_empty());

    let qux = pkg(o, "qux");
    assert_eq!(qux.candidate, "1.0-3");
    assert_eq!(qux.kind, Kind::Bugfix);
    assert_eq!(qux.cves, ["CVE-2026-4444"], "both new entries, not 1.0-1's");
    assert_eq!(
        qux.severity,
        Severity::Critical,
        "urgency=emergency of 1.0-2"
    );

    let held = pkg(o, "heldpkg");
    assert_eq!(held.standing, PackageStanding::Held);
    assert_eq!(
        (held.installed.as_str(), held.candidate.as_str()),
        ("2.0-1", "2.0-2")
    );
    let baz = pkg(o, "baz");
    assert_eq!(
        (baz.kind, baz.standing),
        (Kind::Feature, PackageStanding::NotOffered)
    );

    let f = &o.facts.summary;
    assert_eq!(f.kind, Kind::Security);
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(
        f.cves,
        [
            "CVE-2026-1111",
            "CVE-2026-1112",
            "CVE-2026-4444",
            "CVE-2026-5555"
        ],
        "held and not offered packages' CVEs are not the set's"
    );
    assert_eq!(
        (f.product.as_str(), f.channels.as_slice()),
        ("srv", &["stable".to_string()][..])
    );
    // Dated by its newest changelog entry, named by its content.
    assert!(
        f.version.to_string().starts_with("2026.11.28+"),
        "{}",
        f.version
    );
    assert_eq!(
        o.summary.as_deref(),
        Some("2026-11-28 patch set: 3 packages (1 held by apt-mark, 1 not offered)")
    );
    assert!(f.size > 0);
    assert!(src.patch_set(&f.version).await.is_some());

    // The same system scanned again is the same release; changelogs already read are
    // not downloaded again (the archive no longer has the .debs).
    std::fs::remove_dir_all(s.world.top.join("repo/security/pool")).unwrap();
    let again = src.discover().await.unwrap();
    assert_eq!(again[0].facts.summary.version, f.version);
    assert_eq!(again[0].summary, o.summary, "no changelog problem noted");
    assert_eq!(pkg(&again[0], "libfoo").cves, foo.cves);
    // A fresh source must download them, and says it could not.
    let fresh = source(&s, config(&s, false)).discover().await.unwrap();
    let text = fresh[0].summary.clone().unwrap();
    assert!(
        text.contains("; changelog of heldpkg: apt-get download"),
        "{text}"
    );
    assert!(text.contains("changelog of libfoo"), "{text}");
    assert_eq!(
        pkg(&fresh[0], "libfoo").cves,
        ["CVE-2026-5555"],
        "the feed's only"
    );
}

#[tokio::test]
async fn backports_are_offered_only_when_opted_in() {
    let Some(s) = setup(Signing::Good) else {
        return;
    };
    let o = source(&s, config(&s, true))
        .discover()
        .await
        .unwrap()
        .remove(0);
    let baz = pkg(&o, "baz");
    assert_eq!(
        (baz.kind, baz.standing),
        (Kind::Feature, PackageStanding::Included)
    );
    assert_eq!(baz.candidate, "3.0-1~bpo1");
    assert_eq!(baz.cves, ["CVE-2026-3333"]);
    assert!(o.facts.summary.cves.contains(&"CVE-2026-3333".to_string()));
    assert_eq!(
        o.summary.as_deref(),
        Some("2026-11-28 patch set: 4 packages (1 held by apt-mark)")
    );
}

async fn refused(signing: Signing, want: &str) {
    let Some(s) = setup(signing) else { return };
    let src = source(&s, config(&s, false));
    let e = src
        .discover()
        .await
        .expect_err("must refuse the security archive");
    let text = e.to_string();
    assert!(text.starts_with("apt scan: apt-get update:"), "{text}");
    assert!(text.contains(want), "{text}");
    assert_eq!(e.cause, Some("verify"));
}

#[tokio::test]
async fn an_unsigned_archive_is_refused() {
    refused(Signing::Unsigned, "is not signed").await;
}

#[tokio::test]
async fn a_tampered_release_is_refused() {
    refused(Signing::Tampered, "signatures were invalid").await;
}

#[tokio::test]
async fn a_trusted_yes_source_is_refused() {
    refused(
        Signing::TrustedYes,
        "is not signed (a [trusted=yes] source?)",
    )
    .await;
}

#[tokio::test]
async fn a_configured_option_cannot_turn_the_checks_off() {
    let Some(s) = setup(Signing::Unsigned) else {
        return;
    };
    let mut cfg = config(&s, false);
    cfg.options = vec![
        "Acquire::AllowInsecureRepositories=true".into(),
        "APT::Get::AllowUnauthenticated=true".into(),
    ];
    let e = source(&s, cfg).discover().await.expect_err("still refused");
    assert!(e.to_string().contains("is not signed"), "{e}");
}

#[tokio::test]
async fn an_apt_config_file_and_no_changelogs() {
    let Some(s) = setup(Signing::Good) else {
        return;
    };
    // The tree named by an APT_CONFIG file instead of `root`.
    let conf = s.world.top.join("apt.conf");
    std::fs::write(&conf, format!("Dir \"{}/\";\n", s.world.root.display())).unwrap();
    let mut cfg = config(&s, false);
    cfg.root = None;
    cfg.config = Some(conf);
    cfg.changelogs = patchd::sourceconf::ChangelogSource::None;
    let o = source(&s, cfg.clone()).discover().await.unwrap().remove(0);
    // Only the feed's CVE; no urgency, so security is medium and bugfix low.
    assert_eq!(pkg(&o, "libfoo").cves, ["CVE-2026-5555"]);
    assert_eq!(pkg(&o, "libfoo").severity, Severity::Medium, "feed urgency");
    assert!(pkg(&o, "qux").cves.is_empty());
    assert_eq!(pkg(&o, "qux").severity, Severity::Low);
    assert_eq!(o.facts.summary.severity, Severity::High, "bar's rule");
    assert!(!s.world.top.join("cache").exists(), "nothing downloaded");
    // Without update, the lists apt already has are scanned.
    cfg.update = false;
    let again = source(&s, cfg).discover().await.unwrap();
    assert_eq!(again[0].packages.len(), o.packages.len());
}
