//! `patchpub bundle`: a self-contained offline copy of the repository for one release —
//! the current metadata (every root version, so a device with an old root can follow the
//! chain) plus the release's manifest and images — as a directory or a tar file.
//!
//! With an expiry of its own (`patchpub bundle --expires`), snapshot and timestamp are
//! first re-signed in the repository with that expiry (new versions, as `refresh` makes
//! them), so the bundle stays valid for as long as it travels. They go into the
//! repository too, not only into the bundle: a device that installed from the bundle
//! trusts those versions, and the online repository must never offer lower ones (the
//! device would refuse them as a rollback). The next `refresh` re-signs them with the
//! usual expiry again.

use std::path::Path;

use jiff::{SignedDuration, Timestamp};

use super::error::{io, PublishError};
use super::repo::Repo;
use super::state;
use semver::Version;

/// What `patchpub bundle` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleReport {
    /// Files in the bundle (repository-relative).
    pub files: usize,
    /// Expiry of the bundle's timestamp and snapshot.
    pub timestamp_expires: Timestamp,
    pub snapshot_expires: Timestamp,
    /// Targets are not re-signed for a bundle (they need the targets keys): a bundle
    /// lives no longer than this unless the device accepts expired metadata.
    pub targets_expires: Timestamp,
    /// Whether snapshot and timestamp were re-signed for `--expires`.
    pub resigned: bool,
}

/// `--expires`: a span from `now` (`30d`, `12h`, `3600`) or an RFC 3339 time.
pub fn parse_expires(s: &str, now: Timestamp) -> Result<Timestamp, PublishError> {
    let bad = |why: String| PublishError::Invalid(format!("--expires {s:?}: {why}"));
    let t = match s.parse::<Timestamp>() {
        Ok(t) => t,
        Err(_) => {
            let secs = super::spec::parse_duration_secs(s).map_err(|_| {
                bad("expected a duration such as 30d or 12h, or an RFC 3339 time".into())
            })?;
            let secs = i64::try_from(secs).map_err(|_| bad("too far".into()))?;
            now.checked_add(SignedDuration::from_secs(secs))
                .map_err(|e| bad(e.to_string()))?
        }
    };
    if t <= now {
        return Err(bad(format!("{t} is not in the future")));
    }
    Ok(t)
}

impl Repo {
    /// Write the bundle for `product`/`version` to `out`: a tar archive when `out` ends
    /// in `.tar`, else a new directory with `metadata/` and `targets/`.
    pub fn bundle(&self, product: &str, version: &Version, out: &Path) -> Result<(), PublishError> {
        self.bundle_until(product, version, out, None).map(drop)
    }

    /// [`Repo::bundle`], first re-signing snapshot and timestamp to expire at `expires`
    /// when given (see the module's doc for why in the repository too).
    pub fn bundle_until(
        &self,
        product: &str,
        version: &Version,
        out: &Path,
        expires: Option<Timestamp>,
    ) -> Result<BundleReport, PublishError> {
        // The release must exist before anything is re-signed for it.
        self.manifest(product, version)?;
        if let Some(until) = expires {
            let _lock = state::lock(self.dir())?;
            let mut st = state::load(self.dir())?;
            let now = self.now();
            let valid = until.duration_since(now);
            let mut expiries = *self.expiries();
            expiries.snapshot = valid;
            expiries.timestamp = valid;
            state::Publish {
                repo: self.dir(),
                keys_dir: self.keys_dir(),
                now,
                expiries: &expiries,
            }
            .snapshot(&mut st)?;
            tracing::info!(%until, snapshot = st.snapshot.common.version, "snapshot and timestamp re-signed for the bundle");
        }
        let st = self.load_state()?;
        let m = self.manifest(product, version)?;
        let mut files: Vec<String> = Vec::new();
        for v in 1..=st.root.common.version {
            files.push(format!("metadata/{v}.root.json"));
        }
        files.push("metadata/root.json".into());
        files.push("metadata/timestamp.json".into());
        files.push(format!(
            "metadata/{}.snapshot.json",
            st.snapshot.common.version
        ));
        files.push(format!(
            "metadata/{}.targets.json",
            st.targets.common.version
        ));
        let mut target_paths = vec![m.target_path()];
        target_paths.extend(m.images.iter().map(|i| i.target.clone()));
        for t in &target_paths {
            let tf = st
                .targets
                .targets
                .get(t)
                .ok_or_else(|| PublishError::ReleaseNotFound { release: t.clone() })?;
            let sha = tf.hashes.get("sha256").cloned().unwrap_or_default();
            let (dir, base) = t.rsplit_once('/').unwrap_or(("", t));
            files.push(format!("targets/{dir}/{sha}.{base}"));
        }
        if out.extension().is_some_and(|e| e == "tar") {
            let tmp = tempfile::NamedTempFile::new_in(out.parent().unwrap_or(Path::new(".")))
                .map_err(io(out.display()))?;
            {
                let mut b = tar::Builder::new(tmp.as_file());
                b.mode(tar::HeaderMode::Deterministic);
                for f in &files {
                    b.append_path_with_name(self.dir().join(f), f)
                        .map_err(io(self.dir().join(f).display()))?;
                }
                b.finish().map_err(io(out.display()))?;
            }
            tmp.as_file().sync_all().map_err(io(out.display()))?;
            tmp.persist(out).map_err(|e| io(out.display())(e.error))?;
        } else {
            if out.exists() {
                return Err(PublishError::Invalid(format!(
                    "{} exists; choose a new directory",
                    out.display()
                )));
            }
            for f in &files {
                let dst = out.join(f);
                if let Some(parent) = dst.parent() {
                    crate::fsutil::ensure_dir(parent, 0o755).map_err(io(parent.display()))?;
                }
                std::fs::copy(self.dir().join(f), &dst).map_err(io(dst.display()))?;
            }
            // Clients read metadata/snapshot.json and targets.json by version; the
            // unversioned names are conveniences, copied too.
            for name in ["snapshot.json", "targets.json"] {
                let src = state::metadata_dir(self.dir()).join(name);
                if src.exists() {
                    std::fs::copy(&src, out.join("metadata").join(name))
                        .map_err(io(src.display()))?;
                }
            }
        }
        tracing::info!(%product, %version, out = %out.display(), "bundle written");
        Ok(BundleReport {
            files: files.len(),
            timestamp_expires: st.timestamp.common.expires,
            snapshot_expires: st.snapshot.common.expires,
            targets_expires: st.targets.common.expires,
            resigned: expires.is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::{AddRelease, InitOptions};

    #[test]
    fn expires_is_a_span_or_a_time_in_the_future() {
        let now: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let t = |s: &str| parse_expires(s, now).map(|t| t.to_string());
        assert_eq!(t("30d").unwrap(), "2026-12-31T00:00:00Z");
        assert_eq!(t("12h").unwrap(), "2026-12-01T12:00:00Z");
        assert_eq!(t("2027-01-31T00:00:00Z").unwrap(), "2027-01-31T00:00:00Z");
        for bad in ["2026-11-30T00:00:00Z", "0", "soon", "-5d"] {
            assert!(t(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bundle_with_its_own_expiry_resigns_snapshot_and_timestamp_in_the_repository() {
        let d = tempfile::tempdir().unwrap();
        let repo = Repo::init(
            d.path().join("repo"),
            &InitOptions::new(d.path().join("keys")),
        )
        .unwrap();
        let img = d.path().join("img");
        std::fs::write(&img, vec![7u8; 4096]).unwrap();
        let v: Version = "2.0.0".parse().unwrap();
        repo.add_release(&AddRelease::new("box", v.clone(), &img))
            .unwrap();
        let before = repo.load_state().unwrap();
        let until = repo
            .now()
            .checked_add(SignedDuration::from_hours(24 * 60))
            .unwrap();
        let until = Timestamp::from_second(until.as_second()).unwrap();
        let rep = repo
            .bundle_until("box", &v, &d.path().join("b.tar"), Some(until))
            .unwrap();
        assert!(rep.resigned);
        assert_eq!(rep.timestamp_expires, until);
        assert_eq!(rep.snapshot_expires, until);
        let after = repo.load_state().unwrap();
        assert_eq!(
            after.timestamp.common.version,
            before.timestamp.common.version + 1
        );
        assert_eq!(
            after.snapshot.common.version,
            before.snapshot.common.version + 1
        );
        assert_eq!(after.timestamp.common.expires, until);
        // Without --expires nothing is re-signed.
        let rep = repo
            .bundle_until("box", &v, &d.path().join("c.tar"), None)
            .unwrap();
        assert!(!rep.resigned);
        assert_eq!(
            repo.load_state().unwrap().timestamp.common.version,
            after.timestamp.common.version
        );
        // A release that does not exist re-signs nothing either.
        let missing: Version = "9.0.0".parse().unwrap();
        assert!(repo
            .bundle_until("box", &missing, &d.path().join("d.tar"), Some(until))
            .is_err());
        assert_eq!(
            repo.load_state().unwrap().timestamp.common.version,
            after.timestamp.common.version
        );
    }
}
