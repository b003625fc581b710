//! Staged component payloads: fetched and verified at staging time into patchd's own
//! directory, one file per release and component, so a restart between staging and the
//! switch finds them; checked again (size and sha256) before an installer reads one.

use std::io::Read;
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

/// Keep `bytes` (already checked against the TUF target) as the payload of `c` after
/// checking them against the manifest's size and sha256 too.
pub fn store_payload(
    dir: &Path,
    release: &str,
    c: &Component,
    bytes: &[u8],
) -> Result<PathBuf, ComponentError> {
    check(c, bytes.len() as u64, &hex(&Sha256::digest(bytes)))?;
    let path = payload_path(dir, release, c);
    if let Some(parent) = path.parent() {
        fsutil::ensure_dir(parent, 0o700)
            .map_err(|e| ComponentError::io(&c.name, "creating the staging directory", e))?;
    }
    fsutil::atomic_write_mode(&path, bytes, 0o600)
        .map_err(|e| ComponentError::io(&c.name, format!("writing {}", path.display()), e))?;
    Ok(path)
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
    if size != c.size || !sha256.eq_ignore_ascii_case(&c.sha256) {
        return Err(ComponentError::failed(
            &c.name,
            format!(
                "payload is {size} bytes with sha256 {sha256}, the manifest signs {} bytes \
                 with sha256 {}",
                c.size, c.sha256
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
