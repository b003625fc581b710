//! What staging keeps under `<state_dir>/apt/`: the marker of a staging in progress
//! (`staging-<slot>.json`, so the next start deletes a snapshot a power cut left), the
//! snapshot's `/etc` at the time it was taken (`etc-base-<slot>.json`, the base of the
//! three-way carry-over at switch time) and the staged release record
//! (`staged-<slot>.json`: the package delta, later the `/etc` carry-over).

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::etcmerge::{CarryReport, Tree};
use crate::fsutil;
use crate::names::SlotName;

/// One package the staging upgraded, as the snapshot's dpkg database says afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageDelta {
    pub name: String,
    pub arch: String,
    /// The version installed before (in the running root); "" for a package new in the
    /// snapshot.
    pub old: String,
    /// The version installed in the snapshot; "" for a package the upgrade removed.
    pub new: String,
}

/// The staged release record of an apt snapshot slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedRecord {
    pub version: String,
    pub slot: SlotName,
    /// The slot the snapshot was taken of.
    pub running: SlotName,
    pub packages: Vec<PackageDelta>,
    /// `keep` or `package` (`[source.apt] conffiles`).
    pub conffiles: String,
    pub staged_at: Timestamp,
    /// The `/etc` changes carried over at the switch, once it happened.
    #[serde(default)]
    pub etc: Option<CarryReport>,
}

/// A staging in progress (deleted when it ends either way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub version: String,
    pub slot: SlotName,
    pub started: Timestamp,
}

/// The files of one state directory (`<state_dir>/apt`).
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn marker_path(&self, slot: &SlotName) -> PathBuf {
        self.dir.join(format!("staging-{slot}.json"))
    }
    pub fn etc_base_path(&self, slot: &SlotName) -> PathBuf {
        self.dir.join(format!("etc-base-{slot}.json"))
    }
    pub fn staged_path(&self, slot: &SlotName) -> PathBuf {
        self.dir.join(format!("staged-{slot}.json"))
    }

    pub fn save<T: Serialize>(&self, path: &Path, v: &T) -> std::io::Result<()> {
        fsutil::ensure_dir(&self.dir, 0o700)?;
        let mut bytes = serde_json::to_vec_pretty(v).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        fsutil::atomic_write(path, &bytes)
    }

    /// The record at `path`; `None` when there is none.
    pub fn load<T: DeserializeOwned>(&self, path: &Path) -> std::io::Result<Option<T>> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn remove(&self, path: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(path) {
            Ok(()) => fsutil::fsync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Forget everything about `slot` (its snapshot is gone).
    pub fn clear(&self, slot: &SlotName) -> std::io::Result<()> {
        self.remove(&self.etc_base_path(slot))?;
        self.remove(&self.staged_path(slot))?;
        self.remove(&self.marker_path(slot))
    }

    /// Slots with a staging marker (a staging that never ended).
    pub fn unfinished(&self) -> Vec<SlotName> {
        self.slots_with("staging-")
    }

    /// Slots with a staged release record.
    pub fn staged_slots(&self) -> Vec<SlotName> {
        self.slots_with("staged-")
    }

    fn slots_with(&self, prefix: &str) -> Vec<SlotName> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<SlotName> = rd
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_str()?.to_owned();
                let s = n.strip_prefix(prefix)?.strip_suffix(".json")?;
                SlotName::new(s).ok()
            })
            .collect();
        out.sort();
        out
    }

    pub fn etc_base(&self, slot: &SlotName) -> std::io::Result<Option<Tree>> {
        self.load(&self.etc_base_path(slot))
    }

    pub fn staged(&self, slot: &SlotName) -> std::io::Result<Option<StagedRecord>> {
        self.load(&self.staged_path(slot))
    }
}
