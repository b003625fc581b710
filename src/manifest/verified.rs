//! [`VerifiedManifest`]: a manifest whose bytes matched a TUF-verified target.

use sha2::Digest;

use super::parse::ManifestError;
use super::summary::ReleaseSummary;
use super::types::Manifest;
use crate::trust::VerifiedTarget;

/// A release manifest that (1) hashed to what the signed targets metadata says, (2)
/// parsed strictly, (3) sits at its own release path, and (4) agrees with the release
/// summary signed in the target's `custom` field. Only [`VerifiedManifest::verify`]
/// builds one, so code that installs a release can demand this type.
#[derive(Debug, Clone)]
pub struct VerifiedManifest {
    manifest: Manifest,
    target: VerifiedTarget,
}

impl VerifiedManifest {
    /// Verify, then parse: `bytes` are checked against `target`'s signed length and every
    /// signed hash before a single byte is interpreted.
    pub fn verify(target: &VerifiedTarget, bytes: &[u8]) -> Result<Self, ManifestError> {
        let path = target.path().to_string();
        let found = bytes.len() as u64;
        if found != target.length() {
            return Err(ManifestError::LengthMismatch {
                path,
                found,
                expected: target.length(),
            });
        }
        if target.hashes().is_empty() {
            return Err(ManifestError::NoHash { path });
        }
        for (alg, want) in target.hashes() {
            let got = match alg.as_str() {
                "sha256" => hex::encode(sha2::Sha256::digest(bytes)),
                "sha512" => hex::encode(sha2::Sha512::digest(bytes)),
                _ => {
                    return Err(ManifestError::UnknownHashAlgorithm {
                        path,
                        algorithm: alg.clone(),
                    })
                }
            };
            if !got.eq_ignore_ascii_case(want) {
                return Err(ManifestError::HashMismatch {
                    path,
                    algorithm: alg.clone(),
                });
            }
        }
        let manifest = Manifest::from_slice(bytes)?;
        let expected = manifest.target_path();
        if expected != path {
            return Err(ManifestError::PathMismatch { path, expected });
        }
        Self::with_target(manifest, target)
    }

    /// This manifest under a newer trusted listing of the same target, without fetching
    /// it again: `None` when the signed path, length or hashes changed (the bytes this
    /// manifest was verified as are no longer the ones vouched for; fetch them anew).
    /// The signed summary beside it may have changed (a pause, a rollout gate) and is
    /// checked against the manifest again.
    pub fn reverify(&self, target: &VerifiedTarget) -> Option<Result<Self, ManifestError>> {
        let same = target.path() == self.target.path()
            && target.length() == self.target.length()
            && target.hashes() == self.target.hashes();
        same.then(|| Self::with_target(self.manifest.clone(), target))
    }

    fn with_target(manifest: Manifest, target: &VerifiedTarget) -> Result<Self, ManifestError> {
        if let Some(summary) = ReleaseSummary::from_custom(Some(target.custom()))? {
            let fields = summary.mismatches(&manifest);
            if !fields.is_empty() {
                let path = target.path().to_string();
                return Err(ManifestError::SummaryMismatch { path, fields });
            }
        }
        Ok(Self {
            manifest,
            target: target.clone(),
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The TUF target the manifest came from.
    pub fn target(&self) -> &VerifiedTarget {
        &self.target
    }
}

impl std::ops::Deref for VerifiedManifest {
    type Target = Manifest;
    fn deref(&self) -> &Manifest {
        &self.manifest
    }
}
