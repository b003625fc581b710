//! Steady state with a source that does not keep the previous root (an apt source with
//! `keep = 1`): the previous slot is taken out of the boot order, then its content
//! deleted, so nothing can ever boot a deleted snapshot.
//!
//! Order, and why: `Pending::Prune` and a lifecycle without a previous slot are saved
//! first (a rollback is refused from then on, and a restart knows a prune was under
//! way); the bootloader marks the slot bad (durable in its own environment) before the
//! source deletes anything; the pending mark goes only when the deletion is done. A
//! crash anywhere in between leaves `Pending::Prune`, and the next start repeats both
//! steps, which are idempotent. A failure stays pending (retried at the next start), is
//! shown as the last error and audited as `prune_failed` (counted by the metrics).

use super::*;

impl Runner {
    /// The slot the committed release came from, while it is still kept.
    pub(super) fn previous_slot(&self) -> Option<SlotName> {
        match &self.doc.lifecycle {
            Lifecycle::Committed { previous, .. } => previous.clone(),
            _ => None,
        }
    }

    /// The release in the committed slot is steady now; `previous` is the slot it came
    /// from. Nothing when the source keeps previous roots.
    pub(super) async fn prune_previous(&mut self, previous: Option<SlotName>) -> Step {
        let Some(updates) = self.p.updates.clone() else {
            return Ok(());
        };
        let Some(previous) = previous else {
            return Ok(());
        };
        if updates.keeps_previous() {
            return Ok(());
        }
        let Lifecycle::Committed { slot, .. } = &self.doc.lifecycle else {
            return Ok(());
        };
        if *slot == previous {
            return Ok(());
        }
        let mut doc = self.doc.clone();
        doc.lifecycle = self.doc.lifecycle.previous_gone()?;
        doc.pending = Some(Pending::Prune {
            slot: previous.clone(),
        });
        self.file.save(&doc)?;
        self.doc = doc;
        self.failpoint("prune.before_boot_order")?;
        self.finish_prune(&previous).await
    }

    /// Take `slot` out of the boot order, then delete it through the source; repeated
    /// by reconciliation for a `Pending::Prune` a crash left.
    pub(crate) async fn finish_prune(&mut self, slot: &SlotName) -> Step {
        let actor = Actor::Policy;
        let res = match self.p.bootloader.mark_bad(slot) {
            Err(e) => Err(format!(
                "taking slot {slot} out of the boot order failed, so it was not deleted: {e}"
            )),
            Ok(()) => {
                self.failpoint("prune.before_delete")?;
                match self.p.updates.clone() {
                    Some(u) => u.prune(slot).await.map_err(|e| e.to_string()),
                    None => Err(format!("no patch source to delete slot {slot}")),
                }
            }
        };
        match res {
            Ok(fields) => {
                let mut doc = self.doc.clone();
                doc.pending = None;
                let why = format!("keep = 1: the previous root in slot {slot} was deleted");
                self.commit_with(doc, "snapshot_pruned", &actor, Some(&why), &fields)
            }
            Err(why) => {
                tracing::error!(slot = %slot, error = %why, "pruning the previous root failed; the next start tries again");
                let mut doc = self.doc.clone();
                doc.last_error = Some(format!("prune failed: {why}"));
                self.commit_with(
                    doc,
                    "prune_failed",
                    &actor,
                    Some(&why),
                    &[cause("prune"), ("slot", slot.as_str().into())],
                )
            }
        }
    }
}
