//! Installing a release's components: one release, one verdict.
//!
//! Order: plan (unchanged components skipped), stage every component (nothing in use
//! changes; one the device has nothing for, such as firmware no device matches, is
//! skipped), then switch them in install order (firmware first, see
//! `manifest::install_order`: it cannot be rolled back, so it goes only once everything
//! else is staged and before anything that could still fail and be rolled back); a component that takes effect without a
//! reboot is health-checked right after its switch. The first failure stops the
//! release and rolls back, in reverse order, every switched component that can be; the
//! caller then leaves the OS slot alone. The journal is written before every step, so
//! a power cut anywhere is finished by [`super::reconcile`].

use std::path::{Path, PathBuf};

use super::events as ev;
use super::journal::{undo, Journal, JournalEntry, StepState};
use super::plan::{plan, Action};
use super::{ComponentError, Installers, Job};
use crate::manifest::Component;

/// One audit record of a component step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepEvent {
    /// Event name (listed in `audit::events`).
    pub event: &'static str,
    pub component: String,
    pub version: String,
    pub release: String,
    pub detail: String,
}

/// What a step needs from its caller.
pub struct Hooks<'a> {
    /// The verified payload of a component (fetched and checked against its TUF target).
    pub file: &'a mut dyn FnMut(&Component) -> Result<PathBuf, ComponentError>,
    /// Health verdict after a switch that needs no reboot (`Err`: why it failed).
    pub health: &'a mut dyn FnMut(&Component) -> Result<(), String>,
    /// Called once per step, for the audit log.
    pub record: &'a mut dyn FnMut(&StepEvent),
    /// Crash-test points `component_staged`, `component_switching`, `component_switched`.
    #[cfg(feature = "failpoints")]
    pub failpoints: Option<&'a crate::failpoint::FailPoints>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub installed: Vec<String>,
    pub skipped: Vec<String>,
    /// A component switched that takes effect at the next boot.
    pub needs_reboot: bool,
}

/// Steps of [`apply`], for callers that name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Stage,
    Switch,
    Health,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "{step:?} of component {component} failed: {why}; rolled back: {}; not rolled back: {}",
        list(rolled_back),
        list(left)
    )]
    Failed {
        component: String,
        step: Step,
        why: String,
        rolled_back: Vec<String>,
        left: Vec<String>,
    },
    #[error(transparent)]
    Component(#[from] ComponentError),
    #[error("simulated power cut at {at}")]
    PowerCut { at: String },
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

pub(super) fn emit(
    record: &mut dyn FnMut(&StepEvent),
    event: &'static str,
    c: &Component,
    release: &str,
    detail: String,
) {
    record(&StepEvent {
        event,
        component: c.name.clone(),
        version: c.version.clone(),
        release: release.to_string(),
        detail,
    });
}

fn cut(_hooks: &Hooks<'_>, _at: &str) -> Result<(), ApplyError> {
    #[cfg(feature = "failpoints")]
    if _hooks.failpoints.is_some_and(|f| f.hit(_at)) {
        return Err(ApplyError::PowerCut { at: _at.into() });
    }
    Ok(())
}

/// Install `components` of `release` (see the module doc). On success the journal
/// stays, marked done, until [`commit`] or [`roll_back_release`] gives the verdict.
pub fn apply(
    journal: &Path,
    release: &str,
    slot: &str,
    components: &[Component],
    installers: &Installers,
    hooks: &mut Hooks<'_>,
) -> Result<Applied, ApplyError> {
    let steps = plan(components, installers)?;
    let mut j = Journal {
        release: release.into(),
        slot: slot.into(),
        done: false,
        committed: false,
        entries: Vec::new(),
    };
    let mut skipped = Vec::new();
    for s in steps {
        if s.action == Action::Unchanged {
            emit(
                hooks.record,
                ev::SKIPPED_EVENT,
                &s.component,
                release,
                "unchanged".into(),
            );
            skipped.push(s.component.name.clone());
        } else {
            j.entries.push(JournalEntry {
                component: s.component,
                before: s.before,
                state: StepState::Planned,
            });
        }
    }
    if j.entries.is_empty() {
        // Nothing changes: no journal, nothing to give a verdict on.
        return Ok(Applied {
            installed: Vec::new(),
            skipped,
            needs_reboot: false,
        });
    }
    j.save(journal)?;
    let mut files = Vec::new();
    let mut i = 0;
    while i < j.entries.len() {
        let c = j.entries[i].component.clone();
        match stage_one(&c, release, slot, installers, hooks) {
            Ok(Ok(file)) => files.push(file),
            Ok(Err(why)) => {
                // Nothing here for it (a cabinet no device matches): not part of the
                // release on this device, and said so.
                j.entries.remove(i);
                j.save(journal)?;
                emit(hooks.record, ev::SKIPPED_EVENT, &c, release, why);
                skipped.push(c.name.clone());
                continue;
            }
            Err(e) => {
                return fail(
                    journal,
                    &j,
                    installers,
                    hooks,
                    &c,
                    Step::Stage,
                    e.to_string(),
                )
            }
        }
        j.entries[i].state = StepState::Staged;
        j.save(journal)?;
        emit(hooks.record, ev::STAGED_EVENT, &c, release, String::new());
        cut(hooks, "component_staged")?;
        i += 1;
    }
    if j.entries.is_empty() {
        Journal::remove(journal)?;
        return Ok(Applied {
            installed: Vec::new(),
            skipped,
            needs_reboot: false,
        });
    }
    let mut needs_reboot = false;
    for (i, file) in files.iter().enumerate() {
        let c = j.entries[i].component.clone();
        j.entries[i].state = StepState::Switching;
        j.save(journal)?;
        cut(hooks, "component_switching")?;
        let job = Job {
            component: &c,
            file,
            release,
            slot,
        };
        if let Err(e) = installers.for_method(&c).and_then(|inst| inst.switch(&job)) {
            return fail(
                journal,
                &j,
                installers,
                hooks,
                &c,
                Step::Switch,
                e.to_string(),
            );
        }
        j.entries[i].state = StepState::Switched;
        j.save(journal)?;
        let to = j.entries[i]
            .before
            .as_ref()
            .map(|b| b.version.as_str())
            .unwrap_or("none");
        emit(
            hooks.record,
            ev::SWITCHED_EVENT,
            &c,
            release,
            format!("from {to}"),
        );
        cut(hooks, "component_switched")?;
        if c.needs_reboot {
            needs_reboot = true;
        } else if let Err(why) = (hooks.health)(&c) {
            emit(
                hooks.record,
                ev::HEALTH_FAILED_EVENT,
                &c,
                release,
                why.clone(),
            );
            return fail(journal, &j, installers, hooks, &c, Step::Health, why);
        }
    }
    j.done = true;
    j.save(journal)?;
    Ok(Applied {
        installed: j.entries.iter().map(|e| e.component.name.clone()).collect(),
        skipped,
        needs_reboot,
    })
}

/// Stage `c`: its verified file, or (`Ok(Err)`) why this device has nothing for it.
fn stage_one(
    c: &Component,
    release: &str,
    slot: &str,
    installers: &Installers,
    hooks: &mut Hooks<'_>,
) -> Result<Result<PathBuf, String>, ComponentError> {
    let file = (hooks.file)(c)?;
    let job = Job {
        component: c,
        file: &file,
        release,
        slot,
    };
    let inst = installers.for_method(c)?;
    if let Some(why) = inst.skip_reason(&job)? {
        return Ok(Err(why));
    }
    inst.stage(&job)?;
    Ok(Ok(file))
}

fn fail(
    journal: &Path,
    j: &Journal,
    installers: &Installers,
    hooks: &mut Hooks<'_>,
    c: &Component,
    step: Step,
    why: String,
) -> Result<Applied, ApplyError> {
    emit(hooks.record, ev::FAILED_EVENT, c, &j.release, why.clone());
    let (rolled_back, left) = undo(j, installers, hooks.record, ev::ROLLED_BACK_EVENT)?;
    Journal::remove(journal)?;
    Err(ApplyError::Failed {
        component: c.name.clone(),
        step,
        why,
        rolled_back,
        left,
    })
}

/// The release's verdict was good: record every component committed and forget the
/// journal — or, with `probation`, keep it (marked committed) until probation ends, so a
/// rollback in probation still takes the components back with the OS.
pub fn commit(
    journal: &Path,
    probation: bool,
    record: &mut dyn FnMut(&StepEvent),
) -> Result<(), ComponentError> {
    let Some(mut j) = Journal::load(journal)? else {
        return Ok(());
    };
    if !j.committed {
        for e in &j.entries {
            emit(
                record,
                ev::COMMITTED_EVENT,
                &e.component,
                &j.release,
                if probation {
                    "kept for rollback until probation ends".into()
                } else {
                    String::new()
                },
            );
        }
    }
    if probation {
        j.committed = true;
        j.save(journal)
    } else {
        Journal::remove(journal)
    }
}

/// Probation of a committed release ended: its components can no longer be rolled back
/// with it; forget the journal kept for that.
pub fn end_probation(journal: &Path) -> Result<(), ComponentError> {
    match Journal::load(journal)? {
        Some(j) if j.committed => Journal::remove(journal),
        _ => Ok(()),
    }
}

/// The release's verdict was bad (e.g. health after the reboot): roll every component
/// back in reverse order. Returns (rolled back, not rolled back).
pub fn roll_back_release(
    journal: &Path,
    installers: &Installers,
    record: &mut dyn FnMut(&StepEvent),
) -> Result<(Vec<String>, Vec<String>), ComponentError> {
    let Some(j) = Journal::load(journal)? else {
        return Ok((Vec::new(), Vec::new()));
    };
    let out = undo(&j, installers, record, ev::ROLLED_BACK_EVENT)?;
    Journal::remove(journal)?;
    Ok(out)
}
