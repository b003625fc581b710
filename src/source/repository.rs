//! The engine's [`Updates`] port over the real rooms: the TUF client (`trust`) refreshes
//! the signed metadata, `manifest` ranks the releases and verifies their manifests, and
//! the inactive slot's backend (`slot::SlotBackend`) stages the signed image into itself.
//!
//! Discovery here decides nothing: it lists the product's releases with their signed
//! summaries and verifies the manifests worth having; whether a release fits and when it
//! may go in is the switch decision's (`policy::Policy::decide`).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::engine::ports::{Offered, PortError, Progress, ProgressSink, StageReport, Updates};
use crate::fetch::{BoxFuture, ByteSource};
use crate::manifest::{self, Ineligible, VerifiedManifest};
use crate::names::SlotName;
use crate::policy::{ReleaseFacts, RolloutPlan, RolloutState, Vouched};
use crate::slot::stage::{
    CancelToken, Compression, ImageFormat, ProgressFn, StageOptions, StageRequest,
};
use crate::slot::{SlotBackend, StageJob};
use crate::trust::TufClient;

/// Slot class of the image the A/B slots take.
pub const ROOTFS_CLASS: &str = "rootfs";

pub struct RepoUpdates {
    client: Mutex<TufClient>,
    metadata: Arc<dyn ByteSource>,
    targets: Arc<dyn ByteSource>,
    product: String,
    hardware: Option<String>,
    channel: String,
    /// The configured slots; each stages the rootfs image of the format it takes.
    slots: BTreeMap<SlotName, Arc<dyn SlotBackend>>,
    opts: StageOptions,
    /// Verified manifests from the last discovery, by version.
    manifests: Mutex<BTreeMap<semver::Version, VerifiedManifest>>,
    /// The manifest's target path of each release the last discovery listed.
    listed: Mutex<BTreeMap<semver::Version, String>>,
    /// Where component payloads are staged (`component::staged_dir`); `None`: this
    /// source stages no components (a release with some then fails at the engine).
    component_dir: Option<std::path::PathBuf>,
}

impl RepoUpdates {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: TufClient,
        metadata: Arc<dyn ByteSource>,
        targets: Arc<dyn ByteSource>,
        product: String,
        hardware: Option<String>,
        channel: String,
        slots: Vec<Arc<dyn SlotBackend>>,
        opts: StageOptions,
    ) -> Self {
        Self {
            client: Mutex::new(client),
            metadata,
            targets,
            product,
            hardware,
            channel,
            slots: slots.into_iter().map(|s| (s.name().clone(), s)).collect(),
            opts,
            manifests: Mutex::new(BTreeMap::new()),
            listed: Mutex::new(BTreeMap::new()),
            component_dir: None,
        }
    }

    /// Stage release components' payloads into `dir` (`component::staged_dir`).
    pub fn with_component_dir(mut self, dir: std::path::PathBuf) -> Self {
        self.component_dir = Some(dir);
        self
    }

    /// Whether this source holds the files of release `version` (its manifest and every
    /// image it names) with their signed lengths and hashes — for an offline bundle,
    /// which carries only some of the releases its metadata lists. `Ok(Err(why))`: not
    /// carried (files absent); `Err`: a file is there but is not what was signed.
    pub async fn carried(
        &self,
        version: &semver::Version,
    ) -> Result<Result<(), String>, PortError> {
        let Some(manifest_path) = self.listed.lock().await.get(version).cloned() else {
            return Ok(Err("not listed by the last discovery".into()));
        };
        let mut wanted = vec![manifest_path];
        if let Some(vm) = self.manifests.lock().await.get(version) {
            wanted.extend(vm.manifest().images.iter().map(|i| i.target.clone()));
        }
        let mut client = self.client.lock().await;
        let mut missing = Vec::new();
        for t in wanted {
            let what = format!("target {t}");
            let target = client
                .target(self.metadata.as_ref(), &t)
                .await
                .map_err(|e| PortError::new(&what, e).with_cause("verify"))?;
            let mut sink = tokio::io::sink();
            match client
                .fetch_target_to(self.targets.as_ref(), &target, &mut sink)
                .await
            {
                Ok(()) => {}
                Err(crate::trust::TrustError::Fetch {
                    source: crate::fetch::FetchError::NotFound { .. },
                    ..
                }) => missing.push(t),
                Err(e) => return Err(PortError::new(&what, e).with_cause("verify")),
            }
        }
        Ok(if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("the bundle does not carry {}", missing.join(", ")))
        })
    }

    async fn discover_inner(&self) -> Result<Vec<Offered>, PortError> {
        let mut client = self.client.lock().await;
        client.refresh(self.metadata.as_ref()).await.map_err(|e| {
            let cause = if e.is_slow_retrieval() {
                "slow_retrieval"
            } else {
                "check"
            };
            PortError::new("repository refresh", &e).with_cause(cause)
        })?;
        // Only to pick which manifests to download (the verdict is the decision's):
        // what this device is, not what it runs.
        let dev = manifest::DeviceProfile {
            product: self.product.clone(),
            hardware: self.hardware.clone(),
            channel: self.channel.clone(),
            running_version: None,
            security_floor: 0,
        };
        // Releases come from delegated targets roles too; the ones a role may not sign
        // are refused (and logged) by the listing itself.
        let found = manifest::list_candidates(&mut client, self.metadata.as_ref(), &dev)
            .await
            .map_err(|e| PortError::new("repository", &e).with_cause("check"))?
            .candidates;
        let mut out = Vec::new();
        let earlier = self.manifests.lock().await.clone();
        let mut verified = BTreeMap::new();
        let mut listed = BTreeMap::new();
        for c in found {
            listed.insert(c.summary.version.clone(), c.target_path.clone());
            // Verify the manifest of every release that could fit this device: its
            // rollout plan decides when this device may take it, and staging needs its
            // image list.
            let mut published = None;
            let mut rollout = None;
            let mut manifest_problem = None;
            let mut summary = None;
            let mut components = Vec::new();
            let mut vouched = None;
            if c.ineligible.iter().all(depends_on_running) {
                let cached = earlier.get(&c.summary.version);
                match fetch_manifest(
                    &mut client,
                    &*self.metadata,
                    &*self.targets,
                    &c.target_path,
                    cached,
                )
                .await
                {
                    Ok(vm) => {
                        let m = vm.manifest();
                        published = Some(m.published);
                        summary = Some(m.summary.clone()).filter(|s| !s.is_empty());
                        components = m.components.clone();
                        rollout = Some(rollout_plan(m, c.summary.withdrawn).with_gate(c.gate));
                        vouched = client
                            .valid_until(vm.target().role())
                            .zip(client.refreshed_at())
                            .map(|(until, checked)| Vouched { until, checked });
                        verified.insert(c.summary.version.clone(), vm);
                    }
                    Err(e) => manifest_problem = Some(e.to_string()),
                }
            }
            out.push(Offered {
                facts: ReleaseFacts::new(c.summary, rollout).with_vouched(vouched),
                published,
                manifest_problem,
                summary,
                components,
                packages: Vec::new(),
            });
        }
        *self.manifests.lock().await = verified;
        *self.listed.lock().await = listed;
        Ok(out)
    }

    async fn stage_inner(
        &self,
        version: &semver::Version,
        slot: &SlotName,
        progress: ProgressSink,
    ) -> Result<StageReport, PortError> {
        let report = self.stage_image(version, slot, progress.clone()).await?;
        self.stage_components(version, &progress).await?;
        Ok(report)
    }

    /// Fetch every component payload of `version`, verify it against its TUF target
    /// and the manifest, and keep it under the staging directory for the switch. Each
    /// payload streams to disk (one buffer in memory, whatever its size), with progress.
    async fn stage_components(
        &self,
        version: &semver::Version,
        progress: &ProgressSink,
    ) -> Result<(), PortError> {
        let Some(dir) = &self.component_dir else {
            return Ok(());
        };
        let what = format!("stage components of {version}");
        let vm = self.verified(version, &what).await?;
        let release = version.to_string();
        crate::component::prune_staged(dir, Some(&release));
        let todo: Vec<_> = vm
            .manifest()
            .components
            .iter()
            .filter(|c| crate::component::staged_payload(dir, &release, c).is_err())
            .collect();
        let total: u64 = todo.iter().map(|c| c.size).sum();
        let mut done = 0u64;
        for c in todo {
            let what = format!("{what}: component {}", c.name);
            let target = self.signed_target(&c.target, &what).await?;
            let sha = target
                .sha256()
                .ok_or_else(|| PortError::new(&what, "target has no sha256"))?
                .to_string();
            let mut file = crate::component::PayloadFile::create(dir, &release, c)
                .map_err(|e| PortError::new(&what, e).with_cause("component"))?;
            let started = std::time::Instant::now();
            let before = done;
            crate::fetch::fetch_each(
                self.targets.as_ref(),
                &target.remote_path(),
                target.length(),
                |chunk| {
                    // Small sequential writes to a local file: cheaper inline than a
                    // hop to a blocking thread per chunk.
                    file.write(chunk)?;
                    done = before + file.written();
                    let secs = started.elapsed().as_secs_f64();
                    progress.send_replace(Some(Progress {
                        phase: "components".into(),
                        done,
                        total: Some(total),
                        rate: (secs > 0.0).then(|| (done - before) as f64 / secs),
                    }));
                    Ok::<(), crate::component::ComponentError>(())
                },
            )
            .await
            .map_err(|e| match e {
                crate::fetch::Streamed::Fetch(e) => PortError::new(&what, e).with_cause("download"),
                crate::fetch::Streamed::Sink(e) => PortError::new(&what, e).with_cause("verify"),
            })?;
            file.finish(Some((target.length(), &sha)))
                .map_err(|e| PortError::new(&what, e).with_cause("verify"))?;
        }
        Ok(())
    }

    /// The release as the last check verified it.
    async fn verified(
        &self,
        version: &semver::Version,
        what: &str,
    ) -> Result<VerifiedManifest, PortError> {
        self.manifests
            .lock()
            .await
            .get(version)
            .cloned()
            .ok_or_else(|| PortError::new(what, "release not verified by the last check"))
    }

    /// The signed description (length, hashes) of target `name`.
    async fn signed_target(
        &self,
        name: &str,
        what: &str,
    ) -> Result<crate::trust::VerifiedTarget, PortError> {
        let mut client = self.client.lock().await;
        client
            .target(self.metadata.as_ref(), name)
            .await
            .map_err(|e| PortError::new(what, e))
    }

    async fn stage_image(
        &self,
        version: &semver::Version,
        slot: &SlotName,
        progress: ProgressSink,
    ) -> Result<StageReport, PortError> {
        let what = format!("stage {version} into slot {slot}");
        let vm = self.verified(version, &what).await?;
        let m = vm.manifest();
        let backend = self
            .slots
            .get(slot)
            .cloned()
            .ok_or_else(|| PortError::new(&what, "slot not configured"))?;
        let (format, format_name) = match backend.takes() {
            ImageFormat::Raw => (manifest::ImageFormat::Raw, "raw"),
            ImageFormat::Tar => (manifest::ImageFormat::Tar, "tar"),
        };
        let image = m
            .images
            .iter()
            .find(|i| i.slot_class == ROOTFS_CLASS && i.format == format)
            .ok_or_else(|| {
                PortError::new(&what, format!("manifest has no {format_name} rootfs image"))
            })?;
        let target = self.signed_target(&image.target, &what).await?;
        let sha256 = target
            .sha256()
            .ok_or_else(|| PortError::new(&what, "image target has no sha256"))?
            .to_string();
        let req = StageRequest {
            path: target.remote_path(),
            version: version.to_string(),
            length: target.length(),
            sha256,
            sha512: target.hashes().get("sha512").cloned(),
            compression: match image.compression {
                manifest::Compression::None => Compression::None,
                manifest::Compression::Zstd => Compression::Zstd,
            },
            format: match image.format {
                manifest::ImageFormat::Raw => ImageFormat::Raw,
                manifest::ImageFormat::Tar => ImageFormat::Tar,
            },
            size: image.size,
            content_sha256: image.sha256.clone(),
        };
        let failed = |e: crate::slot::StageError| PortError::new(&what, &e).with_cause(e.cause());
        backend.prepare(&req).map_err(failed)?;
        // A slot whose content is one byte range can be built from a delta against
        // another slot's verified image; a failed delta falls through to the full image.
        if let Some(raw) = backend.byte_range() {
            let delta = super::delta::DeltaStage {
                client: &self.client,
                metadata: self.metadata.as_ref(),
                targets: &self.targets,
                version,
                image,
                slot: &raw,
                others: self
                    .slots
                    .values()
                    .filter(|s| s.name() != slot)
                    .filter_map(|s| s.byte_range())
                    .collect(),
                full_len: target.length(),
                progress: &progress,
            };
            if let Some(report) = delta.run().await {
                return Ok(report);
            }
        }
        let sink = progress.clone();
        let pfn: ProgressFn = Arc::new(move |p| {
            sink.send_replace(Some(Progress {
                phase: format!("{:?}", p.phase).to_lowercase(),
                done: p.done,
                total: Some(p.total),
                rate: Some(p.rate as f64),
            }));
        });
        let cancel = CancelToken::new();
        backend
            .stage(StageJob {
                req: &req,
                source: self.targets.as_ref(),
                opts: &self.opts,
                progress: Some(pfn),
                cancel: &cancel,
            })
            .await
            .map_err(failed)?;
        Ok(StageReport::full(target.length()))
    }
}

async fn fetch_manifest(
    client: &mut TufClient,
    metadata: &dyn ByteSource,
    targets: &dyn ByteSource,
    path: &str,
    cached: Option<&VerifiedManifest>,
) -> Result<VerifiedManifest, PortError> {
    manifest::fetch_verified_reusing(client, metadata, targets, path, cached)
        .await
        .map_err(|e| {
            // The error names the release already; the port error puts it in `what`.
            let detail =
                std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
            PortError::new(format!("release {path}"), detail)
        })
}

/// Reasons that depend on what the device runs, not on what it is: a release with
/// only these may still be for it (the decision knows the running version).
fn depends_on_running(i: &Ineligible) -> bool {
    matches!(
        i,
        Ineligible::BelowMinVersion { .. }
            | Ineligible::NotNewer { .. }
            | Ineligible::BelowSecurityFloor { .. }
    )
}

/// The manifest's rollout section as the policy's plan; a withdrawal in the signed
/// summary counts even if the manifest predates it.
fn rollout_plan(m: &manifest::Manifest, withdrawn: bool) -> RolloutPlan {
    let mut plan = RolloutPlan::from_manifest(m);
    if withdrawn {
        plan.state = RolloutState::Withdrawn;
    }
    plan
}

impl Updates for RepoUpdates {
    fn discover(&self) -> BoxFuture<'_, Result<Vec<Offered>, PortError>> {
        Box::pin(self.discover_inner())
    }

    fn stage<'a>(
        &'a self,
        version: &'a semver::Version,
        slot: &'a SlotName,
        progress: ProgressSink,
    ) -> BoxFuture<'a, Result<StageReport, PortError>> {
        Box::pin(self.stage_inner(version, slot, progress))
    }
}
