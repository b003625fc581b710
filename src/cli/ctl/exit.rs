//! Exit codes of `patchctl`, as `docs/admin.md` lists them. [`TABLE`] is the one source of
//! the `--help` text and the man page's EXIT STATUS section; `tests/patchctl_exit_status.rs`
//! checks it against the documentation and provokes every code against `patchd run`.

pub const OK: u8 = 0;
/// The daemon reported a failure (`org.patchd.Patchd1.Error.Failed`) or another error.
pub const FAILED: u8 = 1;
/// Bad command line (clap's own code).
pub const USAGE: u8 = 2;
pub const NOT_AUTHORIZED: u8 = 3;
pub const BUSY: u8 = 4;
pub const INVALID_ARGUMENT: u8 = 5;
pub const NOT_FOUND: u8 = 6;
/// The bus or the daemon could not be reached.
pub const UNAVAILABLE: u8 = 7;
/// `audit verify` found the audit chain broken.
pub const AUDIT_BROKEN: u8 = 8;
/// `install` or `watch`: the job ended with an error (`LastJob`/`JobFinished` say so).
pub const JOB_FAILED: u8 = 9;
/// Policy does not allow it now (`switch` outside the maintenance window, a hold…);
/// the message says why.
pub const REFUSED: u8 = 10;
/// Not ours: the shell's code for a process ended by SIGPIPE (128 + 13), listed because
/// `patchctl history | head` ends with it on purpose.
pub const SIGPIPE: u8 = 141;

/// Every exit status with its short meaning (the long one is in docs/admin.md).
pub const TABLE: &[(u8, &str)] = &[
    (OK, "success"),
    (FAILED, "the daemon reported a failure"),
    (USAGE, "bad command line"),
    (NOT_AUTHORIZED, "not authorized (polkit refused)"),
    (BUSY, "busy: another request or job is running; retry later"),
    (INVALID_ARGUMENT, "invalid argument"),
    (
        NOT_FOUND,
        "not found (no such release, nothing staged, no hold, no job)",
    ),
    (UNAVAILABLE, "patchd or the bus not reachable"),
    (AUDIT_BROKEN, "audit verify: the audit chain is broken"),
    (
        JOB_FAILED,
        "install/watch: the job failed or was cancelled (also before patchctl looked)",
    ),
    (
        REFUSED,
        "refused by policy now (switch outside the maintenance window, a hold, ...)",
    ),
    (
        SIGPIPE,
        "(shell) the reader of stdout went away (patchctl history | head)",
    ),
];

/// The `Exit status:` block of `patchctl --help`.
pub fn help() -> String {
    let mut s = String::from("Exit status:");
    for (code, what) in TABLE {
        s.push_str(&format!("\n  {code:<3} {what}"));
    }
    s
}

/// The bus answered but nobody owns patchd's name: the daemon is not running (or not
/// activatable), which deserves the `systemctl status` hint.
pub fn name_missing(e: &zbus::Error) -> bool {
    const NAMES: [&str; 2] = [
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
    ];
    match e {
        zbus::Error::MethodError(name, _, _) => NAMES.contains(&name.as_str()),
        zbus::Error::FDO(f) => matches!(
            **f,
            zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_)
        ),
        _ => false,
    }
}
