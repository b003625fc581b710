//! Strict parsing and validation of manifest bytes.
//!
//! Everything a manifest names may later become a path, a log line or a UI string, so
//! every field is bounded and names are restricted to a safe alphabet.

use super::strict_json::{self, Problem};
use super::types::{Manifest, MIN_SCHEMA_VERSION, SCHEMA_VERSION};

/// Manifests larger than this are refused before any parsing.
pub const MAX_MANIFEST_LEN: u64 = 64 * 1024;
/// JSON nesting deeper than this is refused (the schema needs 4).
pub const MAX_DEPTH: usize = 8;

const MAX_NAME_LEN: usize = 64;
const MAX_SUMMARY_LEN: usize = 200;
const MAX_URL_LEN: usize = 2048;
const MAX_TARGET_LEN: usize = 512;
const MAX_LIST: usize = 64;
const MAX_CVES: usize = 256;
const MAX_IMAGES: usize = 32;
const MAX_STAGES: usize = 32;
const MAX_DELTAS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {len} bytes, more than the allowed {limit}")]
    TooLarge { len: u64, limit: u64 },
    #[error("manifest has duplicate key {key:?} in object {at}")]
    DuplicateKey { at: String, key: String },
    #[error("manifest nests deeper than {limit} levels at {at}")]
    TooDeep { at: String, limit: usize },
    #[error("manifest is not valid: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "manifest schema version {found} is not supported (this build reads 1 to {supported})"
    )]
    UnsupportedSchema { found: u32, supported: u32 },
    #[error("manifest field {field}: {why}")]
    Field { field: String, why: String },
    #[error("manifest {path}: {found} bytes, the signed length is {expected}")]
    LengthMismatch {
        path: String,
        found: u64,
        expected: u64,
    },
    #[error("manifest {path}: {algorithm} hash differs from the signed hash")]
    HashMismatch { path: String, algorithm: String },
    #[error("manifest {path}: the signed target has no hashes")]
    NoHash { path: String },
    #[error("manifest {path}: unsupported hash algorithm {algorithm:?}")]
    UnknownHashAlgorithm { path: String, algorithm: String },
    #[error("manifest found at {path} describes the release at {expected}")]
    PathMismatch { path: String, expected: String },
    #[error("manifest {path} disagrees with its signed release summary in: {}", fields.join(", "))]
    SummaryMismatch {
        path: String,
        fields: Vec<&'static str>,
    },
}

pub(super) fn field_err(field: impl Into<String>, why: impl Into<String>) -> ManifestError {
    ManifestError::Field {
        field: field.into(),
        why: why.into(),
    }
}

impl Manifest {
    /// Parse manifest bytes strictly: size, duplicate keys and depth first, then the typed
    /// document with unknown fields denied, then every field's own rules.
    ///
    /// This does not establish trust; see [`super::VerifiedManifest`].
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ManifestError> {
        let len = bytes.len() as u64;
        if len > MAX_MANIFEST_LEN {
            return Err(ManifestError::TooLarge {
                len,
                limit: MAX_MANIFEST_LEN,
            });
        }
        match strict_json::check(bytes, MAX_DEPTH)? {
            Ok(()) => {}
            Err(Problem::DuplicateKey { at, key }) => {
                return Err(ManifestError::DuplicateKey { at, key })
            }
            Err(Problem::TooDeep { at, limit }) => {
                return Err(ManifestError::TooDeep { at, limit })
            }
        }
        // Look at the schema version first so that a newer document reports that, not
        // the unknown field it happens to contain.
        #[derive(serde::Deserialize)]
        struct Head {
            schema_version: u32,
        }
        let head: Head = serde_json::from_slice(bytes)?;
        if !(MIN_SCHEMA_VERSION..=SCHEMA_VERSION).contains(&head.schema_version) {
            return Err(ManifestError::UnsupportedSchema {
                found: head.schema_version,
                supported: SCHEMA_VERSION,
            });
        }
        let m: Manifest = serde_json::from_slice(bytes)?;
        m.validate()?;
        Ok(m)
    }

    /// Serialize for publishing (pretty, stable field order). Validates first so a
    /// publisher cannot write what devices would refuse.
    pub fn to_vec(&self) -> Result<Vec<u8>, ManifestError> {
        self.validate()?;
        let mut v = serde_json::to_vec_pretty(self)?;
        v.push(b'\n');
        Ok(v)
    }

    /// Check every field's rules (called by [`Manifest::from_slice`] and [`Manifest::to_vec`]).
    pub fn validate(&self) -> Result<(), ManifestError> {
        if !(MIN_SCHEMA_VERSION..=SCHEMA_VERSION).contains(&self.schema_version) {
            return Err(ManifestError::UnsupportedSchema {
                found: self.schema_version,
                supported: SCHEMA_VERSION,
            });
        }
        if self.schema_version < 2 && !self.components.is_empty() {
            return Err(field_err(
                "components",
                "needs schema_version 2 (a version 1 reader would not install them)",
            ));
        }
        super::component_check::check(&self.components)?;
        check_name("product", &self.product)?;
        check_list("hardware", &self.hardware, MAX_LIST)?;
        for (i, h) in self.hardware.iter().enumerate() {
            check_name(&format!("hardware[{i}]"), h)?;
        }
        check_version("version", &self.version)?;
        if let Some(min) = &self.min_version {
            check_version("min_version", min)?;
            if *min > self.version {
                return Err(field_err(
                    "min_version",
                    format!("{min} is above the release version {}", self.version),
                ));
            }
        }
        check_list("cves", &self.cves, MAX_CVES)?;
        for (i, c) in self.cves.iter().enumerate() {
            check_cve(&format!("cves[{i}]"), c)?;
        }
        check_text("summary", &self.summary, MAX_SUMMARY_LEN)?;
        if self.summary.trim().is_empty() {
            return Err(field_err("summary", "empty"));
        }
        if let Some(url) = &self.notes_url {
            check_url("notes_url", url)?;
        }
        if self.images.is_empty() {
            return Err(field_err("images", "a release needs at least one image"));
        }
        check_list("images", &self.images, MAX_IMAGES)?;
        let mut seen = std::collections::HashSet::new();
        for (i, img) in self.images.iter().enumerate() {
            let f = |n: &str| format!("images[{i}].{n}");
            check_name(&f("component"), &img.component)?;
            check_name(&f("slot_class"), &img.slot_class)?;
            check_target_path(&f("target"), &img.target)?;
            check_sha256(&f("sha256"), &img.sha256)?;
            check_list(&f("deltas"), &img.deltas, MAX_DELTAS)?;
            let mut froms = std::collections::HashSet::new();
            for (j, d) in img.deltas.iter().enumerate() {
                let g = |n: &str| format!("images[{i}].deltas[{j}].{n}");
                check_name(&g("from_version"), &d.from_version)?;
                check_sha256(&g("from_sha256"), &d.from_sha256)?;
                check_target_path(&g("target"), &d.target)?;
                if !froms.insert(d.from_sha256.as_str()) {
                    return Err(field_err(
                        g("from_sha256"),
                        "two deltas from the same image",
                    ));
                }
            }
            if let Some(c) = &img.chunks {
                check_target_path(&f("chunks.index"), &c.index)?;
                check_target_path(&f("chunks.store"), &c.store)?;
            }
            if !seen.insert((img.component.as_str(), img.slot_class.as_str())) {
                return Err(field_err(
                    f("slot_class"),
                    format!(
                        "component {:?} has two images for slot class {:?}",
                        img.component, img.slot_class
                    ),
                ));
            }
        }
        check_list("rollout.stages", &self.rollout.stages, MAX_STAGES)?;
        let mut prev: Option<&super::RolloutStage> = None;
        for (i, st) in self.rollout.stages.iter().enumerate() {
            let f = |n: &str| format!("rollout.stages[{i}].{n}");
            check_list(&f("tags"), &st.tags, MAX_LIST)?;
            for t in &st.tags {
                check_name(&f("tags"), t)?;
            }
            if st.percent > 100 {
                return Err(field_err(
                    f("percent"),
                    format!("{} is above 100", st.percent),
                ));
            }
            if let Some(p) = prev {
                if st.after_secs < p.after_secs || st.percent < p.percent {
                    return Err(field_err(
                        format!("rollout.stages[{i}]"),
                        "stages must not go back in time or shrink in percentage",
                    ));
                }
            }
            prev = Some(st);
        }
        if self.channels.is_empty() {
            return Err(field_err(
                "channels",
                "a release needs at least one channel",
            ));
        }
        check_list("channels", &self.channels, MAX_LIST)?;
        for (i, c) in self.channels.iter().enumerate() {
            check_name(&format!("channels[{i}]"), c)?;
        }
        Ok(())
    }
}

pub(super) fn check_list<T>(field: &str, v: &[T], max: usize) -> Result<(), ManifestError> {
    if v.len() > max {
        return Err(field_err(
            field,
            format!("{} entries, more than the allowed {max}", v.len()),
        ));
    }
    Ok(())
}

/// Names (product, hardware, component, slot class, channel, tag): `[A-Za-z0-9._+-]`,
/// not starting with `.` or `-`, so none can be `..`, a path, an option or hidden file.
pub fn check_name(field: &str, s: &str) -> Result<(), ManifestError> {
    if s.is_empty() || s.len() > MAX_NAME_LEN {
        return Err(field_err(
            field,
            format!("must be 1 to {MAX_NAME_LEN} bytes, is {}", s.len()),
        ));
    }
    if s.starts_with('.') || s.starts_with('-') {
        return Err(field_err(field, format!("{s:?} starts with '.' or '-'")));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+')))
    {
        return Err(field_err(
            field,
            format!(
                "{:?} contains {c:?}; allowed are A-Z a-z 0-9 . _ - +",
                s.escape_debug().to_string()
            ),
        ));
    }
    Ok(())
}

fn check_version(field: &str, v: &semver::Version) -> Result<(), ManifestError> {
    let s = v.to_string();
    if s.len() > MAX_NAME_LEN {
        return Err(field_err(
            field,
            format!("longer than {MAX_NAME_LEN} bytes"),
        ));
    }
    // The version becomes a path component (releases/<product>/<version>/).
    check_name(field, &s)
}

fn check_text(field: &str, s: &str, max: usize) -> Result<(), ManifestError> {
    if s.len() > max {
        return Err(field_err(
            field,
            format!("{} bytes, more than the allowed {max}", s.len()),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(field_err(field, "contains a control character"));
    }
    Ok(())
}

fn check_url(field: &str, s: &str) -> Result<(), ManifestError> {
    check_text(field, s, MAX_URL_LEN)?;
    if !(s.starts_with("https://") || s.starts_with("http://")) || s.contains(char::is_whitespace) {
        return Err(field_err(field, "must be an http(s) URL without spaces"));
    }
    Ok(())
}

/// `CVE-YYYY-NNNN…` as MITRE assigns them (four-digit year, at least four digits).
pub(super) fn check_cve(field: &str, s: &str) -> Result<(), ManifestError> {
    let ok = s.len() <= 32
        && s.strip_prefix("CVE-").is_some_and(|rest| {
            let mut parts = rest.splitn(2, '-');
            let year = parts.next().unwrap_or("");
            let num = parts.next().unwrap_or("");
            year.len() == 4
                && year.bytes().all(|b| b.is_ascii_digit())
                && num.len() >= 4
                && num.bytes().all(|b| b.is_ascii_digit())
        });
    if !ok {
        return Err(field_err(
            field,
            format!(
                "{:?} is not a CVE id (CVE-YYYY-NNNN)",
                s.escape_debug().to_string()
            ),
        ));
    }
    Ok(())
}

pub(super) fn check_sha256(field: &str, s: &str) -> Result<(), ManifestError> {
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(field_err(field, "must be 64 lowercase hex digits"));
    }
    Ok(())
}

/// A TUF target path: relative, `/`-separated, no `.`/`..`/empty components, no control
/// characters or backslashes; each component from the name alphabet.
pub fn check_target_path(field: &str, s: &str) -> Result<(), ManifestError> {
    if s.is_empty() || s.len() > MAX_TARGET_LEN {
        return Err(field_err(
            field,
            format!("must be 1 to {MAX_TARGET_LEN} bytes"),
        ));
    }
    if s.starts_with('/') {
        return Err(field_err(field, format!("{s:?} is an absolute path")));
    }
    if s.split('/').any(|c| c == "..") {
        return Err(field_err(field, format!("{s:?} contains a '..' component")));
    }
    if s.chars().any(char::is_control) {
        return Err(field_err(field, "contains a control character"));
    }
    for comp in s.split('/') {
        check_name(field, comp)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("example.json");

    #[test]
    fn example_parses_and_round_trips() {
        let m = Manifest::from_slice(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(m.product, "acme-gateway");
        assert_eq!(m.images.len(), 1);
        let again = Manifest::from_slice(&m.to_vec().unwrap()).unwrap();
        assert_eq!(m, again);
        assert_eq!(m.target_path(), "releases/acme-gateway/2.4.1/manifest.json");
        let path = m.target_path();
        let (p, v) = super::super::parse_release_target_path(&path).unwrap();
        assert_eq!((p, v), ("acme-gateway", m.version.clone()));
    }

    #[test]
    fn names_reject_traversal_and_controls() {
        for bad in ["..", ".hidden", "-opt", "a/b", "a\nb", "a b", "", "é"] {
            assert!(check_name("x", bad).is_err(), "{bad:?}");
        }
        for bad in ["/abs", "a/../b", "a//b", "a/\u{7}", "..", "a\\b"] {
            assert!(check_target_path("x", bad).is_err(), "{bad:?}");
        }
        assert!(check_target_path("x", "releases/p/1.0.0/rootfs.img.zst").is_ok());
    }

    #[test]
    fn cve_ids() {
        assert!(check_cve("c", "CVE-2024-3094").is_ok());
        assert!(check_cve("c", "CVE-2024-123456").is_ok());
        for bad in [
            "CVE-24-3094",
            "cve-2024-3094",
            "CVE-2024-12",
            "CVE-2024-12a4",
            "GHSA-x",
        ] {
            assert!(check_cve("c", bad).is_err(), "{bad}");
        }
    }
}
