//! Running the system's apt tools (`apt-get`, `apt-cache`, `apt-mark`) with the
//! configured root, configuration file and options, and apt's signature checks forced
//! on whatever the options say.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::sourceconf::AptConfig;

/// Why an apt call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AptError {
    #[error("{tool}: could not run: {detail}")]
    Spawn { tool: String, detail: String },
    #[error("{tool} {args} failed ({status}): {messages}")]
    Failed {
        tool: String,
        args: String,
        status: String,
        messages: String,
    },
    /// `apt-get update` reported errors or refused a repository (a Release file that is
    /// unsigned, badly signed or does not match its indexes): nothing is scanned.
    #[error("apt-get update: {0}")]
    Refused(String),
    #[error("{what}: {detail}")]
    Parse { what: String, detail: String },
}

/// Options that would switch apt's signature checks off; set last on every call, so no
/// configured option can win over them.
pub(super) const CHECKS_ON: [&str; 3] = [
    "Acquire::AllowInsecureRepositories=false",
    "Acquire::AllowDowngradeToInsecureRepositories=false",
    "APT::Get::AllowUnauthenticated=false",
];

/// Warnings of `apt-get update` that say nothing about trust.
const HARMLESS: [&str; 2] = [
    "is configured multiple times",
    "Skipping acquire of configured file",
];

#[derive(Debug, Clone)]
pub struct Apt {
    root: Option<PathBuf>,
    config: Option<PathBuf>,
    options: Vec<String>,
}

impl Apt {
    pub fn new(cfg: &AptConfig) -> Self {
        Self {
            root: cfg.root.clone(),
            config: cfg.config.clone(),
            options: cfg.options.clone(),
        }
    }

    fn command(&self, tool: &str, cwd: Option<&Path>) -> Command {
        let mut c = Command::new(tool);
        if let Some(cfg) = &self.config {
            c.env("APT_CONFIG", cfg);
        }
        c.env("LC_ALL", "C.UTF-8")
            .env("DEBIAN_FRONTEND", "noninteractive");
        if let Some(r) = &self.root {
            c.arg("-o").arg(format!("Dir={}", r.display()));
        }
        for o in self.options.iter().map(String::as_str).chain(CHECKS_ON) {
            c.arg("-o").arg(o);
        }
        // Scanning never takes apt's lock (the admin's apt may run meanwhile).
        c.arg("-o").arg("Debug::NoLocking=1");
        if let Some(d) = cwd {
            c.current_dir(d);
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.kill_on_drop(true);
        c
    }

    /// Run `tool args…`; its stdout and stderr, or the failure with apt's messages.
    pub async fn run(
        &self,
        tool: &str,
        args: &[&str],
        cwd: Option<&Path>,
    ) -> Result<(String, String), AptError> {
        let out = self
            .command(tool, cwd)
            .args(args)
            .output()
            .await
            .map_err(|e| AptError::Spawn {
                tool: tool.into(),
                detail: e.to_string(),
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(AptError::Failed {
                tool: tool.into(),
                args: args.join(" "),
                status: out.status.to_string(),
                messages: messages(&stderr, true).unwrap_or_else(|| stderr.trim().to_string()),
            });
        }
        Ok((stdout, stderr))
    }

    /// `apt-get update`, failing on any error or warning about a repository (apt itself
    /// exits 0 when a signature check fails and keeps the old lists).
    pub async fn update(&self) -> Result<(), AptError> {
        let (_, stderr) = self
            .run("apt-get", &["update"], None)
            .await
            .map_err(|e| match e {
                AptError::Failed { messages, .. } => AptError::Refused(messages),
                other => other,
            })?;
        if let Some(m) = messages(&stderr, false) {
            return Err(AptError::Refused(m));
        }
        self.refuse_unsigned_lists().await
    }

    /// A source marked `[trusted=yes]` passes `apt-get update` unsigned; its list shows
    /// as a `Release` without `Release.gpg` (a signed one is `InRelease`, or both).
    async fn refuse_unsigned_lists(&self) -> Result<(), AptError> {
        let (out, _) = self
            .run(
                "apt-config",
                &["shell", "LISTS", "Dir::State::lists/d"],
                None,
            )
            .await?;
        let dir = out
            .trim()
            .strip_prefix("LISTS='")
            .and_then(|r| r.strip_suffix('\''))
            .ok_or_else(|| AptError::Parse {
                what: "apt-config Dir::State::lists".into(),
                detail: out.trim().to_string(),
            })?;
        let entries = std::fs::read_dir(dir).map_err(|e| AptError::Parse {
            what: format!("apt lists {dir}"),
            detail: e.to_string(),
        })?;
        let names: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let unsigned: Vec<String> = names
            .iter()
            .filter(|n| n.ends_with("_Release") && !names.contains(&format!("{n}.gpg")))
            .map(|n| n.trim_end_matches("_Release").replace('_', "/"))
            .collect();
        if unsigned.is_empty() {
            Ok(())
        } else {
            Err(AptError::Refused(format!(
                "the repository {} is not signed (a [trusted=yes] source?); patchd scans \
                 only signed repositories",
                unsigned.join(", ")
            )))
        }
    }
}

/// apt's `E:` and `W:` lines (with their continuation lines) joined, harmless warnings
/// left out unless `all`; `None` when there are none.
fn messages(stderr: &str, all: bool) -> Option<String> {
    let mut out: Vec<String> = Vec::new();
    for line in stderr.lines() {
        let l = line.trim();
        if let Some(m) = l.strip_prefix("E: ").or_else(|| l.strip_prefix("W: ")) {
            if all || !HARMLESS.iter().any(|h| m.contains(h)) {
                out.push(m.to_string());
            }
        } else if l.starts_with("N: ") || l.is_empty() {
            continue;
        }
    }
    (!out.is_empty()).then(|| out.join("; "))
}

#[cfg(test)]
mod tests {
    use super::messages;

    #[test]
    fn warnings_about_signatures_count_and_harmless_ones_do_not() {
        let bad = "W: GPG error: file:/r ./ InRelease: The following signatures were invalid: BADSIG 1\n\
                   W: Target Packages (main) is configured multiple times in a.list:1 and b.list:1\n";
        let m = messages(bad, false).unwrap();
        assert!(m.contains("BADSIG") && !m.contains("multiple"), "{m}");
        assert_eq!(
            messages("W: Target Packages is configured multiple times\n", false),
            None
        );
        assert_eq!(messages("Reading package lists...\n", false), None);
    }
}
