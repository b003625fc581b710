//! The lifecycle states of shared/DESIGN.md and the checked transitions between them.
//!
//! A transition is a method that looks at where it comes from and either returns the
//! next state or an [`IllegalTransition`]; it never mutates in place and never panics.
//! The runner persists the returned state first and only then adopts it, so memory never
//! runs ahead of the disk.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::names::SlotName;

/// The release a state is about: enough to show it, compare it and enforce the floor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRef {
    pub version: String,
    /// Anti-rollback counter from the signed manifest.
    pub security_version: u64,
}

impl ReleaseRef {
    pub fn new(version: impl Into<String>, security_version: u64) -> Self {
        Self {
            version: version.into(),
            security_version,
        }
    }
}

/// The lifecycle, exactly as drawn in shared/DESIGN.md, plus `Failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum Lifecycle {
    /// Nothing to do (no release newer than the running one, or not checked yet).
    Idle {},
    /// A check found a release that may be installed.
    UpdateAvailable { release: ReleaseRef },
    /// The release is being written into the inactive `slot`.
    Staging { release: ReleaseRef, slot: SlotName },
    /// The inactive `slot` holds the verified release; waiting for window, rollout, holds.
    Staged { release: ReleaseRef, slot: SlotName },
    /// The bootloader was (or is being) told to try `slot` once; a reboot follows.
    Switching {
        release: ReleaseRef,
        slot: SlotName,
        from: SlotName,
    },
    /// Booted `slot` on trial; health checks must pass before `deadline`.
    Verifying {
        release: ReleaseRef,
        slot: SlotName,
        from: SlotName,
        deadline: Timestamp,
    },
    /// `slot` runs `release`, marked good. During probation `previous` is kept intact and
    /// a failing check still rolls back.
    Committed {
        release: ReleaseRef,
        slot: SlotName,
        previous: Option<SlotName>,
        /// What `previous` runs, so a rollback during probation restores it.
        previous_release: Option<ReleaseRef>,
        probation_until: Option<Timestamp>,
    },
    /// `release` in `bad_slot` failed; the device goes (or went) back to `back_to`.
    RolledBack {
        release: ReleaseRef,
        bad_slot: SlotName,
        back_to: SlotName,
        reason: String,
    },
    /// Something the engine cannot fix by itself; an admin `check` or `cancel` leaves it.
    Failed { reason: String },
}

/// The state's name without its data, for errors, status and audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    Idle,
    UpdateAvailable,
    Staging,
    Staged,
    Switching,
    Verifying,
    Committed,
    RolledBack,
    Failed,
}

impl StateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StateKind::Idle => "idle",
            StateKind::UpdateAvailable => "update_available",
            StateKind::Staging => "staging",
            StateKind::Staged => "staged",
            StateKind::Switching => "switching",
            StateKind::Verifying => "verifying",
            StateKind::Committed => "committed",
            StateKind::RolledBack => "rolled_back",
            StateKind::Failed => "failed",
        }
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition asked for from a state that does not allow it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} while {from}")]
pub struct IllegalTransition {
    pub from: StateKind,
    pub action: &'static str,
}

type Next = Result<Lifecycle, IllegalTransition>;

impl Lifecycle {
    pub fn kind(&self) -> StateKind {
        match self {
            Lifecycle::Idle {} => StateKind::Idle,
            Lifecycle::UpdateAvailable { .. } => StateKind::UpdateAvailable,
            Lifecycle::Staging { .. } => StateKind::Staging,
            Lifecycle::Staged { .. } => StateKind::Staged,
            Lifecycle::Switching { .. } => StateKind::Switching,
            Lifecycle::Verifying { .. } => StateKind::Verifying,
            Lifecycle::Committed { .. } => StateKind::Committed,
            Lifecycle::RolledBack { .. } => StateKind::RolledBack,
            Lifecycle::Failed { .. } => StateKind::Failed,
        }
    }

    /// The release this state is about, if any.
    pub fn release(&self) -> Option<&ReleaseRef> {
        match self {
            Lifecycle::Idle {} | Lifecycle::Failed { .. } => None,
            Lifecycle::UpdateAvailable { release }
            | Lifecycle::Staging { release, .. }
            | Lifecycle::Staged { release, .. }
            | Lifecycle::Switching { release, .. }
            | Lifecycle::Verifying { release, .. }
            | Lifecycle::Committed { release, .. }
            | Lifecycle::RolledBack { release, .. } => Some(release),
        }
    }

    /// States in which a new check may replace the current one: nothing is in flight and
    /// no slot is on trial.
    pub fn is_settled(&self) -> bool {
        matches!(
            self,
            Lifecycle::Idle {}
                | Lifecycle::UpdateAvailable { .. }
                | Lifecycle::Committed { .. }
                | Lifecycle::RolledBack { .. }
                | Lifecycle::Failed { .. }
        )
    }

    fn illegal(&self, action: &'static str) -> IllegalTransition {
        IllegalTransition {
            from: self.kind(),
            action,
        }
    }

    /// A check found `release` (also replaces a previously found, older one).
    pub fn found(&self, release: ReleaseRef) -> Next {
        if self.is_settled() {
            Ok(Lifecycle::UpdateAvailable { release })
        } else {
            Err(self.illegal("record an available release"))
        }
    }

    /// A check found nothing to install: forget an `UpdateAvailable` that went away.
    /// Other settled states stay as they are (they carry history worth showing).
    pub fn nothing_found(&self) -> Next {
        match self {
            Lifecycle::UpdateAvailable { .. } | Lifecycle::Failed { .. } => Ok(Lifecycle::Idle {}),
            s if s.is_settled() => Ok(s.clone()),
            s => Err(s.illegal("clear the available release")),
        }
    }

    /// Start writing the available release into the inactive `slot`.
    pub fn begin_staging(&self, slot: SlotName) -> Next {
        match self {
            Lifecycle::UpdateAvailable { release } => Ok(Lifecycle::Staging {
                release: release.clone(),
                slot,
            }),
            s => Err(s.illegal("start staging")),
        }
    }

    /// The slot's full content matched the signed manifest.
    pub fn staged(&self) -> Next {
        match self {
            Lifecycle::Staging { release, slot } => Ok(Lifecycle::Staged {
                release: release.clone(),
                slot: slot.clone(),
            }),
            s => Err(s.illegal("finish staging")),
        }
    }

    /// Staging failed or was discarded: back to `UpdateAvailable` so a later check or
    /// install retries (the slot is left `Incomplete`, never bootable).
    pub fn staging_aborted(&self) -> Next {
        match self {
            Lifecycle::Staging { release, .. } => Ok(Lifecycle::UpdateAvailable {
                release: release.clone(),
            }),
            s => Err(s.illegal("abort staging")),
        }
    }

    /// Window, rollout stage and holds allow it: arm the bootloader for one try.
    pub fn begin_switch(&self, from: SlotName) -> Next {
        match self {
            Lifecycle::Staged { release, slot } => Ok(Lifecycle::Switching {
                release: release.clone(),
                slot: slot.clone(),
                from,
            }),
            s => Err(s.illegal("switch")),
        }
    }

    /// The switch was not armed after all (power cut before the bootloader write, or the
    /// reboot was refused): wait again in `Staged`.
    pub fn switch_not_armed(&self) -> Next {
        match self {
            Lifecycle::Switching { release, slot, .. } => Ok(Lifecycle::Staged {
                release: release.clone(),
                slot: slot.clone(),
            }),
            s => Err(s.illegal("undo an unarmed switch")),
        }
    }

    /// We came up from the new slot: health checks decide before `deadline`.
    pub fn booted_new(&self, deadline: Timestamp) -> Next {
        match self {
            Lifecycle::Switching {
                release,
                slot,
                from,
            } => Ok(Lifecycle::Verifying {
                release: release.clone(),
                slot: slot.clone(),
                from: from.clone(),
                deadline,
            }),
            s => Err(s.illegal("start verification")),
        }
    }

    /// We came up from the old slot: the bootloader fell back.
    pub fn booted_old(&self, reason: impl Into<String>) -> Next {
        match self {
            Lifecycle::Switching {
                release,
                slot,
                from,
            }
            | Lifecycle::Verifying {
                release,
                slot,
                from,
                ..
            } => Ok(Lifecycle::RolledBack {
                release: release.clone(),
                bad_slot: slot.clone(),
                back_to: from.clone(),
                reason: reason.into(),
            }),
            s => Err(s.illegal("record a fallback boot")),
        }
    }

    /// Health checks passed: commit. `probation_until` keeps the old slot as a way back.
    pub fn health_passed(
        &self,
        probation_until: Option<Timestamp>,
        previous_release: Option<ReleaseRef>,
    ) -> Next {
        match self {
            Lifecycle::Verifying {
                release,
                slot,
                from,
                ..
            } => Ok(Lifecycle::Committed {
                release: release.clone(),
                slot: slot.clone(),
                previous: Some(from.clone()),
                previous_release,
                probation_until,
            }),
            s => Err(s.illegal("commit")),
        }
    }

    /// Probation ended without a failure: the previous slot may be reused.
    pub fn probation_over(&self) -> Next {
        match self {
            Lifecycle::Committed { release, slot, .. } => Ok(Lifecycle::Committed {
                release: release.clone(),
                slot: slot.clone(),
                previous: None,
                previous_release: None,
                probation_until: None,
            }),
            s => Err(s.illegal("end probation")),
        }
    }

    /// The previous slot is gone (pruned): nothing to roll back to any more.
    pub fn previous_gone(&self) -> Next {
        match self {
            Lifecycle::Committed {
                release,
                slot,
                probation_until,
                ..
            } => Ok(Lifecycle::Committed {
                release: release.clone(),
                slot: slot.clone(),
                previous: None,
                previous_release: None,
                probation_until: *probation_until,
            }),
            s => Err(s.illegal("forget the previous slot")),
        }
    }

    /// Health failed, the deadline passed, or an admin asked: go back to the old slot.
    /// Allowed while verifying, and after commit while the previous slot is intact.
    pub fn roll_back(&self, reason: impl Into<String>) -> Next {
        match self {
            Lifecycle::Verifying {
                release,
                slot,
                from,
                ..
            } => Ok(Lifecycle::RolledBack {
                release: release.clone(),
                bad_slot: slot.clone(),
                back_to: from.clone(),
                reason: reason.into(),
            }),
            Lifecycle::Committed {
                release,
                slot,
                previous: Some(previous),
                ..
            } => Ok(Lifecycle::RolledBack {
                release: release.clone(),
                bad_slot: slot.clone(),
                back_to: previous.clone(),
                reason: reason.into(),
            }),
            s => Err(s.illegal("roll back")),
        }
    }

    /// A release whose OS image is the running one, its components switched without a
    /// reboot, failed its health checks: the components were switched back and the OS
    /// slot never changed. `bad_slot` is where the release was staged (never armed),
    /// `back_to` the booted slot the device never left.
    pub fn rolled_back_in_place(&self, booted: SlotName, reason: impl Into<String>) -> Next {
        match self {
            Lifecycle::Staged { release, slot } => Ok(Lifecycle::RolledBack {
                release: release.clone(),
                bad_slot: slot.clone(),
                back_to: booted,
                reason: reason.into(),
            }),
            s => Err(s.illegal("roll back without a reboot")),
        }
    }

    /// An admin cancels what has not switched yet.
    pub fn cancel(&self) -> Next {
        match self {
            Lifecycle::UpdateAvailable { .. }
            | Lifecycle::Staging { .. }
            | Lifecycle::Staged { .. }
            | Lifecycle::Failed { .. } => Ok(Lifecycle::Idle {}),
            s => Err(s.illegal("cancel")),
        }
    }

    /// Something the engine cannot repair by itself. Allowed from every state, because
    /// the alternative would be to pretend the step worked.
    pub fn fail(&self, reason: impl Into<String>) -> Lifecycle {
        Lifecycle::Failed {
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(v: &str) -> ReleaseRef {
        ReleaseRef::new(v, 1)
    }
    fn s(n: &str) -> SlotName {
        SlotName::new(n).unwrap()
    }
    fn ts(sec: i64) -> Timestamp {
        Timestamp::from_second(sec).unwrap()
    }

    fn every_state() -> Vec<Lifecycle> {
        vec![
            Lifecycle::Idle {},
            Lifecycle::UpdateAvailable { release: r("2") },
            Lifecycle::Staging {
                release: r("2"),
                slot: s("b"),
            },
            Lifecycle::Staged {
                release: r("2"),
                slot: s("b"),
            },
            Lifecycle::Switching {
                release: r("2"),
                slot: s("b"),
                from: s("a"),
            },
            Lifecycle::Verifying {
                release: r("2"),
                slot: s("b"),
                from: s("a"),
                deadline: ts(100),
            },
            Lifecycle::Committed {
                release: r("2"),
                slot: s("b"),
                previous: Some(s("a")),
                previous_release: Some(r("1")),
                probation_until: Some(ts(200)),
            },
            Lifecycle::RolledBack {
                release: r("2"),
                bad_slot: s("b"),
                back_to: s("a"),
                reason: "x".into(),
            },
            Lifecycle::Failed { reason: "x".into() },
        ]
    }

    /// For each transition, the set of source states that allow it; every other state
    /// must return `IllegalTransition` naming itself.
    fn check(name: &str, allowed: &[StateKind], f: impl Fn(&Lifecycle) -> Next) {
        for st in every_state() {
            let res = f(&st);
            if allowed.contains(&st.kind()) {
                assert!(res.is_ok(), "{name} from {} refused: {res:?}", st.kind());
            } else {
                let err = res.expect_err(&format!("{name} from {} accepted", st.kind()));
                assert_eq!(err.from, st.kind());
            }
        }
    }

    use StateKind as K;

    #[test]
    fn found_only_from_settled_states() {
        check(
            "found",
            &[
                K::Idle,
                K::UpdateAvailable,
                K::Committed,
                K::RolledBack,
                K::Failed,
            ],
            |st| st.found(r("3")),
        );
        assert_eq!(
            Lifecycle::Idle {}.found(r("3")).unwrap(),
            Lifecycle::UpdateAvailable { release: r("3") }
        );
    }

    #[test]
    fn staging_path() {
        check("begin_staging", &[K::UpdateAvailable], |st| {
            st.begin_staging(s("b"))
        });
        check("staged", &[K::Staging], |st| st.staged());
        check("staging_aborted", &[K::Staging], |st| st.staging_aborted());
        let st = Lifecycle::UpdateAvailable { release: r("2") };
        let st = st.begin_staging(s("b")).unwrap();
        assert_eq!(st.kind(), K::Staging);
        assert_eq!(
            st.staging_aborted().unwrap(),
            Lifecycle::UpdateAvailable { release: r("2") }
        );
        assert_eq!(st.staged().unwrap().kind(), K::Staged);
    }

    #[test]
    fn switch_and_boot_outcomes() {
        check("begin_switch", &[K::Staged], |st| st.begin_switch(s("a")));
        check("switch_not_armed", &[K::Switching], |st| {
            st.switch_not_armed()
        });
        check("booted_new", &[K::Switching], |st| st.booted_new(ts(5)));
        check("booted_old", &[K::Switching, K::Verifying], |st| {
            st.booted_old("fell back")
        });
        let sw = Lifecycle::Switching {
            release: r("2"),
            slot: s("b"),
            from: s("a"),
        };
        match sw.booted_old("new slot did not boot").unwrap() {
            Lifecycle::RolledBack {
                bad_slot,
                back_to,
                reason,
                ..
            } => {
                assert_eq!((bad_slot, back_to), (s("b"), s("a")));
                assert_eq!(reason, "new slot did not boot");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn verdicts() {
        check("health_passed", &[K::Verifying], |st| {
            st.health_passed(None, None)
        });
        check("roll_back", &[K::Verifying, K::Committed], |st| {
            st.roll_back("bad")
        });
        check("probation_over", &[K::Committed], |st| st.probation_over());
        check("rolled_back_in_place", &[K::Staged], |st| {
            st.rolled_back_in_place(s("a"), "app health failed")
        });
        let staged = Lifecycle::Staged {
            release: r("2"),
            slot: s("b"),
        };
        // The OS slot never switched: the device stays on the booted slot.
        match staged.rolled_back_in_place(s("a"), "x").unwrap() {
            Lifecycle::RolledBack {
                bad_slot, back_to, ..
            } => assert_eq!((bad_slot, back_to), (s("b"), s("a"))),
            other => panic!("unexpected {other:?}"),
        }
        // Without an intact previous slot there is nothing to roll back to.
        let c = Lifecycle::Committed {
            release: r("2"),
            slot: s("b"),
            previous: None,
            previous_release: None,
            probation_until: None,
        };
        assert!(c.roll_back("x").is_err());
        let v = Lifecycle::Verifying {
            release: r("2"),
            slot: s("b"),
            from: s("a"),
            deadline: ts(1),
        };
        match v.health_passed(Some(ts(9)), Some(r("1"))).unwrap() {
            Lifecycle::Committed { previous, .. } => assert_eq!(previous, Some(s("a"))),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn cancel_only_before_switch() {
        check(
            "cancel",
            &[K::UpdateAvailable, K::Staging, K::Staged, K::Failed],
            |st| st.cancel(),
        );
    }

    #[test]
    fn nothing_found_keeps_history() {
        check(
            "nothing_found",
            &[
                K::Idle,
                K::UpdateAvailable,
                K::Committed,
                K::RolledBack,
                K::Failed,
            ],
            |st| st.nothing_found(),
        );
        let rb = every_state().remove(7);
        assert_eq!(rb.nothing_found().unwrap(), rb);
    }

    #[test]
    fn json_round_trip_and_unknown_fields() {
        for st in every_state() {
            let j = serde_json::to_string(&st).unwrap();
            let back: Lifecycle = serde_json::from_str(&j).unwrap();
            assert_eq!(back, st);
        }
        let bad = r#"{"state":"idle","surprise":1}"#;
        assert!(serde_json::from_str::<Lifecycle>(bad).is_err());
        let bad = r#"{"state":"failed","reason":"x","surprise":1}"#;
        assert!(serde_json::from_str::<Lifecycle>(bad).is_err());
        let bad = r#"{"state":"flying"}"#;
        assert!(serde_json::from_str::<Lifecycle>(bad).is_err());
    }
}
