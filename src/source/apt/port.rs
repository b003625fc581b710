//! The staging half of the [`Updates`](crate::engine::ports::Updates) port for patch
//! sets: staging on a blocking thread (cancelled when the engine drops the job), and the
//! `/etc` carry-over just before the switch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::etcmerge;
use super::record::Records;
use super::stage;
use super::AptUpdates;
use crate::engine::ports::{PortError, ProgressSink, StageReport};
use crate::names::SlotName;

/// Tells the staging thread to stop (kill apt, delete the snapshot) when the engine
/// drops the staging future (cancel, shutdown).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

type Fields = Vec<(&'static str, serde_json::Value)>;

impl AptUpdates {
    pub(super) async fn stage_inner(
        &self,
        version: &semver::Version,
        slot: &SlotName,
        progress: ProgressSink,
    ) -> Result<StageReport, PortError> {
        let what = format!("stage patch set {version} into {slot}");
        let Some(set) = self.patch_set(version).await else {
            return Err(PortError::new(
                &what,
                "patch set not offered by the last scan",
            ));
        };
        let Some(snaps) = self.snapshots.clone() else {
            return Err(PortError::new(
                &what,
                "staging a patch set needs [slots] backend = \"btrfs\" with the running root \
                 among its subvolumes (see docs/apt.md); nothing was changed",
            )
            .with_cause("stage"));
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let _stop = CancelOnDrop(cancel.clone());
        let cfg = self.cfg.clone();
        let (v, slot) = (version.to_string(), slot.clone());
        let lock = self.stage_lock.clone();
        let res = tokio::task::spawn_blocking(move || {
            // A poisoned lock only means an earlier staging thread panicked; its
            // snapshot is cleaned by `recover` below all the same.
            let _one = lock.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = stage::recover(&snaps) {
                tracing::warn!(error = %e, "deleting a partial snapshot failed");
            }
            stage::stage(&stage::Job {
                snaps: &snaps,
                cfg: &cfg,
                version: &v,
                slot: &slot,
                packages: &set.packages,
                progress: &progress,
                cancel: &cancel,
            })
        })
        .await;
        match res {
            Ok(Ok(_)) => Ok(StageReport::full(0)),
            Ok(Err(e)) => Err(PortError::new(&what, e).with_cause("stage")),
            Err(e) => Err(PortError::new(&what, e).with_cause("stage")),
        }
    }

    /// The three-way `/etc` carry-over into `slot` (see `etcmerge`), recorded in the
    /// staged release record; nothing for a slot that holds no patch set.
    pub(super) async fn carry_etc(&self, slot: &SlotName) -> Result<Fields, PortError> {
        let Some(snaps) = self.snapshots.clone() else {
            return Ok(Vec::new());
        };
        let what = format!("carry /etc changes into slot {slot}");
        let slot = slot.clone();
        let res = tokio::task::spawn_blocking(move || carry(&snaps, &slot)).await;
        match res {
            Ok(Ok(fields)) => Ok(fields),
            Ok(Err(e)) => Err(PortError::new(&what, e).with_cause("switch")),
            Err(e) => Err(PortError::new(&what, e).with_cause("switch")),
        }
    }
}

impl AptUpdates {
    /// `keep = 1`: delete the previous root's snapshot `slot` and its records (the
    /// engine took it out of the boot order first). Never the running root.
    pub(super) async fn prune_snapshot(&self, slot: &SlotName) -> Result<Fields, PortError> {
        let what = format!("delete the previous root's snapshot in slot {slot}");
        let Some(snaps) = self.snapshots.clone() else {
            return Err(PortError::new(&what, "no btrfs slots are configured").with_cause("prune"));
        };
        if *slot == snaps.running {
            return Err(
                PortError::new(&what, "it is the running root; nothing was deleted")
                    .with_cause("prune"),
            );
        }
        let slot = slot.clone();
        let lock = self.stage_lock.clone();
        let res = tokio::task::spawn_blocking(move || {
            let _one = lock.lock().unwrap_or_else(|e| e.into_inner());
            prune(&snaps, &slot)
        })
        .await;
        match res {
            Ok(Ok(fields)) => Ok(fields),
            Ok(Err(e)) => Err(PortError::new(&what, e).with_cause("prune")),
            Err(e) => Err(PortError::new(&what, e).with_cause("prune")),
        }
    }
}

fn prune(snaps: &stage::Snapshots, slot: &SlotName) -> Result<Fields, stage::StagingError> {
    let before = snaps.slots.record(slot)?;
    let path = snaps.slots.subvolume_path(slot);
    let existed = path.exists();
    snaps.slots.discard(slot)?;
    Records::new(&snaps.state)
        .clear(slot)
        .map_err(|source| stage::StagingError::Io {
            what: format!("removing the records of slot {slot}"),
            source,
        })?;
    tracing::info!(slot = %slot, snapshot = %path.display(), existed, "deleted the previous root's snapshot (keep = 1)");
    Ok(vec![
        ("slot", slot.as_str().into()),
        ("snapshot", path.display().to_string().into()),
        ("version", before.version.into()),
        ("deleted", existed.into()),
    ])
}

fn carry(snaps: &stage::Snapshots, slot: &SlotName) -> Result<Fields, std::io::Error> {
    let recs = Records::new(&snaps.state);
    let Some(mut rec) = recs.staged(slot)? else {
        return Ok(Vec::new());
    };
    let base = recs.etc_base(slot)?.ok_or_else(|| {
        std::io::Error::other(format!(
            "{} is missing: without the snapshot's original /etc the admin's changes \
             cannot be told from the package's; stage the patch set again",
            recs.etc_base_path(slot).display()
        ))
    })?;
    let running = snaps.slots.subvolume_path(&rec.running).join("etc");
    let upgraded = snaps.slots.subvolume_path(slot).join("etc");
    let changes = etcmerge::plan(
        &base,
        &etcmerge::scan(&running)?,
        &etcmerge::scan(&upgraded)?,
    );
    let report = etcmerge::apply(&changes, &running, &upgraded)?;
    for c in &report.conflicts {
        tracing::warn!(slot = %slot, path = %c, "/etc conflict: the admin's version kept, the package's saved as .dpkg-new");
    }
    // A second switch attempt finds nothing left to carry: keep the first report.
    if rec.etc.is_none() || !report.is_empty() {
        rec.etc = Some(report.clone());
        recs.save(&recs.staged_path(slot), &rec)?;
    }
    let list = |v: &[String]| serde_json::Value::from(v.to_vec());
    Ok(vec![
        ("slot", slot.as_str().into()),
        ("carried", list(&report.carried)),
        ("deleted", list(&report.deleted)),
        ("conflicts", list(&report.conflicts)),
    ])
}
