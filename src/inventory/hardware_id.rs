//! The device's hardware-compatibility id: the string a release's `hardware` list is
//! matched against (`patchpub add --hardware`).
//!
//! Order, first found wins: `[device] hardware` in the configuration; the first (most
//! specific) entry of the device tree's `compatible`; the DMI product name; the DMI
//! board name. Read values are turned into the manifest's name alphabet
//! (`[A-Za-z0-9._+-]`, at most 64 bytes): every run of other characters becomes one `-`
//! (`acme,box-2` → `acme-box-2`), so a publisher can copy the id from
//! `patchctl inventory` into `--hardware` as it is. Firmware placeholders such as
//! "To be filled by O.E.M." are not ids and are skipped.

use std::fmt;
use std::fs;

use serde::{Deserialize, Serialize};

use crate::paths::Paths;

/// Longest id; the manifest allows no longer names.
pub const MAX_LEN: usize = 64;

/// Where the id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HardwareSource {
    /// `[device] hardware`
    Config,
    /// `/proc/device-tree/compatible` (or `/sys/firmware/devicetree/base/compatible`)
    DeviceTree,
    /// `/sys/class/dmi/id/product_name`
    DmiProduct,
    /// `/sys/class/dmi/id/board_name`
    DmiBoard,
}

impl fmt::Display for HardwareSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Config => "[device] hardware",
            Self::DeviceTree => "device tree compatible",
            Self::DmiProduct => "DMI product name",
            Self::DmiBoard => "DMI board name",
        })
    }
}

/// The resolved id and its origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardwareId {
    pub id: String,
    pub source: HardwareSource,
}

const DT_COMPATIBLE: [&str; 2] = [
    "/proc/device-tree/compatible",
    "/sys/firmware/devicetree/base/compatible",
];
const DMI_PRODUCT: &str = "/sys/class/dmi/id/product_name";
const DMI_BOARD: &str = "/sys/class/dmi/id/board_name";

/// Resolve the id; `None` when nothing is configured and the machine names itself
/// nowhere (then only releases without a hardware list fit it).
pub fn resolve(configured: Option<&str>, paths: &Paths) -> Option<HardwareId> {
    if let Some(c) = configured {
        return Some(HardwareId {
            id: c.to_string(),
            source: HardwareSource::Config,
        });
    }
    let dt = DT_COMPATIBLE.iter().find_map(|p| {
        let raw = read_small(paths, p)?;
        // A NUL-separated list, most specific first.
        raw.split(|b| *b == 0)
            .find(|s| !s.is_empty())
            .and_then(|s| sanitize(&String::from_utf8_lossy(s)))
    });
    if let Some(id) = dt {
        return Some(HardwareId {
            id,
            source: HardwareSource::DeviceTree,
        });
    }
    for (path, source) in [
        (DMI_PRODUCT, HardwareSource::DmiProduct),
        (DMI_BOARD, HardwareSource::DmiBoard),
    ] {
        let Some(raw) = read_small(paths, path) else {
            continue;
        };
        let text = String::from_utf8_lossy(&raw);
        if is_placeholder(text.trim()) {
            continue;
        }
        if let Some(id) = sanitize(&text) {
            return Some(HardwareId { id, source });
        }
    }
    None
}

/// Facts are tiny; anything unreadable or huge is no id (the inventory reports the
/// problem when it reads the same files).
fn read_small(paths: &Paths, path: &str) -> Option<Vec<u8>> {
    let b = fs::read(paths.resolve(path)).ok()?;
    (b.len() <= 4096).then_some(b)
}

/// Map `raw` into the manifest's name alphabet; `None` if nothing usable is left.
pub fn sanitize(raw: &str) -> Option<String> {
    let mut out = String::new();
    let mut gap = false;
    for c in raw.trim().chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+') {
            if gap && !out.is_empty() {
                out.push('-');
            }
            gap = false;
            out.push(c);
        } else {
            gap = true;
        }
    }
    // A name may not start with '.' or '-' (it could read as a hidden file or option).
    let out = out.trim_start_matches(['.', '-']);
    let mut out: String = out.chars().take(MAX_LEN).collect();
    while out.ends_with('-') {
        out.pop();
    }
    (!out.is_empty()).then_some(out)
}

/// Strings firmware vendors leave in DMI fields they did not fill in.
fn is_placeholder(s: &str) -> bool {
    const KNOWN: [&str; 8] = [
        "to be filled by o.e.m.",
        "default string",
        "system product name",
        "system name",
        "not applicable",
        "not specified",
        "none",
        "o.e.m.",
    ];
    let l = s.to_ascii_lowercase();
    l.is_empty() || KNOWN.contains(&l.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, Paths) {
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        (d, p)
    }

    fn put(paths: &Paths, path: &str, bytes: &[u8]) {
        let p = paths.resolve(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }

    #[test]
    fn configured_id_wins_over_everything_read() {
        let (_d, p) = root();
        put(&p, DT_COMPATIBLE[0], b"acme,box\0");
        put(&p, DMI_PRODUCT, b"Box 9000\n");
        let h = resolve(Some("rev7"), &p).unwrap();
        assert_eq!((h.id.as_str(), h.source), ("rev7", HardwareSource::Config));
    }

    #[test]
    fn device_tree_takes_the_most_specific_compatible() {
        let (_d, p) = root();
        put(&p, DT_COMPATIBLE[1], b"acme,box-rev2\0acme,box\0");
        put(&p, DMI_PRODUCT, b"Box 9000\n");
        let h = resolve(None, &p).unwrap();
        assert_eq!(h.id, "acme-box-rev2");
        assert_eq!(h.source, HardwareSource::DeviceTree);
    }

    #[test]
    fn dmi_product_then_board_and_placeholders_skipped() {
        let (_d, p) = root();
        put(&p, DMI_PRODUCT, b"To be filled by O.E.M.\n");
        put(&p, DMI_BOARD, b"X11SCL-F\n");
        let h = resolve(None, &p).unwrap();
        assert_eq!(
            (h.id.as_str(), h.source),
            ("X11SCL-F", HardwareSource::DmiBoard)
        );
        put(&p, DMI_PRODUCT, b"Standard PC (i440FX + PIIX, 1996)\n");
        let h = resolve(None, &p).unwrap();
        assert_eq!(h.id, "Standard-PC-i440FX-+-PIIX-1996");
        assert_eq!(h.source, HardwareSource::DmiProduct);
    }

    #[test]
    fn nothing_to_read_means_no_id() {
        let (_d, p) = root();
        assert_eq!(resolve(None, &p), None);
        put(&p, DMI_PRODUCT, b"  \n");
        put(&p, DT_COMPATIBLE[0], b"\0\0");
        assert_eq!(resolve(None, &p), None);
    }

    #[test]
    fn sanitized_ids_pass_the_manifest_name_rule() {
        for raw in [
            "..--weird//name",
            "ünïcode board",
            &"x".repeat(200),
            "a,b c\t(d)",
            "-x-",
        ] {
            let s = sanitize(raw).unwrap();
            crate::manifest::check_name("hardware", &s).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
        }
        assert_eq!(sanitize("()"), None);
    }
}
