//! What a release will do to each component, before anything is done: the lines of
//! `patchctl status`/`list` and the input of [`super::apply`].

use super::{ComponentError, Installed, Installers};
use crate::manifest::{install_order, Component, Rollback};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Install,
    /// Same payload hash as installed.
    Unchanged,
}

/// One component of a release, in install order, with what the system shows now.
#[derive(Debug, Clone)]
pub struct PlannedStep {
    pub component: Component,
    pub before: Option<Installed>,
    pub action: Action,
}

/// The release's components in install order, each with what is installed now.
pub fn plan(
    components: &[Component],
    installers: &Installers,
) -> Result<Vec<PlannedStep>, ComponentError> {
    install_order(components)
        .into_iter()
        .map(|c| {
            let before = installers.for_method(c)?.installed(&c.name)?;
            let action = match &before {
                Some(b) if b.sha256 == c.sha256 => Action::Unchanged,
                _ => Action::Install,
            };
            Ok(PlannedStep {
                component: c.clone(),
                before,
                action,
            })
        })
        .collect()
}

/// The plan lines of `components` against what is installed (see
/// [`super::list_installed`]), in install order, for status and `list`.
pub fn plan_lines(
    components: &[Component],
    installed: &[super::InstalledComponent],
) -> Vec<String> {
    install_order(components)
        .into_iter()
        .map(|c| {
            let before = installed
                .iter()
                .find(|i| i.name == c.name && i.method == c.method)
                .map(|i| i.installed.clone());
            let action = match &before {
                Some(b) if b.sha256 == c.sha256 => Action::Unchanged,
                _ => Action::Install,
            };
            PlannedStep {
                component: c.clone(),
                before,
                action,
            }
            .to_string()
        })
        .collect()
}

impl std::fmt::Display for PlannedStep {
    /// `app: web 1.2 → 1.3, no reboot, rollback by switching back`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.component;
        let from = self.before.as_ref().map(|b| b.version.as_str());
        write!(f, "{}: {} ", c.method.label(), c.name)?;
        match (&self.action, from) {
            (Action::Unchanged, _) => return write!(f, "{}, unchanged", c.version),
            (_, Some(v)) => write!(f, "{v} → {}", c.version)?,
            (_, None) => write!(f, "new at {}", c.version)?,
        }
        f.write_str(if c.needs_reboot {
            ", needs reboot"
        } else {
            ", no reboot"
        })?;
        f.write_str(match c.rollback {
            Rollback::Ab => ", rollback by switching back",
            Rollback::ReinstallPrevious => ", rollback by reinstalling the previous version",
            Rollback::None => ", no rollback",
        })
    }
}
