//! The one persisted engine document, `/var/lib/patchd/state.json`.
//!
//! Versioned JSON, replaced atomically with
//! [`fsutil::atomic_write`]. Before a destructive step (arming the bootloader, marking a
//! slot bad, writing a slot, rebooting) the runner records a [`Pending`] intent and clears
//! it afterwards, so a step a power cut interrupted shows on the next start (as bootupd
//! does). Older document versions are upgraded on load; newer ones are refused, never
//! guessed at.
//!
//! Unknown fields at the top level and in a blocked release are ignored, not refused:
//! the file lives in `/var/lib`, shared by both slots, so after a rollback the older
//! patchd of the old slot reads what the newer one wrote during its trial. Refusing its
//! additions would turn every rollback across a release that added a field into
//! degraded mode. So a field added within a version must be safe for an older reader to
//! drop (status detail, counters); a change an older reader must not ignore — a new
//! intent, a field that changes what another one means — bumps [`STATE_VERSION`]. An
//! intent ([`Pending`]) stays strict: a step a reader does not understand is never
//! skipped.

use std::io;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::state::{Lifecycle, ReleaseRef};
use crate::fsutil;
use crate::names::SlotName;
use crate::policy::Hold;

/// The version this build writes.
pub const STATE_VERSION: u32 = 2;
/// Refuse absurd files before parsing them.
const MAX_STATE_BYTES: u64 = 4 * 1024 * 1024;

/// A release that failed on this device and is never installed again automatically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedRelease {
    pub version: String,
    pub reason: String,
    pub at: Timestamp,
}

/// A destructive step that was started and not yet known to be finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "intent", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pending {
    /// Writing `version` into `slot`.
    WriteSlot { slot: SlotName, version: String },
    /// Telling the bootloader to try `slot` once.
    ArmTrial { slot: SlotName },
    /// Marking `slot` bad (and its release blocked).
    MarkBad { slot: SlotName },
    /// Marking `slot` good after a passed verification.
    MarkGood { slot: SlotName },
    /// A reboot was requested; the next start sees whether it happened.
    Reboot { reason: String },
    /// Deleting the previous root in `slot` the source does not keep (`keep = 1`): out
    /// of the boot order first, then deleted; the next start finishes an interrupted one.
    Prune { slot: SlotName },
}

/// A fleet reboot slot this device holds: taken right before the switch, kept through
/// the reboot, the health checks and probation, given back at steady state. Written
/// before the switch is recorded, so a restart (the reboot itself) knows it holds one.
/// Unknown fields are ignored like the document's; an older patchd that does not know
/// the field drops it and so never gives the slot back, which errs on the side of a
/// paused group rather than of too many reboots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldSlot {
    pub group: String,
    /// The backend it was taken from (`fleetlock`, …).
    pub backend: String,
    /// The release it was taken for.
    pub version: String,
    pub since: Timestamp,
    /// Why the slot is kept after a failed update (released only by an operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
}

/// The whole persisted document (unknown fields ignored: see the module comment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDoc {
    pub version: u32,
    pub lifecycle: Lifecycle,
    /// What the device last committed (or what it shipped with, once learned).
    pub committed: Option<ReleaseRef>,
    /// Anti-rollback floor: the highest committed `security_version`.
    pub security_floor: u64,
    pub blocked: Vec<BlockedRelease>,
    pub holds: Vec<Hold>,
    /// Releases an admin approved (needed where the urgency rule says `approval`).
    pub approved: Vec<String>,
    /// Versions an admin explicitly allowed below the floor (audited when granted).
    pub floor_overrides: Vec<String>,
    pub pending: Option<Pending>,
    pub last_check: Option<Timestamp>,
    pub last_error: Option<String>,
    /// Why the last check failed (`None` after a good one); `last_check` stays the time
    /// of the last good check.
    #[serde(default)]
    pub last_check_error: Option<String>,
    /// When that failed check was made.
    #[serde(default)]
    pub last_check_failed: Option<Timestamp>,
    /// Releases the last good check found.
    #[serde(default)]
    pub last_check_found: usize,
    /// The fleet reboot slot this device holds, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_slot: Option<HeldSlot>,
}

impl Default for StateDoc {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            lifecycle: Lifecycle::Idle {},
            committed: None,
            security_floor: 0,
            blocked: Vec::new(),
            holds: Vec::new(),
            approved: Vec::new(),
            floor_overrides: Vec::new(),
            pending: None,
            last_check: None,
            last_error: None,
            last_check_error: None,
            last_check_failed: None,
            last_check_found: 0,
            reboot_slot: None,
        }
    }
}

impl StateDoc {
    pub fn is_blocked(&self, version: &str) -> bool {
        self.blocked.iter().any(|b| b.version == version)
    }

    pub fn block(&mut self, version: &str, reason: &str, at: Timestamp) {
        if !self.is_blocked(version) {
            self.blocked.push(BlockedRelease {
                version: version.to_string(),
                reason: reason.to_string(),
                at,
            });
        }
    }
}

/// Version 1 of the document (first wave): no holds, no intents, a bare floor.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateDocV1 {
    #[allow(dead_code)]
    version: u32,
    lifecycle: Lifecycle,
    committed: Option<ReleaseRef>,
    security_floor: u64,
    blocked: Vec<String>,
}

impl StateDocV1 {
    fn upgrade(self, now: Timestamp) -> StateDoc {
        StateDoc {
            lifecycle: self.lifecycle,
            committed: self.committed,
            security_floor: self.security_floor,
            blocked: self
                .blocked
                .into_iter()
                .map(|version| BlockedRelease {
                    version,
                    reason: "blocked before the state file was upgraded".into(),
                    at: now,
                })
                .collect(),
            ..StateDoc::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state file {path} is {size} bytes, more than the {MAX_STATE_BYTES} allowed")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("state file {path} is not valid JSON or has unexpected fields: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "state file {path} has version {found}, this patchd understands up to {STATE_VERSION}; \
         refusing to guess (was patchd downgraded?)"
    )]
    UnknownVersion { path: PathBuf, found: u64 },
    #[error("state file {path} has no \"version\" field")]
    NoVersion { path: PathBuf },
}

/// Where the document lives and how it is read and replaced.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("state.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Load the document; a missing file is a fresh device (`None`).
    pub fn load(&self, now: Timestamp) -> Result<Option<StateDoc>, StateFileError> {
        let io_err = |source| StateFileError::Io {
            path: self.path.clone(),
            source,
        };
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(e)),
        };
        if meta.len() > MAX_STATE_BYTES {
            return Err(StateFileError::TooLarge {
                path: self.path.clone(),
                size: meta.len(),
            });
        }
        let bytes = std::fs::read(&self.path).map_err(io_err)?;
        parse(&self.path, &bytes, now).map(Some)
    }

    /// Replace the document atomically (temp, fsync, rename, fsync dir).
    pub fn save(&self, doc: &StateDoc) -> Result<(), StateFileError> {
        let io_err = |source| StateFileError::Io {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            fsutil::ensure_dir(dir, 0o700).map_err(io_err)?;
        }
        let mut bytes = serde_json::to_vec_pretty(doc).map_err(|e| StateFileError::Corrupt {
            path: self.path.clone(),
            source: e,
        })?;
        bytes.push(b'\n');
        fsutil::atomic_write(&self.path, &bytes).map_err(io_err)
    }
}

fn parse(path: &Path, bytes: &[u8], now: Timestamp) -> Result<StateDoc, StateFileError> {
    let corrupt = |source| StateFileError::Corrupt {
        path: path.to_path_buf(),
        source,
    };
    // Read only the version first so a newer document is refused with the right message
    // instead of a confusing "unknown field".
    #[derive(Deserialize)]
    struct VersionOnly {
        version: Option<u64>,
    }
    let v: VersionOnly = serde_json::from_slice(bytes).map_err(corrupt)?;
    match v.version {
        None => Err(StateFileError::NoVersion {
            path: path.to_path_buf(),
        }),
        Some(1) => Ok(serde_json::from_slice::<StateDocV1>(bytes)
            .map_err(corrupt)?
            .upgrade(now)),
        Some(2) => serde_json::from_slice(bytes).map_err(corrupt),
        Some(found) => Err(StateFileError::UnknownVersion {
            path: path.to_path_buf(),
            found,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    #[test]
    fn round_trip_and_missing_is_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path());
        assert!(f.load(now()).unwrap().is_none());
        let mut doc = StateDoc {
            lifecycle: Lifecycle::UpdateAvailable {
                release: ReleaseRef::new("2.0.0", 3),
            },
            ..StateDoc::default()
        };
        doc.pending = Some(Pending::ArmTrial {
            slot: SlotName::new("b").unwrap(),
        });
        doc.block("1.5.0", "health check failed", now());
        f.save(&doc).unwrap();
        assert_eq!(f.load(now()).unwrap().unwrap(), doc);
        doc.reboot_slot = Some(HeldSlot {
            group: "db-eu1".into(),
            backend: "fleetlock".into(),
            version: "2.0.0".into(),
            since: now(),
            kept: Some("health check failed".into()),
        });
        f.save(&doc).unwrap();
        assert_eq!(f.load(now()).unwrap().unwrap(), doc);
        // A field a later release adds to the held slot is ignored, not refused.
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap();
        v["reboot_slot"]["lease"] = 7.into();
        std::fs::write(f.path(), v.to_string()).unwrap();
        assert_eq!(f.load(now()).unwrap().unwrap(), doc);
    }

    #[test]
    fn refuses_unknown_version_fields_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path());
        let mut v = serde_json::to_value(StateDoc::default()).unwrap();
        v["version"] = 9.into();
        std::fs::write(f.path(), v.to_string()).unwrap();
        let e = f.load(now()).unwrap_err();
        assert!(
            matches!(e, StateFileError::UnknownVersion { found: 9, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("state.json"));

        // An intent this build does not know is never skipped.
        let mut v = serde_json::to_value(StateDoc::default()).unwrap();
        v["pending"] = serde_json::json!({"intent": "flash_firmware", "slot": "b"});
        std::fs::write(f.path(), v.to_string()).unwrap();
        assert!(matches!(f.load(now()), Err(StateFileError::Corrupt { .. })));

        let good = serde_json::to_vec(&StateDoc::default()).unwrap();
        std::fs::write(f.path(), &good[..good.len() / 2]).unwrap();
        assert!(matches!(f.load(now()), Err(StateFileError::Corrupt { .. })));

        std::fs::write(f.path(), b"{}").unwrap();
        assert!(matches!(
            f.load(now()),
            Err(StateFileError::NoVersion { .. })
        ));
    }

    /// What a newer patchd writes during its trial, read by this one after a rollback:
    /// its added fields are dropped, everything this build knows is kept.
    #[test]
    fn fields_a_newer_release_added_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path());
        let mut doc = StateDoc::default();
        doc.block("2.0.0", "health check failed", now());
        doc.security_floor = 7;
        let mut v = serde_json::to_value(&doc).unwrap();
        v["fleet_lock"] = serde_json::json!({"group": "db-eu1", "held": true});
        v["blocked"][0]["retries"] = 2.into();
        std::fs::write(f.path(), v.to_string()).unwrap();
        assert_eq!(f.load(now()).unwrap().unwrap(), doc);
    }

    #[test]
    fn upgrades_version_1() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path());
        let v1 = r#"{"version":1,"lifecycle":{"state":"idle"},
            "committed":{"version":"1.0.0","security_version":4},
            "security_floor":4,"blocked":["0.9.0"]}"#;
        std::fs::write(f.path(), v1).unwrap();
        let doc = f.load(now()).unwrap().unwrap();
        assert_eq!(doc.version, STATE_VERSION);
        assert_eq!(doc.security_floor, 4);
        assert!(doc.is_blocked("0.9.0"));
        assert!(doc.holds.is_empty() && doc.pending.is_none());
    }
}
