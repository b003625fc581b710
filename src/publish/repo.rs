//! [`Repo`]: the publisher's view of one repository directory and its keys directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use semver::Version;

use super::error::{io, meta, PublishError};
use super::images;
use super::keystore;
use super::state::{self, Expiries, Publish, State};
use crate::clock::{Clock, SystemClock};
use crate::manifest::{
    release_target_path, Compression, Image, ImageFormat, Kind, Manifest, ReleaseSummary, Rollout,
    RolloutGate, Severity,
};
use crate::trust::metadata::{
    hashes_of, sign_envelope, RoleType, Root, Snapshot, TargetFile, Targets, TimestampMeta,
};
use crate::trust::{KeyScheme, SigningKey};

/// How many keys to create for a role and how many must sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleSpec {
    pub keys: usize,
    pub threshold: u64,
}

impl Default for RoleSpec {
    fn default() -> Self {
        Self {
            keys: 1,
            threshold: 1,
        }
    }
}

/// Options for [`Repo::init`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Where private keys are created (kept apart from the served directory).
    pub keys_dir: PathBuf,
    pub scheme: KeyScheme,
    pub root: RoleSpec,
    pub targets: RoleSpec,
    pub snapshot: RoleSpec,
    pub timestamp: RoleSpec,
    pub expiries: Expiries,
}

impl InitOptions {
    pub fn new(keys_dir: impl Into<PathBuf>) -> Self {
        Self {
            keys_dir: keys_dir.into(),
            scheme: KeyScheme::Ed25519,
            root: RoleSpec::default(),
            targets: RoleSpec::default(),
            snapshot: RoleSpec::default(),
            timestamp: RoleSpec::default(),
            expiries: Expiries::default(),
        }
    }
}

/// One image of a new release.
#[derive(Debug, Clone)]
pub struct ImageInput {
    pub component: String,
    pub slot_class: String,
    pub file: PathBuf,
    pub format: ImageFormat,
    pub compression: Compression,
}

impl ImageInput {
    /// The common case: the `os` component's `rootfs` raw image, zstd-compressed.
    pub fn rootfs(file: impl Into<PathBuf>) -> Self {
        Self {
            component: "os".into(),
            slot_class: "rootfs".into(),
            file: file.into(),
            format: ImageFormat::Raw,
            compression: Compression::Zstd,
        }
    }
}

/// A release to publish with [`Repo::add_release`].
#[derive(Debug, Clone)]
pub struct AddRelease {
    pub product: String,
    pub version: Version,
    pub hardware: Vec<String>,
    pub security_version: u64,
    pub kind: Kind,
    pub severity: Severity,
    pub cves: Vec<String>,
    pub summary: String,
    pub notes_url: Option<String>,
    pub min_version: Option<Version>,
    pub images: Vec<ImageInput>,
    /// Components beside the images (schema 2; none keeps the manifest at schema 1).
    pub components: Vec<super::ComponentInput>,
    pub rollout: Rollout,
    pub channels: Vec<String>,
    /// Publish time; `None` means now.
    pub published: Option<Timestamp>,
}

impl AddRelease {
    /// A release with one rootfs image on one channel; adjust the fields as needed.
    pub fn new(product: &str, version: Version, image: impl Into<PathBuf>) -> Self {
        Self {
            product: product.into(),
            version,
            hardware: Vec::new(),
            security_version: 0,
            kind: Kind::Bugfix,
            severity: Severity::Medium,
            cves: Vec::new(),
            summary: "update".into(),
            notes_url: None,
            min_version: None,
            images: vec![ImageInput::rootfs(image)],
            components: Vec::new(),
            rollout: Rollout::default(),
            channels: vec!["stable".into()],
            published: None,
        }
    }
}

/// A publisher's repository: `dir/metadata/` and `dir/targets/`, served as they are;
/// private keys in `keys_dir`.
#[derive(Clone)]
pub struct Repo {
    dir: PathBuf,
    keys_dir: PathBuf,
    expiries: Expiries,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repo")
            .field("dir", &self.dir)
            .field("keys_dir", &self.keys_dir)
            .finish()
    }
}

/// `PRODUCT/VERSION` → (product, version).
pub fn parse_release_name(release: &str) -> Result<(String, Version), PublishError> {
    let bad = || PublishError::BadReleaseName {
        release: release.to_string(),
    };
    let (p, v) = release.split_once('/').ok_or_else(bad)?;
    let v = Version::parse(v).map_err(|_| bad())?;
    crate::manifest::check_name("product", p)?;
    Ok((p.to_string(), v))
}

impl Repo {
    /// Create a new repository: keys for every role in `opts.keys_dir`, root version 1,
    /// empty targets, snapshot and timestamp. Consistent snapshots are always on.
    pub fn init(dir: impl Into<PathBuf>, opts: &InitOptions) -> Result<Self, PublishError> {
        Self::init_with_clock(dir, opts, Arc::new(SystemClock))
    }

    /// [`Repo::init`] with another clock for expiries (the demo's simulated time).
    pub fn init_with_clock(
        dir: impl Into<PathBuf>,
        opts: &InitOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, PublishError> {
        let dir = dir.into();
        if state::metadata_dir(&dir).join("root.json").exists() {
            return Err(PublishError::AlreadyInitialized {
                dir: dir.display().to_string(),
            });
        }
        let repo = Self {
            dir,
            keys_dir: opts.keys_dir.clone(),
            expiries: opts.expiries,
            clock,
        };
        let now = repo.clock.now();
        let mut root = Root::new(1, state::expiry(now, opts.expiries.root)?, true);
        let mut root_keys = Vec::new();
        let roles = [
            (RoleType::Root, opts.root),
            (RoleType::Targets, opts.targets),
            (RoleType::Snapshot, opts.snapshot),
            (RoleType::Timestamp, opts.timestamp),
        ];
        // Check every role before creating any key, so a bad option leaves nothing behind.
        for (role, spec) in roles {
            if spec.threshold == 0 || spec.keys < spec.threshold as usize {
                return Err(PublishError::Invalid(format!(
                    "{}: threshold {} needs 1 <= threshold <= keys ({})",
                    role.as_str(),
                    spec.threshold,
                    spec.keys
                )));
            }
        }
        for (role, spec) in roles {
            for _ in 0..spec.keys {
                let key = repo.new_key(role, opts.scheme)?;
                root.add_key(role, key.public())?;
                if role == RoleType::Root {
                    root_keys.push(key);
                }
            }
            if let Some(r) = root.roles.get_mut(role.as_str()) {
                r.threshold = spec.threshold;
            }
        }
        let refs: Vec<_> = root_keys.iter().collect();
        let root_bytes = sign_envelope(&root, &refs).map_err(meta("1.root.json"))?;
        state::write_root_bytes(&repo.dir, 1, &root_bytes)?;
        let targets_dir = repo.targets_dir();
        crate::fsutil::ensure_dir(&targets_dir, 0o755).map_err(io(targets_dir.display()))?;
        let mut st = State {
            root,
            root_bytes,
            targets: Targets::new(0, now),
            snapshot: Snapshot::new(0, now),
            timestamp: TimestampMeta::new(0, now, crate::trust::metadata::MetaFile::version(0)),
        };
        repo.publisher(now).targets(&mut st)?;
        tracing::info!(dir = %repo.dir.display(), "repository initialized");
        Ok(repo)
    }

    /// Open an existing repository.
    pub fn open(
        dir: impl Into<PathBuf>,
        keys_dir: impl Into<PathBuf>,
    ) -> Result<Self, PublishError> {
        let dir = dir.into();
        if !state::metadata_dir(&dir).join("root.json").exists() {
            return Err(PublishError::NotInitialized {
                dir: dir.display().to_string(),
            });
        }
        Ok(Self {
            dir,
            keys_dir: keys_dir.into(),
            expiries: Expiries::default(),
            clock: Arc::new(SystemClock),
        })
    }

    pub fn with_expiries(mut self, e: Expiries) -> Self {
        self.expiries = e;
        self
    }

    /// Use another clock for publish times and expiries (tests, the demo).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn keys_dir(&self) -> &Path {
        &self.keys_dir
    }
    pub fn metadata_dir(&self) -> PathBuf {
        state::metadata_dir(&self.dir)
    }
    pub fn targets_dir(&self) -> PathBuf {
        self.dir.join("targets")
    }

    /// The current root metadata bytes (what a device image ships as its trusted root).
    pub fn root_bytes(&self) -> Result<Vec<u8>, PublishError> {
        let p = self.metadata_dir().join("root.json");
        std::fs::read(&p).map_err(io(p.display()))
    }

    pub(crate) fn publisher(&self, now: Timestamp) -> Publish<'_> {
        Publish {
            repo: &self.dir,
            keys_dir: &self.keys_dir,
            now,
            expiries: &self.expiries,
        }
    }

    pub(crate) fn new_key(
        &self,
        role: RoleType,
        scheme: KeyScheme,
    ) -> Result<SigningKey, PublishError> {
        // Name keys by role and a random suffix; the key id inside decides what it signs.
        let suffix: u32 = rand::random();
        keystore::generate(
            &self.keys_dir,
            &format!("{}-{suffix:08x}", role.as_str()),
            scheme,
        )
    }

    /// Publish a release: place its images as targets, write its manifest, re-sign
    /// targets, snapshot and timestamp. Returns the manifest written.
    pub fn add_release(&self, rel: &AddRelease) -> Result<Manifest, PublishError> {
        self.add_release_with(rel, &super::DeltaOptions::default())
    }

    /// [`Repo::add_release`] plus static deltas from earlier releases and chunk indexes
    /// for dynamic deltas (docs/delta.md).
    pub fn add_release_with(
        &self,
        rel: &AddRelease,
        deltas: &super::DeltaOptions,
    ) -> Result<Manifest, PublishError> {
        self.add_release_to(rel, deltas, None)
    }

    /// [`Repo::add_release_with`] into delegated role `role` (signed with the role's
    /// keys instead of the targets keys; snapshot and timestamp keys are still needed).
    /// Every file of the release must lie inside the role's delegated paths.
    pub fn add_release_to(
        &self,
        rel: &AddRelease,
        deltas: &super::DeltaOptions,
        role: Option<&super::RoleSigner>,
    ) -> Result<Manifest, PublishError> {
        let _lock = state::lock(&self.dir)?;
        let mut st = state::load(&self.dir)?;
        let mpath = release_target_path(&rel.product, &rel.version);
        if st.targets.targets.contains_key(&mpath) {
            return Err(PublishError::ReleaseExists {
                release: format!("{}/{}", rel.product, rel.version),
            });
        }
        let Some(signer) = role else {
            let m = self.build_release(&mut st, rel, deltas)?;
            self.publisher(self.clock.now()).targets(&mut st)?;
            tracing::info!(product = %rel.product, version = %rel.version, "release published");
            return Ok(m);
        };
        let delegation = super::delegate::delegated_role(&st, &signer.name)?.clone();
        // Before any image is compressed: the manifest path decides the common case.
        let outside = super::delegate::outside_paths(&delegation, std::slice::from_ref(&mpath));
        if !outside.is_empty() {
            return Err(outside_error(&delegation, &outside));
        }
        let keys = super::delegate::role_signers(&delegation, signer)?;
        let mut role_targets = super::delegate::load_role(self, &st, &signer.name)?;
        // The release is built against the role's targets (earlier releases for deltas
        // live there too), then the top-level targets are put back untouched.
        std::mem::swap(&mut st.targets, &mut role_targets);
        let built = self.build_release(&mut st, rel, deltas);
        std::mem::swap(&mut st.targets, &mut role_targets);
        let m = built?;
        let new: Vec<String> = role_targets.targets.keys().cloned().collect();
        let outside = super::delegate::outside_paths(&delegation, &new);
        if !outside.is_empty() {
            return Err(outside_error(&delegation, &outside));
        }
        super::delegate::publish_role(self, &mut st, &signer.name, role_targets, &keys)?;
        tracing::info!(product = %rel.product, version = %rel.version, role = %signer.name, "release published");
        Ok(m)
    }

    /// Place a release's files and write its manifest into `st.targets` (not signed).
    fn build_release(
        &self,
        st: &mut State,
        rel: &AddRelease,
        deltas: &super::DeltaOptions,
    ) -> Result<Manifest, PublishError> {
        let mpath = release_target_path(&rel.product, &rel.version);
        if st.targets.targets.contains_key(&mpath) {
            return Err(PublishError::ReleaseExists {
                release: format!("{}/{}", rel.product, rel.version),
            });
        }
        crate::manifest::check_name("product", &rel.product)?;
        let now = self.clock.now();
        let mut images = Vec::new();
        for img in &rel.images {
            crate::manifest::check_name("component", &img.component)?;
            crate::manifest::check_name("slot_class", &img.slot_class)?;
            let ext = match (img.format, img.compression) {
                (ImageFormat::Raw, Compression::Zstd) => "img.zst",
                (ImageFormat::Raw, Compression::None) => "img",
                (ImageFormat::Tar, Compression::Zstd) => "tar.zst",
                (ImageFormat::Tar, Compression::None) => "tar",
            };
            let target = format!(
                "releases/{}/{}/{}.{}.{ext}",
                rel.product, rel.version, img.component, img.slot_class
            );
            let placed = images::place(&img.file, img.compression, &self.targets_dir(), &target)?;
            tracing::info!(target_path = %target, size = placed.uncompressed_size, stored = placed.stored_len, "image placed");
            st.targets
                .targets
                .insert(target.clone(), placed.target_file());
            let extras = if img.format == ImageFormat::Raw {
                super::delta::image_extras(
                    st,
                    &self.targets_dir(),
                    &rel.product,
                    &rel.version,
                    &img.component,
                    &img.slot_class,
                    &img.file,
                    deltas,
                )?
            } else {
                Default::default()
            };
            st.targets.targets.extend(extras.targets);
            images.push(Image {
                component: img.component.clone(),
                slot_class: img.slot_class.clone(),
                target,
                format: img.format,
                compression: img.compression,
                size: placed.uncompressed_size,
                sha256: placed.uncompressed_sha256,
                deltas: extras.deltas,
                chunks: extras.chunks,
            });
        }
        let mut components = Vec::new();
        for c in &rel.components {
            let (entry, target, file) =
                super::components::place(c, &rel.product, &rel.version, &self.targets_dir())?;
            tracing::info!(target_path = %target, size = entry.size, "component placed");
            st.targets.targets.insert(target, file);
            components.push(entry);
        }
        let published = rel.published.unwrap_or(now);
        let manifest = Manifest {
            schema_version: crate::manifest::schema_for(&components),
            product: rel.product.clone(),
            hardware: rel.hardware.clone(),
            version: rel.version.clone(),
            security_version: rel.security_version,
            kind: rel.kind,
            severity: rel.severity,
            cves: rel.cves.clone(),
            summary: rel.summary.clone(),
            notes_url: rel.notes_url.clone(),
            published: Timestamp::from_second(published.as_second()).unwrap_or(published),
            min_version: rel.min_version.clone(),
            images,
            components,
            rollout: rel.rollout.clone(),
            channels: rel.channels.clone(),
            withdrawn: false,
        };
        self.put_manifest(st, &manifest)?;
        Ok(manifest)
    }

    /// Publish arbitrary bytes as target `path` with an optional `custom` object, and
    /// re-sign. For extra files next to releases (and for tests that need a signed but
    /// hostile manifest); releases themselves go through [`Repo::add_release`].
    pub fn add_target_bytes(
        &self,
        path: &str,
        bytes: &[u8],
        custom: Option<serde_json::Value>,
    ) -> Result<(), PublishError> {
        crate::manifest::check_target_path("target", path)?;
        let _lock = state::lock(&self.dir)?;
        let mut st = state::load(&self.dir)?;
        let hashes = hashes_of(bytes);
        let sha256 = hashes.get("sha256").cloned().unwrap_or_default();
        images::place_bytes(bytes, &self.targets_dir(), path, &sha256)?;
        st.targets.targets.insert(
            path.to_string(),
            TargetFile {
                length: bytes.len() as u64,
                hashes: BTreeMap::from([("sha256".to_string(), sha256)]),
                custom,
                extra: Default::default(),
            },
        );
        self.publisher(self.clock.now()).targets(&mut st)
    }

    /// Write `m` as a target with its summary in `custom` (into `st`, not yet signed).
    fn put_manifest(&self, st: &mut State, m: &Manifest) -> Result<(), PublishError> {
        let bytes = m.to_vec()?;
        let hashes = hashes_of(&bytes);
        let sha256 = hashes.get("sha256").cloned().unwrap_or_default();
        let path = m.target_path();
        images::place_bytes(&bytes, &self.targets_dir(), &path, &sha256)?;
        // A pause or promote keeps the guard's rollout gate beside the new summary.
        let gate = st
            .targets
            .targets
            .get(&path)
            .and_then(|tf| RolloutGate::from_custom(tf.custom.as_ref()).ok().flatten());
        let mut custom = ReleaseSummary::of(m).to_custom();
        if let Some(g) = gate {
            g.put_into(&mut custom);
        }
        st.targets.targets.insert(
            path,
            TargetFile {
                length: bytes.len() as u64,
                hashes: BTreeMap::from([("sha256".to_string(), sha256)]),
                custom: Some(custom),
                extra: Default::default(),
            },
        );
        Ok(())
    }

    /// The published manifest of `product`/`version` (read back and checked against
    /// the signed targets entry).
    pub fn manifest(&self, product: &str, version: &Version) -> Result<Manifest, PublishError> {
        let st = state::load(&self.dir)?;
        self.manifest_in(&st, product, version)
    }

    pub(crate) fn manifest_in(
        &self,
        st: &State,
        product: &str,
        version: &Version,
    ) -> Result<Manifest, PublishError> {
        let path = release_target_path(product, version);
        let tf = st
            .targets
            .targets
            .get(&path)
            .ok_or_else(|| PublishError::ReleaseNotFound {
                release: format!("{product}/{version}"),
            })?;
        let sha = tf.hashes.get("sha256").cloned().unwrap_or_default();
        let (dir, base) = path.rsplit_once('/').unwrap_or(("", &path));
        let file = self.targets_dir().join(dir).join(format!("{sha}.{base}"));
        let bytes = std::fs::read(&file).map_err(io(file.display()))?;
        if hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)) != sha {
            return Err(PublishError::Invalid(format!(
                "{}: content does not match its signed hash",
                file.display()
            )));
        }
        Ok(Manifest::from_slice(&bytes)?)
    }

    /// Change a published release's manifest with `f` and re-sign.
    fn update_release(
        &self,
        product: &str,
        version: &Version,
        what: &str,
        f: impl FnOnce(&mut Manifest),
    ) -> Result<Manifest, PublishError> {
        let _lock = state::lock(&self.dir)?;
        let mut st = state::load(&self.dir)?;
        let mut m = self.manifest_in(&st, product, version)?;
        f(&mut m);
        self.put_manifest(&mut st, &m)?;
        self.publisher(self.clock.now()).targets(&mut st)?;
        tracing::info!(%product, %version, change = what, "release updated");
        Ok(m)
    }

    /// Offer a release on `channel` too (e.g. from `staging` to `stable`).
    pub fn promote(
        &self,
        product: &str,
        version: &Version,
        channel: &str,
    ) -> Result<Manifest, PublishError> {
        crate::manifest::check_name("channel", channel)?;
        self.update_release(product, version, "promote", |m| {
            if !m.channels.iter().any(|c| c == channel) {
                m.channels.push(channel.to_string());
            }
        })
    }

    pub fn pause(&self, product: &str, version: &Version) -> Result<Manifest, PublishError> {
        self.update_release(product, version, "pause", |m| m.rollout.paused = true)
    }

    pub fn resume(&self, product: &str, version: &Version) -> Result<Manifest, PublishError> {
        self.update_release(product, version, "resume", |m| m.rollout.paused = false)
    }

    /// Withdraw a release: devices stop considering it. Its files stay, so devices in
    /// the middle of a download fail on the manifest check rather than a missing file.
    pub fn withdraw(&self, product: &str, version: &Version) -> Result<Manifest, PublishError> {
        self.update_release(product, version, "withdraw", |m| m.withdrawn = true)
    }

    /// Summaries of every release, as devices see them.
    pub fn releases(&self) -> Result<Vec<ReleaseSummary>, PublishError> {
        let st = state::load(&self.dir)?;
        let mut out = Vec::new();
        let mut roles = vec![st.targets.clone()];
        for name in st.snapshot.meta.keys() {
            if let Some(role) = name.strip_suffix(".json").filter(|r| *r != "targets") {
                roles.push(super::delegate::load_role(self, &st, role)?);
            }
        }
        for tf in roles.iter().flat_map(|r| r.targets.values()) {
            if let Some(s) = ReleaseSummary::from_custom(tf.custom.as_ref())? {
                out.push(s);
            }
        }
        out.sort_by(|a, b| (&a.product, &a.version).cmp(&(&b.product, &b.version)));
        Ok(out)
    }

    /// Re-sign snapshot and timestamp with fresh expiries (run from a timer).
    pub fn refresh(&self) -> Result<(), PublishError> {
        let _lock = state::lock(&self.dir)?;
        let mut st = state::load(&self.dir)?;
        self.publisher(self.clock.now()).snapshot(&mut st)?;
        tracing::info!(
            snapshot = st.snapshot.common.version,
            timestamp = st.timestamp.common.version,
            "snapshot and timestamp re-signed"
        );
        Ok(())
    }

    /// Re-sign what expires within `within` from now: snapshot and timestamp when the
    /// snapshot does (the timestamp names the snapshot), else the timestamp alone when it
    /// does, else nothing. `timestamp_only` looks at the timestamp alone. For a timer: it
    /// is safe to run as often as wanted. Roles it cannot re-sign (targets, root) are
    /// reported when they expire within `within` too.
    pub fn refresh_if_expiring(
        &self,
        within: std::time::Duration,
        timestamp_only: bool,
    ) -> Result<RefreshReport, PublishError> {
        let now = self.clock.now();
        let horizon = now
            .checked_add(
                jiff::SignedDuration::try_from(within).unwrap_or(jiff::SignedDuration::MAX),
            )
            .unwrap_or(Timestamp::MAX);
        let st = {
            let _lock = state::lock(&self.dir)?;
            state::load(&self.dir)?
        };
        let expires = [
            ("root", st.root.common.expires),
            ("targets", st.targets.common.expires),
            ("snapshot", st.snapshot.common.expires),
            ("timestamp", st.timestamp.common.expires),
        ];
        let soon = |t: Timestamp| t <= horizon;
        let resigned: Vec<&'static str> = if !timestamp_only && soon(st.snapshot.common.expires) {
            self.refresh()?;
            vec!["snapshot", "timestamp"]
        } else if soon(st.timestamp.common.expires) {
            self.refresh_timestamp()?;
            vec!["timestamp"]
        } else {
            Vec::new()
        };
        let needs_keys = expires
            .iter()
            .filter(|(role, t)| matches!(*role, "root" | "targets") && soon(*t))
            .map(|(role, t)| (role.to_string(), *t))
            .collect();
        let after = if resigned.is_empty() {
            st
        } else {
            state::load(&self.dir)?
        };
        Ok(RefreshReport {
            resigned: resigned.into_iter().map(str::to_owned).collect(),
            expires: vec![
                ("root".into(), after.root.common.expires),
                ("targets".into(), after.targets.common.expires),
                ("snapshot".into(), after.snapshot.common.expires),
                ("timestamp".into(), after.timestamp.common.expires),
            ],
            needs_keys,
        })
    }

    /// Re-sign only the timestamp (cheapest; enough when snapshot is far from expiry).
    pub fn refresh_timestamp(&self) -> Result<(), PublishError> {
        let _lock = state::lock(&self.dir)?;
        let mut st = state::load(&self.dir)?;
        self.publisher(self.clock.now()).timestamp(&mut st)
    }

    pub(crate) fn load_state(&self) -> Result<State, PublishError> {
        state::load(&self.dir)
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub(crate) fn expiries(&self) -> &Expiries {
        &self.expiries
    }
}

fn outside_error(role: &crate::trust::metadata::DelegatedRole, outside: &[&str]) -> PublishError {
    PublishError::Invalid(format!(
        "role {:?} is delegated only {} and may not sign {}",
        role.name,
        role.paths.as_deref().unwrap_or_default().join(", "),
        outside.join(", ")
    ))
}

/// What [`Repo::refresh_if_expiring`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshReport {
    /// Roles re-signed (empty: nothing expired within the window).
    pub resigned: Vec<String>,
    /// Every role's expiry after the refresh.
    pub expires: Vec<(String, Timestamp)>,
    /// Roles that expire within the window but need other keys (`targets`: any command
    /// that re-signs targets, e.g. `add`; `root`: `root export` with the root keys).
    pub needs_keys: Vec<(String, Timestamp)>,
}
