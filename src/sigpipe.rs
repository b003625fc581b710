//! Closed standard output in the one-shot commands (`patchctl history | head`).
//!
//! Rust starts every program with SIGPIPE ignored, so a write to a closed pipe returns
//! EPIPE and `println!` panics ("failed printing to stdout", exit 101). Shells and admins
//! expect a command whose reader went away to end quietly with status 141 (killed by
//! SIGPIPE), as `ls | head` does. The command-line tools restore the default action at
//! start; the daemon (`patchd run`) does not, because there a peer that hangs up (a health
//! check's pipe, a D-Bus client) must be an error it handles, never its end.

/// Restores the default SIGPIPE action (terminate quietly) for a one-shot command.
pub fn restore_default() {
    // SAFETY: setting a signal's disposition to SIG_DFL installs no handler and touches no
    // Rust state; called at the top of main before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
