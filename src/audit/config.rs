//! `[audit]` of the configuration: owned here; `config` parses and merges the files.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::AuditLimits;
use crate::setting::{absolute, InvalidSetting};

pub const DEFAULT_AUDIT_PATH: &str = "/var/lib/patchd/audit.log";

/// `[audit]` as written: every key optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub path: Option<PathBuf>,
    pub max_size: Option<u64>,
    pub keep: Option<u32>,
}

/// `[audit]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditConfig {
    pub path: PathBuf,
    pub limits: AuditLimits,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            path: DEFAULT_AUDIT_PATH.into(),
            limits: AuditLimits::default(),
        }
    }
}

impl AuditConfig {
    pub fn from_raw(a: RawAudit) -> Result<Self, InvalidSetting> {
        let d = AuditLimits::default();
        let c = Self {
            path: a.path.unwrap_or_else(|| DEFAULT_AUDIT_PATH.into()),
            limits: AuditLimits {
                max_bytes: a.max_size.unwrap_or(d.max_bytes),
                keep: a.keep.unwrap_or(d.keep),
            },
        };
        absolute("audit.path", &c.path)?;
        c.limits
            .validate()
            .map_err(|why| InvalidSetting::new("audit", why))?;
        Ok(c)
    }
}
