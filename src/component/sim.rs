//! The in-memory twin of an install method, for engine and orchestration tests: it
//! keeps what is installed in a map and fails the steps a test names.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{ComponentError, Installed, Installer, Job};
use crate::manifest::Component;

#[derive(Debug, Default)]
pub struct SimInstaller {
    inner: Mutex<Sim>,
}

#[derive(Debug, Default)]
struct Sim {
    installed: BTreeMap<String, Installed>,
    staged: BTreeMap<String, Installed>,
    /// `(step, component)` pairs that fail: step is `stage`, `switch` or `roll_back`.
    fail: Vec<(String, String)>,
    /// Every step run, as `step:component`.
    log: Vec<String>,
}

impl SimInstaller {
    pub fn new() -> Self {
        Self::default()
    }

    /// Pretend `name` is installed at `version` from a payload with `sha256`.
    pub fn preinstall(&self, name: &str, version: &str, sha256: &str) {
        self.lock().installed.insert(
            name.to_string(),
            Installed {
                version: version.into(),
                sha256: sha256.into(),
                copy: None,
                origin: String::new(),
            },
        );
    }

    /// Make `step` (`stage`, `switch`, `roll_back`) fail for component `name`.
    pub fn fail(&self, step: &str, name: &str) {
        self.lock().fail.push((step.into(), name.into()));
    }

    pub fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sim> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn step(&self, step: &str, name: &str) -> Result<(), ComponentError> {
        let mut g = self.lock();
        g.log.push(format!("{step}:{name}"));
        if g.fail.iter().any(|(s, n)| s == step && n == name) {
            return Err(ComponentError::failed(
                name,
                format!("simulated {step} failure"),
            ));
        }
        Ok(())
    }
}

impl Installer for SimInstaller {
    fn installed(&self, name: &str) -> Result<Option<Installed>, ComponentError> {
        Ok(self.lock().installed.get(name).cloned())
    }

    fn stage(&self, job: &Job<'_>) -> Result<(), ComponentError> {
        let c = job.component;
        self.step("stage", &c.name)?;
        self.lock().staged.insert(
            c.name.clone(),
            Installed {
                version: c.version.clone(),
                sha256: c.sha256.clone(),
                copy: None,
                origin: job.release.to_string(),
            },
        );
        Ok(())
    }

    fn switch(&self, job: &Job<'_>) -> Result<(), ComponentError> {
        let name = &job.component.name;
        self.step("switch", name)?;
        let mut g = self.lock();
        let Some(s) = g.staged.remove(name) else {
            return Err(ComponentError::failed(name, "not staged"));
        };
        g.installed.insert(name.clone(), s);
        Ok(())
    }

    fn roll_back(&self, c: &Component, before: Option<&Installed>) -> Result<(), ComponentError> {
        self.step("roll_back", &c.name)?;
        let mut g = self.lock();
        match before {
            Some(b) => g.installed.insert(c.name.clone(), b.clone()),
            None => g.installed.remove(&c.name),
        };
        Ok(())
    }
}
