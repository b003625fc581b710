//! The component journal: which release is being installed, what each component was
//! before it and how far each step got. Written atomically before every step that
//! changes the system, removed when the release's verdict is in; at start-up
//! [`reconcile`] compares it with what the system shows.

use std::path::{Path, PathBuf};

use super::apply::{emit, StepEvent};
use super::events as ev;
use super::{ComponentError, Installed, Installers};
use crate::fsutil;
use crate::manifest::{Component, Rollback};
use crate::paths::Paths;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Planned,
    Staged,
    /// The switch was started: the system may show either version.
    Switching,
    Switched,
    RolledBack,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct JournalEntry {
    pub component: Component,
    pub before: Option<Installed>,
    pub state: StepState,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Journal {
    pub release: String,
    pub slot: String,
    /// Every component switched and checked; the release's verdict (after the reboot,
    /// when one is needed) decides between commit and rolling all of them back.
    pub done: bool,
    /// The release was committed while health probation goes on: the journal stays, so
    /// a rollback during probation still takes the components back with the OS; it is
    /// removed when probation ends.
    #[serde(default)]
    pub committed: bool,
    pub entries: Vec<JournalEntry>,
}

impl Journal {
    /// `/var/lib/patchd/components/release.json` under the root.
    pub fn path(paths: &Paths) -> PathBuf {
        paths
            .resolve(super::handler::HANDLER_DIR)
            .join("release.json")
    }

    pub fn load(path: &Path) -> Result<Option<Journal>, ComponentError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| ComponentError::failed("journal", format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ComponentError::io(
                "journal",
                format!("reading {}", path.display()),
                e,
            )),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), ComponentError> {
        if let Some(dir) = path.parent() {
            fsutil::ensure_dir(dir, 0o700)
                .map_err(|e| ComponentError::io("journal", "creating its directory", e))?;
        }
        let body = serde_json::to_vec_pretty(self)
            .map_err(|e| ComponentError::failed("journal", e.to_string()))?;
        fsutil::atomic_write(path, &body)
            .map_err(|e| ComponentError::io("journal", format!("writing {}", path.display()), e))
    }

    pub fn remove(path: &Path) -> Result<(), ComponentError> {
        match std::fs::remove_file(path) {
            // No journal (a release without components): nothing changed, nothing to sync;
            // its directory may not even exist.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ComponentError::io(
                "journal",
                format!("removing {}", path.display()),
                e,
            )),
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    fsutil::fsync_dir(dir)
                        .map_err(|e| ComponentError::io("journal", "syncing its directory", e))?;
                }
                Ok(())
            }
        }
    }
}

/// What start-up found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// No release in progress.
    Nothing,
    /// A release whose components all switched waits for its verdict (the journal stays).
    AwaitingVerdict { release: String },
    /// An interrupted release was undone: these components were switched back.
    RolledBack {
        release: String,
        rolled_back: Vec<String>,
        left: Vec<String>,
    },
}

/// Finish an interrupted release at start-up: every component the system shows at the
/// release's version is rolled back (reverse order), so the device is where it was
/// before the release — one release, one verdict, also across a power cut.
pub fn reconcile(
    path: &Path,
    installers: &Installers,
    record: &mut dyn FnMut(&StepEvent),
) -> Result<Reconciled, ComponentError> {
    let Some(j) = Journal::load(path)? else {
        return Ok(Reconciled::Nothing);
    };
    if j.done {
        return Ok(Reconciled::AwaitingVerdict { release: j.release });
    }
    let (rolled_back, left) = undo(&j, installers, record, ev::RECONCILED_EVENT)?;
    Journal::remove(path)?;
    Ok(Reconciled::RolledBack {
        release: j.release,
        rolled_back,
        left,
    })
}

/// Why the release's switched components are not all in effect now (empty: they are),
/// one line per component, for the verdict after the reboot.
pub fn not_in_effect(path: &Path, installers: &Installers) -> Result<Vec<String>, ComponentError> {
    let Some(j) = Journal::load(path)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in j.entries.iter().filter(|e| e.state == StepState::Switched) {
        let c = &e.component;
        if let Err(why) = installers.for_method(c)?.in_effect(c)? {
            out.push(format!(
                "component {} {} is not in effect: {why}",
                c.name, c.version
            ));
        }
    }
    Ok(out)
}

/// Roll back, in reverse order, every entry whose new version the system shows now (or,
/// for a method that cannot read back, whose switch was started). Returns (rolled back,
/// not rolled back: no rollback, or the rollback failed).
pub(super) fn undo(
    j: &Journal,
    installers: &Installers,
    record: &mut dyn FnMut(&StepEvent),
    event: &'static str,
) -> Result<(Vec<String>, Vec<String>), ComponentError> {
    let mut rolled_back = Vec::new();
    let mut left = Vec::new();
    for e in j.entries.iter().rev() {
        let c = &e.component;
        let inst = installers.for_method(c)?;
        let unchanged = e.before.as_ref().map(|b| b.sha256.as_str()) == Some(c.sha256.as_str());
        // What the system shows decides; a method that cannot read it back goes by how
        // far the journal says its step got.
        let touched = if inst.reads_back() {
            inst.installed(&c.name)?
                .is_some_and(|n| n.sha256 == c.sha256)
        } else {
            matches!(e.state, StepState::Switching | StepState::Switched)
        };
        if unchanged || !touched {
            continue;
        }
        if c.rollback == Rollback::None {
            emit(
                record,
                ev::NOT_ROLLED_BACK_EVENT,
                c,
                &j.release,
                "no rollback".into(),
            );
            left.push(c.name.clone());
            continue;
        }
        match inst.roll_back(c, e.before.as_ref()) {
            Ok(()) => {
                let to = e
                    .before
                    .as_ref()
                    .map(|b| b.version.as_str())
                    .unwrap_or("none");
                emit(record, event, c, &j.release, format!("back to {to}"));
                rolled_back.push(c.name.clone());
            }
            Err(err) => {
                emit(
                    record,
                    ev::ROLLBACK_FAILED_EVENT,
                    c,
                    &j.release,
                    err.to_string(),
                );
                left.push(c.name.clone());
            }
        }
    }
    Ok((rolled_back, left))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_a_journal_that_was_never_written_is_nothing_to_do() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("never/made/journal.json");
        Journal::remove(&path).unwrap();
        assert!(!path.parent().unwrap().exists());
    }
}
