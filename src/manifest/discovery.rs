//! Finding the newest release for a device: rank every release from the signed targets
//! metadata (the summary in each manifest target's `custom` field), then download and
//! verify the one manifest of the newest eligible release.

use semver::Version;

use super::eligibility::{self, DeviceProfile, Ineligible};
use super::parse::ManifestError;
use super::summary::ReleaseSummary;
use super::types::{parse_release_target_path, Kind, Severity};
use super::verified::VerifiedManifest;
use crate::fetch::ByteSource;
use crate::trust::metadata::Targets;
use crate::trust::{TrustError, TufClient};

/// One release the repository offers, with every manifest-side reason it does not fit
/// this device (empty: eligible).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub target_path: String,
    pub summary: ReleaseSummary,
    pub ineligible: Vec<Ineligible>,
}

impl Candidate {
    pub fn is_eligible(&self) -> bool {
        self.ineligible.is_empty()
    }
    pub fn version(&self) -> &Version {
        &self.summary.version
    }
    pub fn kind(&self) -> Kind {
        self.summary.kind
    }
    pub fn severity(&self) -> Severity {
        self.summary.severity
    }
    pub fn cves(&self) -> &[String] {
        &self.summary.cves
    }
    /// Uncompressed bytes the release writes.
    pub fn size(&self) -> u64 {
        self.summary.size
    }
}

/// What a check found.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// Releases of the device's product, newest first, each with its verdict.
    pub candidates: Vec<Candidate>,
    /// The verified manifest of the newest eligible release, if any.
    pub newest: Option<VerifiedManifest>,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("no trusted targets metadata: refresh first")]
    NotRefreshed,
    #[error("release {path}: {source}")]
    Trust {
        path: String,
        #[source]
        source: TrustError,
    },
    #[error("release {path}: {source}")]
    Manifest {
        path: String,
        #[source]
        source: ManifestError,
    },
}

/// Rank the releases listed in `targets` for `dev`, newest first. Targets that are not
/// release manifests are ignored; release targets whose signed summary is malformed or
/// names another product/version than their path are skipped with a warning.
pub fn candidates(targets: &Targets, dev: &DeviceProfile) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (path, file) in &targets.targets {
        let Some((product, version)) = parse_release_target_path(path) else {
            continue;
        };
        let summary = match ReleaseSummary::from_custom(file.custom.as_ref()) {
            Ok(Some(s)) => s,
            Ok(None) => {
                tracing::warn!(target_path = %path, "release target without a release summary; skipped");
                continue;
            }
            Err(e) => {
                tracing::warn!(target_path = %path, error = %e, "malformed release summary; skipped");
                continue;
            }
        };
        if summary.product != product || summary.version != version {
            tracing::warn!(target_path = %path, "release summary names another release than its path; skipped");
            continue;
        }
        if summary.product != dev.product {
            // Other products are not listed at all: a shared repository may hold many.
            continue;
        }
        let ineligible = eligibility::check(&summary, dev);
        out.push(Candidate {
            target_path: path.clone(),
            summary,
            ineligible,
        });
    }
    out.sort_by(|a, b| b.summary.version.cmp(&a.summary.version));
    out
}

/// Download the manifest at the release target `path` and verify it against the
/// signed targets metadata (verify, then parse).
pub async fn fetch_verified(
    client: &mut TufClient,
    metadata: &dyn ByteSource,
    targets_src: &dyn ByteSource,
    path: &str,
) -> Result<VerifiedManifest, DiscoveryError> {
    let trust = |source| DiscoveryError::Trust {
        path: path.to_string(),
        source,
    };
    let target = client.target(metadata, path).await.map_err(trust)?;
    let bytes = client
        .fetch_target_bytes(targets_src, &target)
        .await
        .map_err(trust)?;
    VerifiedManifest::verify(&target, &bytes).map_err(|source| DiscoveryError::Manifest {
        path: path.to_string(),
        source,
    })
}

/// Find the newest eligible release with one manifest download. Call after a successful
/// [`TufClient::refresh`]; `metadata` serves the repository's metadata directory and
/// `targets_src` its targets directory.
pub async fn discover(
    client: &mut TufClient,
    metadata: &dyn ByteSource,
    targets_src: &dyn ByteSource,
    dev: &DeviceProfile,
) -> Result<Discovery, DiscoveryError> {
    let top = client
        .trusted_targets()
        .ok_or(DiscoveryError::NotRefreshed)?;
    let candidates = candidates(top, dev);
    let Some(best) = candidates.iter().find(|c| c.is_eligible()) else {
        return Ok(Discovery {
            candidates,
            newest: None,
        });
    };
    let path = best.target_path.clone();
    let verified = fetch_verified(client, metadata, targets_src, &path).await?;
    // The summary was cross-checked field by field; re-check the verdict on the
    // manifest itself so a device never acts on the summary alone.
    let again = eligibility::check(&ReleaseSummary::of(verified.manifest()), dev);
    if !again.is_empty() {
        return Err(DiscoveryError::Manifest {
            path,
            source: ManifestError::Field {
                field: "summary".into(),
                why: format!("manifest is not eligible: {}", again[0]),
            },
        });
    }
    Ok(Discovery {
        candidates,
        newest: Some(verified),
    })
}
