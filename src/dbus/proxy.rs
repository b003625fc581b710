//! Typed client of `org.patchd.Patchd1.Manager` (used by `patchctl`, usable by any admin
//! tool), and the mapping of its named errors back to kinds.

use std::collections::HashMap;

use zbus::zvariant::Value;

use super::error::ERROR_PREFIX;
use super::types::{AvailableTuple, HoldTuple, JobTuple, ProgressTuple, SlotTuple};

/// The client trait: its methods are generated from the table in [`super::methods`]
/// (name, argument and result types), so the proxy and the table cannot disagree; the
/// properties and the signal are written here.
macro_rules! manager_proxy {
    ($(
        $(#[doc = $doc:tt])*
        $member:literal fn $fname:ident ( $( $arg:ident : $aty:ty => $rule:expr ),* $(,)? )
            -> $out:ty, $access:expr;
    )*) => {
        #[zbus::proxy(
            interface = "org.patchd.Patchd1.Manager",
            default_service = "org.patchd.Patchd1",
            default_path = "/org/patchd/Patchd1",
            gen_blocking = false
        )]
        pub trait Manager {
            $(
                $(#[doc = $doc])*
                #[zbus(name = $member)]
                fn $fname(&self $(, $arg: $aty)*) -> zbus::Result<$out>;
            )*

            #[zbus(property)]
            fn state(&self) -> zbus::Result<String>;
            #[zbus(property)]
            fn progress(&self) -> zbus::Result<ProgressTuple>;
            #[zbus(property)]
            fn booted_slot(&self) -> zbus::Result<String>;
            #[zbus(property)]
            fn slots(&self) -> zbus::Result<Vec<SlotTuple>>;
            #[zbus(property)]
            fn current_version(&self) -> zbus::Result<String>;
            #[zbus(property)]
            fn staged_version(&self) -> zbus::Result<String>;
            #[zbus(property)]
            fn available(&self) -> zbus::Result<Vec<AvailableTuple>>;
            #[zbus(property)]
            fn next_window(&self) -> zbus::Result<String>;
            #[zbus(property)]
            fn last_check(&self) -> zbus::Result<String>;
            #[zbus(property)]
            fn last_error(&self) -> zbus::Result<String>;
            #[zbus(property)]
            fn holds(&self) -> zbus::Result<Vec<HoldTuple>>;
            #[zbus(property)]
            fn last_job(&self) -> zbus::Result<JobTuple>;
            /// (kind, text, at) of what happens next.
            #[zbus(property)]
            fn next(&self) -> zbus::Result<(String, String, String)>;

            /// A job ended: (id, outcome, error).
            #[zbus(signal)]
            fn job_finished(&self, id: u64, outcome: String, error: String) -> zbus::Result<()>;
        }
    };
}

super::methods::manager_methods!(manager_proxy);

/// Kinds of `org.patchd.Patchd1.Error.*`, plus the ways a call can fail before reaching
/// the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Busy,
    NotAuthorized,
    InvalidArgument,
    NotFound,
    /// Policy does not allow it now (window, hold, rollout stage…).
    Refused,
    Failed,
    /// Daemon not running / not activatable, or the bus unreachable.
    Unavailable,
    /// Any other D-Bus error (e.g. `org.freedesktop.DBus.Error.AccessDenied` from the bus).
    Other,
}

/// Classify a client-side error, and return the daemon's human message where it sent one.
pub fn classify(e: &zbus::Error) -> (ErrorKind, String) {
    match e {
        zbus::Error::MethodError(name, msg, _) => {
            let msg = msg.clone().unwrap_or_default();
            let kind = match name.as_str().strip_prefix(ERROR_PREFIX) {
                Some("Busy") => ErrorKind::Busy,
                Some("NotAuthorized") => ErrorKind::NotAuthorized,
                Some("InvalidArgument") => ErrorKind::InvalidArgument,
                Some("NotFound") => ErrorKind::NotFound,
                Some("Refused") => ErrorKind::Refused,
                Some("Failed") => ErrorKind::Failed,
                _ => match name.as_str() {
                    "org.freedesktop.DBus.Error.ServiceUnknown"
                    | "org.freedesktop.DBus.Error.NameHasNoOwner"
                    | "org.freedesktop.DBus.Error.Spawn.ServiceNotFound"
                    | "org.freedesktop.DBus.Error.Spawn.ChildExited" => ErrorKind::Unavailable,
                    "org.freedesktop.DBus.Error.AccessDenied" => ErrorKind::NotAuthorized,
                    "org.freedesktop.DBus.Error.InvalidArgs" => ErrorKind::InvalidArgument,
                    _ => ErrorKind::Other,
                },
            };
            let text = if msg.is_empty() {
                name.to_string()
            } else {
                msg
            };
            (kind, text)
        }
        zbus::Error::FDO(f) => {
            let kind = match **f {
                zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_) => {
                    ErrorKind::Unavailable
                }
                zbus::fdo::Error::AccessDenied(_) => ErrorKind::NotAuthorized,
                zbus::fdo::Error::InvalidArgs(_) => ErrorKind::InvalidArgument,
                _ => ErrorKind::Other,
            };
            (kind, f.to_string())
        }
        zbus::Error::InputOutput(_) | zbus::Error::Address(_) | zbus::Error::Handshake(_) => {
            (ErrorKind::Unavailable, e.to_string())
        }
        _ => (ErrorKind::Other, e.to_string()),
    }
}
