//! Staged component payloads: fetched and verified at staging time into patchd's own
//! directory, one file per release and component, so a restart between staging and the
//! switch finds them; checked again (size and sha256) before an installer reads one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::handler::HANDLER_DIR;
use super::ComponentError;
use crate::fsutil;
use crate::manifest::Component;
use crate::paths::Paths;

/// `/var/lib/patchd/components/staged` under the root.
pub fn staged_dir(paths: &Paths) -> PathBuf {
    paths.resolve(HANDLER_DIR).join("staged")
}

/// Where the payload of `c` in `release` is kept once staged. Names were validated by
/// the manifest parser (component names and versions never hold a `/`).
pub fn payload_path(dir: &Path, release: &str, c: &Component) -> PathBuf {
    dir.join(release).join(&c.name)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Keep `bytes` as the payload of `c` after checking them against the manifest's size
/// and sha256 (for payloads already in memory; staging streams through [`PayloadFile`]).
pub fn store_payload(
    dir: &Path,
    release: &str,
    c: &Component,
    bytes: &[u8],
) -> Result<PathBuf, ComponentError> {
    let mut f = PayloadFile::create(dir, release, c)?;
    f.write(bytes)?;
    f.finish(None)
}

/// A payload arriving: written to a hidden partial file beside its place and hashed as
/// it comes, so a payload of any size costs one buffer, never its size in memory. It
/// becomes the staged payload only in [`PayloadFile::finish`], after its size and sha256
/// matched (fsync, rename, fsync dir); dropped unfinished, the partial file is removed.
pub struct PayloadFile {
    name: String,
    size: u64,
    sha256: String,
    path: PathBuf,
    partial: PathBuf,
    file: Option<File>,
    hash: Sha256,
    written: u64,
    done: bool,
}

impl PayloadFile {
    pub fn create(dir: &Path, release: &str, c: &Component) -> Result<Self, ComponentError> {
        let path = payload_path(dir, release, c);
        let parent = path.parent().unwrap_or(dir);
        fsutil::ensure_dir(parent, 0o700)
            .map_err(|e| ComponentError::io(&c.name, "creating the staging directory", e))?;
        let partial = parent.join(format!(".{}.partial", c.name));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .map_err(|e| {
                ComponentError::io(&c.name, format!("creating {}", partial.display()), e)
            })?;
        Ok(PayloadFile {
            name: c.name.clone(),
            size: c.size,
            sha256: c.sha256.clone(),
            path,
            partial,
            file: Some(file),
            hash: Sha256::new(),
            written: 0,
            done: false,
        })
    }

    /// Append the next bytes; more than the manifest's size is refused at once.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ComponentError> {
        self.written += bytes.len() as u64;
        if self.written > self.size {
            return Err(ComponentError::failed(
                &self.name,
                format!(
                    "payload is longer than the {} bytes the manifest signs",
                    self.size
                ),
            ));
        }
        self.hash.update(bytes);
        let Some(f) = self.file.as_mut() else {
            return Err(ComponentError::failed(
                &self.name,
                "payload file already closed",
            ));
        };
        f.write_all(bytes).map_err(|e| {
            ComponentError::io(&self.name, format!("writing {}", self.partial.display()), e)
        })
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Check what arrived against the manifest and, when given, the signed target's
    /// (length, sha256); only then make it the staged payload.
    pub fn finish(mut self, target: Option<(u64, &str)>) -> Result<PathBuf, ComponentError> {
        let got = hex(&self.hash.clone().finalize());
        if let Some((len, sha)) = target {
            if self.written != len || !got.eq_ignore_ascii_case(sha) {
                return Err(ComponentError::failed(
                    &self.name,
                    format!(
                        "payload is {} bytes with sha256 {got}, the target signs {len} bytes \
                         with sha256 {sha}",
                        self.written
                    ),
                ));
            }
        }
        check_against(&self.name, self.size, &self.sha256, self.written, &got)?;
        let io = |what: &str, e| ComponentError::io(&self.name, what.to_string(), e);
        let f = self.file.take();
        if let Some(f) = f {
            f.sync_all().map_err(|e| io("syncing the payload", e))?;
        }
        std::fs::rename(&self.partial, &self.path)
            .map_err(|e| io(&format!("renaming it to {}", self.path.display()), e))?;
        self.done = true;
        if let Some(dir) = self.path.parent() {
            fsutil::fsync_dir(dir).map_err(|e| io("syncing the staging directory", e))?;
        }
        Ok(self.path.clone())
    }
}

impl Drop for PayloadFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// The staged payload of `c`, checked again against its size and sha256.
pub fn staged_payload(dir: &Path, release: &str, c: &Component) -> Result<PathBuf, ComponentError> {
    let path = payload_path(dir, release, c);
    let mut f = std::fs::File::open(&path).map_err(|e| {
        ComponentError::io(
            &c.name,
            format!("opening staged payload {}", path.display()),
            e,
        )
    })?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let k = f
            .read(&mut buf)
            .map_err(|e| ComponentError::io(&c.name, "reading its staged payload", e))?;
        if k == 0 {
            break;
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
    check(c, n, &hex(&h.finalize()))?;
    Ok(path)
}

fn check(c: &Component, size: u64, sha256: &str) -> Result<(), ComponentError> {
    check_against(&c.name, c.size, &c.sha256, size, sha256)
}

fn check_against(
    name: &str,
    want_size: u64,
    want_sha256: &str,
    size: u64,
    sha256: &str,
) -> Result<(), ComponentError> {
    if size != want_size || !sha256.eq_ignore_ascii_case(want_sha256) {
        return Err(ComponentError::failed(
            name,
            format!(
                "payload is {size} bytes with sha256 {sha256}, the manifest signs {want_size} \
                 bytes with sha256 {want_sha256}"
            ),
        ));
    }
    Ok(())
}

/// Forget the staged payloads of every release but `keep`.
pub fn prune_staged(dir: &Path, keep: Option<&str>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if keep.is_some_and(|k| e.file_name() == std::ffi::OsStr::new(k)) {
            continue;
        }
        if let Err(err) = std::fs::remove_dir_all(e.path()) {
            tracing::warn!(path = %e.path().display(), error = %err, "stale component payloads not removed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(payload: &[u8]) -> Component {
        let sha: String = hex(&Sha256::digest(payload));
        serde_json::from_value(serde_json::json!({
            "name": "web", "version": "1.3", "method": "app-bundle", "target": "t",
            "sha256": sha, "size": payload.len(), "rollback": "ab"
        }))
        .unwrap()
    }

    #[test]
    fn a_staged_payload_changed_after_staging_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = component(b"web 1.3");
        let p = store_payload(dir.path(), "3.0.0", &c, b"web 1.3").unwrap();
        assert_eq!(staged_payload(dir.path(), "3.0.0", &c).unwrap(), p);
        std::fs::write(&p, b"web 6.6").unwrap();
        let e = staged_payload(dir.path(), "3.0.0", &c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("web") && e.contains("sha256"), "{e}");
        assert!(store_payload(dir.path(), "3.0.0", &c, b"other").is_err());
    }

    fn partials(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir.join("3.0.0"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".partial"))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn a_streamed_payload_is_staged_only_once_it_matches() {
        let dir = tempfile::tempdir().unwrap();
        let c = component(b"web 1.3 payload");
        let sha = hex(&Sha256::digest(b"web 1.3 payload"));
        let mut f = PayloadFile::create(dir.path(), "3.0.0", &c).unwrap();
        f.write(b"web 1.3 ").unwrap();
        assert!(
            staged_payload(dir.path(), "3.0.0", &c).is_err(),
            "visible before it is whole"
        );
        f.write(b"payload").unwrap();
        assert_eq!(f.written(), 15);
        let p = f.finish(Some((15, &sha))).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"web 1.3 payload");
        assert_eq!(staged_payload(dir.path(), "3.0.0", &c).unwrap(), p);
        assert!(partials(dir.path()).is_empty());
    }

    #[test]
    fn a_payload_longer_or_other_than_signed_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let c = component(b"web 1.3");
        let mut f = PayloadFile::create(dir.path(), "3.0.0", &c).unwrap();
        let e = f.write(b"web 1.3 and more").unwrap_err().to_string();
        assert!(e.contains("longer than the 7 bytes"), "{e}");
        drop(f);
        assert!(partials(dir.path()).is_empty(), "partial file left behind");

        let mut f = PayloadFile::create(dir.path(), "3.0.0", &c).unwrap();
        f.write(b"web 6.6").unwrap();
        let e = f.finish(None).unwrap_err().to_string();
        assert!(e.contains("the manifest signs 7 bytes"), "{e}");
        let mut f = PayloadFile::create(dir.path(), "3.0.0", &c).unwrap();
        f.write(b"web 1.3").unwrap();
        let e = f.finish(Some((7, "00"))).unwrap_err().to_string();
        assert!(e.contains("the target signs 7 bytes with sha256 00"), "{e}");
        assert!(staged_payload(dir.path(), "3.0.0", &c).is_err());
        assert!(partials(dir.path()).is_empty());
    }

    #[test]
    fn pruning_keeps_only_the_release_being_staged() {
        let dir = tempfile::tempdir().unwrap();
        let c = component(b"x");
        store_payload(dir.path(), "1.0.0", &c, b"x").unwrap();
        store_payload(dir.path(), "2.0.0", &c, b"x").unwrap();
        prune_staged(dir.path(), Some("2.0.0"));
        assert!(staged_payload(dir.path(), "1.0.0", &c).is_err());
        assert!(staged_payload(dir.path(), "2.0.0", &c).is_ok());
    }
}
