//! One scan: ask apt (after `apt-get update`, whose signature checks are the trust
//! anchor) which upgrades are pending, where each candidate comes from, which packages
//! the admin holds, and what the candidates' changelogs and the tracker feed say.

use std::collections::BTreeMap;
use std::path::Path;

use super::changelog;
use super::classify;
use super::cmd::{Apt, AptError};
use super::feed::Feed;
use super::parse::{self, Origin};
use crate::manifest::{Kind, PackageChange, PackageStanding};
use crate::sourceconf::{AptConfig, ChangelogSource, Urgency};

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Every pending upgrade, held and not offered ones too, by name.
    pub packages: Vec<PackageChange>,
    /// The newest changelog entry among the included upgrades.
    pub newest: Option<jiff::civil::Date>,
    /// Download size of the included upgrades (`Size` of the candidates).
    pub size: u64,
    /// Problems that did not stop the scan (a changelog that could not be read).
    pub notes: Vec<String>,
}

/// Everything known about one upgrade before it is categorized.
struct Found {
    name: String,
    arch: String,
    installed: String,
    candidate: String,
    origins: Vec<Origin>,
    held: bool,
}

/// Changelogs read before, by `name=version`: a candidate's changelog does not change,
/// so each .deb is downloaded once while it stays the candidate.
pub type Changelogs = BTreeMap<String, Option<Vec<changelog::Entry>>>;

pub async fn scan(
    apt: &Apt,
    cfg: &AptConfig,
    work: &Path,
    seen: &mut Changelogs,
) -> Result<Scan, AptError> {
    if cfg.update {
        apt.update().await?;
    }
    let (sim, _) = apt
        .run("apt-get", &["-s", "-q", "dist-upgrade"], None)
        .await?;
    let pending = parse::simulation(&sim);
    let (held, _) = apt.run("apt-mark", &["showhold"], None).await?;
    let held: Vec<String> = held.split_whitespace().map(str::to_string).collect();
    let (files, _) = apt.run("apt-cache", &["policy"], None).await?;
    let files = parse::package_files(&files);
    let mut names: Vec<&str> = pending.iter().map(|p| p.name.as_str()).collect();
    names.extend(held.iter().map(String::as_str));
    let policies = if names.is_empty() {
        BTreeMap::new()
    } else {
        let mut args = vec!["policy"];
        args.extend(&names);
        parse::package_policies(&apt.run("apt-cache", &args, None).await?.0)
    };
    let origins_of = |name: &str, version: &str| -> Vec<Origin> {
        policies
            .get(name)
            .and_then(|p| p.files.get(version))
            .map(|keys| keys.iter().filter_map(|k| files.get(k).cloned()).collect())
            .unwrap_or_default()
    };
    let mut found: Vec<Found> = pending
        .iter()
        .map(|p| Found {
            origins: origins_of(&p.name, &p.candidate),
            name: p.name.clone(),
            arch: p.arch.clone(),
            installed: p.installed.clone().unwrap_or_default(),
            candidate: p.candidate.clone(),
            held: false,
        })
        .collect();
    // A held package is not in the simulation; it is listed when it has an upgrade.
    for h in &held {
        let Some(p) = policies.get(h) else { continue };
        if let (Some(i), Some(c)) = (&p.installed, &p.candidate) {
            if i != c && !found.iter().any(|f| &f.name == h) {
                found.push(Found {
                    origins: origins_of(h, c),
                    name: h.clone(),
                    arch: String::new(),
                    installed: i.clone(),
                    candidate: c.clone(),
                    held: true,
                });
            }
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    let scan = categorize(apt, cfg, work, found, seen).await?;
    Ok(scan)
}

async fn categorize(
    apt: &Apt,
    cfg: &AptConfig,
    work: &Path,
    found: Vec<Found>,
    seen: &mut Changelogs,
) -> Result<Scan, AptError> {
    seen.retain(|k, _| {
        found
            .iter()
            .any(|f| *k == format!("{}={}", f.name, f.candidate))
    });
    let fields = if found.is_empty() {
        BTreeMap::new()
    } else {
        let wanted: Vec<String> = found
            .iter()
            .map(|f| format!("{}={}", f.name, f.candidate))
            .collect();
        let mut args = vec!["show"];
        args.extend(wanted.iter().map(String::as_str));
        parse::show(&apt.run("apt-cache", &args, None).await?.0)
    };
    let feed = match &cfg.feed {
        Some(p) => Some(Feed::load(p).map_err(|detail| AptError::Parse {
            what: "source.apt.feed".into(),
            detail,
        })?),
        None => None,
    };
    let mut out = Scan::default();
    for f in found {
        let show = fields.get(&(f.name.clone(), f.candidate.clone()));
        let source = show
            .and_then(|s| s.get("Source"))
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or(&f.name)
            .to_string();
        let kind = classify::kind(&f.origins, cfg);
        let standing = if f.held {
            PackageStanding::Held
        } else if kind == Kind::Feature && !cfg.offer_feature {
            PackageStanding::NotOffered
        } else {
            PackageStanding::Included
        };
        let mut cves = Vec::new();
        let mut urgency: Option<Urgency> = None;
        if cfg.changelogs == ChangelogSource::Download {
            let key = format!("{}={}", f.name, f.candidate);
            let read = match seen.get(&key) {
                Some(known) => Ok(known.clone()),
                None => changelog_of(apt, work, &f.name, &f.candidate).await,
            };
            if let Ok(r) = &read {
                seen.insert(key, r.clone());
            }
            match read {
                Ok(Some(entries)) => {
                    let s = changelog::since(&entries, &f.installed, &f.candidate);
                    cves = s.cves;
                    urgency = s.urgency;
                    if standing == PackageStanding::Included {
                        out.newest = out.newest.max(s.newest);
                    }
                }
                Ok(None) => out.notes.push(format!("{} ships no changelog", f.name)),
                Err(e) => {
                    tracing::warn!(package = %f.name, error = %e, "changelog not read");
                    out.notes.push(format!("changelog of {}: {e}", f.name));
                }
            }
        }
        if let Some(feed) = &feed {
            let fixed = feed.fixed(&source, &f.installed, &f.candidate);
            cves.extend(fixed.cves);
            urgency = urgency.max(fixed.urgency);
        }
        cves.sort();
        cves.dedup();
        if standing == PackageStanding::Included {
            out.size += show
                .and_then(|s| s.get("Size"))
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
        }
        out.packages.push(PackageChange {
            severity: classify::severity(&f.name, kind, &f.origins, urgency, cfg),
            origin: f
                .origins
                .first()
                .map_or_else(|| "unknown".to_string(), Origin::short),
            name: f.name,
            arch: f.arch,
            installed: f.installed,
            candidate: f.candidate,
            kind,
            cves,
            standing,
            staged: None,
        });
    }
    Ok(out)
}

/// The changelog entries of the candidate .deb: `apt-get download` (apt checks the file
/// against the signed index) into a fresh directory under `work`, then the package's
/// `changelog.Debian.gz` out of its data archive.
async fn changelog_of(
    apt: &Apt,
    work: &Path,
    name: &str,
    version: &str,
) -> Result<Option<Vec<changelog::Entry>>, String> {
    crate::fsutil::ensure_dir(work, 0o700).map_err(|e| format!("{}: {e}", work.display()))?;
    let dir = tempfile::tempdir_in(work).map_err(|e| format!("{}: {e}", work.display()))?;
    apt.run(
        "apt-get",
        &["download", "-q", &format!("{name}={version}")],
        Some(dir.path()),
    )
    .await
    .map_err(|e| e.to_string())?;
    let deb = std::fs::read_dir(dir.path())
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download left no .deb")?;
    let tar = tool_output(
        "dpkg-deb",
        &[std::ffi::OsStr::new("--fsys-tarfile"), deb.as_os_str()],
    )
    .await?;
    let Some(gz) = changelog::find_in_tar(&tar, name).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let gz_path = dir.path().join("changelog.gz");
    std::fs::write(&gz_path, gz).map_err(|e| e.to_string())?;
    let text = tool_output("gzip", &[std::ffi::OsStr::new("-dc"), gz_path.as_os_str()]).await?;
    Ok(Some(changelog::parse(&String::from_utf8_lossy(&text))))
}

async fn tool_output(tool: &str, args: &[&std::ffi::OsStr]) -> Result<Vec<u8>, String> {
    let out = tokio::process::Command::new(tool)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("{tool}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{tool} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}
