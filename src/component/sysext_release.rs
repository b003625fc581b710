//! Whether a system extension fits the OS it would be merged onto: its
//! `usr/lib/extension-release.d/extension-release.NAME` against the OS's os-release,
//! with the rules of systemd-sysext 252 (`extension_release_validate`), so patchd refuses
//! before activation exactly what systemd would refuse to merge — and says which field
//! did not match, where systemd only logs at debug level and skips the image.
//!
//! The rules, in systemd's order: an empty file fits nothing; `SYSEXT_SCOPE` (default
//! `system portable`) must contain `system`; `ARCHITECTURE`, when set and not `_any`,
//! must be this machine's (systemd's names: `x86-64`, `arm64`, …); `ID` must be set and
//! be `_any` (fits every OS: nothing more is compared) or the OS's `ID`; an OS without
//! `VERSION_ID` and `SYSEXT_LEVEL` (a rolling release) fits then; when both declare a
//! `SYSEXT_LEVEL` the levels must be equal; otherwise, when the OS has a `VERSION_ID`,
//! the extension's `VERSION_ID` must be set and equal.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Parsed `KEY=VALUE` lines of an os-release or extension-release file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseFields(HashMap<String, String>);

impl ReleaseFields {
    /// Parse os-release(5) syntax: `KEY=VALUE` lines, values optionally in single or
    /// double quotes (backslash escapes inside double quotes), `#` comments, blank lines.
    /// Lines that are not assignments are ignored, as systemd does.
    pub fn parse(text: &str) -> Self {
        let mut m = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let k = k.trim();
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            m.insert(k.to_string(), unquote(v.trim()));
        }
        Self(m)
    }

    /// The value of `key`; `None` when missing or empty (systemd's `isempty`).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn unquote(v: &str) -> String {
    let b = v.as_bytes();
    if b.len() >= 2 && b[0] == b'\'' && b[b.len() - 1] == b'\'' {
        return v[1..v.len() - 1].to_string();
    }
    if b.len() >= 2 && b[0] == b'"' && b[b.len() - 1] == b'"' {
        let mut out = String::new();
        let mut chars = v[1..v.len() - 1].chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else {
                out.push(c);
            }
        }
        return out;
    }
    v.to_string()
}

/// Why an extension does not fit: the field, what the extension says, what the OS says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: the extension says {extension:?}, this OS {host:?}")]
pub struct Mismatch {
    pub field: &'static str,
    pub extension: String,
    pub host: String,
}

fn mismatch(field: &'static str, extension: Option<&str>, host: &str) -> Mismatch {
    Mismatch {
        field,
        extension: extension.unwrap_or("(not set)").to_string(),
        host: host.to_string(),
    }
}

/// This machine's architecture as systemd names it (`ARCHITECTURE=` values).
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        "x86" => "x86",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64-le",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        "loongarch64" => "loongarch64",
        other => other,
    }
}

/// Check `ext` (an extension-release file) against `host` (the OS's os-release) with
/// systemd-sysext 252's rules (module doc); `arch` is the machine's architecture.
pub fn check(ext: &ReleaseFields, host: &ReleaseFields, arch: &str) -> Result<(), Mismatch> {
    if ext.is_empty() {
        return Err(mismatch("ID", None, host.get("ID").unwrap_or("(not set)")));
    }
    let scope = ext.get("SYSEXT_SCOPE").unwrap_or("system portable");
    if !scope.split_whitespace().any(|s| s == "system") {
        return Err(mismatch("SYSEXT_SCOPE", Some(scope), "system"));
    }
    if let Some(a) = ext.get("ARCHITECTURE") {
        if a != "_any" && a != arch {
            return Err(mismatch("ARCHITECTURE", Some(a), arch));
        }
    }
    // systemd-sysext refuses to merge anything onto an OS without an ID.
    let Some(host_id) = host.get("ID") else {
        return Err(mismatch("ID", ext.get("ID"), "(not set)"));
    };
    match ext.get("ID") {
        Some("_any") => return Ok(()),
        Some(id) if id == host_id => {}
        other => return Err(mismatch("ID", other, host_id)),
    }
    let (host_version, host_level) = (host.get("VERSION_ID"), host.get("SYSEXT_LEVEL"));
    match (host_level, ext.get("SYSEXT_LEVEL"), host_version) {
        (None, _, None) => Ok(()),
        (Some(h), Some(e), _) if h == e => Ok(()),
        (Some(h), Some(e), _) => Err(mismatch("SYSEXT_LEVEL", Some(e), h)),
        (_, _, Some(hv)) => match ext.get("VERSION_ID") {
            Some(ev) if ev == hv => Ok(()),
            ev => Err(mismatch("VERSION_ID", ev, hv)),
        },
        // The OS declares only a SYSEXT_LEVEL and the extension none: systemd merges it.
        (Some(_), None, None) => Ok(()),
    }
}

/// The OS's os-release below `root`: `/etc/os-release`, else `/usr/lib/os-release`
/// (os-release(5)); the path read and its fields.
pub fn read_os_release(root: &Path) -> std::io::Result<(PathBuf, ReleaseFields)> {
    let etc = root.join("etc/os-release");
    let usr = root.join("usr/lib/os-release");
    match std::fs::read_to_string(&etc) {
        Ok(t) => Ok((etc, ReleaseFields::parse(&t))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let t = std::fs::read_to_string(&usr)?;
            Ok((usr, ReleaseFields::parse(&t)))
        }
        Err(e) => Err(e),
    }
}

/// Where an extension named `name` keeps its extension-release file, relative to the
/// image's root.
pub fn release_path(name: &str) -> String {
    format!("usr/lib/extension-release.d/extension-release.{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> ReleaseFields {
        ReleaseFields::parse(s)
    }

    #[test]
    fn parses_os_release_syntax() {
        let r = f(
            "# c\nID=debian\nVERSION_ID=\"12\"\nNAME='Debian GNU'\nPRETTY=\"a \\\"b\\\"\"\njunk\n",
        );
        assert_eq!(r.get("ID"), Some("debian"));
        assert_eq!(r.get("VERSION_ID"), Some("12"));
        assert_eq!(r.get("NAME"), Some("Debian GNU"));
        assert_eq!(r.get("PRETTY"), Some("a \"b\""));
        assert_eq!(f("ID=").get("ID"), None);
    }

    #[test]
    fn systemd_252_rules() {
        let host = f("ID=debian\nVERSION_ID=12\n");
        let ok = |e: &str| check(&f(e), &host, "x86-64");
        let field = |e: &str| ok(e).unwrap_err().field;
        assert!(ok("ID=debian\nVERSION_ID=12").is_ok());
        assert!(ok("ID=_any").is_ok());
        assert_eq!(field("ID=fedora\nVERSION_ID=12"), "ID");
        assert_eq!(field("VERSION_ID=12"), "ID");
        assert_eq!(field("ID=debian\nVERSION_ID=11"), "VERSION_ID");
        assert_eq!(field("ID=debian"), "VERSION_ID");
        assert_eq!(field(""), "ID");
        assert_eq!(
            field("ID=debian\nVERSION_ID=12\nARCHITECTURE=arm64"),
            "ARCHITECTURE"
        );
        assert!(ok("ID=debian\nVERSION_ID=12\nARCHITECTURE=x86-64").is_ok());
        assert_eq!(
            field("ID=debian\nVERSION_ID=12\nSYSEXT_SCOPE=portable"),
            "SYSEXT_SCOPE"
        );
        // SYSEXT_LEVEL on both sides decides; VERSION_ID is then not compared.
        let lvl = f("ID=debian\nVERSION_ID=12\nSYSEXT_LEVEL=1.0\n");
        assert!(check(
            &f("ID=debian\nVERSION_ID=13\nSYSEXT_LEVEL=1.0"),
            &lvl,
            "x86-64"
        )
        .is_ok());
        let e = check(&f("ID=debian\nSYSEXT_LEVEL=2"), &lvl, "x86-64").unwrap_err();
        assert_eq!(
            (e.field, e.extension.as_str(), e.host.as_str()),
            ("SYSEXT_LEVEL", "2", "1.0")
        );
        // Only the OS has a level: the versions are compared.
        assert_eq!(
            check(&f("ID=debian\nVERSION_ID=11"), &lvl, "x86-64")
                .unwrap_err()
                .field,
            "VERSION_ID"
        );
        // A rolling release (no VERSION_ID, no SYSEXT_LEVEL): the ID is enough.
        assert!(check(&f("ID=arch"), &f("ID=arch"), "x86-64").is_ok());
    }
}
