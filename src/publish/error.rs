use crate::manifest::ManifestError;
use crate::trust::keys::KeyError;
use crate::trust::metadata::MetadataError;
use crate::trust::TrustError;

/// Everything the publisher can fail at, naming the file, role or release.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key: {0}")]
    Key(#[from] KeyError),
    #[error("{file}: {source}")]
    Metadata {
        file: String,
        #[source]
        source: MetadataError,
    },
    #[error("release manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error("{role}: {have} signing key(s) in {keys_dir}, threshold is {threshold}")]
    MissingKeys {
        role: String,
        have: usize,
        threshold: u64,
        keys_dir: String,
    },
    #[error("{dir} already holds a repository (metadata/root.json exists)")]
    AlreadyInitialized { dir: String },
    #[error("no repository in {dir} (metadata/root.json missing): run `patchpub init`")]
    NotInitialized { dir: String },
    #[error("release {release} not found in targets metadata")]
    ReleaseNotFound { release: String },
    #[error("release {release} already exists; publish a new version instead")]
    ReleaseExists { release: String },
    #[error("invalid release name {release:?}: expected PRODUCT/VERSION")]
    BadReleaseName { release: String },
    #[error("{0}")]
    Invalid(String),
    #[error("new root version {version}: {which} root keys: {source}")]
    RootNotSigned {
        version: u64,
        which: &'static str,
        #[source]
        source: MetadataError,
    },
    #[error("repository check failed: {0}")]
    Verify(#[from] TrustError),
    #[error("repository check failed: {0}")]
    Discovery(#[from] crate::manifest::DiscoveryError),
    #[error("delta: {0}")]
    Delta(#[from] crate::delta::DeltaError),
}

pub(crate) fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> PublishError {
    let what = what.to_string();
    move |source| PublishError::Io { what, source }
}

pub(crate) fn meta(file: impl std::fmt::Display) -> impl FnOnce(MetadataError) -> PublishError {
    let file = file.to_string();
    move |source| PublishError::Metadata { file, source }
}
