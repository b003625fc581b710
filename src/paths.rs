//! Every device path, resolved under an injected root so tests and the demo run in a
//! temporary directory without privileges.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    root: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self::new("/")
    }
}

impl Paths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolve an absolute device path (e.g. `/etc/patchd`) under the root.
    pub fn resolve(&self, abs: impl AsRef<Path>) -> PathBuf {
        let p = abs.as_ref();
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }

    pub fn config_file(&self) -> PathBuf {
        self.resolve("/etc/patchd/patchd.toml")
    }
    pub fn config_dropin_dir(&self) -> PathBuf {
        self.resolve("/etc/patchd/patchd.toml.d")
    }
    pub fn health_dir(&self) -> PathBuf {
        self.resolve("/etc/patchd/health.d")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.resolve("/var/lib/patchd")
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.resolve("/var/cache/patchd")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.resolve("/run/patchd")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_under_root() {
        let p = Paths::new("/tmp/x");
        assert_eq!(p.state_dir(), PathBuf::from("/tmp/x/var/lib/patchd"));
        assert_eq!(
            Paths::default().config_file(),
            PathBuf::from("/etc/patchd/patchd.toml")
        );
    }
}
