//! The engine's ports implemented over the real rooms: the health runner, reboot through
//! systemd (with the policy's reboot inhibitors), and a fixed answer for devices without
//! health checks configured.

use std::sync::Arc;
use std::time::Duration;

use super::ports::{HealthCheck, HealthVerdict, PortError, Reboot};
use crate::config::InhibitorConfig;
use crate::dbus::Bus;
use crate::fetch::BoxFuture;
use crate::health::{HealthPlan, UnitQuery};
use crate::paths::Paths;
use crate::policy::inhibit::{reboot_blockers, LoginQuery};

/// The `health` room's plan as the engine's health port.
pub struct PlanHealth {
    pub plan: HealthPlan,
    pub units: Arc<dyn UnitQuery>,
}

impl HealthCheck for PlanHealth {
    fn run(&self, budget: Duration) -> BoxFuture<'_, HealthVerdict> {
        Box::pin(async move {
            let report = self.plan.run(budget, self.units.as_ref()).await;
            for c in &report.checks {
                tracing::info!(
                    check = %c.name,
                    kind = %c.kind,
                    required = c.required,
                    verdict = %c.verdict,
                    duration_ms = c.duration_ms,
                    "health check"
                );
            }
            let line = |c: &crate::health::CheckResult| {
                let out = c.output.lines().last().unwrap_or("").trim();
                if out.is_empty() {
                    format!("{} ({}): {}", c.name, c.kind, c.verdict)
                } else {
                    format!("{} ({}): {}: {out}", c.name, c.kind, c.verdict)
                }
            };
            let mut failures: Vec<String> = report.failed().map(line).collect();
            if report.deadline_exceeded && failures.is_empty() {
                failures.push("health check deadline reached".into());
            }
            HealthVerdict {
                passed: report.passed(),
                failures,
                warnings: report.warnings().map(line).collect(),
            }
        })
    }
}

/// Reboot through systemd's D-Bus API (`StartUnit("reboot.target",
/// "replace-irreversibly")`, what `systemctl reboot` does), after asking the policy's
/// reboot inhibitors.
pub struct SystemdReboot {
    pub inhibitors: InhibitorConfig,
    pub login: Option<Arc<dyn LoginQuery>>,
    pub paths: Paths,
    /// Where systemd answers: the system bus, or a private bus (tests serve a fake
    /// `org.freedesktop.systemd1` there).
    pub bus: Bus,
}

impl Reboot for SystemdReboot {
    fn inhibitors(&self) -> BoxFuture<'_, Vec<String>> {
        Box::pin(async move {
            reboot_blockers(&self.inhibitors, self.login.as_deref(), &self.paths).await
        })
    }

    fn reboot<'a>(&'a self, reason: &'a str) -> BoxFuture<'a, Result<(), PortError>> {
        Box::pin(async move {
            tracing::warn!(reason, "rebooting");
            let err = |e: zbus::Error| PortError::new("reboot via systemd", e);
            let conn = match &self.bus {
                Bus::System => zbus::Connection::system().await.map_err(err)?,
                Bus::Address(a) => zbus::connection::Builder::address(a.as_str())
                    .map_err(err)?
                    .build()
                    .await
                    .map_err(err)?,
            };
            conn.call_method(
                Some("org.freedesktop.systemd1"),
                "/org/freedesktop/systemd1",
                Some("org.freedesktop.systemd1.Manager"),
                "StartUnit",
                &("reboot.target", "replace-irreversibly"),
            )
            .await
            .map_err(err)?;
            Ok(())
        })
    }
}
