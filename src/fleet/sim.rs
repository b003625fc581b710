//! The in-memory twin of a FleetLock server and client in one: a counting semaphore of
//! slots per group with recursive, owned locks, for tests of code that takes the lock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use super::{LockAnswer, LockError, Occupancy, RebootLock};
use crate::fetch::BoxFuture;

/// The shared semaphore: several [`SimLock`]s (devices) on one `SimFleet` compete.
#[derive(Debug, Default)]
pub struct SimFleet {
    slots: usize,
    holders: Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// While set, every request fails as if the service were down.
    down: Mutex<bool>,
}

impl SimFleet {
    pub fn new(slots: usize) -> Arc<Self> {
        Arc::new(Self {
            slots,
            ..Self::default()
        })
    }
    pub fn set_down(&self, down: bool) {
        *self.down.lock().unwrap_or_else(PoisonError::into_inner) = down;
    }
    /// The ids holding a slot in `group`.
    pub fn holders(&self, group: &str) -> Vec<String> {
        let h = self.holders.lock().unwrap_or_else(PoisonError::into_inner);
        h.get(group)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
    fn check_up(&self) -> Result<(), LockError> {
        if *self.down.lock().unwrap_or_else(PoisonError::into_inner) {
            return Err(LockError::Unreachable {
                url: "sim://fleet".into(),
                detail: "simulated outage".into(),
            });
        }
        Ok(())
    }
}

/// One device's view of a [`SimFleet`].
#[derive(Debug, Clone)]
pub struct SimLock {
    pub fleet: Arc<SimFleet>,
    pub id: String,
    pub group: String,
}

impl RebootLock for SimLock {
    fn acquire(&self) -> BoxFuture<'_, Result<LockAnswer, LockError>> {
        Box::pin(async move {
            self.fleet.check_up()?;
            let mut all = self
                .fleet
                .holders
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let group = all.entry(self.group.clone()).or_default();
            if group.contains(&self.id) || group.len() < self.fleet.slots {
                group.insert(self.id.clone());
                return Ok(LockAnswer::Granted);
            }
            Ok(LockAnswer::Busy {
                kind: "failed_lock".into(),
                value: format!(
                    "all {} slots of group {} taken",
                    self.fleet.slots, self.group
                ),
            })
        })
    }

    fn release(&self) -> BoxFuture<'_, Result<(), LockError>> {
        Box::pin(async move {
            self.fleet.check_up()?;
            let mut all = self
                .fleet
                .holders
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(group) = all.get_mut(&self.group) {
                group.remove(&self.id);
            }
            Ok(())
        })
    }

    fn occupancy(&self) -> BoxFuture<'_, Result<Option<Occupancy>, LockError>> {
        Box::pin(async move {
            self.fleet.check_up()?;
            Ok(Some(Occupancy {
                slots: u32::try_from(self.fleet.slots).ok(),
                holders: self.fleet.holders(&self.group),
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(fleet: &Arc<SimFleet>, id: &str) -> SimLock {
        SimLock {
            fleet: fleet.clone(),
            id: id.into(),
            group: "default".into(),
        }
    }

    #[tokio::test]
    async fn recursive_counting_owned_and_down() {
        let fleet = SimFleet::new(1);
        let (a, b) = (device(&fleet, "a"), device(&fleet, "b"));
        assert_eq!(a.acquire().await, Ok(LockAnswer::Granted));
        assert_eq!(a.acquire().await, Ok(LockAnswer::Granted));
        assert!(matches!(b.acquire().await, Ok(LockAnswer::Busy { .. })));
        b.release().await.unwrap();
        assert_eq!(fleet.holders("default"), vec!["a".to_string()]);
        a.release().await.unwrap();
        assert_eq!(b.acquire().await, Ok(LockAnswer::Granted));
        fleet.set_down(true);
        assert!(matches!(
            a.acquire().await,
            Err(LockError::Unreachable { .. })
        ));
    }
}
