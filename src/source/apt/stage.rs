//! Staging a patch set transactionally: a writable btrfs snapshot of the running root
//! subvolume becomes the target slot, and the upgrade of exactly the patch set's
//! packages runs inside it.
//!
//! Order, and why: the staging marker first (a power cut from here on leaves a
//! snapshot the next start deletes, [`recover`]); the slot's old content goes; the
//! snapshot is taken (its record `incomplete`, never bootable); its `/etc` is hashed
//! (the base of the carry-over at switch time); `policy-rc.d` exiting 101 forbids
//! service starts; `apt-get install --only-upgrade NAME=VERSION…` runs chrooted in the
//! snapshot (see `jail`) with the conffile policy; `dpkg --audit` must be clean; the
//! delta is read back from the snapshot's dpkg database and every package of the set
//! must be at its candidate; only then the record says `verified`. Any failure, and a
//! cancel, deletes the snapshot. The running root is only ever read (the snapshot's
//! source).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use sha2::{Digest, Sha256};

use super::etcmerge;
use super::jail::{tail, Jail, JailError};
use super::record::{Marker, PackageDelta, Records, StagedRecord};
use crate::engine::ports::{Progress, ProgressSink};
use crate::manifest::{PackageChange, PackageStanding};
use crate::names::SlotName;
use crate::slot::{BtrfsSlots, SlotError};
use crate::sourceconf::{AptConfig, ConffilePolicy};

/// Where patch sets are staged: the btrfs slot set the running root is one of.
#[derive(Debug, Clone)]
pub struct Snapshots {
    pub slots: BtrfsSlots,
    /// The slot (subvolume) the running root is.
    pub running: SlotName,
    /// patchd's own state for staging (`<state_dir>/apt`).
    pub state: PathBuf,
    /// Host directories bound into the snapshot besides /proc, /sys and /dev, with
    /// their place inside it: `/var` when it is a subvolume of its own (shared by both
    /// roots; apt's lists and cache are there), `/boot` when it is not inside the root.
    pub binds: Vec<(PathBuf, PathBuf)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Jail(#[from] JailError),
    #[error("dpkg --audit is not clean in the snapshot: {0}")]
    Audit(String),
    #[error("{0}")]
    Delta(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StagingError {
    let what = what.into();
    move |source| StagingError::Io { what, source }
}

/// One staging run.
pub struct Job<'a> {
    pub snaps: &'a Snapshots,
    pub cfg: &'a AptConfig,
    pub version: &'a str,
    pub slot: &'a SlotName,
    pub packages: &'a [PackageChange],
    pub progress: &'a ProgressSink,
    pub cancel: &'a AtomicBool,
}

/// Stage `job`; on any failure the snapshot is deleted and nothing else changed.
pub fn stage(job: &Job<'_>) -> Result<StagedRecord, StagingError> {
    let recs = Records::new(&job.snaps.state);
    let marker = Marker {
        version: job.version.into(),
        slot: job.slot.clone(),
        started: jiff::Timestamp::now(),
    };
    recs.save(&recs.marker_path(job.slot), &marker)
        .map_err(io("writing the staging marker"))?;
    let out = snapshot_and_upgrade(job, &recs);
    if out.is_err() {
        if let Err(e) = job.snaps.slots.discard(job.slot) {
            tracing::error!(slot = %job.slot, error = %e, "deleting the failed snapshot failed; the next start tries again");
            return out;
        }
    }
    let cleared = if out.is_ok() {
        recs.remove(&recs.marker_path(job.slot))
    } else {
        recs.clear(job.slot)
    };
    if let Err(e) = cleared {
        tracing::warn!(slot = %job.slot, error = %e, "removing the staging marker failed");
    }
    out
}

fn snapshot_and_upgrade(job: &Job<'_>, recs: &Records) -> Result<StagedRecord, StagingError> {
    let snaps = job.snaps;
    snaps.slots.discard(job.slot)?;
    recs.remove(&recs.etc_base_path(job.slot))
        .and_then(|()| recs.remove(&recs.staged_path(job.slot)))
        .map_err(io("removing the old slot's records"))?;
    job.report("snapshot of the running root", 0);
    let root = snaps.slots.snapshot_running(&snaps.running, job.slot)?;
    let base = etcmerge::scan(&root.join("etc")).map_err(io("hashing the snapshot's /etc"))?;
    recs.save(&recs.etc_base_path(job.slot), &base)
        .map_err(io("saving the snapshot's /etc hashes"))?;
    let mut jail = Jail::new(&root)
        .bind("/proc", "/proc")
        .bind("/sys", "/sys")
        .bind("/dev", "/dev");
    for (host, inside) in &snaps.binds {
        jail = jail.bind(host, inside);
    }
    if let Some(c) = &job.cfg.config {
        jail = jail.env("APT_CONFIG", &c.to_string_lossy());
    }
    let before = installed(&jail, job.cancel)?;
    let rcd = PolicyRcd::install(&root)?;
    job.upgrade(&jail)?;
    job.report("dpkg --audit", 100);
    let audit = jail.run(
        "dpkg --audit",
        &["dpkg".into(), "--audit".into()],
        job.cancel,
        |_| {},
    )?;
    if audit.lines.iter().any(|l| !l.trim().is_empty()) {
        return Err(StagingError::Audit(tail(&audit.lines, 12)));
    }
    let after = installed(&jail, job.cancel)?;
    rcd.remove()?;
    let packages = delta(job.packages, &before, &after)?;
    let rec = StagedRecord {
        version: job.version.into(),
        slot: job.slot.clone(),
        running: snaps.running.clone(),
        packages,
        conffiles: match job.cfg.conffiles {
            ConffilePolicy::Keep => "keep".into(),
            ConffilePolicy::Package => "package".into(),
        },
        staged_at: jiff::Timestamp::now(),
        etc: None,
    };
    recs.save(&recs.staged_path(job.slot), &rec)
        .map_err(io("saving the staged release record"))?;
    let listed =
        serde_json::to_vec(&rec.packages).map_err(|e| StagingError::Delta(e.to_string()))?;
    let digest = hex::encode(Sha256::digest(&listed));
    snaps
        .slots
        .snapshot_verified(job.slot, job.version, &digest, rec.packages.len() as u64)?;
    tracing::info!(slot = %job.slot, version = job.version, packages = rec.packages.len(), "patch set staged in the snapshot");
    Ok(rec)
}

impl Job<'_> {
    /// A progress line for status: the step in words with apt's percentage (not
    /// bytes, so no done/total).
    fn report(&self, phase: &str, percent: u64) {
        self.progress.send_replace(Some(Progress {
            phase: format!("{phase} ({percent}%)"),
            done: 0,
            total: None,
            rate: None,
        }));
    }

    /// `apt-get install --only-upgrade` of exactly the patch set, progress from apt's
    /// status lines (`APT::Status-Fd`, on the output stream).
    ///
    /// The status goes to fd 3, a copy of the output stream, not to fd 1 itself: apt
    /// marks its status fd close-on-exec, so with `Status-Fd=1` dpkg and every
    /// maintainer script would run without a stdout, and a script that prints (a kernel
    /// package's `linux-update-symlinks`: "Unable to flush stdout: Bad file descriptor")
    /// fails the upgrade.
    fn upgrade(&self, jail: &Jail) -> Result<(), StagingError> {
        let mut argv: Vec<String> = [
            "/bin/sh",
            "-c",
            "exec 3>&1 && exec \"$@\"",
            "sh",
            "apt-get",
            "install",
            "--only-upgrade",
            "-y",
        ]
        .map(String::from)
        .into();
        let opt = |argv: &mut Vec<String>, o: &str| {
            argv.push("-o".into());
            argv.push(o.into());
        };
        opt(
            &mut argv,
            &format!("Dpkg::Options::={}", self.cfg.conffiles.dpkg_option()),
        );
        opt(&mut argv, "APT::Status-Fd=3");
        opt(&mut argv, "Dpkg::Use-Pty=0");
        for o in &self.cfg.options {
            opt(&mut argv, o);
        }
        for o in super::cmd::CHECKS_ON {
            opt(&mut argv, o);
        }
        let included: Vec<&PackageChange> = self
            .packages
            .iter()
            .filter(|p| p.standing == PackageStanding::Included)
            .collect();
        if included.is_empty() {
            return Err(StagingError::Delta("the patch set has no packages".into()));
        }
        for p in &included {
            argv.push(match p.arch.as_str() {
                "" | "all" => format!("{}={}", p.name, p.candidate),
                a => format!("{}:{a}={}", p.name, p.candidate),
            });
        }
        self.report("apt-get install", 0);
        jail.run("apt-get install in the snapshot", &argv, self.cancel, |l| {
            if let Some((pct, msg)) = status_line(l) {
                self.report(&format!("apt: {msg}"), pct);
            }
        })?;
        Ok(())
    }
}

/// `pmstatus:PKG:PERCENT:MESSAGE` or `dlstatus:…` → (percent, message).
fn status_line(l: &str) -> Option<(u64, String)> {
    let rest = l
        .strip_prefix("pmstatus:")
        .or_else(|| l.strip_prefix("dlstatus:"))?;
    let mut parts = rest.splitn(3, ':');
    let _pkg = parts.next()?;
    let pct: f64 = parts.next()?.trim().parse().ok()?;
    let msg = parts.next().unwrap_or("").trim().to_string();
    Some((pct.clamp(0.0, 100.0) as u64, msg))
}

type Installed = BTreeMap<(String, String), String>;

/// Installed packages in the jail's dpkg database: (name, arch) → version.
fn installed(jail: &Jail, cancel: &AtomicBool) -> Result<Installed, StagingError> {
    let argv = [
        "dpkg-query",
        "-W",
        "-f",
        "${Package}\\t${Architecture}\\t${Version}\\t${db:Status-Abbrev}\\n",
    ]
    .map(String::from);
    let out = jail.run("dpkg-query in the snapshot", &argv, cancel, |_| {})?;
    Ok(parse_installed(&out.lines))
}

fn parse_installed(lines: &[String]) -> Installed {
    lines
        .iter()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (name, arch, version, st) = (f.next()?, f.next()?, f.next()?, f.next()?);
            st.starts_with("ii")
                .then(|| ((name.to_string(), arch.to_string()), version.to_string()))
        })
        .collect()
}

/// Every package whose version differs; each of the patch set's must be at its
/// candidate.
fn delta(
    set: &[PackageChange],
    before: &Installed,
    after: &Installed,
) -> Result<Vec<PackageDelta>, StagingError> {
    for p in set
        .iter()
        .filter(|p| p.standing == PackageStanding::Included)
    {
        let now = after
            .iter()
            .find(|((n, a), _)| *n == p.name && (p.arch.is_empty() || *a == p.arch))
            .map(|(_, v)| v.as_str());
        if now != Some(p.candidate.as_str()) {
            return Err(StagingError::Delta(format!(
                "{} is {} in the snapshot after the upgrade, not the candidate {}",
                p.name,
                now.unwrap_or("not installed"),
                p.candidate
            )));
        }
    }
    // A package new in the snapshot (a kernel upgrade's new ABI package, any new
    // dependency) has old "", one apt removed has new "": both change what boots.
    let changed = after.iter().filter_map(|((name, arch), new)| {
        let old = before
            .get(&(name.clone(), arch.clone()))
            .map_or("", String::as_str);
        (old != new).then(|| PackageDelta {
            name: name.clone(),
            arch: arch.clone(),
            old: old.to_string(),
            new: new.clone(),
        })
    });
    let removed =
        before
            .iter()
            .filter(|(k, _)| !after.contains_key(*k))
            .map(|((name, arch), old)| PackageDelta {
                name: name.clone(),
                arch: arch.clone(),
                old: old.clone(),
                new: String::new(),
            });
    let mut out: Vec<PackageDelta> = changed.chain(removed).collect();
    out.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
    Ok(out)
}

/// `usr/sbin/policy-rc.d` exiting 101 while apt runs: `invoke-rc.d` and
/// `deb-systemd-invoke` start no service of the running system from the snapshot.
/// An admin's own file is set aside and put back.
struct PolicyRcd {
    path: PathBuf,
    saved: Option<PathBuf>,
}

const POLICY_RCD: &[u8] =
    b"#!/bin/sh\n# patchd: no service starts while a patch set is staged in a snapshot\nexit 101\n";

impl PolicyRcd {
    fn install(root: &Path) -> Result<Self, StagingError> {
        let dir = root.join("usr/sbin");
        let path = dir.join("policy-rc.d");
        let mut saved = None;
        if std::fs::symlink_metadata(&path).is_ok() {
            let s = dir.join("policy-rc.d.patchd-saved");
            std::fs::rename(&path, &s).map_err(io("setting the snapshot's policy-rc.d aside"))?;
            saved = Some(s);
        }
        std::fs::create_dir_all(&dir).map_err(io("creating usr/sbin in the snapshot"))?;
        crate::fsutil::atomic_write_mode(&path, POLICY_RCD, 0o755)
            .map_err(io("writing policy-rc.d into the snapshot"))?;
        Ok(Self { path, saved })
    }

    fn remove(self) -> Result<(), StagingError> {
        std::fs::remove_file(&self.path).map_err(io("removing policy-rc.d from the snapshot"))?;
        if let Some(s) = &self.saved {
            std::fs::rename(s, &self.path).map_err(io("restoring the snapshot's policy-rc.d"))?;
        }
        Ok(())
    }
}

/// After a restart: delete every snapshot whose staging never ended (a power cut or a
/// `kill -9` in the middle); returns the slots cleaned.
pub fn recover(snaps: &Snapshots) -> Result<Vec<SlotName>, StagingError> {
    let recs = Records::new(&snaps.state);
    let mut out = Vec::new();
    for slot in recs.unfinished() {
        snaps.slots.discard(&slot)?;
        recs.clear(&slot)
            .map_err(io(format!("removing the records of slot {slot}")))?;
        tracing::warn!(slot = %slot, "deleted the partial snapshot an interrupted staging left");
        out.push(slot);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_status_lines_give_percent_and_message() {
        assert_eq!(
            status_line("pmstatus:libfoo:42.8571:Unpacking libfoo (all)"),
            Some((42, "Unpacking libfoo (all)".into()))
        );
        assert_eq!(
            status_line("dlstatus:1:100:Retrieving"),
            Some((100, "Retrieving".into()))
        );
        assert_eq!(status_line("Setting up libfoo (1.0-2) ..."), None);
    }

    #[test]
    fn only_installed_packages_count_and_the_delta_lists_changes() {
        let lines: Vec<String> = ["a\tall\t1\tii ", "b\tamd64\t2\trc ", "c\tall\t3\tii "]
            .map(String::from)
            .into();
        let before = parse_installed(&lines);
        assert_eq!(before.len(), 2);
        let mut after = before.clone();
        after.insert(("a".into(), "all".into()), "1.1".into());
        let pc = |n: &str, c: &str| PackageChange {
            name: n.into(),
            arch: "all".into(),
            installed: "1".into(),
            candidate: c.into(),
            origin: String::new(),
            kind: crate::manifest::Kind::Security,
            severity: crate::manifest::Severity::Low,
            cves: vec![],
            standing: PackageStanding::Included,
            staged: None,
        };
        let d = delta(&[pc("a", "1.1")], &before, &after).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].old.as_str(), d[0].new.as_str()), ("1", "1.1"));
        let e = delta(&[pc("a", "1.2")], &before, &after).unwrap_err();
        assert!(e.to_string().contains("not the candidate 1.2"), "{e}");
        // A new package (old "") and a removed one (new "") are part of the delta.
        after.insert(("linux-image-2".into(), "amd64".into()), "1.0-1".into());
        after.remove(&("c".to_string(), "all".to_string()));
        let d = delta(&[pc("a", "1.1")], &before, &after).unwrap();
        let got: Vec<(&str, &str, &str)> = d
            .iter()
            .map(|p| (p.name.as_str(), p.old.as_str(), p.new.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("a", "1", "1.1"),
                ("c", "3", ""),
                ("linux-image-2", "", "1.0-1")
            ]
        );
    }
}
