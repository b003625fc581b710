//! `app-bundle`: a tar tree in `/var/lib/patchd/apps/NAME/{a,b}` (under the configured
//! root), the copy in use named by the symlink `NAME/current` (`a` or `b`, relative).
//!
//! Staging writes only the copy `current` does not name: its record `COPY.json` is
//! removed first (so a torn copy never claims a version), the tree is extracted into
//! `COPY.new` and renamed to `COPY`, then the record is written. Switching replaces
//! `current` by renaming a new symlink over it — at every instant `current` names one
//! whole copy — and restarts the component's units. What is installed is read back from
//! the link and the record of the copy it names.

use std::fs;
use std::path::{Path, PathBuf};

use super::restart::Restarter;
use super::{io_err, ComponentError, Installed, Installer, Job};
use crate::fsutil;
use crate::manifest::Component;
use crate::paths::Paths;
use crate::slot::extract::{extract, ExtractPolicy};

/// Where app bundles live, below the root.
pub const APPS_DIR: &str = "/var/lib/patchd/apps";

#[derive(Debug, Clone)]
pub struct AppBundles {
    base: PathBuf,
    restarter: Restarter,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CopyRecord {
    version: String,
    sha256: String,
    origin: String,
}

fn other(copy: &str) -> &'static str {
    if copy == "a" {
        "b"
    } else {
        "a"
    }
}

impl AppBundles {
    pub fn new(paths: &Paths, restarter: Restarter) -> Self {
        Self::at(paths.resolve(APPS_DIR), restarter)
    }

    /// App bundles kept in `base` (already resolved under the root).
    pub fn at(base: PathBuf, restarter: Restarter) -> Self {
        Self { base, restarter }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }

    /// The copy `current` names, `None` when there is no link.
    fn current(&self, name: &str) -> Result<Option<String>, ComponentError> {
        let link = self.dir(name).join("current");
        match fs::read_link(&link) {
            Ok(t) => {
                let t = t.to_string_lossy().to_string();
                if t == "a" || t == "b" {
                    Ok(Some(t))
                } else {
                    Err(ComponentError::failed(
                        name,
                        format!("{} points to {t:?}, not to a or b", link.display()),
                    ))
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ComponentError::io(
                name,
                format!("reading {}", link.display()),
                e,
            )),
        }
    }

    fn record(&self, name: &str, copy: &str) -> Result<Option<CopyRecord>, ComponentError> {
        let p = self.dir(name).join(format!("{copy}.json"));
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| ComponentError::failed(name, format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ComponentError::io(
                name,
                format!("reading {}", p.display()),
                e,
            )),
        }
    }

    /// The copy staging writes: the one `current` does not name.
    fn target_copy(&self, name: &str) -> Result<&'static str, ComponentError> {
        Ok(match self.current(name)? {
            Some(c) => other(&c),
            None => "a",
        })
    }

    /// Point `current` at `copy` atomically (new link renamed over the old one).
    fn point(&self, name: &str, copy: &str) -> Result<(), ComponentError> {
        let dir = self.dir(name);
        let tmp = dir.join("current.new");
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(copy, &tmp).map_err(io_err(name, "creating current.new"))?;
        fs::rename(&tmp, dir.join("current")).map_err(io_err(name, "replacing current"))?;
        fsutil::fsync_dir(&dir).map_err(io_err(name, "syncing the app directory"))
    }
}

fn remove_tree(p: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl Installer for AppBundles {
    fn installed(&self, name: &str) -> Result<Option<Installed>, ComponentError> {
        let Some(copy) = self.current(name)? else {
            return Ok(None);
        };
        let rec = self.record(name, &copy)?;
        Ok(Some(match rec {
            Some(r) => Installed {
                version: r.version,
                sha256: r.sha256,
                copy: Some(copy),
                origin: r.origin,
            },
            None => Installed {
                version: "unknown".into(),
                sha256: String::new(),
                copy: Some(copy),
                origin: String::new(),
            },
        }))
    }

    fn stage(&self, job: &Job<'_>) -> Result<(), ComponentError> {
        let c = job.component;
        let name = c.name.as_str();
        let dir = self.dir(name);
        fsutil::ensure_dir(&dir, 0o755).map_err(io_err(name, "creating the app directory"))?;
        let copy = self.target_copy(name)?;
        let rec = dir.join(format!("{copy}.json"));
        match fs::remove_file(&rec) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ComponentError::io(name, "removing the old copy record", e))
            }
            _ => fsutil::fsync_dir(&dir).map_err(io_err(name, "syncing the app directory"))?,
        }
        let fresh = dir.join(format!("{copy}.new"));
        remove_tree(&fresh).map_err(io_err(name, "removing a partial copy"))?;
        fs::create_dir(&fresh).map_err(io_err(name, "creating the new copy"))?;
        let file = fs::File::open(job.file).map_err(io_err(name, "opening the payload"))?;
        extract(
            std::io::BufReader::new(file),
            &fresh,
            &ExtractPolicy::default(),
        )
        .map_err(|source| ComponentError::Extract {
            name: name.to_string(),
            source,
        })?;
        fsutil::syncfs_dir(&fresh).map_err(io_err(name, "syncing the new copy"))?;
        let old = dir.join(copy);
        remove_tree(&old).map_err(io_err(name, "removing the old copy"))?;
        fs::rename(&fresh, &old).map_err(io_err(name, "renaming the new copy"))?;
        let body = serde_json::to_vec(&CopyRecord {
            version: c.version.clone(),
            sha256: c.sha256.clone(),
            origin: job.release.to_string(),
        })
        .map_err(|e| ComponentError::failed(name, e.to_string()))?;
        fsutil::atomic_write(&rec, &body).map_err(io_err(name, "writing the copy record"))?;
        tracing::info!(component = name, copy, version = %c.version, "app bundle staged");
        Ok(())
    }

    fn switch(&self, job: &Job<'_>) -> Result<(), ComponentError> {
        let c = job.component;
        let name = c.name.as_str();
        let copy = match self.current(name)? {
            // Switched already (a repeated step after a restart).
            Some(cur)
                if self
                    .record(name, &cur)?
                    .is_some_and(|r| r.sha256 == c.sha256) =>
            {
                cur
            }
            cur => {
                let want = cur.as_deref().map(other).unwrap_or("a");
                match self.record(name, want)? {
                    Some(r) if r.sha256 == c.sha256 => {}
                    _ => {
                        return Err(ComponentError::failed(
                            name,
                            format!(
                                "copy {want} does not hold version {} (not staged)",
                                c.version
                            ),
                        ))
                    }
                }
                self.point(name, want)?;
                want.to_string()
            }
        };
        tracing::info!(component = name, copy = %copy, version = %c.version, "app bundle switched");
        self.restarter.restart(name, &c.units)
    }

    fn roll_back(&self, c: &Component, before: Option<&Installed>) -> Result<(), ComponentError> {
        let name = c.name.as_str();
        match before.and_then(|b| b.copy.as_deref()) {
            Some(copy) => {
                if self.current(name)?.as_deref() != Some(copy) {
                    self.point(name, copy)?;
                }
                self.restarter.restart(name, &c.units)
            }
            // Not installed before: take the link away (the copy stays for inspection).
            None => {
                let dir = self.dir(name);
                match fs::remove_file(dir.join("current")) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(ComponentError::io(name, "removing current", e))
                    }
                    _ => fsutil::fsync_dir(&dir).map_err(io_err(name, "syncing the app directory")),
                }
            }
        }
    }
}
