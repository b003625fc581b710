//! Image-file slot: the simulated twin of a partition (also for loop-mounted roots).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::raw::RawSlot;
use super::status::StatusStore;
use super::{Slot, SlotError, SlotState, SlotStatus};
use crate::names::SlotName;

/// A slot backed by a regular file, e.g. `<dir>/slot-b.img`.
#[derive(Debug, Clone)]
pub struct ImageFileSlot {
    name: SlotName,
    image: PathBuf,
    store: StatusStore,
    capacity: Option<u64>,
    booted: bool,
}

impl ImageFileSlot {
    /// `state_dir` holds the status record (`state_dir/slots/<name>.json`).
    pub fn new(name: SlotName, image: impl Into<PathBuf>, state_dir: &Path) -> Self {
        Self {
            store: StatusStore::new(state_dir, name.clone()),
            name,
            image: image.into(),
            capacity: None,
            booted: false,
        }
    }

    /// Simulate a partition of this size: larger images are refused.
    pub fn with_capacity(mut self, bytes: u64) -> Self {
        self.capacity = Some(bytes);
        self
    }

    /// Mark this slot as the one the machine runs from: it is never written.
    pub fn with_booted(mut self, booted: bool) -> Self {
        self.booted = booted;
        self
    }

    pub fn image_path(&self) -> &Path {
        &self.image
    }

    fn io(&self, source: std::io::Error) -> SlotError {
        SlotError::Io {
            slot: self.name.clone(),
            source,
        }
    }
}

impl Slot for ImageFileSlot {
    fn name(&self) -> &SlotName {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "file"
    }
    fn status(&self) -> Result<SlotStatus, SlotError> {
        self.store.load()
    }
    fn set_state(&self, state: SlotState) -> Result<SlotStatus, SlotError> {
        self.store.set_state(state)
    }
}

impl RawSlot for ImageFileSlot {
    fn store(&self) -> &StatusStore {
        &self.store
    }

    fn open_for_write(&self, size: u64) -> Result<File, SlotError> {
        if self.booted {
            return Err(SlotError::Refused {
                slot: self.name.clone(),
                why: "it is the booted slot".into(),
            });
        }
        if let Some(cap) = self.capacity {
            if size > cap {
                return Err(SlotError::Refused {
                    slot: self.name.clone(),
                    why: format!("image of {size} bytes does not fit into {cap} bytes"),
                });
            }
        }
        // No truncation: an interrupted write resumes over the existing prefix.
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.image)
            .map_err(|e| self.io(e))?;
        // The pipeline sets the final length just before its first write, so a run that
        // fails earlier leaves the old content (and its record) as they were.
        Ok(f)
    }

    fn open_for_read(&self) -> Result<File, SlotError> {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.image)
            .map_err(|e| self.io(e))
    }
}
