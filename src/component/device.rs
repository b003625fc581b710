//! The installers this device offers, built from `[components]`: the one place that
//! decides which install methods a device has. The daemon builds them here; the demo
//! and tests build their own twins.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::config::ComponentsConfig;
use super::{
    AppBundles, ComponentError, Firmware, Handler, HandlerSettings, Installed, Installer,
    Installers, Job, Restarter, SysextSettings, Sysexts,
};
use crate::manifest::{Component, ComponentMethod};
use crate::paths::Paths;

/// The installers of a device configured with `config`, paths under `paths`' root.
pub fn installers_for(config: &ComponentsConfig, paths: &Paths) -> Installers {
    let restarter = Restarter {
        argv: config.restart_command.clone(),
    };
    let apps = AppBundles::at(paths.resolve(&config.apps_dir), restarter);
    let installers = Installers::new()
        .with(ComponentMethod::AppBundle, Arc::new(apps))
        .with(
            ComponentMethod::Handler,
            Arc::new(HandlersByName::new(config, paths, 0)),
        );
    // Further methods are offered here, one `.with(ComponentMethod::…, …)` each.
    // Without its client, firmware is not offered: a release carrying firmware then
    // fails staging naming the method, never skips it.
    let installers = installers.with(
        ComponentMethod::Sysext,
        Arc::new(Sysexts::new(paths, SysextSettings::default())),
    );
    match Firmware::system(paths) {
        Ok(fw) => installers.with(ComponentMethod::Firmware, Arc::new(fw)),
        Err(e) => {
            tracing::warn!(error = %e, "firmware components cannot be installed here");
            installers
        }
    }
}

/// The `handler` method: each handler component runs the executable the device
/// configured for its name; a component without one is refused (never guessed).
pub struct HandlersByName {
    by_name: BTreeMap<String, Handler>,
}

impl HandlersByName {
    /// `trusted_uid`: the owner every handler executable must have (0 on devices).
    pub fn new(config: &ComponentsConfig, paths: &Paths, trusted_uid: u32) -> Self {
        let by_name = config
            .handlers
            .iter()
            .map(|(name, h)| {
                let settings = HandlerSettings {
                    path: paths.resolve(&h.path),
                    timeout: h.timeout,
                    trusted_uid,
                    input: h.input,
                };
                (name.clone(), Handler::new(paths, settings))
            })
            .collect();
        Self { by_name }
    }

    fn of(&self, name: &str) -> Result<&Handler, ComponentError> {
        self.by_name
            .get(name)
            .ok_or_else(|| ComponentError::NotConfigured {
                name: name.to_string(),
                method: format!(
                    "{} (no [[components.handler]] entry for it)",
                    ComponentMethod::Handler
                ),
            })
    }
}

impl Installer for HandlersByName {
    fn installed(&self, name: &str) -> Result<Option<Installed>, ComponentError> {
        self.of(name)?.installed(name)
    }
    fn reads_back(&self) -> bool {
        false
    }
    fn stage(&self, job: &Job<'_>) -> Result<(), ComponentError> {
        self.of(&job.component.name)?.stage(job)
    }
    fn switch(&self, job: &Job<'_>) -> Result<(), ComponentError> {
        self.of(&job.component.name)?.switch(job)
    }
    fn roll_back(&self, c: &Component, before: Option<&Installed>) -> Result<(), ComponentError> {
        self.of(&c.name)?.roll_back(c, before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handler_component_without_a_configured_executable_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let installers = installers_for(&ComponentsConfig::default(), &paths);
        let c: Component = serde_json::from_value(serde_json::json!({
            "name": "mcu", "version": "1.0.0", "method": "handler",
            "target": "x", "sha256": "00", "size": 1, "rollback": "reinstall_previous"
        }))
        .unwrap_or_else(|e| panic!("component fixture: {e}"));
        let h = installers.for_method(&c).unwrap();
        let e = h.installed("mcu").unwrap_err().to_string();
        assert!(
            e.contains("mcu") && e.contains("[[components.handler]]"),
            "{e}"
        );
    }
}
