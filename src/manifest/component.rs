//! Components of a release beside its slot images (schema version 2): application
//! bundles, handler-installed payloads and system extensions, each with its own version, install method,
//! order and rollback (docs/manifest.md, docs/components.md).

use serde::{Deserialize, Serialize};

use super::types::{Kind, Severity};

/// One component of a release. Its payload is the TUF target `target`, verified like an
/// image; `sha256` (of the payload as stored) is what "unchanged" is judged by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Name, unique in the release; for `app-bundle` also the directory under
    /// `/var/lib/patchd/apps/`.
    pub name: String,
    /// The component's own version (free-form, name alphabet).
    pub version: String,
    pub method: Method,
    /// TUF target path of the payload.
    pub target: String,
    /// Length in bytes of the payload.
    pub size: u64,
    /// Lowercase hex sha256 of the payload.
    pub sha256: String,
    /// The component takes effect only after a reboot (installed before the one switch).
    #[serde(default)]
    pub needs_reboot: bool,
    /// Install position: lower first; equal orders keep their place in the list.
    #[serde(default)]
    pub order: u32,
    pub rollback: Rollback,
    /// systemd units restarted after an `app-bundle` switch (and after switching back).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cves: Vec<String>,
}

/// How a component is installed. A new method is one variant here (with its arms in
/// the methods below) and its `Installer` in a file under `src/component/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// A tar tree in `/var/lib/patchd/apps/NAME/{a,b}`, switched by a symlink.
    AppBundle,
    /// The device's configured handler executable, given the payload on stdin.
    Handler,
    /// A firmware cabinet archive handed to the system's fwupd; no rollback.
    Firmware,
    /// A systemd-sysext image (raw filesystem image or directory tree as tar) in
    /// `/var/lib/extensions`, A/B copies kept by patchd, merged by `systemd-sysext`.
    Sysext,
}

/// What rolling a component back means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rollback {
    /// Switch back to the other copy (A/B), which stays intact.
    Ab,
    /// Install the previous payload again (kept by patchd after each install).
    ReinstallPrevious,
    /// Cannot be rolled back: a failure after it leaves it at the new version.
    None,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::AppBundle => "app-bundle",
            Method::Handler => "handler",
            Method::Firmware => "firmware",
            Method::Sysext => "sysext",
        }
    }

    /// How status and `list` name a component of this method (`app: web 1.2 → 1.3`).
    pub fn label(self) -> &'static str {
        match self {
            Method::AppBundle => "app",
            Method::Handler => "handler",
            Method::Firmware => "firmware",
            Method::Sysext => "sysext",
        }
    }

    /// The rollbacks this method can carry out.
    pub fn rollbacks(self) -> &'static [Rollback] {
        match self {
            Method::AppBundle => &[Rollback::Ab, Rollback::None],
            Method::Handler => &[Rollback::ReinstallPrevious, Rollback::None],
            Method::Firmware => &[Rollback::None],
            Method::Sysext => &[Rollback::Ab, Rollback::None],
        }
    }
}

impl Rollback {
    pub fn as_str(self) -> &'static str {
        match self {
            Rollback::Ab => "ab",
            Rollback::ReinstallPrevious => "reinstall_previous",
            Rollback::None => "none",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "app-bundle" => Ok(Method::AppBundle),
            "handler" => Ok(Method::Handler),
            "firmware" => Ok(Method::Firmware),
            "sysext" => Ok(Method::Sysext),
            _ => Err(format!(
                "unknown install method {s:?} (app-bundle, handler, firmware, sysext)"
            )),
        }
    }
}

impl std::str::FromStr for Rollback {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ab" => Ok(Rollback::Ab),
            "reinstall_previous" => Ok(Rollback::ReinstallPrevious),
            "none" => Ok(Rollback::None),
            _ => Err(format!(
                "unknown rollback {s:?} (ab, reinstall_previous, none)"
            )),
        }
    }
}

/// Components in install order: firmware first (it has no rollback, so it goes before
/// anything that could still fail and be rolled back; `apply` stages every component
/// before the first switch), then by `order`, equal orders in list order.
pub fn install_order(components: &[Component]) -> Vec<&Component> {
    let mut v: Vec<&Component> = components.iter().collect();
    v.sort_by_key(|c| (c.method != Method::Firmware, c.order));
    v
}
