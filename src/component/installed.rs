//! Every component installed on this device, read back from the system (for the
//! inventory): the app bundles under `/var/lib/patchd/apps/` by their `current` link and
//! copy records, the handler components by patchd's records, firmware components by
//! what fwupd last confirmed (patchd's record; `Firmware::installed` asks fwupd itself),
//! the system extensions by their entries in `/var/lib/extensions` and copy records.

use std::path::Path;

use super::firmware::{confirmed_in, FIRMWARE_DIR};
use super::handler::{installed_in, HANDLER_DIR};
use super::{AppBundles, ComponentError, Installed, Installer, Restarter};
use super::{SysextSettings, Sysexts};
use crate::manifest::ComponentMethod;
use crate::paths::Paths;

/// One installed component.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstalledComponent {
    pub name: String,
    pub method: ComponentMethod,
    #[serde(flatten)]
    pub installed: Installed,
}

/// Subdirectory names of `dir` (none when it does not exist), sorted.
fn names(dir: &Path, problems: &mut Vec<String>) -> Vec<String> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            problems.push(format!("{}: {e}", dir.display()));
            return Vec::new();
        }
    };
    let mut v: Vec<String> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| crate::manifest::check_name("component", n).is_ok())
        .collect();
    v.sort();
    v
}

/// Every installed component, and what could not be read. `apps_dir`: the configured
/// `[components] apps_dir`, already under the root.
pub fn list_installed(paths: &Paths, apps_dir: &Path) -> (Vec<InstalledComponent>, Vec<String>) {
    let mut problems = Vec::new();
    let mut out = Vec::new();
    let mut push = |name: &str, method, r: Result<Option<Installed>, ComponentError>| match r {
        Ok(Some(installed)) => out.push(InstalledComponent {
            name: name.to_string(),
            method,
            installed,
        }),
        Ok(None) => {}
        Err(e) => problems.push(e.to_string()),
    };
    let apps = AppBundles::at(apps_dir.to_path_buf(), Restarter::default());
    let handler_dir = paths.resolve(HANDLER_DIR);
    let mut found = Vec::new();
    for n in names(apps_dir, &mut found) {
        push(&n, ComponentMethod::AppBundle, apps.installed(&n));
    }
    for n in names(&handler_dir, &mut found) {
        push(
            &n,
            ComponentMethod::Handler,
            installed_in(&handler_dir.join(&n), &n),
        );
    }
    let firmware_dir = paths.resolve(FIRMWARE_DIR);
    for n in names(&firmware_dir, &mut found) {
        push(
            &n,
            ComponentMethod::Firmware,
            confirmed_in(&firmware_dir.join(&n), &n),
        );
    }
    let sysexts = Sysexts::new(paths, SysextSettings::default());
    for n in names(&super::sysext::store_dir(paths), &mut found) {
        push(&n, ComponentMethod::Sysext, sysexts.installed(&n));
    }
    problems.extend(found);
    (out, problems)
}
