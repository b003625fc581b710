//! `patchpub bundle`: a self-contained offline copy of the repository for one release —
//! the current metadata (every root version, so a device with an old root can follow the
//! chain) plus the release's manifest and images — as a directory or a tar file.

use std::path::Path;

use super::error::{io, PublishError};
use super::repo::Repo;
use super::state;
use semver::Version;

impl Repo {
    /// Write the bundle for `product`/`version` to `out`: a tar archive when `out` ends
    /// in `.tar`, else a new directory with `metadata/` and `targets/`.
    pub fn bundle(&self, product: &str, version: &Version, out: &Path) -> Result<(), PublishError> {
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
        Ok(())
    }
}
