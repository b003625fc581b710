//! Keeping the downloaded bytes of an archive install, so an interrupted install does
//! not fetch them again.
//!
//! A tar archive is extracted while it streams in. Every transfer byte is also appended
//! to `<slots dir>/.<slot>.download`, synced and recorded every `checkpoint_every` bytes
//! (and at every extraction checkpoint, [`DownloadTee::sync`]) in
//! `.<slot>.download.json`. A later run for the same archive replays the kept bytes from
//! its restart mark (byte 0, or the zstd frame an extraction checkpoint names, see
//! `btrfs.rs`) and fetches only the rest with a range request; the replayed bytes are
//! hashed like any other (the file holds bytes, not trust).

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::stage::StageRequest;
use crate::fsutil;

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Record {
    path: String,
    sha256: String,
    length: u64,
    /// Bytes `0..offset` of the file are synced.
    offset: u64,
}

/// The kept download of one archive install.
pub(super) struct DownloadTee {
    data: PathBuf,
    record: PathBuf,
    file: File,
    path: String,
    sha256: String,
    length: u64,
    /// Synced and recorded prefix.
    recorded: u64,
    /// Bytes in the file.
    len: u64,
    every: u64,
}

impl DownloadTee {
    /// Open (or start) the kept download for `req` under `dir` as `.<base>.download`.
    /// Returns the tee and the length of the prefix that can be replayed.
    pub(super) fn open(
        dir: &Path,
        base: &str,
        req: &StageRequest,
        every: u64,
    ) -> io::Result<(Self, u64)> {
        let data = dir.join(format!(".{base}.download"));
        let record = dir.join(format!(".{base}.download.json"));
        let prefix = std::fs::read(&record)
            .ok()
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
            .filter(|r| {
                r.path == req.path
                    && r.sha256.eq_ignore_ascii_case(&req.sha256)
                    && r.length == req.length
                    && r.offset <= req.length
            })
            .map_or(0, |r| r.offset);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&data)?;
        let have = file.metadata()?.len();
        let prefix = prefix.min(have);
        // Bytes past the last record may be torn: drop them.
        file.set_len(prefix)?;
        file.seek(SeekFrom::Start(prefix))?;
        Ok((
            Self {
                data,
                record,
                file,
                path: req.path.clone(),
                sha256: req.sha256.to_ascii_lowercase(),
                length: req.length,
                recorded: prefix,
                len: prefix,
                every: every.max(1 << 20),
            },
            prefix,
        ))
    }

    /// A reader over the replayable prefix.
    pub(super) fn prefix_reader(&self) -> io::Result<File> {
        let mut f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.data)?;
        f.seek(SeekFrom::Start(0))?;
        Ok(f)
    }

    /// The transfer bytes at `offset..offset + b.len()` went by: keep the new ones.
    pub(super) fn observe(&mut self, offset: u64, b: &[u8]) -> io::Result<()> {
        let end = offset + b.len() as u64;
        if end <= self.len {
            return Ok(()); // replayed from the file
        }
        let skip = self.len.saturating_sub(offset) as usize;
        self.file.write_all(&b[skip..])?;
        self.len = end;
        if self.len - self.recorded >= self.every {
            self.sync()?;
        }
        Ok(())
    }

    /// Sync and record every byte kept so far (an extraction checkpoint needs the
    /// transfer up to its restart mark on disk).
    pub(super) fn sync(&mut self) -> io::Result<()> {
        if self.len == self.recorded {
            return Ok(());
        }
        self.file.sync_data()?;
        let rec = Record {
            path: self.path.clone(),
            sha256: self.sha256.clone(),
            length: self.length,
            offset: self.len,
        };
        let bytes = serde_json::to_vec(&rec).map_err(io::Error::other)?;
        fsutil::atomic_write(&self.record, &bytes)?;
        self.recorded = self.len;
        Ok(())
    }

    /// Forget the kept download (after success, or when its content proved wrong).
    pub(super) fn remove(dir: &Path, base: &str) {
        for n in [
            format!(".{base}.download"),
            format!(".{base}.download.json"),
        ] {
            let _ = std::fs::remove_file(dir.join(n));
        }
    }
}
