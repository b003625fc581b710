//! Image-file slot: the simulated twin of a partition (also for loop-mounted roots).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use super::raw::{open_read_only, RawSlot};
use super::status::StatusStore;
use super::{SlotBackend, SlotError};
use crate::names::SlotName;
use crate::paths::Paths;

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
}

slot_recorded_in_store!(ImageFileSlot, "file");

impl RawSlot for ImageFileSlot {
    fn store(&self) -> &StatusStore {
        &self.store
    }

    fn open_for_write(&self, size: u64) -> Result<File, SlotError> {
        if self.booted {
            return Err(SlotError::refused(&self.name, "it is the booted slot"));
        }
        if let Some(cap) = self.capacity {
            if size > cap {
                return Err(SlotError::refused(
                    &self.name,
                    format!("image of {size} bytes does not fit into {cap} bytes"),
                ));
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
            .map_err(|e| SlotError::io(&self.name, e))?;
        // The pipeline sets the final length just before its first write, so a run that
        // fails earlier leaves the old content (and its record) as they were.
        Ok(f)
    }

    fn open_for_read(&self) -> Result<File, SlotError> {
        open_read_only(&self.name, &self.image, libc::O_NOFOLLOW)
    }
}

/// `backend = "file"`: each `[[slots.slot]]` path is an image file under the device root.
pub(super) fn image_file(
    name: &SlotName,
    path: &Path,
    paths: &Paths,
    booted: bool,
) -> Arc<dyn SlotBackend> {
    Arc::new(
        ImageFileSlot::new(name.clone(), paths.resolve(path), &paths.state_dir())
            .with_booted(booted),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::FileSource;
    use crate::slot::{
        CancelToken, ImageFormat, SlotState, StageError, StageJob, StageOptions, StageRequest,
    };

    fn sha(b: &[u8]) -> String {
        hex::encode(ring::digest::digest(&ring::digest::SHA256, b))
    }

    #[tokio::test]
    async fn file_backend_stages_through_the_trait_and_reads_back_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let image: Vec<u8> = (0..3 * 4096 + 17).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::create_dir_all(dir.path().join("repo")).unwrap();
        std::fs::write(dir.path().join("repo/img"), &image).unwrap();
        let slot: Arc<dyn SlotBackend> = Arc::new(ImageFileSlot::new(
            SlotName::new("b").unwrap(),
            dir.path().join("b.img"),
            &dir.path().join("state"),
        ));
        assert!(slot.verify().is_err(), "nothing verified yet");
        let req = StageRequest::raw("img", "1", image.len() as u64, &sha(&image));
        slot.prepare(&req).unwrap();
        let mut tar = req.clone();
        tar.format = ImageFormat::Tar;
        assert!(matches!(
            slot.prepare(&tar),
            Err(StageError::BadRequest { .. })
        ));
        let src = FileSource::new(dir.path().join("repo"));
        let st = slot
            .stage(StageJob {
                req: &req,
                source: &src,
                opts: &StageOptions::default(),
                progress: None,
                cancel: &CancelToken::new(),
            })
            .await
            .unwrap();
        assert_eq!(st.state, SlotState::Verified);
        slot.verify().unwrap();

        // A flipped byte on the medium is found by the read-back.
        let mut on_disk = std::fs::read(dir.path().join("b.img")).unwrap();
        on_disk[4096] ^= 1;
        std::fs::write(dir.path().join("b.img"), &on_disk).unwrap();
        let e = slot.verify().unwrap_err();
        assert!(matches!(e, StageError::HashMismatch { .. }), "{e}");
    }
}
