//! A transient systemd scope per check, when systemd runs the machine: the reaper and
//! everything the check starts live in `patchd-health-<n>-<name>.scope`, and the scope is
//! stopped at the end, so even a process that escaped the reaper dies with the cgroup.
//!
//! Chosen at start-up by [`super::ExecSettings::detect`]; without systemd the reaper alone
//! does the job.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// How long `systemctl` may take to stop a scope before we give up on it.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

const SEARCH_PATH: [&str; 4] = ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin"];

/// `tool` in the usual binary directories (the daemon's own PATH may be minimal).
pub(crate) fn find_tool(tool: &str) -> Option<PathBuf> {
    SEARCH_PATH
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// `patchd-health-<n>-<name>.scope`: `<n>` random so that two runs never share a unit,
/// `<name>` the check's name reduced to characters unit names take unescaped.
pub(crate) fn unit_name(check: &str) -> String {
    let name: String = check
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("patchd-health-{:08x}-{name}.scope", rand::random::<u32>())
}

/// `systemd-run --scope … -- REAPER __health-exec -- PATH ARGS`: systemd-run creates the
/// scope and then execs the reaper in place, so the daemon's child stays the reaper.
pub(crate) fn command(
    systemd_run: &Path,
    unit: &str,
    reaper: &Path,
    reaper_timeout: u64,
    path: &Path,
    args: &[String],
) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(systemd_run);
    c.args(["--scope", "--quiet", "--collect"])
        .arg(format!("--unit={unit}"))
        .arg("--")
        .arg(reaper)
        .arg(super::reaper::SUBCOMMAND)
        .arg("--timeout")
        .arg(reaper_timeout.to_string())
        .arg("--")
        .arg(path)
        .args(args);
    c
}

/// Whether a trial scope can be started (`REAPER --version` in it): systemd-run needs the
/// system bus and systemd's permission, which a sandbox may deny.
pub(crate) async fn works(systemd_run: &Path, reaper: &Path) -> bool {
    let unit = unit_name("probe");
    let run = tokio::process::Command::new(systemd_run)
        .args(["--scope", "--quiet", "--collect"])
        .arg(format!("--unit={unit}"))
        .arg("--")
        .arg(reaper)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let ok = match tokio::time::timeout(STOP_TIMEOUT, run).await {
        Ok(Ok(out)) if out.status.success() => true,
        Ok(Ok(out)) => {
            tracing::warn!(
                status = %out.status, stderr = %String::from_utf8_lossy(&out.stderr).trim(),
                "systemd-run cannot start a scope; health checks run without one"
            );
            false
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot run systemd-run; health checks run without a scope");
            false
        }
        Err(_) => {
            tracing::warn!("systemd-run timed out; health checks run without a scope");
            false
        }
    };
    stop(&unit).await;
    ok
}

/// Make sure the scope is gone: SIGKILL whatever is still in its cgroup, then stop it.
/// Normally the reaper has emptied it and `--collect` has unloaded it already, so
/// "not loaded" is the expected answer and not logged as a problem.
pub(crate) async fn stop(unit: &str) {
    let Some(systemctl) = find_tool("systemctl") else {
        tracing::warn!(
            unit,
            "systemctl not found; cannot make sure the scope is gone"
        );
        return;
    };
    for args in [vec!["kill", "--signal=SIGKILL", unit], vec!["stop", unit]] {
        let run = tokio::process::Command::new(&systemctl)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(STOP_TIMEOUT, run).await {
            Ok(Ok(out)) if out.status.success() => {}
            Ok(Ok(out)) => tracing::debug!(
                unit, verb = args[0], status = %out.status,
                stderr = %String::from_utf8_lossy(&out.stderr).trim(),
                "systemctl on the health scope (not loaded is normal)"
            ),
            Ok(Err(e)) => tracing::warn!(unit, error = %e, "cannot run systemctl"),
            Err(_) => tracing::warn!(unit, verb = args[0], "systemctl timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_are_valid_and_distinct() {
        let a = unit_name("10-db check/ü");
        let b = unit_name("10-db check/ü");
        assert_ne!(a, b);
        assert!(
            a.starts_with("patchd-health-") && a.ends_with("-10-db_check__.scope"),
            "{a}"
        );
        assert!(crate::health::valid_unit_name(&a), "{a}");
    }

    #[test]
    fn the_scope_runs_the_reaper_with_the_check() {
        let c = command(
            Path::new("/usr/bin/systemd-run"),
            "patchd-health-1-x.scope",
            Path::new("/proc/1/exe"),
            67,
            Path::new("/etc/patchd/health.d/x"),
            &["--quick".to_string()],
        );
        let argv: Vec<String> = c
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            argv,
            [
                "--scope",
                "--quiet",
                "--collect",
                "--unit=patchd-health-1-x.scope",
                "--",
                "/proc/1/exe",
                "__health-exec",
                "--timeout",
                "67",
                "--",
                "/etc/patchd/health.d/x",
                "--quick"
            ]
        );
    }
}
