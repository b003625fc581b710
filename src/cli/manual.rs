//! The parts of the top-level man pages clap does not know: DESCRIPTION (beyond the
//! command's own long help), FILES, EXIT STATUS, EXAMPLES and SEE ALSO of patchd(8),
//! patchctl(1) and patchpub(1). [`super::docgen`] renders them after clap_mangen's NAME,
//! SYNOPSIS, OPTIONS and COMMANDS; the exit statuses come from the code's own tables.

use std::borrow::Cow;

/// What one binary's page adds to its clap definition.
pub struct Manual {
    /// Manual section: 1 (user commands) or 8 (system administration).
    pub section: &'static str,
    /// Paragraphs appended to the DESCRIPTION section.
    pub description: &'static [&'static str],
    /// (path, what it is).
    pub files: &'static [(&'static str, &'static str)],
    /// (code, meaning).
    pub exit_status: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    /// (what it does, the command line).
    pub examples: &'static [(&'static str, &'static str)],
    /// Page references: `patchctl(1)`.
    pub see_also: &'static [&'static str],
}

fn codes(table: &[(u8, &'static str)]) -> Vec<(Cow<'static, str>, Cow<'static, str>)> {
    table
        .iter()
        .map(|(c, m)| (Cow::Owned(c.to_string()), Cow::Borrowed(*m)))
        .collect()
}

/// patchd(8).
pub fn patchd() -> Manual {
    use super::bootcheck::exit as bc;
    Manual {
        section: "8",
        description: &[
            "patchd keeps a machine patched without an administrator at its console. It learns about new releases from a TUF-signed repository (HTTP(S), a directory, or a bundle on removable media), stages them into the slot the machine is not running from, switches over only inside a maintenance window, runs health checks after the first boot of the new release, and goes back to the previous release by itself when they fail or the boot counter runs out.",
            "Without a subcommand (or with run) patchd runs as the system daemon under systemd (patchd.service, Type=notify) and serves org.patchd.Patchd1 on the system bus; admins drive it with patchctl(1), polkit decides who may change what. Every transition is recorded in a hash-chained audit log. A configuration patchd cannot run with ends it with exit status 78, which systemd does not restart; patchd --check-config says what is wrong.",
            "The other subcommands are one-shot tools: boot (the bootloader state, for the rare manual repair), boot-check (the verdict on this boot, for patchd-boot-check.service), audit verify (the log's hash chain, read from the files) and demo (the whole lifecycle on a simulated device, no root needed).",
        ],
        files: &[
            ("/etc/patchd/patchd.toml", "the configuration (see patchd.toml(5) and /usr/share/doc/patchd)"),
            ("/etc/patchd/patchd.toml.d/*.toml", "drop-ins, merged over patchd.toml in name order"),
            ("/etc/patchd/health.d/", "health-check executables run after the first boot of a new release (root-owned, not group- or world-writable)"),
            ("/var/lib/patchd/state.json", "the lifecycle state, replaced atomically on every transition"),
            ("/var/lib/patchd/audit.log", "the append-only, hash-chained audit log (with its head file)"),
            ("/var/lib/patchd/tuf/", "the trusted TUF metadata"),
            ("/var/cache/patchd/", "downloads being staged (resumable)"),
            ("/run/patchd/", "runtime files"),
            ("/usr/lib/systemd/system/patchd.service", "the daemon's unit; patchd-boot-check.service runs boot-check before boot-complete.target"),
            ("/usr/share/polkit-1/actions/org.patchd.patchd1.policy", "the polkit actions"),
        ],
        exit_status: vec![
            ("0".into(), "the daemon stopped normally, or the command succeeded".into()),
            ("1".into(), "failure: a start-up failure other than the configuration (restarted by systemd), or a one-shot command failed; boot-check: patchd is rolling back from this boot".into()),
            ("2".into(), "bad command line".into()),
            (bc::TIMEOUT.to_string().into(), "boot-check: no verdict within --timeout".into()),
            (bc::UNAVAILABLE.to_string().into(), "boot-check: the bus could not be reached".into()),
            (super::audit::exit::BROKEN.to_string().into(), "audit verify: the chain is broken or the head file does not vouch for a record".into()),
            (super::audit::exit::JOURNAL_UNAVAILABLE.to_string().into(), "audit verify --journal: the journal cannot be read or holds no audit records".into()),
            ("78".into(), "the configuration is invalid (EX_CONFIG): the error names the file, line and key; patchd.service does not restart".into()),
        ],
        examples: &[
            ("Check the configuration and print the effective settings:", "patchd --check-config"),
            ("Show what the bootloader will boot and each slot's state:", "patchd boot status"),
            ("Verify the audit log without the daemon:", "patchd audit verify"),
            ("Run the daemon on a test directory and a private bus, uid 0 allowed to change things:", "patchd --root /tmp/dev --bus-address unix:path=/tmp/bus \\\n    --auth uids:0 run"),
            ("Watch the whole lifecycle on a simulated device:", "patchd demo"),
        ],
        see_also: &[
            "patchctl(1)",
            "patchpub(1)",
            "patchd.toml(5)",
            "systemctl(1)",
            "systemd-bless-boot.service(8)",
            "polkit(8)",
        ],
    }
}

/// patchctl(1).
pub fn patchctl() -> Manual {
    Manual {
        section: "1",
        description: &[
            "patchctl talks to patchd(8) over D-Bus (the system bus, or --bus-address). Read commands (status, list, history, inventory) are open to local users; commands that change something ask polkit, so run them as root or through sudo or pkexec.",
            "install and watch draw a progress bar on standard error when it is a terminal and end with a summary: bytes fetched and reused, the time taken, and what happens next. --json prints machine-readable documents instead, on every command.",
            "completions SHELL prints a completion script for bash, zsh or fish; it completes release versions from the running daemon and audit event names.",
        ],
        files: &[
            ("/usr/share/dbus-1/interfaces/org.patchd.Patchd1.Manager.xml", "the D-Bus interface patchctl uses"),
            ("/usr/share/bash-completion/completions/patchctl", "bash completion (also zsh and fish)"),
        ],
        exit_status: codes(super::ctl::exit::TABLE),
        examples: &[
            ("What the machine runs, what is staged and what happens next:", "patchctl status"),
            ("Look for releases now:", "patchctl check"),
            ("Stage the newest allowed release and follow it:", "patchctl install"),
            ("Stage 2.1.0 and switch to it right away, outside the window:", "patchctl install 2.1.0 --now"),
            ("Hold updates for a week:", "patchctl hold --reason 'quarter-end freeze' --until 7d"),
            ("Follow whatever job patchd runs next, also one it starts by itself:", "patchctl watch"),
            ("Audit records of the last day about holds:", "patchctl history --since 1d --event hold"),
            ("Install bash completion:", "patchctl completions bash > /etc/bash_completion.d/patchctl"),
        ],
        see_also: &["patchd(8)", "patchpub(1)", "patchd.toml(5)", "pkexec(1)"],
    }
}

/// patchpub(1).
pub fn patchpub() -> Manual {
    Manual {
        section: "1",
        description: &[
            "Every command prints one line saying what it wrote or signed, which version, and where.",
            "Metadata expires: run patchpub refresh (or refresh --if-expiring-within) from a timer well within the timestamp's validity (--timestamp-expiry, default 24 hours).",
        ],
        files: &[
            ("repo/metadata/", "signed TUF metadata (root versions, timestamp, snapshot, targets, delegated roles): serve it"),
            ("repo/targets/", "release manifests, images and deltas: serve it"),
            ("keys/", "private signing keys (directory 0700, keys 0600): never serve it; keep root keys offline"),
        ],
        exit_status: vec![
            ("0".into(), "success".into()),
            ("1".into(), "failure; the message names the file, key or release".into()),
            ("2".into(), "bad command line".into()),
            (
                crate::cli::rollout::EXIT_NO_QUERY.to_string().into(),
                "rollout guard, rollout status: Prometheus could not be queried (guard: the gate was not renewed)".into(),
            ),
        ],
        examples: &[
            ("Create a repository with its keys:", "patchpub --repo repo --keys keys init"),
            ("Publish release 2.0.0 of product acme-gw as a security fix:", "patchpub add --product acme-gw --version 2.0.0 --image rootfs.img \\\n    --kind security --severity high --cve CVE-2026-1234 \\\n    --summary 'fixes CVE-2026-1234'"),
            ("Offer it on the staging channel too:", "patchpub promote acme-gw/2.0.0 --channel staging"),
            ("Re-sign what expires within the next 12 hours (from a timer):", "patchpub refresh --if-expiring-within 12h"),
            ("Check the repository as a device would:", "patchpub verify"),
            ("Write an offline bundle for removable media:", "patchpub bundle acme-gw/2.0.0 --out acme-gw-2.0.0.tar"),
            ("Guard a rollout from fleet health (every 5 minutes, from a timer):", "patchpub rollout guard acme-gw/2.0.0 \\\n    --prometheus http://prometheus:9090 \\\n    --log /var/log/patchpub/guard.jsonl"),
        ],
        see_also: &["patchd(8)", "patchctl(1)", "patchd.toml(5)"],
    }
}
