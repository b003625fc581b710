//! The engine's health port implemented over the `health` room's runner, wired by the
//! daemon (and the demo) next to the reboot port (`daemon::reboot`).

use std::time::Duration;

use std::sync::Arc;

use crate::engine::ports::{HealthCheck, HealthVerdict};
use crate::fetch::BoxFuture;
use crate::health::{HealthPlan, UnitQuery};

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
