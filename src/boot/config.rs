//! The `[boot]` section of `/etc/patchd/patchd.toml`.
//!
//! ```toml
//! [boot]
//! backend = "grub"                     # grub | uboot | systemd-boot | file
//! slots = ["a", "b"]
//! [boot.grub]
//! env = "/boot/grub/grubenv"
//! [boot.detect]
//! cmdline_keys = ["patchd.slot", "rauc.slot"]
//! root_devices = { a = "/dev/vda2", b = "/dev/vda3" }
//! ```
//! Every path is a device path, resolved under [`crate::paths::Paths`] when used.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::names::SlotName;
use crate::setting::InvalidSetting;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    Grub,
    Uboot,
    SystemdBoot,
    File,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Grub => "grub",
            BackendKind::Uboot => "uboot",
            BackendKind::SystemdBoot => "systemd-boot",
            BackendKind::File => "file",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    pub backend: BackendKind,
    /// Slot names, in the order they are listed in status output. Default `["a", "b"]`.
    #[serde(default = "default_slots")]
    pub slots: Vec<SlotName>,
    /// Boots a new slot gets before the bootloader falls back (1..=9, default 1). More
    /// than one lets a power cut during the first boot of a new release retry that boot
    /// instead of counting as a failed one; a release that really does not boot then
    /// costs that many boots before the fallback.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    #[serde(default)]
    pub grub: GrubConfig,
    #[serde(default)]
    pub uboot: UbootConfig,
    #[serde(default, rename = "systemd-boot")]
    pub systemd_boot: SystemdBootConfig,
    #[serde(default)]
    pub file: FileConfig,
    #[serde(default)]
    pub detect: DetectConfig,
}

impl BootConfig {
    /// A config for the given backend with every other setting at its default.
    pub fn with_backend(backend: BackendKind) -> Self {
        Self {
            backend,
            slots: default_slots(),
            attempts: default_attempts(),
            grub: GrubConfig::default(),
            uboot: UbootConfig::default(),
            systemd_boot: SystemdBootConfig::default(),
            file: FileConfig::default(),
            detect: DetectConfig::default(),
        }
    }

    /// The merged `[boot]` table, validated; `None` when the section is absent.
    pub fn from_table(t: &toml::Table) -> Result<Option<Self>, InvalidSetting> {
        if t.is_empty() {
            return Ok(None);
        }
        let c = Self::deserialize(toml::Value::Table(t.clone()))
            .map_err(|e| InvalidSetting::new("boot", e.message().trim()))?;
        if !(1..=super::ab::MAX_ATTEMPTS).contains(&c.attempts) {
            return Err(InvalidSetting::new(
                "boot.attempts",
                format!(
                    "must be 1..={}, not {} (the GRUB snippet counts down at most that far)",
                    super::ab::MAX_ATTEMPTS,
                    c.attempts
                ),
            ));
        }
        Ok(Some(c))
    }
}

fn default_attempts() -> u32 {
    1
}

fn default_slots() -> Vec<SlotName> {
    ["a", "b"]
        .into_iter()
        .filter_map(|s| SlotName::new(s).ok())
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrubConfig {
    /// The environment block GRUB's `load_env`/`save_env` use.
    #[serde(default = "default_grubenv")]
    pub env: PathBuf,
}

impl Default for GrubConfig {
    fn default() -> Self {
        Self {
            env: default_grubenv(),
        }
    }
}

fn default_grubenv() -> PathBuf {
    PathBuf::from("/boot/grub/grubenv")
}

/// Where the U-Boot environment lives: either a `fw_env.config` file (as `fw_printenv`
/// uses) or the copies listed inline. One copy = single environment; two = redundant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UbootConfig {
    /// A `fw_env.config`-style file: one line per copy, `device offset size [sector-size]`.
    #[serde(default)]
    pub fw_env_config: Option<PathBuf>,
    /// Copies given inline; used when `fw_env_config` is not set.
    #[serde(default)]
    pub copies: Vec<UbootCopy>,
}

impl Default for UbootConfig {
    fn default() -> Self {
        Self {
            fw_env_config: Some(PathBuf::from("/etc/fw_env.config")),
            copies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UbootCopy {
    /// A file or a raw device/partition.
    pub device: PathBuf,
    /// Byte offset of the environment inside `device`.
    #[serde(default)]
    pub offset: u64,
    /// Environment size in bytes, CRC and flag byte included.
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemdBootConfig {
    /// Mount point of the ESP (or XBOOTLDR) holding `loader/entries/`.
    #[serde(default = "default_esp")]
    pub esp: PathBuf,
    /// Entry name (file name without counter and `.conf`/`.efi`) of each slot.
    /// Default: `patchd-<slot>`.
    #[serde(default)]
    pub entries: BTreeMap<SlotName, String>,
    /// efivarfs mount; the EFI variables are used only when it exists.
    #[serde(default = "default_efivars")]
    pub efivars: PathBuf,
}

impl Default for SystemdBootConfig {
    fn default() -> Self {
        Self {
            esp: default_esp(),
            entries: BTreeMap::new(),
            efivars: default_efivars(),
        }
    }
}

fn default_esp() -> PathBuf {
    PathBuf::from("/boot/efi")
}
fn default_efivars() -> PathBuf {
    PathBuf::from("/sys/firmware/efi/efivars")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default = "default_file")]
    pub path: PathBuf,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            path: default_file(),
        }
    }
}

fn default_file() -> PathBuf {
    PathBuf::from("/var/lib/patchd/boot.json")
}

/// How the booted slot is recognised. Every available source must agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// Kernel command line keys naming the booted slot, e.g. `patchd.slot=b`.
    #[serde(default = "default_cmdline_keys")]
    pub cmdline_keys: Vec<String>,
    /// Root device of each slot, matched against `/` in `/proc/self/mountinfo`.
    #[serde(default)]
    pub root_devices: BTreeMap<SlotName, PathBuf>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            cmdline_keys: default_cmdline_keys(),
            root_devices: BTreeMap::new(),
        }
    }
}

fn default_cmdline_keys() -> Vec<String> {
    vec!["patchd.slot".to_string(), "rauc.slot".to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_fields() {
        let c: BootConfig = toml::from_str(
            r#"
backend = "uboot"
[uboot]
copies = [{ device = "/dev/mmcblk0", offset = 0x3fe000, size = 0x2000 }]
[detect]
root_devices = { a = "/dev/vda2", b = "/dev/vda3" }
"#,
        )
        .unwrap();
        assert_eq!(c.backend, BackendKind::Uboot);
        assert_eq!(c.uboot.copies[0].offset, 0x3fe000);
        assert_eq!(c.slots.len(), 2);
        assert_eq!(c.detect.cmdline_keys[0], "patchd.slot");
        assert!(toml::from_str::<BootConfig>("backend = \"grub\"\nfoo = 1").is_err());
        assert!(toml::from_str::<BootConfig>("backend = \"lilo\"").is_err());
        let c: BootConfig =
            toml::from_str("backend = \"systemd-boot\"\n[systemd-boot]\nesp = \"/efi\"").unwrap();
        assert_eq!(c.systemd_boot.esp, PathBuf::from("/efi"));
    }
}
