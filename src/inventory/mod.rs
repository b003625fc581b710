//! Inventory: what runs where, as one JSON document (`patchctl inventory --json`).
//!
//! Facts about the machine are read under the injected [`Paths`] root (so tests and the
//! demo use a fake tree); what the engine owns (slots, holds, patches, floor) is passed in
//! as values:
//!
//! ```no_run
//! # fn f(paths: &patchd::paths::Paths, cfg: &patchd::config::Config) {
//! use patchd::inventory::{collect, EngineFacts};
//! let inv = collect(paths, &cfg.device, EngineFacts::default(), jiff::Timestamp::now());
//! println!("{}", inv.to_json_pretty());
//! # }
//! ```
//!
//! Sources: machine id (`device.machine_id_path`, default `/etc/machine-id`), hostname
//! (`/proc/sys/kernel/hostname`, else `/etc/hostname`), `/etc/os-release` (else
//! `/usr/lib/os-release`), kernel (`/proc/sys/kernel/osrelease` and `version`),
//! architecture (`/proc/sys/kernel/arch`, else the one patchd was built for), DMI
//! (`/sys/class/dmi/id/{sys_vendor,product_name,product_version,board_vendor,board_name,
//! bios_version}`; serial numbers are not collected), installed release components
//! (`/var/lib/patchd/apps/`, `/var/lib/patchd/components/`: `component::list_installed`). Missing optional facts are `null`;
//! facts that exist but cannot be read or are malformed are listed in `problems`.

mod osrelease;

pub use osrelease::parse_os_release;

pub mod hardware_id;
pub use hardware_id::{HardwareId, HardwareSource};

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::DeviceConfig;
use crate::names::SlotName;
use crate::paths::Paths;
use crate::policy::{Decision, Hold, Kind, Severity};
use crate::slot::SlotStatus;

/// Schema version of the document; bumped on incompatible changes.
pub const INVENTORY_SCHEMA: u32 = 1;

/// One release the device knows about, categorized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchInfo {
    pub release: String,
    pub version: String,
    pub kind: Kind,
    pub severity: Severity,
    #[serde(default)]
    pub cves: Vec<String>,
    pub size: Option<u64>,
    /// `available` (not yet staged), `pending` (staged, waiting to switch), `failed`
    /// (failed here; never retried automatically), `withdrawn`, … as the engine names it.
    pub state: String,
    /// Why it is or is not going to be installed now.
    pub decision: Option<Decision>,
    /// A package patch set's packages (with the staged versions once staged); empty
    /// for an image release.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<crate::manifest::PackageChange>,
}

/// One package installed on the running system (package-based devices).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledPackage {
    pub name: String,
    pub arch: String,
    pub version: String,
}

/// A slot as the inventory shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotEntry {
    pub booted: bool,
    #[serde(flatten)]
    pub status: SlotStatus,
}

/// The audit chain's head, so a fleet collector can pin it: a later inventory whose
/// chain does not contain this hash at this `seq` means the log was rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// `seq` of the last record (`None`: the log is empty).
    pub seq: Option<u64>,
    /// sha256 of the last record's line (the zero hash for an empty log).
    pub hash: String,
    /// Records the head file did not vouch for when the daemon started (recorded as
    /// `audit_head_lag`); 0 normally.
    pub lag_at_start: u64,
}

/// What the engine owns, passed in as values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineFacts {
    /// Bootloader backend kind (`grub`, `uboot`, `systemd-boot`, `file`).
    pub bootloader: Option<String>,
    /// Slot backend kind (`block`, `file`, `btrfs`).
    pub slot_backend: Option<String>,
    pub slots: Vec<SlotStatus>,
    pub booted: Option<SlotName>,
    /// Committed `security_version` (anti-rollback floor).
    pub security_floor: Option<u64>,
    pub holds: Vec<Hold>,
    pub patches: Vec<PatchInfo>,
    pub audit_head: Option<AuditHead>,
    /// The installed packages, when the source of releases is the system's apt.
    pub installed_packages: Option<Vec<InstalledPackage>>,
    /// Where app bundles live (`[components] apps_dir`, under the root); `None`: the
    /// default `/var/lib/patchd/apps`.
    pub apps_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kernel {
    pub release: Option<String>,
    pub version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hardware {
    pub vendor: Option<String>,
    pub product: Option<String>,
    pub product_version: Option<String>,
    pub board_vendor: Option<String>,
    pub board_name: Option<String>,
    pub bios_version: Option<String>,
    /// The hardware-compatibility id releases are matched against, and where it came
    /// from (`[device] hardware`, the device tree, DMI); `None`: the device has none and
    /// takes only releases published without `--hardware`.
    pub compatibility: Option<HardwareId>,
}

/// The inventory document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub schema: u32,
    pub generated: Timestamp,
    pub machine_id: Option<String>,
    pub hostname: Option<String>,
    /// `/etc/os-release` as key/value pairs (`ID`, `VERSION_ID`, `PRETTY_NAME`, …).
    pub os_release: BTreeMap<String, String>,
    pub kernel: Kernel,
    pub architecture: String,
    pub hardware: Hardware,
    pub product: Option<String>,
    pub channel: String,
    pub tags: Vec<String>,
    pub bootloader: Option<String>,
    pub slot_backend: Option<String>,
    pub slots: Vec<SlotEntry>,
    pub security_floor: Option<u64>,
    pub holds: Vec<Hold>,
    /// Releases not installed yet (available or staged).
    pub patches: Vec<PatchInfo>,
    /// Head of the audit hash chain.
    #[serde(default)]
    pub audit_head: Option<AuditHead>,
    /// Every release component installed here (app bundles, handler components), read
    /// back from the system, with its version and origin (the release that installed it).
    #[serde(default)]
    pub components: Vec<crate::component::InstalledComponent>,
    /// Package-based devices (`[source] kind = "apt"`): every installed package with
    /// its version; the pending patch set is in `patches` (with its `packages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_packages: Option<Vec<InstalledPackage>>,
    /// Facts that exist but could not be read or were malformed.
    pub problems: Vec<String>,
}

impl Inventory {
    pub fn to_json_pretty(&self) -> String {
        // Serializing plain data with string keys cannot fail; fall back to an error
        // object rather than panicking.
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"error\": \"inventory serialization: {e}\"}}"))
    }
}

/// Read a small text fact; `Ok(None)` when absent, trimmed, empty counts as absent.
fn read_fact(path: &Path, problems: &mut Vec<String>) -> Option<String> {
    match fs::read(path) {
        Ok(b) => {
            // Facts are tiny; a huge file here is not what we think it is.
            if b.len() > 64 * 1024 {
                problems.push(format!(
                    "{}: unexpectedly large ({} bytes)",
                    path.display(),
                    b.len()
                ));
                return None;
            }
            let s = String::from_utf8_lossy(&b).trim().to_string();
            (!s.is_empty()).then_some(s)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            problems.push(format!("{}: {e}", path.display()));
            None
        }
    }
}

fn first_fact(paths: &Paths, candidates: &[&str], problems: &mut Vec<String>) -> Option<String> {
    candidates
        .iter()
        .find_map(|c| read_fact(&paths.resolve(c), problems))
}

/// Gather the inventory.
pub fn collect(
    paths: &Paths,
    device: &DeviceConfig,
    engine: EngineFacts,
    now: Timestamp,
) -> Inventory {
    let mut problems = Vec::new();
    let mid_path = paths.resolve(&device.machine_id_path);
    let machine_id = read_fact(&mid_path, &mut problems).and_then(|m| {
        let ok = m.len() == 32 && m.bytes().all(|b| b.is_ascii_hexdigit());
        if ok {
            Some(m.to_ascii_lowercase())
        } else {
            problems.push(format!(
                "{}: not a machine id (32 hex digits)",
                mid_path.display()
            ));
            None
        }
    });
    let hostname = first_fact(
        paths,
        &["/proc/sys/kernel/hostname", "/etc/hostname"],
        &mut problems,
    );
    let os_release = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| {
            let path = paths.resolve(p);
            read_fact(&path, &mut problems).map(|t| {
                let (map, bad) = parse_os_release(&t);
                for line in bad {
                    problems.push(format!("{}: line {line} is not KEY=VALUE", path.display()));
                }
                map
            })
        })
        .unwrap_or_default();
    let kernel = Kernel {
        release: first_fact(paths, &["/proc/sys/kernel/osrelease"], &mut problems),
        version: first_fact(paths, &["/proc/sys/kernel/version"], &mut problems),
    };
    let architecture = first_fact(paths, &["/proc/sys/kernel/arch"], &mut problems)
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let dmi = |f: &str, problems: &mut Vec<String>| {
        first_fact(paths, &[&format!("/sys/class/dmi/id/{f}")], problems)
    };
    let hardware = Hardware {
        vendor: dmi("sys_vendor", &mut problems),
        product: dmi("product_name", &mut problems),
        product_version: dmi("product_version", &mut problems),
        board_vendor: dmi("board_vendor", &mut problems),
        board_name: dmi("board_name", &mut problems),
        bios_version: dmi("bios_version", &mut problems),
        compatibility: hardware_id::resolve(device.hardware.as_deref(), paths),
    };
    let (components, component_problems) = crate::component::list_installed(
        paths,
        &engine
            .apps_dir
            .clone()
            .unwrap_or_else(|| paths.resolve("/var/lib/patchd/apps")),
    );
    problems.extend(component_problems);
    let slots = engine
        .slots
        .into_iter()
        .map(|s| SlotEntry {
            booted: engine.booted.as_ref() == Some(&s.slot),
            status: s,
        })
        .collect();
    Inventory {
        schema: INVENTORY_SCHEMA,
        generated: now,
        machine_id,
        hostname,
        os_release,
        kernel,
        architecture,
        hardware,
        product: device.product.clone(),
        channel: device.channel.clone(),
        tags: device.tags.clone(),
        bootloader: engine.bootloader,
        slot_backend: engine.slot_backend,
        slots,
        security_floor: engine.security_floor,
        holds: engine.holds,
        patches: engine.patches,
        audit_head: engine.audit_head,
        components,
        installed_packages: engine.installed_packages,
        problems,
    }
}
