//! Damaged files the daemon cannot start its engine with, and `patchctl repair`.
//!
//! A corrupt state file or trusted TUF metadata used to end start-up with an error, so
//! systemd restarted the daemon every 10 s forever and nobody could ask it what was
//! wrong. [`diagnose`] finds such damage before the engine starts; the daemon then runs
//! in degraded mode (reads answered, the problem named, writes refused) until an admin
//! runs [`repair`]: the damaged file is moved aside (kept, never deleted), what can be
//! rebuilt is rebuilt from the bootloader and the per-slot status records, and what could
//! not be kept is said — in the reply and in the audit record.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use serde::Serialize;

use crate::boot::Bootloader;
use crate::config::Config;
use crate::engine::state::ReleaseRef;
use crate::engine::statefile::{StateDoc, StateFile, StateFileError};
use crate::paths::Paths;
use crate::policy::Hold;
use crate::slot::{SlotState, StatusStore};
use crate::trust::client::Limits;
use crate::trust::TufClient;

/// A file the engine cannot start with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Damage {
    /// `/var/lib/patchd/state.json` does not parse (or is of a newer version).
    StateFile { path: PathBuf, why: String },
    /// The trusted TUF metadata patchd keeps (`/var/lib/patchd/tuf`) does not verify.
    TrustedMetadata { dir: PathBuf, why: String },
    /// The shipped trust anchor (`[repository] trusted_root`) does not verify and there
    /// is no trusted metadata yet: nothing on the device can stand in for it.
    ShippedRoot { path: PathBuf, why: String },
    /// The bootloader's environment does not parse (GRUB env block, U-Boot environment,
    /// file bootloader): only the bootloader tools can say what to keep.
    Bootloader { path: PathBuf, why: String },
}

impl Damage {
    /// The damaged file or directory.
    pub fn path(&self) -> &Path {
        match self {
            Damage::StateFile { path, .. }
            | Damage::ShippedRoot { path, .. }
            | Damage::Bootloader { path, .. } => path,
            Damage::TrustedMetadata { dir, .. } => dir,
        }
    }

    /// One line for status, the journal and the audit log.
    pub fn describe(&self) -> String {
        match self {
            Damage::StateFile { path, why } => {
                format!("state file {} is damaged: {why}", path.display())
            }
            Damage::TrustedMetadata { dir, why } => {
                format!(
                    "trusted TUF metadata in {} is damaged: {why}",
                    dir.display()
                )
            }
            Damage::ShippedRoot { path, why } => format!(
                "the trusted root {} ([repository] trusted_root) does not verify: {why}",
                path.display()
            ),
            Damage::Bootloader { path, why } => format!(
                "the bootloader environment {} is damaged: {why}",
                path.display()
            ),
        }
    }

    /// What `patchctl repair` would do, for the status line.
    pub fn remedy(&self) -> &'static str {
        match self {
            Damage::StateFile { .. } => {
                "`patchctl repair` moves it aside (kept) and rebuilds the state from the \
                 bootloader and the slot status records"
            }
            Damage::TrustedMetadata { .. } => {
                "`patchctl repair` moves it aside (kept) and trusts the shipped root again"
            }
            Damage::ShippedRoot { .. } => {
                "reinstall the trusted root (it comes with the OS image or package), then run \
                 `patchctl repair`; patchd cannot rebuild a trust anchor"
            }
            Damage::Bootloader { .. } => {
                "see `patchd boot status`, rewrite it with `patchd boot reset` (it keeps a backup \
                 and says what it keeps), then run `patchctl repair`"
            }
        }
    }
}

/// Look for damage that keeps the engine from starting. `None`: start normally (any
/// other problem then surfaces as a start-up error of its own).
pub fn diagnose(cfg: &Config, paths: &Paths, now: Timestamp) -> Option<Damage> {
    let state = StateFile::new(&paths.state_dir());
    match state.load(now) {
        Ok(_) | Err(StateFileError::Io { .. }) => {}
        Err(e) => {
            return Some(Damage::StateFile {
                path: state.path().to_path_buf(),
                why: error_detail(&e),
            })
        }
    }
    if let Some(d) = bootloader_damage(cfg, paths) {
        return Some(d);
    }
    cfg.repository.source.as_ref()?;
    let tuf = tuf_dir(paths);
    if tuf.join("root.json").exists() {
        if let Err(e) =
            TufClient::load(&tuf, Arc::new(crate::clock::SystemClock), Limits::default())
        {
            return Some(Damage::TrustedMetadata {
                dir: tuf,
                why: e.to_string(),
            });
        }
    } else {
        let root = paths.resolve(&cfg.repository.trusted_root);
        // A missing file is a configuration problem, reported as such at start-up; a
        // file that is there but does not verify is damage.
        if let Ok(bytes) = std::fs::read(&root) {
            if let Err(e) = crate::trust::client::verify_root_bytes(&bytes, &Limits::default()) {
                return Some(Damage::ShippedRoot {
                    path: root,
                    why: e.to_string(),
                });
            }
        }
    }
    None
}

/// A bootloader environment that exists but does not parse. Read errors (an ESP not
/// mounted yet) are left to the normal start, whose restart may well succeed.
fn bootloader_damage(cfg: &Config, paths: &Paths) -> Option<Damage> {
    let boot = cfg.boot_config.as_ref()?;
    let format = |e: crate::boot::BootError| match e {
        crate::boot::BootError::Format { path, why } => Some(Damage::Bootloader {
            path: PathBuf::from(path),
            why,
        }),
        _ => None,
    };
    let bl = match crate::boot::open(boot, paths) {
        Ok(bl) => bl,
        Err(e) => return format(e),
    };
    bl.slots().err().and_then(format)
}

fn tuf_dir(paths: &Paths) -> PathBuf {
    paths.state_dir().join("tuf")
}

/// The error's own message without the path it starts with (the path is said once).
fn error_detail(e: &StateFileError) -> String {
    match e {
        StateFileError::Corrupt { source, .. } => {
            format!("not valid JSON or unexpected fields: {source}")
        }
        other => other.to_string(),
    }
}

/// What a repair did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    pub damage: Damage,
    /// The damaged file or directory (`None`: it was fixed outside patchd and nothing
    /// had to be moved).
    pub moved: Option<PathBuf>,
    /// Where the damaged file or directory now is.
    pub moved_to: Option<PathBuf>,
    /// What the new state was rebuilt from, or what will stand in for the moved file.
    pub rebuilt: Vec<String>,
    /// What was in the damaged file and could not be recovered.
    pub lost: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("{0}")]
    NotRepairable(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateFileError),
}

/// The report when the damage was fixed outside patchd (`patchd boot reset`, a
/// reinstalled root): nothing to move, start normally.
pub fn already_fixed(damage: &Damage) -> RepairReport {
    RepairReport {
        damage: damage.clone(),
        moved: None,
        moved_to: None,
        rebuilt: vec![format!(
            "nothing: {} is readable again",
            damage.path().display()
        )],
        lost: Vec::new(),
    }
}

/// Repair `damage`: move it aside, rebuild what can be rebuilt. The caller audits the
/// report (the audit log stays the engine's, or the degraded daemon's, to write).
pub fn repair(
    damage: &Damage,
    paths: &Paths,
    bootloader: Option<&dyn Bootloader>,
    now: Timestamp,
) -> Result<RepairReport, RepairError> {
    match damage {
        Damage::ShippedRoot { .. } | Damage::Bootloader { .. } => Err(RepairError::NotRepairable(
            format!("{}; {}", damage.describe(), damage.remedy()),
        )),
        Damage::TrustedMetadata { dir, .. } => {
            let moved_to = move_aside(dir, now)?;
            Ok(RepairReport {
                damage: damage.clone(),
                moved: Some(dir.clone()),
                moved_to: Some(moved_to),
                rebuilt: vec![
                    "the shipped trusted root ([repository] trusted_root) is trusted again; \
                     root rotations since are verified again from the repository at the next \
                     check"
                        .into(),
                ],
                lost: vec![
                    "the versions of the timestamp, snapshot and targets metadata seen so far: \
                     until the next check, a mirror could offer older (rolled back) metadata \
                     that is still signed and unexpired"
                        .into(),
                ],
            })
        }
        Damage::StateFile { path, .. } => repair_state(damage, path, paths, bootloader, now),
    }
}

fn repair_state(
    damage: &Damage,
    path: &Path,
    paths: &Paths,
    bootloader: Option<&dyn Bootloader>,
    now: Timestamp,
) -> Result<RepairReport, RepairError> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let salvage = Salvage::from_bytes(&bytes);
    let moved_to = move_aside(path, now)?;
    let mut rebuilt = Vec::new();
    let mut lost = Vec::new();
    let mut doc = StateDoc::default();
    let booted = bootloader.and_then(|b| b.booted_slot().ok());
    match &booted {
        Some(slot) => {
            let status = StatusStore::new(&paths.state_dir(), slot.clone())
                .load()
                .ok();
            match status {
                Some(st) if st.state == SlotState::Good && st.version.is_some() => {
                    let version = st.version.unwrap_or_default();
                    doc.committed = Some(ReleaseRef::new(&version, salvage.floor.unwrap_or(0)));
                    rebuilt.push(format!(
                        "committed release {version}: the booted slot {slot}, good in its status record"
                    ));
                }
                Some(st) => rebuilt.push(format!(
                    "no committed release: the booted slot {slot} is {:?} in its status record; \
                     the engine reconciles it at start-up",
                    st.state
                )),
                None => rebuilt.push(format!(
                    "no committed release: the booted slot {slot} has no readable status record"
                )),
            }
        }
        None => rebuilt
            .push("no committed release: the bootloader did not say which slot booted".into()),
    }
    match salvage.floor {
        Some(f) => {
            doc.security_floor = f;
            rebuilt.push(format!("security floor {f}, read from the damaged file"));
        }
        None => lost.push(
            "the anti-rollback security floor (now 0: the next committed release sets it again)"
                .into(),
        ),
    }
    match salvage.holds {
        Some(h) => {
            rebuilt.push(format!("{} hold(s), read from the damaged file", h.len()));
            doc.holds = h;
        }
        None => lost.push("holds (place them again with `patchctl hold`)".into()),
    }
    lost.push("approvals and below-floor overrides (grant them again if still wanted)".into());
    lost.push(
        "the list of releases that failed here (a failed release may be offered again)".into(),
    );
    lost.push("the lifecycle state (now idle; the next check finds what is available)".into());
    doc.last_error = Some(format!(
        "state rebuilt by `patchctl repair` after: {}",
        damage.describe()
    ));
    StateFile::new(&paths.state_dir()).save(&doc)?;
    let _ = now;
    Ok(RepairReport {
        damage: damage.clone(),
        moved: Some(path.to_path_buf()),
        moved_to: Some(moved_to),
        rebuilt,
        lost,
    })
}

/// What can still be read from a damaged state file that is at least JSON.
#[derive(Debug, Default)]
struct Salvage {
    floor: Option<u64>,
    holds: Option<Vec<Hold>>,
}

impl Salvage {
    fn from_bytes(b: &[u8]) -> Salvage {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(b) else {
            return Salvage::default();
        };
        Salvage {
            floor: v.get("security_floor").and_then(|f| f.as_u64()),
            holds: v
                .get("holds")
                .and_then(|h| serde_json::from_value::<Vec<Hold>>(h.clone()).ok()),
        }
    }
}

/// Rename `path` to `path.corrupt-<UTC time>` (a counter is added if that exists), and
/// fsync the directory so the move survives a power cut.
fn move_aside(path: &Path, now: Timestamp) -> Result<PathBuf, RepairError> {
    let stamp = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "damaged".into());
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut to = dir.join(format!("{name}.corrupt-{stamp}"));
    let mut n = 1;
    while to.exists() {
        to = dir.join(format!("{name}.corrupt-{stamp}.{n}"));
        n += 1;
    }
    let io = |what: String| move |source| RepairError::Io { what, source };
    std::fs::rename(path, &to).map_err(io(format!(
        "moving {} to {}",
        path.display(),
        to.display()
    )))?;
    crate::fsutil::fsync_dir(dir).map_err(io(format!("fsync {}", dir.display())))?;
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salvage_reads_floor_and_holds_from_json_only() {
        let s = Salvage::from_bytes(br#"{"version": 9, "security_floor": 7, "holds": []}"#);
        assert_eq!(s.floor, Some(7));
        assert_eq!(s.holds.map(|h| h.len()), Some(0));
        let s = Salvage::from_bytes(b"\x00garbage");
        assert_eq!(s.floor, None);
        assert!(s.holds.is_none());
    }

    #[test]
    fn move_aside_keeps_the_file_and_never_overwrites() {
        let d = tempfile::tempdir().unwrap();
        let now: Timestamp = "2026-12-04T10:00:00Z".parse().unwrap();
        let p = d.path().join("state.json");
        std::fs::write(&p, "one").unwrap();
        let a = move_aside(&p, now).unwrap();
        std::fs::write(&p, "two").unwrap();
        let b = move_aside(&p, now).unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "one");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "two");
        assert!(!p.exists());
        assert!(a
            .to_string_lossy()
            .ends_with("state.json.corrupt-20261204T100000Z"));
    }
}
