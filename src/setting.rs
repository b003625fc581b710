//! What a room's check of its configuration section returns when a value breaks a rule:
//! the key (`health.deadline`) and why. `config` adds the files the value came from.
//!
//! A leaf so that every room can own the validation of its own section (DESIGN
//! "Layers": `config` merges files and delegates each section to its room) without
//! importing `config`, which sits above them.

use std::path::Path;

/// One configuration value that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {why}")]
pub struct InvalidSetting {
    pub key: String,
    pub why: String,
}

impl InvalidSetting {
    pub fn new(key: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            why: why.into(),
        }
    }
}

/// Paths in the configuration are device paths and must be absolute (they are resolved
/// under `--root` later).
pub fn absolute(key: &str, p: &Path) -> Result<(), InvalidSetting> {
    if p.is_absolute() {
        Ok(())
    } else {
        Err(InvalidSetting::new(
            key,
            format!("{} is not an absolute path", p.display()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_named_with_their_key() {
        assert!(absolute("audit.path", Path::new("/var/lib/x")).is_ok());
        let e = absolute("audit.path", Path::new("var/lib/x")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "audit.path: var/lib/x is not an absolute path"
        );
    }
}
