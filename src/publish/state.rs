//! Reading the current signed metadata of a repository and publishing new versions of
//! it in an order that keeps the served directory consistent at every moment: targets
//! files first, then targets, snapshot, and timestamp last (what clients read first).

use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};

use super::error::{io, meta, PublishError};
use super::keystore;
use crate::trust::metadata::{
    hashes_of, parse_signed, sign_envelope, Envelope, MetaFile, RoleMetadata, Root, Snapshot,
    Targets, TimestampMeta,
};

/// How long each role's metadata stays valid after it is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiries {
    pub root: SignedDuration,
    pub targets: SignedDuration,
    pub snapshot: SignedDuration,
    pub timestamp: SignedDuration,
}

impl Default for Expiries {
    fn default() -> Self {
        let day = SignedDuration::from_hours(24);
        Self {
            root: day * 365,
            targets: day * 90,
            snapshot: day * 7,
            timestamp: day,
        }
    }
}

/// The repository's current metadata, as published.
pub(crate) struct State {
    pub root: Root,
    pub root_bytes: Vec<u8>,
    pub targets: Targets,
    pub snapshot: Snapshot,
    pub timestamp: TimestampMeta,
}

pub(crate) fn metadata_dir(repo: &Path) -> PathBuf {
    repo.join("metadata")
}

pub(crate) fn read_role<T: RoleMetadata>(path: &Path) -> Result<(T, Vec<u8>), PublishError> {
    let bytes = std::fs::read(path).map_err(io(path.display()))?;
    let env = Envelope::parse(&bytes, 64).map_err(meta(path.display()))?;
    let t = parse_signed::<T>(&env.signed).map_err(meta(path.display()))?;
    Ok((t, bytes))
}

pub(crate) fn load(repo: &Path) -> Result<State, PublishError> {
    let md = metadata_dir(repo);
    if !md.join("root.json").exists() {
        return Err(PublishError::NotInitialized {
            dir: repo.display().to_string(),
        });
    }
    let (root, root_bytes) = read_role::<Root>(&md.join("root.json"))?;
    let (timestamp, _) = read_role::<TimestampMeta>(&md.join("timestamp.json"))?;
    let snap_v = timestamp
        .meta
        .get("snapshot.json")
        .map(|m| m.version)
        .ok_or_else(|| PublishError::Invalid("timestamp.json lists no snapshot.json".into()))?;
    let (snapshot, _) = read_role::<Snapshot>(&md.join(format!("{snap_v}.snapshot.json")))?;
    let targets_v = snapshot
        .meta
        .get("targets.json")
        .map(|m| m.version)
        .ok_or_else(|| PublishError::Invalid("snapshot lists no targets.json".into()))?;
    let (targets, _) = read_role::<Targets>(&md.join(format!("{targets_v}.targets.json")))?;
    Ok(State {
        root,
        root_bytes,
        targets,
        snapshot,
        timestamp,
    })
}

/// Exclusive lock on the repository for one publishing operation, so two `patchpub`
/// runs (say, `add` and the `refresh` timer) never interleave their version bumps.
/// Released when the returned file is dropped.
pub(crate) fn lock(repo: &Path) -> Result<std::fs::File, PublishError> {
    use std::os::fd::AsRawFd;
    let p = repo.join(".patchpub.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(io(p.display()))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    if rc != 0 {
        return Err(io(p.display())(std::io::Error::last_os_error()));
    }
    Ok(f)
}

/// Whole seconds: TUF `expires` has no fractional part.
pub(crate) fn expiry(now: Timestamp, valid: SignedDuration) -> Result<Timestamp, PublishError> {
    let t = now
        .checked_add(valid)
        .map_err(|e| PublishError::Invalid(format!("expiry out of range: {e}")))?;
    Timestamp::from_second(t.as_second())
        .map_err(|e| PublishError::Invalid(format!("expiry out of range: {e}")))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), PublishError> {
    crate::fsutil::atomic_write_mode(path, bytes, 0o644).map_err(io(path.display()))
}

/// Sign and write a root version as `N.root.json` and `root.json`.
pub(crate) fn write_root_bytes(
    repo: &Path,
    version: u64,
    bytes: &[u8],
) -> Result<(), PublishError> {
    let md = metadata_dir(repo);
    crate::fsutil::ensure_dir(&md, 0o755).map_err(io(md.display()))?;
    write(&md.join(format!("{version}.root.json")), bytes)?;
    write(&md.join("root.json"), bytes)
}

/// Write a delegated role's metadata as `N.NAME.json` and `NAME.json` (names are
/// plain, checked by [`crate::manifest::check_name`], so need no encoding).
pub(crate) fn write_role_file(
    repo: &Path,
    name: &str,
    version: u64,
    bytes: &[u8],
) -> Result<(), PublishError> {
    let md = metadata_dir(repo);
    write(&md.join(format!("{version}.{name}.json")), bytes)?;
    write(&md.join(format!("{name}.json")), bytes)
}

/// The snapshot entry for one targets-role file.
pub(crate) fn meta_file(version: u64, bytes: &[u8]) -> MetaFile {
    MetaFile {
        version,
        length: Some(bytes.len() as u64),
        hashes: Some(hashes_of(bytes)),
        extra: Default::default(),
    }
}

/// What changed and must be re-signed.
pub(crate) struct Publish<'a> {
    pub repo: &'a Path,
    pub keys_dir: &'a Path,
    pub now: Timestamp,
    pub expiries: &'a Expiries,
}

impl Publish<'_> {
    /// Bump and sign targets (new content in `targets`), then snapshot and timestamp.
    pub fn targets(&self, st: &mut State) -> Result<(), PublishError> {
        st.targets.common.version += 1;
        st.targets.common.expires = expiry(self.now, self.expiries.targets)?;
        let keys = keystore::signers(self.keys_dir, &st.root, "targets")?;
        let refs: Vec<_> = keys.iter().collect();
        let bytes = sign_envelope(&st.targets, &refs).map_err(meta("targets.json"))?;
        let md = metadata_dir(self.repo);
        let v = st.targets.common.version;
        write(&md.join(format!("{v}.targets.json")), &bytes)?;
        write(&md.join("targets.json"), &bytes)?;
        self.snapshot_with(st, "targets.json", v, &bytes)
    }

    /// List `file` (a targets role's metadata, already written) in a new snapshot, then
    /// sign snapshot and timestamp.
    pub fn snapshot_with(
        &self,
        st: &mut State,
        file: &str,
        version: u64,
        bytes: &[u8],
    ) -> Result<(), PublishError> {
        st.snapshot
            .meta
            .insert(file.to_string(), meta_file(version, bytes));
        self.snapshot(st)
    }

    /// Bump and sign snapshot, then timestamp.
    pub fn snapshot(&self, st: &mut State) -> Result<(), PublishError> {
        st.snapshot.common.version += 1;
        st.snapshot.common.expires = expiry(self.now, self.expiries.snapshot)?;
        let keys = keystore::signers(self.keys_dir, &st.root, "snapshot")?;
        let refs: Vec<_> = keys.iter().collect();
        let bytes = sign_envelope(&st.snapshot, &refs).map_err(meta("snapshot.json"))?;
        let md = metadata_dir(self.repo);
        let v = st.snapshot.common.version;
        write(&md.join(format!("{v}.snapshot.json")), &bytes)?;
        write(&md.join("snapshot.json"), &bytes)?;
        st.timestamp.meta.insert(
            "snapshot.json".into(),
            MetaFile {
                version: v,
                length: Some(bytes.len() as u64),
                hashes: Some(hashes_of(&bytes)),
                extra: Default::default(),
            },
        );
        self.timestamp(st)
    }

    /// Bump and sign timestamp.
    pub fn timestamp(&self, st: &mut State) -> Result<(), PublishError> {
        st.timestamp.common.version += 1;
        st.timestamp.common.expires = expiry(self.now, self.expiries.timestamp)?;
        let keys = keystore::signers(self.keys_dir, &st.root, "timestamp")?;
        let refs: Vec<_> = keys.iter().collect();
        let bytes = sign_envelope(&st.timestamp, &refs).map_err(meta("timestamp.json"))?;
        write(&metadata_dir(self.repo).join("timestamp.json"), &bytes)
    }
}
