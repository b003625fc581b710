//! Finding the newest release for a device: rank every release from the signed targets
//! metadata, top-level and delegated roles (the summary in each manifest target's
//! `custom` field), then download and verify the one manifest of the newest eligible
//! release.

use semver::Version;

use super::eligibility::{self, DeviceProfile, Ineligible};
use super::parse::ManifestError;
use super::summary::ReleaseSummary;
use super::types::{parse_release_target_path, Kind, Severity};
use super::verified::VerifiedManifest;
use crate::fetch::ByteSource;
use crate::trust::metadata::{DelegatedRole, Targets};
use crate::trust::pattern::path_matches;
use crate::trust::{TrustError, TufClient};

/// One release the repository offers, with every manifest-side reason it does not fit
/// this device (empty: eligible).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub target_path: String,
    pub summary: ReleaseSummary,
    pub ineligible: Vec<Ineligible>,
    /// The guard's rollout gate signed beside the summary (`None`: none, or malformed —
    /// both freeze a guarded release).
    pub gate: Option<super::RolloutGate>,
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
    rank(
        targets
            .targets
            .iter()
            .map(|(path, file)| (path.as_str(), file.custom.as_ref())),
        dev,
    )
}

fn rank<'a>(
    listed: impl Iterator<Item = (&'a str, Option<&'a serde_json::Value>)>,
    dev: &DeviceProfile,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (path, custom) in listed {
        let Some((product, version)) = parse_release_target_path(path) else {
            continue;
        };
        let summary = match ReleaseSummary::from_custom(custom) {
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
        let gate = super::RolloutGate::from_custom(custom).unwrap_or_else(|e| {
            tracing::warn!(target_path = %path, error = %e, "malformed rollout gate; treated as none");
            None
        });
        out.push(Candidate {
            target_path: path.to_string(),
            summary,
            ineligible,
            gate,
        });
    }
    out.sort_by(|a, b| b.summary.version.cmp(&a.summary.version));
    out
}

/// A release manifest a delegated role lists but is not trusted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub target_path: String,
    pub role: String,
    pub reason: String,
}

/// Releases found through the whole delegation graph.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// As [`candidates`]: the device's product only, newest first.
    pub candidates: Vec<Candidate>,
    /// Release manifests listed by roles that may not sign them (each also logged).
    pub refused: Vec<Refused>,
}

/// Whether a delegation may cover release manifests (`releases/PRODUCT/V/manifest.json`)
/// of any product: a path pattern of four segments whose first and last fit, or hash
/// prefixes (which cannot be judged without a path). Roles for other products are
/// read too, so that one signing this product's releases outside its paths is named.
fn may_hold_releases(role: &DelegatedRole) -> bool {
    if role.path_hash_prefixes.is_some() {
        return true;
    }
    let fits = |pattern: &str| {
        let seg: Vec<&str> = pattern.split('/').collect();
        seg.len() == 4 && path_matches(seg[0], "releases") && path_matches(seg[3], "manifest.json")
    };
    role.paths.iter().flatten().any(|p| fits(p))
}

/// Rank the releases of `dev`'s product listed by the top-level targets role and by
/// every delegated role that may hold them (a publisher delegating
/// `releases/PRODUCT/*/*` to a team's key). Each release a delegated role lists is
/// resolved through the delegations as a download would be; one the role is not trusted
/// for (outside its delegated paths, or cut off by a terminating delegation before it)
/// is refused with the reason and never offered. Call after a successful refresh.
pub async fn list_candidates(
    client: &mut TufClient,
    metadata: &dyn ByteSource,
    dev: &DeviceProfile,
) -> Result<Listing, DiscoveryError> {
    let product = dev.product.clone();
    let wanted = |p: &str| parse_release_target_path(p).is_some_and(|(prod, _)| prod == product);
    let descend = |r: &DelegatedRole| may_hold_releases(r);
    let found = match client.list_targets(metadata, &wanted, &descend).await {
        Ok(found) => found,
        // Without a successful refresh in this run (a mirror serving a rollback, say)
        // delegated roles cannot be judged: rank what the trusted top-level targets
        // list, as before delegations were read.
        Err(TrustError::NotRefreshed) => {
            let top = client
                .trusted_targets()
                .ok_or(DiscoveryError::NotRefreshed)?;
            return Ok(Listing {
                candidates: candidates(top, dev),
                refused: Vec::new(),
            });
        }
        Err(source) => {
            return Err(DiscoveryError::Trust {
                path: "targets".into(),
                source,
            })
        }
    };
    for (role, e) in &found.unusable {
        tracing::warn!(role = %role, error = %e, "delegated targets role unusable; its releases are not offered");
    }
    let mut refused = Vec::new();
    let mut resolved: Vec<(String, serde_json::Value)> = Vec::new();
    for l in &found.listed {
        if resolved.iter().any(|(p, _)| *p == l.path) {
            continue;
        }
        let refuse = |reason: String| Refused {
            target_path: l.path.clone(),
            role: l.role.clone(),
            reason,
        };
        match client.target(metadata, &l.path).await {
            Ok(t) if t.role() == l.role => resolved.push((l.path.clone(), t.custom().clone())),
            // Another role is trusted for it; its own listing brings it in.
            Ok(_) => {}
            Err(TrustError::TargetNotFound { .. }) if !l.within_paths => refused.push(refuse(
                format!("role {} signs it outside the paths delegated to it", l.role),
            )),
            Err(TrustError::TargetNotFound { .. }) => refused.push(refuse(format!(
                "role {} is not trusted for it: an earlier terminating delegation ends the search",
                l.role
            ))),
            Err(e) => refused.push(refuse(format!("not verifiable: {e}"))),
        }
    }
    for r in &refused {
        tracing::warn!(target_path = %r.target_path, role = %r.role, reason = %r.reason, "release refused");
    }
    let candidates = rank(
        resolved
            .iter()
            .map(|(p, c)| (p.as_str(), Some(c).filter(|c| !c.is_null()))),
        dev,
    );
    Ok(Listing {
        candidates,
        refused,
    })
}

/// Download the manifest at the release target `path` and verify it against the
/// signed targets metadata (verify, then parse).
pub async fn fetch_verified(
    client: &mut TufClient,
    metadata: &dyn ByteSource,
    targets_src: &dyn ByteSource,
    path: &str,
) -> Result<VerifiedManifest, DiscoveryError> {
    fetch_verified_reusing(client, metadata, targets_src, path, None).await
}

/// [`fetch_verified`], reusing `cached` (a manifest verified by an earlier check) when
/// the trusted metadata still vouches for the same bytes: a check that finds nothing new
/// then costs the metadata requests only, not one more download per listed release.
pub async fn fetch_verified_reusing(
    client: &mut TufClient,
    metadata: &dyn ByteSource,
    targets_src: &dyn ByteSource,
    path: &str,
    cached: Option<&VerifiedManifest>,
) -> Result<VerifiedManifest, DiscoveryError> {
    let trust = |source| DiscoveryError::Trust {
        path: path.to_string(),
        source,
    };
    let target = client.target(metadata, path).await.map_err(trust)?;
    if let Some(again) = cached.and_then(|c| c.reverify(&target)) {
        return again.map_err(|source| DiscoveryError::Manifest {
            path: path.to_string(),
            source,
        });
    }
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
    if client.trusted_targets().is_none() {
        return Err(DiscoveryError::NotRefreshed);
    }
    let candidates = list_candidates(client, metadata, dev).await?.candidates;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn role(paths: &[&str]) -> DelegatedRole {
        DelegatedRole {
            name: "team".into(),
            keyids: Vec::new(),
            threshold: 1,
            terminating: false,
            paths: Some(paths.iter().map(|p| p.to_string()).collect()),
            path_hash_prefixes: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn which_delegations_may_hold_release_manifests() {
        assert!(may_hold_releases(&role(&["releases/acme-gw/*/*"])));
        assert!(may_hold_releases(&role(&[
            "docs/*",
            "releases/*/2.*/manifest.json"
        ])));
        // `*` never crosses `/`: one level short holds no manifest.
        assert!(!may_hold_releases(&role(&["releases/acme-gw/*"])));
        assert!(!may_hold_releases(&role(&["files/*/*/*"])));
        assert!(!may_hold_releases(&role(&["releases/acme-gw/*/*.img.zst"])));
        let mut hashed = role(&[]);
        hashed.paths = None;
        hashed.path_hash_prefixes = Some(vec!["ab".into()]);
        assert!(may_hold_releases(&hashed), "hash prefixes cannot be judged");
    }
}
