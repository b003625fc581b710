//! The A/B boot model shared by the GRUB, U-Boot and file backends.
//!
//! A boot order (first = preferred) plus, per slot, attempts left and a good flag. The
//! bootloader walks the order: a good slot boots as is; a slot on trial (not good, attempts
//! left) is booted after one attempt is taken away; a slot with no attempts left is
//! skipped. A bad slot is not in the order at all, so it is never chosen. The GRUB snippet
//! and the U-Boot script in `packaging/` implement [`AbState::boot_decision`] in their own
//! languages; the file backend's simulated reboot calls it directly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{BootError, Bootloader, SlotBootInfo};
use crate::names::SlotName;

/// A place that keeps an [`AbState`]: the GRUB environment block, the U-Boot
/// environment, or the file backend's state file. Each backend says how to read, change
/// and reset its store; the [`Bootloader`] methods that only walk the A/B model are written
/// once, in the blanket impl below.
pub trait AbStore: Send + Sync {
    /// Backend kind, as [`Bootloader::kind`].
    const KIND: &'static str;
    /// What the store holds besides the A/B state, written back as it was read (the
    /// other variables of an environment, the boot a state file recorded).
    type Rest;
    /// Where the state lives, for error messages.
    fn location(&self) -> String;
    /// The slot the running system was booted from.
    fn booted(&self) -> Result<SlotName, BootError>;
    /// Read the store: its A/B state and the rest.
    fn read_store(&self) -> Result<(AbState, Self::Rest), BootError>;
    /// Write `st` with `rest` back atomically.
    fn write_store(&self, st: &AbState, rest: Self::Rest) -> Result<(), BootError>;
    /// Fresh state with `primary` good and first, even over an unreadable store.
    fn reset_state(&self, primary: &SlotName) -> Result<(), BootError>;

    fn load_state(&self) -> Result<AbState, BootError> {
        Ok(self.read_store()?.0)
    }

    /// Read, change with `f`, and write back atomically; nothing is written when `f` fails.
    fn modify_state(
        &self,
        f: impl FnOnce(&mut AbState) -> Result<(), BootError>,
    ) -> Result<(), BootError> {
        let (mut st, rest) = self.read_store()?;
        f(&mut st)?;
        self.write_store(&st, rest)
    }
}

/// [`AbStore::booted`] of a backend that keeps no record of the booted slot: only the
/// configured detection can tell.
pub(super) fn booted_by_detection(
    detector: Option<&super::detect::Detector>,
    loader: &str,
) -> Result<SlotName, BootError> {
    match detector {
        Some(d) => d.detect(None),
        None => Err(BootError::Detection(format!(
            "{loader} keeps no record of the booted slot; configure detection"
        ))),
    }
}

impl<T: AbStore> Bootloader for T {
    fn kind(&self) -> &'static str {
        T::KIND
    }

    fn booted_slot(&self) -> Result<SlotName, BootError> {
        self.booted()
    }

    fn primary_slot(&self) -> Result<SlotName, BootError> {
        self.load_state()?
            .primary()
            .cloned()
            .ok_or_else(|| BootError::Format {
                path: self.location(),
                why: "no slot is marked good".to_string(),
            })
    }

    fn try_slot(&self, slot: &SlotName, attempts: u32) -> Result<(), BootError> {
        self.modify_state(|st| st.try_slot(slot, attempts))
    }

    fn mark_good(&self, slot: &SlotName) -> Result<(), BootError> {
        self.modify_state(|st| st.mark_good(slot))
    }

    fn mark_bad(&self, slot: &SlotName) -> Result<(), BootError> {
        self.modify_state(|st| st.mark_bad(slot))
    }

    fn slots(&self) -> Result<Vec<SlotBootInfo>, BootError> {
        Ok(self.load_state()?.infos())
    }

    fn reset(&self, primary: &SlotName) -> Result<(), BootError> {
        self.reset_state(primary)
    }
}

/// Largest attempt count we write or accept. GRUB script cannot do arithmetic, so the
/// shipped snippet decrements through an `if` chain that stops at this value.
pub const MAX_ATTEMPTS: u32 = 9;

/// Counters and flags of one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbSlot {
    /// Attempts left while on trial (ignored for a good slot).
    pub left: u32,
    /// Committed: boots without using up attempts.
    pub good: bool,
}

/// The whole bootloader-visible A/B state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbState {
    /// Boot order, preferred first. A slot missing from it is bad.
    pub order: Vec<SlotName>,
    /// One entry per configured slot.
    pub slots: BTreeMap<SlotName, AbSlot>,
}

impl AbState {
    /// A fresh state: `primary` good and first; every other slot after it in the order
    /// with no attempts left and not good — unused, never chosen (a good primary always
    /// boots first, and a slot with no attempts is skipped), but not *bad*: bad means a
    /// release failed there or a write started, and a slot nothing was installed in yet
    /// is neither. The engine marks it bad itself before the first byte is written.
    pub fn fresh(all: &[SlotName], primary: &SlotName) -> Result<Self, BootError> {
        if !all.contains(primary) {
            return Err(BootError::UnknownSlot(primary.clone()));
        }
        let slots = all
            .iter()
            .map(|s| {
                let good = s == primary;
                (s.clone(), AbSlot { left: 0, good })
            })
            .collect();
        let mut order = vec![primary.clone()];
        order.extend(all.iter().filter(|s| *s != primary).cloned());
        Ok(Self { order, slots })
    }

    fn check_known(&self, slot: &SlotName) -> Result<(), BootError> {
        if self.slots.contains_key(slot) {
            Ok(())
        } else {
            Err(BootError::UnknownSlot(slot.clone()))
        }
    }

    pub fn is_bad(&self, slot: &SlotName) -> bool {
        !self.order.contains(slot)
    }

    /// The slot that boots when no trial is pending: the first good slot in the order.
    pub fn primary(&self) -> Option<&SlotName> {
        self.order
            .iter()
            .find(|s| self.slots.get(*s).is_some_and(|i| i.good))
    }

    /// Put `slot` on trial: first in the order with `attempts` attempts, not good. The
    /// current primary stays in the order behind it as the fallback.
    pub fn try_slot(&mut self, slot: &SlotName, attempts: u32) -> Result<(), BootError> {
        self.check_known(slot)?;
        if attempts == 0 || attempts > MAX_ATTEMPTS {
            return Err(BootError::Refused(format!(
                "attempts must be 1..={MAX_ATTEMPTS}, not {attempts}"
            )));
        }
        let Some(primary) = self.primary().cloned() else {
            return Err(BootError::Refused(format!(
                "no good slot to fall back to; refusing to put slot {slot} on trial"
            )));
        };
        if primary == *slot {
            return Err(BootError::Refused(format!(
                "slot {slot} is the primary (good) slot; try the other slot"
            )));
        }
        self.put_first(
            slot,
            AbSlot {
                left: attempts,
                good: false,
            },
        );
        Ok(())
    }

    /// `slot` first in the order, with `state`.
    fn put_first(&mut self, slot: &SlotName, state: AbSlot) {
        self.order.retain(|s| s != slot);
        self.order.insert(0, slot.clone());
        self.slots.insert(slot.clone(), state);
    }

    /// Commit `slot`: good, first in the order, counters cleared.
    pub fn mark_good(&mut self, slot: &SlotName) -> Result<(), BootError> {
        self.check_known(slot)?;
        if self.is_bad(slot) {
            return Err(BootError::Refused(format!(
                "slot {slot} is marked bad; install and try it before marking it good"
            )));
        }
        self.put_first(
            slot,
            AbSlot {
                left: 0,
                good: true,
            },
        );
        Ok(())
    }

    /// Mark `slot` bad: out of the order, not good, no attempts. Refused for the last
    /// bootable slot, which would leave the device with nothing to boot.
    pub fn mark_bad(&mut self, slot: &SlotName) -> Result<(), BootError> {
        self.check_known(slot)?;
        let others_good = self
            .order
            .iter()
            .any(|s| s != slot && self.slots.get(s).is_some_and(|i| i.good));
        if !others_good {
            return Err(BootError::Refused(format!(
                "slot {slot} is the only good slot; marking it bad would leave nothing to boot"
            )));
        }
        self.order.retain(|s| s != slot);
        self.slots.insert(
            slot.clone(),
            AbSlot {
                left: 0,
                good: false,
            },
        );
        Ok(())
    }

    /// What the bootloader does at power-on: walk the order, take one attempt from a slot
    /// on trial, skip exhausted ones, never pick a bad one. `None`: nothing bootable.
    pub fn boot_decision(&mut self) -> Option<SlotName> {
        for s in &self.order {
            let Some(info) = self.slots.get_mut(s) else {
                continue;
            };
            if info.good {
                return Some(s.clone());
            }
            if info.left > 0 {
                info.left -= 1;
                return Some(s.clone());
            }
        }
        None
    }

    /// Per-slot report for [`super::Bootloader::slots`].
    pub fn infos(&self) -> Vec<SlotBootInfo> {
        let primary = self.primary().cloned();
        self.slots
            .iter()
            .map(|(s, i)| {
                let bad = self.is_bad(s);
                SlotBootInfo {
                    slot: s.clone(),
                    tries_left: (!i.good && !bad).then_some(i.left),
                    good: i.good,
                    bad,
                    primary: primary.as_ref() == Some(s),
                }
            })
            .collect()
    }
}

/// Parse an attempt counter read from an environment, naming the variable when wrong.
pub fn parse_counter(path: &str, var: &str, value: &str) -> Result<u32, BootError> {
    match value.parse::<u32>() {
        Ok(n) if n <= MAX_ATTEMPTS => Ok(n),
        _ => Err(BootError::Format {
            path: path.to_string(),
            why: format!("{var}={value:?} is not a counter in 0..={MAX_ATTEMPTS}"),
        }),
    }
}

/// Parse a boot order (slot names separated by spaces) and check each against `all`.
pub fn parse_order(
    path: &str,
    var: &str,
    value: &str,
    all: &[SlotName],
    to_slot: impl Fn(&str) -> String,
) -> Result<Vec<SlotName>, BootError> {
    let mut order = Vec::new();
    for word in value.split_whitespace() {
        let name = to_slot(word);
        let slot = SlotName::new(name.clone())
            .ok()
            .filter(|s| all.contains(s))
            .ok_or_else(|| BootError::Format {
                path: path.to_string(),
                why: format!(
                    "{var} names unknown slot {word:?} (configured: {})",
                    join(all)
                ),
            })?;
        if order.contains(&slot) {
            return Err(BootError::Format {
                path: path.to_string(),
                why: format!("{var} names slot {word:?} twice"),
            });
        }
        order.push(slot);
    }
    Ok(order)
}

pub fn join(slots: &[SlotName]) -> String {
    slots
        .iter()
        .map(SlotName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: &str) -> SlotName {
        SlotName::new(n).unwrap()
    }

    #[test]
    fn trial_that_never_commits_falls_back() {
        let all = [s("a"), s("b")];
        let mut st = AbState::fresh(&all, &s("a")).unwrap();
        assert_eq!(st.boot_decision(), Some(s("a")));
        st.try_slot(&s("b"), 1).unwrap();
        assert_eq!(st.boot_decision(), Some(s("b")));
        assert_eq!(st.boot_decision(), Some(s("a")));
        assert_eq!(st.boot_decision(), Some(s("a")));
        assert_eq!(st.primary(), Some(&s("a")));
    }

    #[test]
    fn fresh_state_boots_the_primary_and_the_unused_slot_is_not_bad() {
        let all = [s("a"), s("b")];
        let mut st = AbState::fresh(&all, &s("a")).unwrap();
        let b = st.infos().into_iter().find(|i| i.slot == s("b")).unwrap();
        assert!(!b.bad && !b.good && !b.primary, "{b:?}");
        for _ in 0..3 {
            assert_eq!(st.boot_decision(), Some(s("a")));
        }
        // Staging fences it (bad) before the first write; a trial makes it bootable.
        st.mark_bad(&s("b")).unwrap();
        assert!(st.is_bad(&s("b")));
        st.try_slot(&s("b"), 1).unwrap();
        assert_eq!(st.boot_decision(), Some(s("b")));
    }

    #[test]
    fn commit_and_bad() {
        let all = [s("a"), s("b")];
        let mut st = AbState::fresh(&all, &s("a")).unwrap();
        st.try_slot(&s("b"), 2).unwrap();
        assert_eq!(st.boot_decision(), Some(s("b")));
        st.mark_good(&s("b")).unwrap();
        assert_eq!(st.primary(), Some(&s("b")));
        for _ in 0..5 {
            assert_eq!(st.boot_decision(), Some(s("b")));
        }
        st.mark_bad(&s("a")).unwrap();
        assert!(st.mark_bad(&s("b")).is_err(), "last good slot marked bad");
        assert!(st.mark_good(&s("a")).is_err());
        assert!(st.try_slot(&s("b"), 1).is_err(), "primary put on trial");
        assert!(st.try_slot(&s("a"), 0).is_err());
        assert!(st.try_slot(&s("a"), MAX_ATTEMPTS + 1).is_err());
        assert!(matches!(
            st.try_slot(&s("c"), 1),
            Err(BootError::UnknownSlot(_))
        ));
    }
}
