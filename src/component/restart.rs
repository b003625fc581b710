//! Restarting the systemd units of an app bundle after its symlink moved.
//!
//! On devices this is `systemctl restart -- UNIT…` (the same tool the health room's
//! scope clean-up uses); a test without systemd configures its own command, which gets
//! the unit names appended as arguments.

use std::process::Command;

use super::ComponentError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restarter {
    /// Program and leading arguments; the unit names are appended.
    pub argv: Vec<String>,
}

impl Default for Restarter {
    fn default() -> Self {
        Self {
            argv: vec!["systemctl".into(), "restart".into(), "--".into()],
        }
    }
}

impl Restarter {
    /// Restart `units` (nothing to do for none). A non-zero exit names the units and
    /// carries the tool's output.
    pub fn restart(&self, component: &str, units: &[String]) -> Result<(), ComponentError> {
        if units.is_empty() {
            return Ok(());
        }
        let Some((prog, args)) = self.argv.split_first() else {
            return Err(ComponentError::failed(
                component,
                "no restart command configured",
            ));
        };
        let out = Command::new(prog)
            .args(args)
            .args(units)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| ComponentError::io(component, format!("running {prog}"), e))?;
        if !out.status.success() {
            let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
            text.truncate(500);
            return Err(ComponentError::failed(
                component,
                format!(
                    "restarting {} failed ({}): {text}",
                    units.join(" "),
                    out.status
                ),
            ));
        }
        tracing::info!(component, units = %units.join(" "), "units restarted");
        Ok(())
    }
}
