//! Slot status records: `<state_dir>/slots/<name>.json`, replaced atomically.

use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::{SlotError, SlotState, SlotStatus};
use crate::fsutil;
use crate::names::SlotName;

/// Where one slot's status record (and its staging checkpoint) lives.
#[derive(Debug, Clone)]
pub struct StatusStore {
    slot: SlotName,
    dir: PathBuf,
}

impl StatusStore {
    /// `state_dir` is the patchd state directory; records go to `state_dir/slots/`.
    pub fn new(state_dir: &Path, slot: SlotName) -> Self {
        Self {
            slot,
            dir: state_dir.join("slots"),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.json", self.slot))
    }

    /// Staging checkpoint for resume (see `stage`).
    pub fn checkpoint_path(&self) -> PathBuf {
        self.dir.join(format!("{}.stage.json", self.slot))
    }

    pub fn slot(&self) -> &SlotName {
        &self.slot
    }

    /// The record, or `Empty` when none was written yet.
    pub fn load(&self) -> Result<SlotStatus, SlotError> {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(SlotStatus::empty(self.slot.clone()))
            }
            Err(e) => return Err(SlotError::io(&self.slot, e)),
        };
        let st: SlotStatus = serde_json::from_slice(&bytes).map_err(|e| SlotError::BadStatus {
            slot: self.slot.clone(),
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        if st.slot != self.slot {
            return Err(SlotError::BadStatus {
                slot: self.slot.clone(),
                path: path.display().to_string(),
                why: format!("record names slot {}", st.slot),
            });
        }
        Ok(st)
    }

    pub fn save(&self, st: &SlotStatus) -> Result<(), SlotError> {
        fsutil::ensure_dir(&self.dir, 0o700).map_err(|e| SlotError::io(&self.slot, e))?;
        let mut bytes = serde_json::to_vec_pretty(st).map_err(|e| SlotError::BadStatus {
            slot: self.slot.clone(),
            path: self.path().display().to_string(),
            why: e.to_string(),
        })?;
        bytes.push(b'\n');
        fsutil::atomic_write(&self.path(), &bytes).map_err(|e| SlotError::io(&self.slot, e))
    }

    /// Record that a write started: the content is unknown until verified.
    pub fn mark_incomplete(&self, version: &str) -> Result<SlotStatus, SlotError> {
        let st = SlotStatus {
            slot: self.slot.clone(),
            state: SlotState::Incomplete,
            version: Some(version.to_string()),
            sha256: None,
            size: None,
            installed_at: None,
        };
        self.save(&st)?;
        Ok(st)
    }

    /// Record verified content. Only the staging pipeline calls this, after the hashes
    /// of the bytes on the slot matched the signed ones.
    pub(crate) fn mark_verified(
        &self,
        version: &str,
        sha256: &str,
        size: u64,
    ) -> Result<SlotStatus, SlotError> {
        let st = SlotStatus {
            slot: self.slot.clone(),
            state: SlotState::Verified,
            version: Some(version.to_string()),
            sha256: Some(sha256.to_string()),
            size: Some(size),
            installed_at: Some(Timestamp::now()),
        };
        self.save(&st)?;
        Ok(st)
    }

    /// The state change rules shared by every backend's `Slot::set_state`.
    pub fn set_state(&self, to: SlotState) -> Result<SlotStatus, SlotError> {
        let mut st = self.load()?;
        let allowed = match to {
            // Only content the pipeline verified (it set the hash) may become bootable.
            SlotState::Verified | SlotState::Good => {
                st.state.is_bootable() && st.sha256.is_some() && st.size.is_some()
            }
            SlotState::Bad | SlotState::Incomplete => true,
            SlotState::Empty => st.state != SlotState::Good,
        };
        if !allowed {
            return Err(SlotError::IllegalState {
                slot: self.slot.clone(),
                from: st.state,
                to,
            });
        }
        if to == SlotState::Empty {
            st = SlotStatus::empty(self.slot.clone());
        } else {
            st.state = to;
        }
        self.save(&st)?;
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_verified_content_becomes_bootable() {
        let dir = tempfile::tempdir().unwrap();
        let name: SlotName = "b".parse().unwrap();
        let s = StatusStore::new(dir.path(), name);
        assert_eq!(s.load().unwrap().state, SlotState::Empty);
        assert!(s.set_state(SlotState::Verified).is_err());
        s.mark_incomplete("1.0").unwrap();
        assert!(s.set_state(SlotState::Good).is_err());
        s.mark_verified("1.0", "ab", 3).unwrap();
        assert_eq!(s.set_state(SlotState::Good).unwrap().state, SlotState::Good);
        assert_eq!(s.set_state(SlotState::Bad).unwrap().state, SlotState::Bad);
        assert!(s.set_state(SlotState::Good).is_err());
        assert_eq!(s.load().unwrap().version.as_deref(), Some("1.0"));
    }
}
