//! The lease renewal task: while this process lives, the slot it holds stays held.

use std::sync::Arc;
use std::time::Duration;

use super::{semaphore, Core};

/// Renew every TTL/3: two renewals may fail (a member restarting, a short partition)
/// before the lease runs out.
pub(super) async fn run(core: Arc<Core>) {
    let period = (core.ttl / 3).max(Duration::from_millis(500));
    loop {
        tick(&core).await;
        tokio::time::sleep(period).await;
    }
}

async fn tick(core: &Core) {
    let looked = core.state().looked;
    if !looked {
        if let Err(e) = semaphore::look_for_mine(core).await {
            tracing::warn!(group = %core.group, error = %e, "cannot tell whether this device holds a reboot slot from before; asking again");
            return;
        }
    }
    let held = core.state().held;
    let Some(lease) = held else { return };
    match core.gw.keep_alive(lease).await {
        Ok(ttl) if ttl > 0 => {
            tracing::trace!(lease, ttl, "renewed the reboot slot lease");
            core.state().trouble = None;
        }
        Ok(_) => {
            let mut s = core.state();
            // Released meanwhile: the lease went with the slot on purpose.
            if s.held == Some(lease) {
                s.held = None;
                s.trouble = Some(format!(
                    "lost the reboot slot in group {} at {}: its lease expired before it could be renewed",
                    core.group,
                    jiff::Timestamp::now()
                ));
                tracing::warn!(group = %core.group, lease, "lost the reboot slot: its lease expired before it could be renewed");
            }
        }
        Err(e) => {
            tracing::warn!(group = %core.group, lease, error = %e, "cannot renew the reboot slot lease; retrying");
            let mut s = core.state();
            if s.held == Some(lease) {
                s.trouble = Some(format!("cannot renew the reboot slot lease: {e}"));
            }
        }
    }
}
