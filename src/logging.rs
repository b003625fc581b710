//! Log setup for the binaries: `tracing` with structured fields, to the journal when the
//! process runs under systemd with its stderr connected to the journal, to stderr
//! otherwise — without timestamps whenever systemd/journald adds its own.

use std::os::unix::fs::MetadataExt;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Where log records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// Native journal protocol (structured fields kept as journal fields).
    Journald,
    /// Plain text on stderr; `timestamps` is false under systemd (it stamps lines itself).
    Stderr { timestamps: bool },
}

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("a global log subscriber is already installed: {0}")]
    AlreadyInitialized(String),
}

/// Decide the target from the environment systemd sets (`JOURNAL_STREAM`,
/// `INVOCATION_ID`) and the identity (`dev:inode`) of our stderr.
pub fn detect(
    journal_stream: Option<&str>,
    invocation_id: Option<&str>,
    stderr_id: Option<(u64, u64)>,
) -> LogTarget {
    // JOURNAL_STREAM is inherited by children whose stderr may be redirected elsewhere;
    // it only counts when it names the stderr we actually have (systemd.exec(5)).
    let on_journal = match (journal_stream, stderr_id) {
        (Some(js), Some((dev, ino))) => {
            js.split_once(':')
                .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
                == Some((dev, ino))
        }
        _ => false,
    };
    if on_journal {
        LogTarget::Journald
    } else {
        LogTarget::Stderr {
            timestamps: invocation_id.is_none(),
        }
    }
}

fn stderr_id() -> Option<(u64, u64)> {
    let m = std::fs::metadata("/proc/self/fd/2").ok()?;
    Some((m.dev(), m.ino()))
}

/// Install the global subscriber for binary `identifier` (the journal's
/// `SYSLOG_IDENTIFIER`). The filter comes from `PATCHD_LOG` (then `RUST_LOG`), else
/// `default_filter` (e.g. `"info"`). Returns where logs go.
pub fn init(identifier: &str, default_filter: &str) -> Result<LogTarget, LoggingError> {
    let filter_text = std::env::var("PATCHD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default_filter.to_owned());
    let filter = EnvFilter::try_new(&filter_text).map_err(|source| LoggingError::Filter {
        filter: filter_text.clone(),
        source,
    })?;
    let mut target = detect(
        std::env::var("JOURNAL_STREAM").ok().as_deref(),
        std::env::var("INVOCATION_ID").ok().as_deref(),
        stderr_id(),
    );
    let journald = match target {
        LogTarget::Journald => match tracing_journald::layer() {
            // PATCHD_<FIELD>: the audit log's journal copy (PATCHD_AUDIT_SEQ,
            // PATCHD_AUDIT_HASH) is looked up by these names.
            Ok(l) => Some(
                l.with_syslog_identifier(identifier.to_owned())
                    .with_field_prefix(Some("PATCHD".to_owned())),
            ),
            // The journal socket is gone (e.g. in a container): stderr still reaches it
            // or the console, and systemd stamps the lines.
            Err(_) => {
                target = LogTarget::Stderr { timestamps: false };
                None
            }
        },
        LogTarget::Stderr { .. } => None,
    };
    let (stamped, plain) = match target {
        LogTarget::Stderr { timestamps: true } => (
            Some(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)),
            None,
        ),
        LogTarget::Stderr { timestamps: false } => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(false)
                    .without_time(),
            ),
        ),
        LogTarget::Journald => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(stamped)
        .with(plain)
        .try_init()
        .map_err(|e| LoggingError::AlreadyInitialized(e.to_string()))?;
    Ok(target)
}

/// Logging of a one-shot command (`patchpub`, `patchd demo`): plain lines on stderr,
/// no timestamps (a person reads them as they come), filter from the environment
/// variable `env_var`, else `default_filter`. A second call, or a bad filter, leaves
/// logging as it is: a command must not fail over its log set-up.
pub fn init_command(env_var: &str, default_filter: &str) {
    let filter =
        EnvFilter::try_from_env(env_var).unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_only_when_stream_is_our_stderr() {
        assert_eq!(
            detect(Some("8:1234"), Some("x"), Some((8, 1234))),
            LogTarget::Journald
        );
        // Inherited JOURNAL_STREAM, stderr redirected elsewhere.
        assert_eq!(
            detect(Some("8:1234"), Some("x"), Some((8, 99))),
            LogTarget::Stderr { timestamps: false }
        );
        assert_eq!(
            detect(None, None, Some((8, 99))),
            LogTarget::Stderr { timestamps: true }
        );
        assert_eq!(
            detect(Some("garbage"), None, Some((8, 99))),
            LogTarget::Stderr { timestamps: true }
        );
    }
}
