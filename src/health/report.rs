//! The health report the engine acts on and shows.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    /// A required check failed: the release is not healthy.
    Fail,
    /// A check that is not required failed: shown, does not block commit.
    Warn,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Warn => "warn",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckKind {
    /// `[[health.command]]`
    Command,
    /// `/etc/patchd/health.d/*`
    DropIn,
    /// `/etc/patchd/health.d/wanted/*`
    Wanted,
    /// `health.units`
    Unit,
    /// `[[health.http]]`
    Http,
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckKind::Command => "command",
            CheckKind::DropIn => "drop-in",
            CheckKind::Wanted => "wanted",
            CheckKind::Unit => "unit",
            CheckKind::Http => "http",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub kind: CheckKind,
    pub required: bool,
    pub verdict: Verdict,
    /// Why it failed, or the tail of the check's output (at most 4 KiB).
    pub output: String,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    pub checks: Vec<CheckResult>,
    /// The overall deadline ran out before everything passed.
    pub deadline_exceeded: bool,
    pub duration_ms: u64,
}

impl HealthReport {
    /// Healthy: no required check failed and the deadline held.
    pub fn passed(&self) -> bool {
        !self.deadline_exceeded && self.checks.iter().all(|c| c.verdict != Verdict::Fail)
    }

    pub fn failed(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| c.verdict == Verdict::Fail)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| c.verdict == Verdict::Warn)
    }

    /// One line for the audit log: `health failed: db (command): exit status 1; …`.
    pub fn summary(&self) -> String {
        if self.passed() {
            let w = self.warnings().count();
            return format!("health passed: {} checks, {w} warnings", self.checks.len());
        }
        let mut parts: Vec<String> = self
            .failed()
            .map(|c| format!("{} ({}): {}", c.name, c.kind, first_line(&c.output)))
            .collect();
        if self.deadline_exceeded {
            parts.push("overall deadline exceeded".to_string());
        }
        format!("health failed: {}", parts.join("; "))
    }
}

fn first_line(s: &str) -> &str {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

impl fmt::Display for HealthReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary())?;
        for c in &self.checks {
            writeln!(
                f,
                "  [{}] {} ({}{}) {} ms: {}",
                c.verdict,
                c.name,
                c.kind,
                if c.required { "" } else { ", wanted" },
                c.duration_ms,
                first_line(&c.output)
            )?;
        }
        Ok(())
    }
}
