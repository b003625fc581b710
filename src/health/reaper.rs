//! The health-check reaper: a small process between the daemon and one check, so that
//! everything the check started dies with it.
//!
//! `patchd __health-exec [--timeout SECS] -- PATH ARGS...` (hidden, not in `--help` or the man page) makes
//! itself a child subreaper, runs the check in its own process group with the stdout and
//! stderr it was given, and waits for the check's main process. Then it SIGKILLs the
//! check's process group and every process it adopted (orphans of the check reparent to
//! it, also those that left the group with `setsid` or a double fork), repeating until it
//! has no children left, and exits.
//!
//! The daemon itself is never a subreaper: it would adopt every unrelated double-forked
//! orphan on the machine.
//!
//! Exit status convention (what the daemon reads):
//! - the check exited with code N: the reaper exits with N;
//! - the check was killed by signal S: the reaper exits with 128 + S and says so on stderr;
//! - the reaper got SIGTERM, SIGINT or SIGHUP (the daemon's timeout), or its own
//!   `--timeout` ran out (SIGALRM; only if the daemon died): it kills the whole tree, the
//!   check included, and exits with 128 + that signal;
//! - the check could not be started: 127 (not found) or 126, with the reason on stderr;
//! - bad arguments or no subreaper support: 125.
//!
//! When it killed anything, its last line on stderr is [`KILLED_PREFIX`] followed by the
//! count, so the daemon can say how many processes a check left behind.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The hidden subcommand of `patchd` that runs a check under the reaper.
pub const SUBCOMMAND: &str = "__health-exec";

/// Start of the reaper's last stderr line when it killed processes:
/// `patchd health-exec: killed 3 processes of the check`.
pub const KILLED_PREFIX: &str = "patchd health-exec: killed ";

const EXIT_USAGE: i32 = 125;
const EXIT_CANNOT_EXEC: i32 = 126;
const EXIT_NOT_FOUND: i32 = 127;

/// The count from the reaper's [`KILLED_PREFIX`] line in `output`, if it wrote one.
pub fn killed_count(output: &str) -> Option<usize> {
    output.lines().rev().find_map(|l| {
        l.trim()
            .strip_prefix(KILLED_PREFIX)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    })
}

fn say(msg: std::fmt::Arguments<'_>) {
    // stderr is the daemon's pipe; if it is gone there is nobody left to tell.
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// Run the reaper with the arguments after [`SUBCOMMAND`]; returns the exit code. Must be
/// called before any other thread exists (it blocks signals for the whole process).
pub fn main(args: &[OsString]) -> i32 {
    let Some((own_timeout, path, rest)) = parse_args(args) else {
        say(format_args!(
            "usage: patchd {SUBCOMMAND} [--timeout SECS] -- PATH [ARGS...]"
        ));
        return EXIT_USAGE;
    };
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        say(format_args!(
            "patchd health-exec: cannot become a child subreaper: {e}"
        ));
        return EXIT_USAGE;
    }
    // Signals are taken synchronously with sigwait: no handler can race the wait. The
    // check starts with an empty mask (std resets it in the child).
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGALRM,
    ] {
        set.add(s);
    }
    if let Err(e) = set.thread_block() {
        say(format_args!(
            "patchd health-exec: cannot block signals: {e}"
        ));
        return EXIT_USAGE;
    }
    let child = std::process::Command::new(path)
        .args(rest)
        .process_group(0)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            say(format_args!(
                "cannot run {}: {e}",
                std::path::Path::new(path).display()
            ));
            return if e.kind() == std::io::ErrorKind::NotFound {
                EXIT_NOT_FOUND
            } else {
                EXIT_CANNOT_EXEC
            };
        }
    };
    // Our own deadline, in case the daemon dies and never sends SIGTERM (an alarm is not
    // inherited by the check).
    if let Some(secs) = own_timeout {
        nix::unistd::alarm::set(secs);
    }
    let Ok(raw) = i32::try_from(child.id()) else {
        return EXIT_USAGE;
    };
    let check = Pid::from_raw(raw);
    // The child is reaped with waitpid below, never through `child`.
    drop(child);

    let mut code = None;
    let mut terminated_by = None;
    while code.is_none() && terminated_by.is_none() {
        match set.wait() {
            Ok(Signal::SIGCHLD) => code = reap_available(check),
            Ok(sig) => terminated_by = Some(sig),
            Err(Errno::EINTR) => {}
            Err(_) => {
                // Without sigwait we cannot tell when the check ends; end it now.
                terminated_by = Some(Signal::SIGTERM);
            }
        }
    }
    // The check may have exited just before a termination signal was taken.
    if code.is_none() {
        code = reap_available(check);
    }
    let (killed, late) = kill_tree(check);
    if code.is_none() {
        code = late;
    }
    if killed > 0 {
        let what = if terminated_by.is_some() {
            "processes of the check (timed out)"
        } else {
            "leftover processes of the check"
        };
        say(format_args!("{KILLED_PREFIX}{killed} {what}"));
    }
    match terminated_by {
        Some(sig) => 128 + sig as i32,
        None => code.unwrap_or(EXIT_USAGE),
    }
}

/// `[--timeout SECS] [--] PATH ARGS...`
fn parse_args(args: &[OsString]) -> Option<(Option<u32>, &OsString, &[OsString])> {
    let mut args = args;
    let mut timeout = None;
    if args.first().is_some_and(|a| a == "--timeout") {
        let secs = args.get(1)?.to_str()?.parse::<u32>().ok()?;
        timeout = Some(secs).filter(|&s| s > 0);
        args = &args[2..];
    }
    if args.first().is_some_and(|a| a == "--") {
        args = &args[1..];
    }
    let (path, rest) = args.split_first()?;
    Some((timeout, path, rest))
}

/// Reap every child that has ended; the check's exit code once it is among them.
fn reap_available(check: Pid) -> Option<i32> {
    let mut code = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return code,
            Ok(st) => {
                if let Some(c) = status_code(check, st) {
                    code = Some(c);
                }
            }
            Err(Errno::EINTR) => {}
            Err(_) => return code,
        }
    }
}

fn status_code(check: Pid, st: WaitStatus) -> Option<i32> {
    match st {
        WaitStatus::Exited(pid, c) if pid == check => Some(c),
        WaitStatus::Signaled(pid, sig, _) if pid == check => {
            say(format_args!(
                "patchd health-exec: the check was killed by signal {} ({sig})",
                sig as i32
            ));
            Some(128 + sig as i32)
        }
        _ => None,
    }
}

/// One process as `/proc/PID/stat` shows it.
struct ProcStat {
    pid: Pid,
    state: char,
    ppid: i32,
    pgrp: i32,
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields follow the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    Some(ProcStat {
        pid: Pid::from_raw(pid),
        state,
        ppid,
        pgrp,
    })
}

/// Our children (adopted ones included) and members of the check's process group.
fn tree_members(me: i32, group: i32) -> Vec<ProcStat> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|&pid| pid != me)
        .filter_map(proc_stat)
        .filter(|p| p.ppid == me || p.pgrp == group)
        .collect()
}

/// SIGKILL the check's group and every descendant, until no child is left; returns how
/// many live processes were killed, and the check's exit code if it was reaped here.
fn kill_tree(check: Pid) -> (usize, Option<i32>) {
    let me = std::process::id() as i32;
    let mut killed = BTreeSet::new();
    let mut code = None;
    loop {
        // Scan before killing: a killed process turns into a zombie at once and would
        // no longer be counted. The group kill then catches what the scan raced with.
        for p in tree_members(me, check.as_raw()) {
            if p.state != 'Z' && kill(p.pid, Signal::SIGKILL).is_ok() {
                killed.insert(p.pid.as_raw());
            }
        }
        let _ = killpg(check, Signal::SIGKILL);
        // A killed process's own children are reparented to us only once it is gone, so
        // scan again after each round of reaping, until waitpid says there are no children.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Err(Errno::ECHILD) => return (killed.len(), code),
                Ok(WaitStatus::StillAlive) => break,
                Ok(st) => {
                    if let Some(c) = status_code(check, st) {
                        code = Some(c);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(_) => return (killed.len(), code),
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_take_an_optional_timeout() {
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let args = a(&["--timeout", "65", "--", "/x", "--timeout"]);
        let (t, p, rest) = parse_args(&args).unwrap();
        assert_eq!(
            (t, p.as_os_str(), rest),
            (Some(65), "/x".as_ref(), &args[4..])
        );
        let args = a(&["/x"]);
        assert_eq!(parse_args(&args).unwrap().0, None);
        assert!(parse_args(&a(&["--timeout", "soon", "--", "/x"])).is_none());
        assert!(parse_args(&a(&["--"])).is_none());
    }

    #[test]
    fn the_killed_line_is_found_and_parsed() {
        let out = format!("ok\n{KILLED_PREFIX}3 leftover processes of the check\n");
        assert_eq!(killed_count(&out), Some(3));
        assert_eq!(killed_count("ok\nkilled 3"), None);
    }

    #[test]
    fn proc_stat_reads_a_name_with_parentheses() {
        let me = proc_stat(std::process::id() as i32).expect("own stat");
        assert_eq!(me.ppid, nix::unistd::getppid().as_raw());
        assert_eq!(me.pgrp, nix::unistd::getpgrp().as_raw());
    }
}
