//! Signing the rollout gate of a guarded release into the targets metadata (see
//! `manifest::RolloutGate` for why it lives there), and reading a release's rollout as
//! the publisher sees it.

use jiff::Timestamp;
use semver::Version;

use super::error::PublishError;
use super::repo::Repo;
use super::state;
use crate::manifest::{release_target_path, Manifest, RolloutGate};

/// A release's rollout as the signed metadata states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutView {
    pub manifest: Manifest,
    /// The gate signed beside the manifest's target (`None`: none).
    pub gate: Option<RolloutGate>,
}

impl RolloutView {
    /// When stage `i` opens by its own schedule (`published + after_secs`).
    pub fn stage_opens(&self, i: usize) -> Option<Timestamp> {
        let s = self.manifest.rollout.stages.get(i)?;
        let secs = i64::try_from(s.after_secs).unwrap_or(i64::MAX);
        Some(
            self.manifest
                .published
                .checked_add(jiff::SignedDuration::from_secs(secs))
                .unwrap_or(Timestamp::MAX),
        )
    }

    /// Stages the release has (a release without stages counts as one).
    pub fn stage_count(&self) -> usize {
        self.manifest.rollout.stages.len().max(1)
    }
}

impl Repo {
    /// The manifest and gate of `product`/`version`.
    pub fn rollout(&self, product: &str, version: &Version) -> Result<RolloutView, PublishError> {
        let st = state::load(self.dir())?;
        let manifest = self.manifest_in(&st, product, version)?;
        let tf = st
            .targets
            .targets
            .get(&release_target_path(product, version));
        let gate = RolloutGate::from_custom(tf.and_then(|t| t.custom.as_ref()))?;
        Ok(RolloutView { manifest, gate })
    }

    /// Sign `gate` beside the release's manifest target and re-sign targets, snapshot
    /// and timestamp; the manifest file stays as it is. Refused for a release whose
    /// manifest does not declare the rollout guarded (devices would ignore the gate).
    pub fn set_gate(
        &self,
        product: &str,
        version: &Version,
        gate: RolloutGate,
    ) -> Result<(), PublishError> {
        let _lock = state::lock(self.dir())?;
        let mut st = state::load(self.dir())?;
        let m = self.manifest_in(&st, product, version)?;
        if !m.rollout.guarded {
            return Err(PublishError::Invalid(format!(
                "release {product}/{version} is not guarded (publish it with `patchpub add --guarded`): devices would ignore a gate"
            )));
        }
        let stages = m.rollout.stages.len().max(1);
        if gate.open_to >= stages {
            return Err(PublishError::Invalid(format!(
                "release {product}/{version} has {stages} rollout stage(s) (0 to {}); cannot open stage {}",
                stages - 1,
                gate.open_to
            )));
        }
        let path = release_target_path(product, version);
        let tf =
            st.targets
                .targets
                .get_mut(&path)
                .ok_or_else(|| PublishError::ReleaseNotFound {
                    release: format!("{product}/{version}"),
                })?;
        let mut custom = tf.custom.take().unwrap_or(serde_json::Value::Null);
        gate.put_into(&mut custom);
        tf.custom = Some(custom);
        self.publisher(self.now()).targets(&mut st)?;
        tracing::info!(%product, %version, open_to = gate.open_to, expires = %gate.expires, "rollout gate signed");
        Ok(())
    }
}
