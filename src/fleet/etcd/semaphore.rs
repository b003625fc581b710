//! The semaphore's three operations on the keys of one group.
//!
//! Acquire reads the group (slots key and holder keys, one linearizable range at
//! revision R), and when a slot is free puts its holder key in a transaction whose
//! compares are "every key under `holders/` has a mod revision below R+1" (a range
//! compare: none created or changed since the read; a deleted one only frees room) and
//! "the slots key's mod revision is still the one read". Whoever loses the race reads
//! again; each lost round means another device won, so rounds are few.

use std::time::Instant;

use super::gateway::{Compare, KeyValue};
use super::{Core, GroupSlots, LockAnswer, LockError};

/// Slots of a group whose slots key is missing: one at a time, as FleetLock servers do.
pub const DEFAULT_SLOTS: u32 = 1;

/// Rounds of read + transaction before reporting contention instead of a slot.
const MAX_ROUNDS: usize = 16;

/// The keys of one device in one group.
#[derive(Debug)]
pub(super) struct Keys {
    /// `<prefix>/<group>/`: the range holding both below.
    group_dir: Vec<u8>,
    slots: Vec<u8>,
    holders_dir: Vec<u8>,
    mine: Vec<u8>,
}

impl Keys {
    pub fn new(prefix: &str, group: &str, id: &str) -> Self {
        let group_dir = format!("{prefix}/{group}/");
        Self {
            slots: format!("{group_dir}slots").into_bytes(),
            holders_dir: format!("{group_dir}holders/").into_bytes(),
            mine: format!("{group_dir}holders/{id}").into_bytes(),
            group_dir: group_dir.into_bytes(),
        }
    }
}

/// The first key after every key starting with `prefix` (etcd's `range_end`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: to the end of the keyspace, as etcd spells it.
    vec![0]
}

/// One read of a group.
#[derive(Debug)]
pub(super) struct GroupView {
    revision: i64,
    slots: u32,
    /// 0 when the slots key is missing (etcd's mod revision of an absent key).
    slots_mod: i64,
    holders: Vec<String>,
    mine: Option<KeyValue>,
}

impl GroupView {
    pub fn report(&self, group: &str) -> GroupSlots {
        GroupSlots {
            group: group.to_owned(),
            slots: self.slots,
            holders: self.holders.clone(),
        }
    }
}

pub(super) async fn read_group(core: &Core) -> Result<GroupView, LockError> {
    let k = &core.keys;
    let range = core
        .gw
        .range(&k.group_dir, &prefix_end(&k.group_dir))
        .await?;
    let mut view = GroupView {
        revision: range.revision,
        slots: DEFAULT_SLOTS,
        slots_mod: 0,
        holders: Vec::new(),
        mine: None,
    };
    for kv in range.kvs {
        if kv.key == k.slots {
            let text = String::from_utf8_lossy(&kv.value);
            view.slots = text.trim().parse().map_err(|_| LockError::Malformed {
                url: format!("etcd key {}", String::from_utf8_lossy(&k.slots)),
                status: 200,
                detail: format!(
                    "it holds {text:?}, not a number of slots (write one: etcdctl put {} 2)",
                    String::from_utf8_lossy(&k.slots)
                ),
            })?;
            view.slots_mod = kv.mod_revision;
        } else if let Some(id) = kv.key.strip_prefix(k.holders_dir.as_slice()) {
            view.holders.push(String::from_utf8_lossy(id).into_owned());
            if kv.key == k.mine {
                view.mine = Some(kv);
            }
        }
    }
    Ok(view)
}

pub(super) async fn acquire(core: &Core) -> Result<LockAnswer, LockError> {
    let started = Instant::now();
    for _ in 0..MAX_ROUNDS {
        let view = read_group(core).await?;
        if let Some(mine) = &view.mine {
            // Held already: asked twice, or taken by this device before a restart.
            let mut s = core.state();
            s.looked = true;
            s.trouble = None;
            if mine.lease != 0 && s.held != Some(mine.lease) {
                tracing::info!(group = %core.group, lease = mine.lease, "holding the reboot slot taken earlier; renewing its lease");
                s.held = Some(mine.lease);
            }
            return Ok(LockAnswer::Granted);
        }
        forget_lost_slot(core);
        if view.holders.len() >= usize::try_from(view.slots).unwrap_or(usize::MAX) {
            drop_spare(core).await;
            return Ok(LockAnswer::Busy {
                kind: "slots_taken".into(),
                value: format!(
                    "reboot slots of group {}: {}",
                    core.group,
                    view.report(&core.group)
                ),
            });
        }
        let lease = lease_for_put(core).await?;
        let k = &core.keys;
        let compares = [
            Compare::range_modified_before(
                &k.holders_dir,
                &prefix_end(&k.holders_dir),
                view.revision + 1,
            ),
            Compare::modified_at(&k.slots, view.slots_mod),
        ];
        let since = jiff::Timestamp::now().to_string();
        match core
            .gw
            .put_if(&compares, &k.mine, since.as_bytes(), lease)
            .await
        {
            Ok(true) => {
                let mut s = core.state();
                s.held = Some(lease);
                s.looked = true;
                s.trouble = None;
                if s.spare == Some(lease) {
                    s.spare = None;
                }
                tracing::info!(group = %core.group, lease, "took a reboot slot");
                return Ok(LockAnswer::Granted);
            }
            Ok(false) => {
                tracing::debug!(group = %core.group, "another device changed the slots first; reading again");
            }
            Err(LockError::Status { value, .. }) if value.contains("lease not found") => {
                // The spare lease expired between grant and put (a slow round): a new one.
                let mut s = core.state();
                s.spare = None;
                if s.held == Some(lease) {
                    s.held = None;
                }
            }
            Err(e) => return Err(e),
        }
        if started.elapsed() > core.gw.timeout() {
            break;
        }
    }
    drop_spare(core).await;
    Ok(LockAnswer::Busy {
        kind: "contended".into(),
        value: format!(
            "the slots of group {} kept changing under this device's requests",
            core.group
        ),
    })
}

/// Our key is gone though its lease was renewed: an operator freed the slot (`etcdctl
/// del`). Stop renewing for nothing; the lease serves the next put or is revoked.
fn forget_lost_slot(core: &Core) {
    let mut s = core.state();
    if let Some(l) = s.held.take() {
        tracing::warn!(group = %core.group, lease = l, "this device's reboot slot was freed from outside; asking for one again");
        if s.spare.is_none() {
            s.spare = Some(l);
        }
    }
}

/// The lease to attach a new holder key to: one granted earlier (in this acquire, or
/// the renewed one of a slot freed from outside), or a new one.
async fn lease_for_put(core: &Core) -> Result<i64, LockError> {
    if let Some(l) = core.state().spare {
        return Ok(l);
    }
    let l = core.gw.grant(core.ttl.as_secs()).await?;
    core.state().spare = Some(l);
    Ok(l)
}

/// Revoke a granted but unused lease (it would expire after the TTL anyway).
async fn drop_spare(core: &Core) {
    let spare = core.state().spare.take();
    if let Some(l) = spare {
        if let Err(e) = core.gw.revoke(l).await {
            tracing::debug!(lease = l, error = %e, "could not revoke an unused lease; it expires by itself");
        }
    }
}

pub(super) async fn release(core: &Core) -> Result<(), LockError> {
    // The key first: it is the slot, whatever lease it hangs on (also one this run has
    // not seen yet).
    core.gw.delete(&core.keys.mine).await?;
    let leases: Vec<i64> = {
        let mut s = core.state();
        s.looked = true;
        s.trouble = None;
        s.held.take().into_iter().chain(s.spare.take()).collect()
    };
    for l in leases {
        if let Err(e) = core.gw.revoke(l).await {
            tracing::debug!(lease = l, error = %e, "could not revoke the lease of a released slot; it expires by itself");
        }
    }
    tracing::info!(group = %core.group, "gave back the reboot slot");
    Ok(())
}

/// At start: adopt the lease of a holder key an earlier run of this device left.
pub(super) async fn look_for_mine(core: &Core) -> Result<(), LockError> {
    let view = read_group(core).await?;
    let mut s = core.state();
    if s.looked {
        return Ok(());
    }
    s.looked = true;
    if let Some(mine) = view.mine.filter(|m| m.lease != 0) {
        tracing::info!(group = %core.group, lease = mine.lease, "this device holds a reboot slot from before; renewing its lease");
        s.held = Some(mine.lease);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/p/g/holders/"), b"/p/g/holders0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        let k = Keys::new("/patchd/reboot", "db-eu1", "abc");
        assert_eq!(k.mine, b"/patchd/reboot/db-eu1/holders/abc");
        assert_eq!(k.slots, b"/patchd/reboot/db-eu1/slots");
        // A group whose name extends another's is outside the other's range.
        let db = Keys::new("/p", "db", "x").group_dir;
        let end = prefix_end(&db);
        for other in [
            &b"/p/db-eu1/holders/y"[..],
            b"/p/db0/slots",
            b"/p/dbx/slots",
        ] {
            assert!(
                !(db.as_slice() <= other && other < end.as_slice()),
                "{other:?}"
            );
        }
        assert!(
            db.as_slice() <= &b"/p/db/holders/y"[..] && &b"/p/db/holders/y"[..] < end.as_slice()
        );
    }
}
