//! Delta targets of a new release (docs/delta.md): a static delta from each listed
//! earlier release's image, and the chunk index + chunk store of the new image. Kept
//! apart from the image placement so the compression step can change independently.

use std::path::{Path, PathBuf};

use semver::Version;

use super::error::{io, PublishError};
use super::images;
use super::state::State;
use crate::delta::{self, EncodeOptions, DYNAMIC_CDC};
use crate::manifest::{
    release_target_path, ChunksRef, Compression, DeltaRef, ImageFormat, Manifest,
};
use crate::trust::metadata::TargetFile;

/// What to publish besides the images. `Default` publishes nothing extra (the library's
/// [`Repo::add_release`](super::Repo::add_release)); [`DeltaOptions::publisher_default`]
/// is what `patchpub add` does without options.
#[derive(Debug, Clone)]
pub struct DeltaOptions {
    /// Earlier versions of the same product to make static deltas from.
    pub from: Vec<Version>,
    /// Publish a chunk index and chunk store per raw image (dynamic deltas).
    pub chunk_index: bool,
    /// zstd level of delta pieces and chunk frames.
    pub level: i32,
}

impl Default for DeltaOptions {
    fn default() -> Self {
        Self {
            from: Vec::new(),
            chunk_index: false,
            level: delta::DEFAULT_LEVEL,
        }
    }
}

impl DeltaOptions {
    /// `patchpub add`'s defaults: the chunk index on (any device with a verified image
    /// can then update by dynamic delta), [`delta::DEFAULT_LEVEL`]. Encoding runs on
    /// every core; docs/delta.md has its cost per image size.
    pub fn publisher_default() -> Self {
        Self {
            chunk_index: true,
            ..Self::default()
        }
    }
}

/// The delta-related fields of one image entry, and the targets to sign for them.
#[derive(Default)]
pub(crate) struct Extras {
    pub deltas: Vec<DeltaRef>,
    pub chunks: Option<ChunksRef>,
    pub targets: Vec<(String, TargetFile)>,
}

fn stored_path(targets_dir: &Path, target: &str, tf: &TargetFile) -> Result<PathBuf, PublishError> {
    let sha = tf
        .hashes
        .get("sha256")
        .ok_or_else(|| PublishError::Invalid(format!("target {target} has no sha256")))?;
    let (dir, base) = target
        .rsplit_once('/')
        .ok_or_else(|| PublishError::Invalid(format!("target path {target:?} has no directory")))?;
    Ok(targets_dir.join(dir).join(format!("{sha}.{base}")))
}

fn place(
    file: &Path,
    targets_dir: &Path,
    target: String,
    out: &mut Vec<(String, TargetFile)>,
) -> Result<String, PublishError> {
    let placed = images::place(file, Compression::None, targets_dir, &target)?;
    out.push((target.clone(), placed.target_file()));
    Ok(target)
}

/// The uncompressed image of `component`/`slot_class` in release `product`/`version`,
/// written to a temporary file in `tmp`.
fn old_image(
    st: &State,
    targets_dir: &Path,
    product: &str,
    version: &Version,
    component: &str,
    slot_class: &str,
    tmp: &Path,
) -> Result<(tempfile::NamedTempFile, String), PublishError> {
    let release = format!("{product}/{version}");
    let mpath = release_target_path(product, version);
    let mtf = st
        .targets
        .targets
        .get(&mpath)
        .ok_or_else(|| PublishError::ReleaseNotFound {
            release: release.clone(),
        })?;
    let mfile = stored_path(targets_dir, &mpath, mtf)?;
    let bytes = std::fs::read(&mfile).map_err(io(mfile.display()))?;
    let m = Manifest::from_slice(&bytes)?;
    let img = m
        .images
        .iter()
        .find(|i| {
            i.component == component && i.slot_class == slot_class && i.format == ImageFormat::Raw
        })
        .ok_or_else(|| {
            PublishError::Invalid(format!(
                "release {release} has no raw {component}/{slot_class} image"
            ))
        })?;
    let itf = st
        .targets
        .targets
        .get(&img.target)
        .ok_or_else(|| PublishError::Invalid(format!("target {} is not signed", img.target)))?;
    let ifile = stored_path(targets_dir, &img.target, itf)?;
    let src = std::fs::File::open(&ifile).map_err(io(ifile.display()))?;
    let mut out = tempfile::NamedTempFile::new_in(tmp).map_err(io(tmp.display()))?;
    match img.compression {
        Compression::Zstd => {
            let mut dec = zstd::stream::read::Decoder::new(src).map_err(io(ifile.display()))?;
            dec.window_log_max(31).map_err(io(ifile.display()))?;
            std::io::copy(&mut dec, out.as_file_mut()).map_err(io(ifile.display()))?;
        }
        Compression::None => {
            std::io::copy(&mut &src, out.as_file_mut()).map_err(io(ifile.display()))?;
        }
    }
    Ok((out, img.sha256.clone()))
}

/// Build the delta targets for a new raw image `file` (already placed as the image).
#[allow(clippy::too_many_arguments)]
pub(crate) fn image_extras(
    st: &State,
    targets_dir: &Path,
    product: &str,
    version: &Version,
    component: &str,
    slot_class: &str,
    file: &Path,
    opts: &DeltaOptions,
) -> Result<Extras, PublishError> {
    let mut ex = Extras::default();
    if opts.from.is_empty() && !opts.chunk_index {
        return Ok(ex);
    }
    let dir = format!("releases/{product}/{version}");
    // Next to the served tree, not inside it (and not in a possibly small /tmp).
    let work_dir = targets_dir.parent().unwrap_or(targets_dir);
    let work = tempfile::tempdir_in(work_dir).map_err(io(work_dir.display()))?;
    for from in &opts.from {
        let (old, from_sha256) = old_image(
            st,
            targets_dir,
            product,
            from,
            component,
            slot_class,
            work.path(),
        )?;
        let out = work.path().join("delta");
        let eo = EncodeOptions {
            level: opts.level,
            ..EncodeOptions::default()
        };
        let stats = delta::encode_static(old.path(), file, &out, &eo)?;
        tracing::info!(from = %from, pieces = stats.pieces, copies = stats.copies, with_base = stats.with_base, plain = stats.plain, len = stats.len, "static delta");
        let target = place(
            &out,
            targets_dir,
            format!("{dir}/{component}.{slot_class}.from-{from}.delta"),
            &mut ex.targets,
        )?;
        ex.deltas.push(DeltaRef {
            from_version: from.to_string(),
            from_sha256,
            target,
        });
    }
    if opts.chunk_index {
        let store = work.path().join("store");
        let index = delta::build_chunk_store(file, &store, DYNAMIC_CDC, opts.level)?;
        let idx = work.path().join("index");
        std::fs::write(&idx, index.encode()).map_err(io(idx.display()))?;
        tracing::info!(
            chunks = index.chunks.len(),
            store = index.store_size,
            "chunk index"
        );
        let index_t = place(
            &idx,
            targets_dir,
            format!("{dir}/{component}.{slot_class}.chunks.idx"),
            &mut ex.targets,
        )?;
        let store_t = place(
            &store,
            targets_dir,
            format!("{dir}/{component}.{slot_class}.chunks.store"),
            &mut ex.targets,
        )?;
        ex.chunks = Some(ChunksRef {
            index: index_t,
            store: store_t,
        });
    }
    Ok(ex)
}
