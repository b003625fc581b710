//! The configuration schema: one table naming every setting patchd reads — its section,
//! key, type, default and what it does.
//!
//! Three things are made from it so they cannot disagree: the commented `patchd.toml`
//! that `patchd init` writes ([`super::sample`]), the `patchd.toml(5)` man page
//! (`cli::config_page`), and the drift test in `tests/config_schema.rs`, which asks the
//! parser itself (each raw type refuses unknown keys and lists the ones it knows) that
//! the keys here are exactly the keys it accepts, and parses every example value.
//! Adding a setting therefore means: the key in its room's raw type, a row here.

/// A TOML table of the configuration (`[name]`, or `[[name]]` when `array`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    /// Dotted table name: `repository`, `boot.grub`, `health.command`.
    pub name: &'static str,
    /// An array of tables (`[[health.command]]`): each entry is one check, rule or slot.
    pub array: bool,
    pub about: &'static str,
    /// What a file also needs for a key of this section to validate on its own (the
    /// drift test parses each key with it; it is never written to a sample).
    pub context: &'static str,
}

/// One key of a [`Section`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub section: &'static str,
    pub key: &'static str,
    /// The value's type in words: `string`, `path`, `duration`, `array of strings`, ….
    pub ty: &'static str,
    /// The default written as TOML; `None`: unset unless configured.
    pub default: Option<&'static str>,
    /// A value to show where there is no default, and the one the drift test parses.
    pub example: &'static str,
    pub about: &'static str,
}

impl Setting {
    /// The default as a reader sees it: the TOML value, or `unset`.
    pub fn default_text(&self) -> &'static str {
        self.default.unwrap_or("unset")
    }
}

const REPO_CTX: &str = "[device]\nproduct = \"p\"\n";
const BOOT_CTX: &str = "[boot]\nbackend = \"file\"\n";
const SLOTS_CTX: &str = "[slots]\nbackend = \"file\"\n";
const FLEET_CTX: &str = "[fleet.fleetlock]\nurl = \"http://fleetlock.example.com:8080/\"\n";
const ETCD_CTX: &str =
    "[fleet]\nlock = \"etcd\"\n[fleet.etcd]\nendpoints = [\"https://127.0.0.1:2379\"]\ncert = \"/etc/patchd/etcd-client.pem\"\nkey = \"/etc/patchd/etcd-client.key\"\n";

macro_rules! sections {
    ($( $name:literal $(array $array:literal)? ctx $ctx:expr => $about:literal ;)*) => {
        /// Every table, in the order samples and the man page show them (a table before
        /// its sub-tables).
        pub const SECTIONS: &[Section] = &[$(Section {
            name: $name,
            array: false $(|| $array)?,
            about: $about,
            context: $ctx,
        }),*];
    };
}

sections! {
    "device" ctx "" => "Who this device is: the product and channel releases are published for, its rollout tags, and where its machine and hardware ids come from.";
    "repository" ctx REPO_CTX => "Where signed releases come from: an https URL or a local directory (not both), the TUF root shipped in the image, and how often to look.";
    "policy" ctx "" => "When a staged release may switch: maintenance windows in a time zone, and whether staging may run outside them.";
    "policy.urgency" array true ctx "" => "Urgency rules, first match wins; a release no rule matches waits for a window. Default: one rule, feature releases wait for an admin's approval.";
    "policy.inhibitors" ctx "" => "What makes a reboot wait: logged-in users, shutdown inhibitor locks, a command.";
    "health" ctx "" => "Checks after the first boot of a new release; the release is committed when every required check passes within the deadline, else rolled back. Executables in /etc/patchd/health.d/ (required) and /etc/patchd/health.d/wanted/ (warnings only) run too.";
    "health.command" array true ctx "" => "A command check: run without a shell; exit status 0 is healthy. Its whole process tree is killed at the end.";
    "health.http" array true ctx "" => "An HTTP probe: GET the URL and expect the status.";
    "boot" ctx BOOT_CTX => "The bootloader backend that decides which slot boots next.";
    "boot.grub" ctx BOOT_CTX => "GRUB: the environment block read by the shipped patchd-ab.cfg snippet.";
    "boot.uboot" ctx BOOT_CTX => "U-Boot: where the environment copies are (fw_env.config, or copies listed inline).";
    "boot.uboot.copies" array true ctx BOOT_CTX => "One U-Boot environment copy given inline (one entry = single environment, two = redundant); used when fw_env_config is not set.";
    "boot.systemd-boot" ctx BOOT_CTX => "systemd-boot: boot counting in the Boot Loader Specification entries of each slot.";
    "boot.file" ctx BOOT_CTX => "The simulated bootloader: a JSON state file (tests, trying patchd on one machine).";
    "boot.detect" ctx BOOT_CTX => "How the booted slot is recognised; every available source must agree.";
    "slots" ctx SLOTS_CTX => "Where the A/B slots live: image files, block devices or btrfs subvolumes. The daemon needs at least two slots, named as in [boot] slots.";
    "slots.slot" array true ctx SLOTS_CTX => "One slot: its name and, for file and block slots, its image file or device.";
    "fetch" ctx "" => "Bounds on downloads from an HTTP(S) repository, so a trickling mirror cannot hold an update back.";
    "offline" ctx "" => "Offline bundles (patchctl install --bundle): how fresh their metadata must be and how large they may be.";
    "audit" ctx "" => "The hash-chained audit log.";
    "metrics" ctx "" => "The Prometheus node-exporter textfile.";
    "fleet" ctx FLEET_CTX => "Reboots coordinated across a fleet: the device's failure-domain group and the reboot lock it takes a slot from right before switching (inside the window, once nothing else holds the switch back). The slot is kept through the reboot, health checks and probation and given back at steady state; after a failed update it is kept until patchctl fleet release.";
    "fleet.fleetlock" ctx "" => "A FleetLock v1 lock server (as Zincati speaks it: airlock, the Kubernetes fleetlock). Slots per group are set on the server.";
    "fleet.etcd" ctx ETCD_CTX => "An etcd v3 cluster spoken to directly (its JSON gateway): a semaphore per group, slots per group in the key <prefix>/<group>/slots (1 when missing), each holder on a lease the daemon keeps alive, so a device that vanished frees its slot after lease_ttl.";
    "source" ctx "" => "Where releases come from: the signed repository of [repository] (image-based devices), or the system's apt (package-based servers; see docs/apt.md).";
    "source.apt" ctx "" => "The apt source: pending package upgrades, scanned with the system's apt and its signed Release files, offered as one patch set.";
    "source.apt.severity" array true ctx "" => "Severity rules for packages of the patch set, first match wins; a package no rule matches gets the severity of its changelog urgency (security upgrades at least medium, others low when the changelog says nothing).";
    "components" ctx "" => "Release components beside the OS image (docs/components.md): where app bundles live, how their units are restarted, and the executable that installs each handler component. Handler executables come only from here, never from a release.";
    "components.handler" array true ctx "" => "One handler component: its name in releases and the root-owned executable that installs its payload (given on stdin or as a file descriptor, see input; not group/world-writable, else refused).";
}

macro_rules! settings {
    ($( $section:literal $key:literal : $ty:literal = $default:tt ex $example:literal => $about:literal ;)*) => {
        /// Every setting, grouped by section in [`SECTIONS`] order.
        pub const SETTINGS: &[Setting] = &[$(Setting {
            section: $section,
            key: $key,
            ty: $ty,
            default: settings!(@d $default),
            example: $example,
            about: $about,
        }),*];
    };
    (@d none) => { None };
    (@d $d:literal) => { Some($d) };
}

settings! {
    "device" "product": "string" = none ex "\"my-appliance\"" => "Product name releases are published under (a-z A-Z 0-9 - _ ., at most 64). Required when a repository is configured.";
    "device" "channel": "string" = "\"stable\"" ex "\"stable\"" => "Channel the device follows: staging, stable, or any name the publisher uses.";
    "device" "tags": "array of strings" = "[]" ex "[\"canary\"]" => "Device tags; rollout stages by tag (e.g. canary) reach these devices first.";
    "device" "machine_id_path": "path" = "\"/etc/machine-id\"" ex "\"/etc/machine-id\"" => "Where the machine id is read (inventory, rollout bucketing). The daemon does not start without it: systemd-machine-id-setup writes one.";
    "device" "hardware": "string" = none ex "\"acme-gw-rev2\"" => "Hardware-compatibility id, matched against a release's hardware list (A-Z a-z 0-9 . _ - +, 1 to 64 bytes). Unset, it is read from the device tree, then the DMI product and board names.";
    "repository" "url": "URL" = none ex "\"https://updates.example.com/repo/\"" => "https:// URL of the signed repository (http:// only with allow_http). Not together with dir; a later file's dir replaces an earlier url, and url = \"\" clears it.";
    "repository" "dir": "path" = none ex "\"/srv/patchd-repo\"" => "Local directory holding the repository (metadata/ and targets/) instead of url; a later file's url replaces an earlier dir, and dir = \"\" clears it.";
    "repository" "trusted_root": "path" = "\"/usr/share/patchd/root.json\"" ex "\"/etc/patchd/root.json\"" => "The repository's TUF root shipped in the image, copied into /var/lib/patchd/tuf/ on first start. Without it nothing is installed (fail closed).";
    "repository" "ca_bundle": "path" = none ex "\"/etc/patchd/repo-ca.pem\"" => "Extra CA certificates (PEM) for the repository's TLS, besides the system roots.";
    "repository" "check_interval": "duration" = "\"6h\"" ex "\"6h\"" => "Time between periodic checks (at least 1m).";
    "repository" "check_jitter": "duration" = "\"30m\"" ex "\"30m\"" => "Random extra delay added to each check, so a fleet does not ask at once.";
    "repository" "allow_http": "boolean" = "false" ex "true" => "Accept a plain http:// URL (trusted networks only; signatures are still checked).";
    "policy" "time_zone": "string" = "\"UTC\"" ex "\"Europe/Berlin\"" => "IANA time zone of the windows (system tz database).";
    "policy" "windows": "array of windows" = "[]" ex "[\"Sat,Sun 02:00-05:00\"]" => "Maintenance windows, DAYS HH:MM-HH:MM (Mon-Fri, Sat,Sun, daily; an end before the start ends the next day). Empty, the default, means always open: the device switches and REBOOTS BY ITSELF as soon as a release is staged.";
    "policy" "stage_outside_windows": "boolean" = "true" ex "true" => "Download and stage outside windows; false stages only inside one.";
    "policy" "stage_spread": "duration" = "\"30m\"" ex "\"30m\"" => "When a rollout stage opens by time, each device starts staging after its own delay in [0, this), derived from its rollout bucket hash, so the fleet does not download at once; 0s stages at once (at most 7d).";
    "policy.urgency" "kind": "string" = none ex "\"security\"" => "Release kind the rule matches: security, bugfix or feature (unset: any).";
    "policy.urgency" "min_severity": "string" = none ex "\"critical\"" => "Lowest severity the rule matches: low, medium, high, critical (unset: any).";
    "policy.urgency" "action": "string" = none ex "\"immediate\"" => "Required. immediate (switch as soon as staged, even outside windows), window (next window) or approval (only after patchctl approve or install, then in a window).";
    "policy.inhibitors" "sessions": "boolean" = "true" ex "true" => "Wait while users are logged in (logind sessions).";
    "policy.inhibitors" "inhibitor_locks": "boolean" = "true" ex "true" => "Wait while a systemd inhibitor lock blocks shutdown.";
    "policy.inhibitors" "command": "array of strings" = none ex "[\"/usr/local/bin/ok-to-reboot\"]" => "argv (absolute path first, no shell); wait while it exits non-zero.";
    "policy.inhibitors" "command_timeout": "duration" = "\"30s\"" ex "\"30s\"" => "The command is killed after this and counts as wait.";
    "policy.inhibitors" "recheck": "duration" = "\"5m\"" ex "\"5m\"" => "Ask the inhibitors again after this long.";
    "health" "units": "array of strings" = "[]" ex "[\"nginx.service\"]" => "systemd units that must be active.";
    "health" "check_timeout": "duration" = "\"60s\"" ex "\"60s\"" => "Timeout of each check that does not set its own.";
    "health" "deadline": "duration" = "\"10m\"" ex "\"10m\"" => "Everything must pass within this time after boot, else rollback; survives restarts.";
    "health" "probation": "duration" = "\"0s\"" ex "\"24h\"" => "Keep checking this long after commit while the old slot is intact (0s = off).";
    "health" "probation_interval": "duration" = "\"1h\"" ex "\"1h\"" => "Time between checks during probation.";
    "health.command" "name": "string" = none ex "\"database\"" => "Required. Unique check name, shown in reports.";
    "health.command" "run": "array of strings" = none ex "[\"/usr/bin/pg_isready\", \"-q\"]" => "Required. argv, the first an absolute path; no shell. Exit 0 = healthy.";
    "health.command" "timeout": "duration" = none ex "\"30s\"" => "Killed after this with every process it started (unset: check_timeout).";
    "health.command" "required": "boolean" = "true" ex "true" => "false: a failure is a warning only.";
    "health.http" "name": "string" = none ex "\"api\"" => "Required. Unique check name.";
    "health.http" "url": "URL" = none ex "\"http://127.0.0.1:8080/healthz\"" => "Required. http:// or https:// URL, fetched with GET.";
    "health.http" "status": "integer" = "200" ex "200" => "Expected HTTP status.";
    "health.http" "timeout": "duration" = none ex "\"10s\"" => "Request timeout (unset: check_timeout).";
    "health.http" "required": "boolean" = "true" ex "true" => "false: a failure is a warning only.";
    "boot" "backend": "string" = none ex "\"grub\"" => "Required when the section is present: grub, uboot, systemd-boot or file (simulation).";
    "boot" "slots": "array of slot names" = "[\"a\", \"b\"]" ex "[\"a\", \"b\"]" => "Slot names, in status order.";
    "boot" "attempts": "integer" = "1" ex "2" => "Boots a new slot gets before the bootloader falls back (1-9). With 1 a power cut during the first boot counts as a failed release; 2 or 3 ride it out.";
    "boot.grub" "env": "path" = "\"/boot/grub/grubenv\"" ex "\"/boot/grub/grubenv\"" => "The GRUB environment block.";
    "boot.uboot" "fw_env_config": "path" = "\"/etc/fw_env.config\"" ex "\"/etc/fw_env.config\"" => "fw_env.config-style file listing the environment copies, as fw_printenv reads it.";
    "boot.uboot.copies" "device": "path" = none ex "\"/dev/mmcblk0\"" => "Required. File or raw device holding the copy.";
    "boot.uboot.copies" "offset": "integer" = "0" ex "4186112" => "Byte offset of the environment inside device.";
    "boot.uboot.copies" "size": "integer" = none ex "8192" => "Required. Environment size in bytes, CRC and flag byte included.";
    "boot.systemd-boot" "esp": "path" = "\"/boot/efi\"" ex "\"/boot/efi\"" => "ESP (or XBOOTLDR) mount holding loader/entries/.";
    "boot.systemd-boot" "entries": "table of slot = entry name" = "{}" ex "{ a = \"os-a\", b = \"os-b\" }" => "Entry name of each slot (file name without counter and .conf/.efi); unset slots use patchd-SLOT.";
    "boot.systemd-boot" "efivars": "path" = "\"/sys/firmware/efi/efivars\"" ex "\"/sys/firmware/efi/efivars\"" => "efivarfs mount (used when present).";
    "boot.file" "path": "path" = "\"/var/lib/patchd/boot.json\"" ex "\"/var/lib/patchd/boot.json\"" => "State file of the simulated bootloader.";
    "boot.detect" "cmdline_keys": "array of strings" = "[\"patchd.slot\", \"rauc.slot\"]" ex "[\"patchd.slot\"]" => "Kernel command-line keys naming the booted slot.";
    "boot.detect" "root_devices": "table of slot = path" = "{}" ex "{ a = \"/dev/vda2\", b = \"/dev/vda3\" }" => "Root device of each slot, matched against / in /proc/self/mountinfo.";
    "slots" "backend": "string" = none ex "\"file\"" => "Required when the section is present: file (each slot an image file), block (each slot a block device, refused while mounted) or btrfs (each slot a subvolume DIR/NAME).";
    "slots" "dir": "path" = none ex "\"/.slots\"" => "btrfs only, required there: the directory on btrfs holding the slot subvolumes.";
    "slots" "checkpoint_every": "integer" = "67108864" ex "67108864" => "Bytes written between two durable staging checkpoints (at least 1048576); an interrupted staging resumes from the last one.";
    "slots.slot" "name": "slot name" = none ex "\"a\"" => "Required. The slot's name, as in [boot] slots.";
    "slots.slot" "path": "path" = none ex "\"/dev/disk/by-partlabel/root-a\"" => "file and block slots, required there: the image file or block device (refused for btrfs).";
    "fetch" "min_rate": "rate" = "\"8K\"" ex "\"8K\"" => "Lowest average rate in bytes per second over min_rate_window (K, M, G suffixes; at most 1G); below it the download ends as slow retrieval. 0 turns the rule off.";
    "fetch" "min_rate_window": "duration" = "\"60s\"" ex "\"60s\"" => "Window the average is taken over (1s to 1h).";
    "fetch" "deadline_floor": "duration" = "\"5m\"" ex "\"5m\"" => "Each download must finish within deadline_floor + bytes / min_rate.";
    "fetch" "stall_timeout": "duration" = "\"30s\"" ex "\"30s\"" => "No byte at all for this long: drop the connection and resume.";
    "fetch" "retry_after": "duration" = "\"5m\"" ex "\"5m\"" => "After the network ended a staging, stage the same release again this long after, from its checkpoint; doubles with each further failure.";
    "fetch" "retry_after_max": "duration" = "\"1h\"" ex "\"1h\"" => "Longest wait between such attempts.";
    "offline" "allow_expired": "boolean" = "false" ex "true" => "Accept expired timestamp, snapshot and targets metadata from an offline bundle; signatures, versions, rollback protection and the security floor still apply, an expired root is still refused, and each acceptance is audited (bundle_expired_accepted). Never applies to the online repository.";
    "offline" "max_bundle_size": "integer" = "68719476736" ex "68719476736" => "Bytes the daemon copies from one bundle at most (64 GiB; at least 1 MiB).";
    "audit" "path": "path" = "\"/var/lib/patchd/audit.log\"" ex "\"/var/lib/patchd/audit.log\"" => "Hash-chained audit log (JSON lines).";
    "audit" "max_size": "integer" = "8388608" ex "8388608" => "Rotate before the live file grows past this many bytes (at least 4096).";
    "audit" "keep": "integer" = "4" ex "4" => "Rotated files kept (1-1000).";
    "metrics" "textfile": "path" = none ex "\"/var/lib/prometheus/node-exporter/patchd.prom\"" => "Prometheus node-exporter textfile kept current by the daemon; off when unset. Its directory must exist.";
    "fleet" "group": "string" = "\"default\"" ex "\"db-eu1\"" => "The device's failure domain (rack, cluster, zone): at most the lock's slots of a group reboot at once. 1 to 64 of a-z A-Z 0-9 - _ .";
    "fleet" "lock": "string" = "\"none\"" ex "\"fleetlock\"" => "Reboot lock: none (reboots are not coordinated), fleetlock ([fleet.fleetlock]) or etcd ([fleet.etcd]).";
    "fleet" "when_unreachable": "string" = "\"wait\"" ex "\"wait\"" => "When the lock service does not answer: wait (stay staged, do not reboot, ask again; fail safe) or reboot (switch without a slot).";
    "fleet" "timeout": "duration" = "\"10s\"" ex "\"10s\"" => "Bound of each request to the lock service (1s to 5m).";
    "fleet" "retry_min": "duration" = "\"30s\"" ex "\"30s\"" => "Wait before asking again after a refusal or an unreachable service (at least 1s); doubles per further one, each wait randomised to 50-100 %.";
    "fleet" "retry_max": "duration" = "\"10m\"" ex "\"10m\"" => "Longest wait between two asks (not below retry_min).";
    "fleet.fleetlock" "url": "URL" = none ex "\"http://fleetlock.example.com:8080/\"" => "Required with lock = \"fleetlock\". Base URL of the server; /v1/pre-reboot and /v1/steady-state are appended. Only its form is checked by --check-config: an unreachable server is a fail-safe wait, not a configuration error.";
    "fleet.fleetlock" "ca_bundle": "path" = none ex "\"/etc/patchd/fleetlock-ca.pem\"" => "Extra CA certificates (PEM) for an https server, besides the system roots.";
    "fleet.etcd" "endpoints": "list of URLs" = none ex "[\"https://etcd1.example.com:2379\", \"https://etcd2.example.com:2379\"]" => "Required with lock = \"etcd\". Client URLs of the members, tried in turn when one does not answer or has no leader.";
    "fleet.etcd" "ca": "path" = none ex "\"/etc/patchd/etcd-ca.pem\"" => "CA bundle (PEM) the members' certificates must chain to; when set, only it is trusted.";
    "fleet.etcd" "cert": "path" = none ex "\"/etc/patchd/etcd-client.pem\"" => "Client certificate (PEM) for a cluster started with --client-cert-auth; needs key.";
    "fleet.etcd" "key": "path" = none ex "\"/etc/patchd/etcd-client.key\"" => "The client certificate's private key (PEM).";
    "fleet.etcd" "lease_ttl": "duration" = "\"10m\"" ex "\"10m\"" => "How long a slot outlives a device that stopped renewing it (at least 2s). Longer than a reboot, so a slot is kept across it.";
    "fleet.etcd" "prefix": "string" = "\"/patchd/reboot\"" ex "\"/patchd/reboot\"" => "Key prefix: <prefix>/<group>/slots and <prefix>/<group>/holders/<device id>.";
    "fleet.etcd" "request_timeout": "duration" = "\"10s\"" ex "\"10s\"" => "Bound on each operation, over all endpoints together.";
    "source" "kind": "string" = "\"repository\"" ex "\"apt\"" => "repository: signed releases from [repository]; apt: the pending upgrades of the system's apt as one patch set ([source.apt]).";
    "source.apt" "root": "path" = none ex "\"/srv/apt-root\"" => "apt's root directory, passed as -o Dir=; unset: the system's apt.";
    "source.apt" "config": "path" = none ex "\"/etc/patchd/apt.conf\"" => "An apt configuration file, passed as APT_CONFIG; unset: the system's.";
    "source.apt" "options": "array of strings" = "[]" ex "[\"Acquire::Retries=3\"]" => "More -o Key=Value options for every apt call. Never use them to turn apt's signature checks off: patchd refuses to scan then.";
    "source.apt" "update": "boolean" = "true" ex "true" => "Run apt-get update (apt checks the Release signatures) before each scan; false scans the lists apt already has.";
    "source.apt" "security_origins": "array of strings" = "[\"label=Debian-Security\", \"suite=*-security\"]" ex "[\"label=Debian-Security\"]" => "Origin patterns (key=glob pairs joined by commas; keys origin, label, suite, codename, component, site) whose upgrades are kind security.";
    "source.apt" "bugfix_origins": "array of strings" = "[\"suite=stable\", \"suite=oldstable\", \"suite=*-updates\"]" ex "[\"origin=Debian,suite=stable\"]" => "Origin patterns whose upgrades are kind bugfix (point releases, -updates). Upgrades from any other origin are kind feature.";
    "source.apt" "offer_feature": "boolean" = "false" ex "true" => "Offer upgrades of kind feature (backports, other origins); false lists them as not offered.";
    "source.apt" "feed": "path" = none ex "\"/var/lib/patchd/debian-security-tracker.json\"" => "Debian security tracker data (the JSON of security-tracker.debian.org/tracker/data/json): CVEs fixed between the installed and the candidate version are added, with their urgency.";
    "source.apt" "changelogs": "string" = "\"download\"" ex "\"none\"" => "download: read CVE ids and urgencies from the changelog.Debian.gz of each candidate .deb, fetched with apt-get download from the configured archive (offline with a local mirror); none: do not.";
    "source.apt" "conffiles": "string" = "\"keep\"" ex "\"package\"" => "Staging: the version of a configuration file the admin changed that an upgrade keeps: keep: the admin's (dpkg --force-confold, the package's as .dpkg-dist); package: the package's (--force-confnew, the admin's as .dpkg-old).";
    "source.apt" "keep": "integer" = "2" ex "1" => "Roots kept on disk: 2: the previous root stays bootable as the other slot (patchctl rollback goes back to it) until the next staging replaces it; 1: once the new root is committed and [health] probation ended, the previous root is taken out of the boot order and its snapshot deleted (frees the space its old package files hold; nothing to roll back to afterwards).";
    "source.apt.severity" "origin": "string" = none ex "\"label=Debian-Security\"" => "Origin pattern the package's candidate must come from.";
    "source.apt.severity" "package": "string" = none ex "\"openssl*\"" => "Glob over the package name.";
    "source.apt.severity" "urgency": "string" = none ex "\"high\"" => "The changelog's highest urgency since the installed version is at least this (low, medium, high, emergency, critical).";
    "source.apt.severity" "kind": "string" = none ex "\"security\"" => "The package's kind (security, bugfix, feature).";
    "source.apt.severity" "severity": "string" = none ex "\"critical\"" => "Required. The severity of a matching package (low, medium, high, critical).";
    "components" "apps_dir": "path" = "\"/var/lib/patchd/apps\"" ex "\"/var/lib/patchd/apps\"" => "Where app bundles live: NAME/a, NAME/b and the NAME/current symlink the switch replaces atomically.";
    "components" "restart_command": "array of strings" = "[\"systemctl\", \"restart\", \"--\"]" ex "[\"systemctl\", \"restart\", \"--\"]" => "Program and arguments that restart an app bundle's units after its switch (and after switching back); the unit names from the release are appended.";
    "components" "handler_timeout": "duration" = "\"10m\"" ex "\"10m\"" => "Longest run of a handler executable before it is killed and its step failed (1s to 24h); [[components.handler]] timeout overrides it per component.";
    "components.handler" "component": "string" = none ex "\"mcu\"" => "Required. The component name releases use for it (1 to 64 of a-z A-Z 0-9 - _ .).";
    "components.handler" "path": "path" = none ex "\"/usr/libexec/patchd/mcu-flash\"" => "Required. The executable: root-owned, neither it nor its directory group/world-writable.";
    "components.handler" "timeout": "duration" = none ex "\"2m\"" => "Bound of this handler's runs (default: handler_timeout).";
    "components.handler" "input": "string" = "\"stdin\"" ex "\"fd\"" => "How the handler gets the verified payload: \"stdin\" (its standard input is the payload file) or \"fd\" (an inherited read-only descriptor whose number is in PATCHD_PAYLOAD_FD; standard input is /dev/null).";
}

/// The settings of `section`, in table order.
pub fn settings_of(section: &str) -> impl Iterator<Item = &'static Setting> + '_ {
    SETTINGS.iter().filter(move |s| s.section == section)
}

/// The keys a parser of `section` must accept: its settings and its sub-tables' names.
pub fn keys_of(section: &str) -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = settings_of(section).map(|s| s.key).collect();
    for sub in SECTIONS {
        let child = match section {
            "" => Some(sub.name),
            _ => sub
                .name
                .strip_prefix(section)
                .and_then(|r| r.strip_prefix('.')),
        };
        if let Some(c) = child.filter(|c| !c.contains('.')) {
            keys.push(c);
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_belongs_to_a_section_in_order() {
        let mut last = 0;
        for s in SETTINGS {
            let i = SECTIONS
                .iter()
                .position(|x| x.name == s.section)
                .unwrap_or_else(|| panic!("{}.{}: no such section", s.section, s.key));
            assert!(i >= last, "{}.{} out of section order", s.section, s.key);
            last = i;
        }
        assert!(keys_of("").contains(&"device") && !keys_of("").contains(&"boot.grub"));
        assert!(keys_of("boot").contains(&"grub") && keys_of("boot").contains(&"backend"));
    }
}
