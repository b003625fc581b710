//! Named D-Bus errors `org.patchd.Patchd1.Error.*` and the one place backend and
//! authorization failures are mapped to them.

use super::backend::BackendError;

/// Errors every method of `org.patchd.Patchd1.Manager` may return. The message is meant
/// for humans; scripts match on the error name.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.patchd.Patchd1.Error")]
pub enum Error {
    /// Another mutating call or job is in progress.
    Busy(String),
    /// polkit (or the test authorization mode) refused the caller.
    NotAuthorized(String),
    /// An argument was too large, malformed or unknown.
    InvalidArgument(String),
    /// Policy does not allow it now (maintenance window, hold, rollout stage…); the
    /// message lists the reasons. `Switch` with option `force` overrides the window.
    Refused(String),
    /// The thing asked for does not exist (release, staged release, hold).
    NotFound(String),
    /// Anything else; the message says what failed.
    Failed(String),
}

impl From<BackendError> for Error {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Busy(m) => Error::Busy(m),
            BackendError::InvalidArgument(m) => Error::InvalidArgument(m),
            BackendError::NotFound(m) => Error::NotFound(m),
            BackendError::Refused(m) => Error::Refused(m),
            BackendError::NotAuthorized(m) => Error::NotAuthorized(m),
            BackendError::Failed(m) => Error::Failed(m),
        }
    }
}

/// Errors from zbus itself reach callers under our names too. The one that matters is
/// a body that does not match the method's signature: that is a malformed argument.
impl From<zbus::Error> for Error {
    fn from(e: zbus::Error) -> Self {
        match e {
            zbus::Error::Variant(v) => Error::InvalidArgument(format!("malformed arguments: {v}")),
            other => Error::Failed(other.to_string()),
        }
    }
}

/// Short names of the error kinds, as they appear after the `org.patchd.Patchd1.Error.`
/// prefix; used by the client to map errors back to kinds and exit codes.
pub const ERROR_PREFIX: &str = "org.patchd.Patchd1.Error.";
