//! `patchd --check-config`: everything `patchd run` needs, checked without starting it —
//! the configuration, the machine id, the trusted root, the bootloader's state and the
//! booted slot, the slots, the directories and their permissions, the repository. Every
//! check runs (one failure does not hide the next); each failure says how to fix it.

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::config::{Config, RepoSource};
use crate::paths::Paths;

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was checked, e.g. `machine id`.
    pub what: String,
    /// `Ok(detail)` or `Err((problem, fix))`.
    pub result: Result<String, (String, String)>,
    /// Passed, but worth saying (a missing factory record).
    pub warning: bool,
}

impl Finding {
    fn ok(what: &str, detail: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            result: Ok(detail.into()),
            warning: false,
        }
    }
    fn fail(what: &str, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            result: Err((problem.into(), fix.into())),
            warning: false,
        }
    }
    fn warn(what: &str, detail: impl Into<String>) -> Self {
        Self {
            warning: true,
            ..Self::ok(what, detail)
        }
    }
}

/// The checks' report: the configuration's own summary (when it loaded) and findings.
#[derive(Debug)]
pub struct Report {
    pub config: Result<crate::config::CheckReport, String>,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn failures(&self) -> usize {
        self.findings.iter().filter(|f| f.result.is_err()).count()
            + usize::from(self.config.is_err())
    }

    /// Text for the terminal: findings first (one line each, the fix under a failure),
    /// then the effective settings.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = &self.config {
            let _ = writeln!(out, "FAIL configuration: {e}");
            let _ = writeln!(
                out,
                "     fix: correct the key named above in that file (patchd.toml(5) lists every key), then run patchd --check-config again"
            );
        }
        for f in &self.findings {
            match &f.result {
                Ok(d) if f.warning => {
                    let _ = writeln!(out, "WARN {}: {d}", f.what);
                }
                Ok(d) => {
                    let _ = writeln!(out, "ok   {}: {d}", f.what);
                }
                Err((problem, fix)) => {
                    let _ = writeln!(out, "FAIL {}: {problem}", f.what);
                    let _ = writeln!(out, "     fix: {fix}");
                }
            }
        }
        match self.failures() {
            0 => {}
            n => {
                let _ = writeln!(
                    out,
                    "{n} problem{} found: patchd run would not start",
                    if n == 1 { "" } else { "s" }
                );
            }
        }
        if let Ok(c) = &self.config {
            let text = c.to_string();
            let text = match self.failures() {
                0 => text,
                _ => text.replacen(
                    "configuration OK",
                    "configuration files OK (the checks above failed)",
                    1,
                ),
            };
            let _ = write!(out, "{text}");
        }
        out
    }
}

/// Run every check under `paths`.
pub fn check(paths: &Paths) -> Report {
    let config = crate::config::check(paths);
    let findings = match &config {
        Ok(report) => findings(&report.config, paths),
        // What does not depend on the settings is still checked, at the default paths,
        // so fixing the file is not followed by a second round of surprises.
        Err(_) => {
            let defaults = Config::default();
            let mut out = vec![machine_id(&defaults, paths)];
            out.extend(directories(&defaults, paths));
            for f in &mut out {
                f.what.push_str(" (default path)");
            }
            out
        }
    };
    Report {
        config: config.map_err(|e| e.to_string()),
        findings,
    }
}

fn findings(cfg: &Config, paths: &Paths) -> Vec<Finding> {
    let mut out = vec![machine_id(cfg, paths)];
    out.extend(repository(cfg, paths));
    out.extend(boot_and_slots(cfg, paths));
    out.extend(fleet(cfg, paths));
    out.extend(directories(cfg, paths));
    out
}

/// The reboot lock as the daemon would build it (device id, CA bundle, client); the
/// service itself is not asked: one that does not answer is a fail-safe wait at switch
/// time, not a configuration error.
fn fleet(cfg: &Config, paths: &Paths) -> Vec<Finding> {
    const WHAT: &str = "reboot lock";
    let Some(settings) = &cfg.fleet.lock else {
        return Vec::new();
    };
    let built = crate::daemon::fleet::reboot_slots(cfg, paths);
    vec![match built {
        Ok(_) => Finding::ok(
            WHAT,
            format!(
                "{} for group {} (not contacted: an unreachable service makes devices wait, as [fleet] when_unreachable says)",
                settings.name(),
                cfg.fleet.group
            ),
        ),
        Err(e) => Finding::fail(
            WHAT,
            e.to_string(),
            "fix the machine id or the [fleet] CA bundle, or set [fleet] lock = \"none\"",
        ),
    }]
}

fn machine_id(cfg: &Config, paths: &Paths) -> Finding {
    const WHAT: &str = "machine id";
    let p = paths.resolve(&cfg.device.machine_id_path);
    let fix = format!(
        "run systemd-machine-id-setup{} (or write 32 hex digits and a newline to {}), or set [device] machine_id_path",
        if paths.root() == Path::new("/") {
            String::new()
        } else {
            format!(" --root={}", paths.root().display())
        },
        p.display()
    );
    match std::fs::read_to_string(&p) {
        Err(e) => Finding::fail(WHAT, format!("{}: {e}", p.display()), fix),
        Ok(t) => {
            let id = t.trim();
            if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                Finding::ok(WHAT, format!("{id} ({})", p.display()))
            } else {
                Finding::fail(
                    WHAT,
                    format!("{}: {id:?} is not 32 hex digits", p.display()),
                    fix,
                )
            }
        }
    }
}

/// The disk layout staging a patch set needs (docs/apt.md, "The layout patchd expects").
fn apt_layout(cfg: &Config, paths: &Paths) -> Vec<Finding> {
    const WHAT: &str = "apt layout";
    let problems = crate::source::apt::layout::check(cfg.slots.as_ref(), paths);
    if problems.is_empty() {
        return vec![Finding::ok(
            WHAT,
            "the root is a slot subvolume, /var is shared, the dpkg database is in the root",
        )];
    }
    problems
        .into_iter()
        .map(|p| Finding::fail(WHAT, p.problem, p.fix))
        .collect()
}

fn repository(cfg: &Config, paths: &Paths) -> Vec<Finding> {
    // The apt source trusts apt's own signed Release files; [repository] is not read.
    if cfg.source.kind == crate::sourceconf::SourceKind::Apt {
        let mut out = vec![Finding::ok(
            "source",
            "apt: the system's pending upgrades as one patch set (docs/apt.md)",
        )];
        out.extend(apt_layout(cfg, paths));
        return out;
    }
    let Some(source) = &cfg.repository.source else {
        return vec![Finding::warn(
            "repository",
            "none configured ([repository] url or dir): patchd will not check for updates",
        )];
    };
    let mut out = Vec::new();
    match source {
        RepoSource::Url(u) => out.push(Finding::ok("repository", format!("{u}"))),
        RepoSource::Dir(d) => {
            let ts = paths.resolve(d).join("metadata/timestamp.json");
            if ts.is_file() {
                out.push(Finding::ok(
                    "repository",
                    format!("directory {}", d.display()),
                ));
            } else {
                out.push(Finding::fail(
                    "repository",
                    format!("{} is missing: {} holds no published repository", ts.display(), d.display()),
                    "publish into it (patchpub init, patchpub add), mount the medium, or correct [repository] dir",
                ));
            }
        }
    }
    let tuf = paths.state_dir().join("tuf/root.json");
    let limits = crate::trust::Limits::default();
    let (file, what) = if tuf.exists() {
        (tuf, "trusted metadata")
    } else {
        (paths.resolve(&cfg.repository.trusted_root), "trusted root")
    };
    let fix = format!(
        "copy the repository's root (metadata/root.json of the published repository, as shipped in the image) to {} or set [repository] trusted_root",
        paths.resolve(&cfg.repository.trusted_root).display()
    );
    let verdict = std::fs::read(&file)
        .map_err(|e| e.to_string())
        .and_then(|b| {
            crate::trust::client::verify_root_bytes(&b, &limits).map_err(|e| e.to_string())
        });
    out.push(match verdict {
        Ok(()) => Finding::ok(what, format!("{} verifies", file.display())),
        Err(e) => Finding::fail(what, format!("{}: {e}", file.display()), fix),
    });
    if let Some(ca) = &cfg.repository.ca_bundle {
        let p = paths.resolve(ca);
        if let Err(e) = std::fs::metadata(&p) {
            out.push(Finding::fail(
                "repository CA bundle",
                format!("{}: {e}", p.display()),
                "install the PEM file there or remove [repository] ca_bundle",
            ));
        }
    }
    out
}

fn boot_and_slots(cfg: &Config, paths: &Paths) -> Vec<Finding> {
    let init = "patchd init sets both up for a new device";
    let mut out = Vec::new();
    let Some(boot) = &cfg.boot_config else {
        out.push(Finding::fail(
            "bootloader",
            "the configuration has no [boot] section",
            format!("add [boot] backend = \"grub\" (or uboot, systemd-boot, file); {init}"),
        ));
        return out;
    };
    match crate::boot::open(boot, paths) {
        Err(e) => out.push(Finding::fail(
            "bootloader",
            e.to_string(),
            "check the [boot] paths; patchd boot status shows what it reads",
        )),
        Ok(bl) => {
            match bl.slots().and_then(|s| bl.primary_slot().map(|p| (s, p))) {
                Ok((_, p)) => out.push(Finding::ok(
                    "bootloader state",
                    format!("{}: primary slot {p}", bl.kind()),
                )),
                Err(e) => out.push(Finding::fail(
                    "bootloader state",
                    format!("{}: {e}", bl.kind()),
                    "initialise it: patchd boot reset --primary SLOT (the slot running now), or patchd init on a new device",
                )),
            }
            match bl.booted_slot() {
                Ok(b) => {
                    out.push(Finding::ok("booted slot", b.to_string()));
                    out.push(factory(paths, &b));
                }
                Err(e) => out.push(Finding::fail(
                    "booted slot",
                    e.to_string(),
                    if bl.kind() == "file" {
                        "the file bootloader records the booted slot in its state file: patchd boot reset --primary SLOT writes it"
                    } else {
                        "boot with patchd.slot=SLOT on the kernel command line (the shipped GRUB snippet and U-Boot script add it), or set [boot.detect] root_devices"
                    },
                )),
            }
        }
    }
    let Some(slots) = &cfg.slots else {
        out.push(Finding::fail(
            "slots",
            "the configuration has no [slots] section",
            format!("add [slots] with backend and one [[slots.slot]] per slot; {init}"),
        ));
        return out;
    };
    let names: Vec<_> = slots.slot.iter().map(|s| s.name.clone()).collect();
    if names != boot.slots || names.len() < 2 {
        out.push(Finding::fail(
            "slots",
            format!(
                "[[slots.slot]] names {} but [boot] slots are {}",
                crate::boot::ab::join(&names),
                crate::boot::ab::join(&boot.slots)
            ),
            "list the same two or more slots, in the same order, in both",
        ));
    }
    for s in &slots.slot {
        let Some(p) = &s.path else { continue };
        let r = paths.resolve(p);
        if let Err(e) = std::fs::metadata(&r) {
            out.push(Finding::fail(
                "slots",
                format!("slot {}: {}: {e}", s.name, r.display()),
                "create the image file or partition, or correct its [[slots.slot]] path",
            ));
        }
    }
    if let Some(d) = &slots.dir {
        let r = paths.resolve(d);
        if !r.is_dir() {
            out.push(Finding::fail(
                "slots",
                format!("{} is not a directory", r.display()),
                "create it on the btrfs filesystem, or correct [slots] dir",
            ));
        }
    }
    out
}

fn factory(paths: &Paths, booted: &crate::names::SlotName) -> Finding {
    let store = crate::slot::StatusStore::new(&paths.state_dir(), booted.clone());
    match store.load() {
        Ok(s) if s.version.is_some() => Finding::ok(
            "running release",
            format!(
                "slot {booted}: {} ({})",
                s.version.clone().unwrap_or_default(),
                format!("{:?}", s.state).to_lowercase()
            ),
        ),
        Ok(_) => Finding::warn(
            "running release",
            format!("unknown: no factory record in {} (patchd init --factory-version VERSION writes one)", store.path().display()),
        ),
        Err(e) => Finding::fail(
            "running release",
            e.to_string(),
            format!("move {} away; patchd init --factory-version VERSION writes it anew", store.path().display()),
        ),
    }
}

/// A directory patchd writes into must be owned by root (or whoever runs the check)
/// and writable by nobody else.
fn directories(cfg: &Config, paths: &Paths) -> Vec<Finding> {
    let me = nix::unistd::geteuid().as_raw();
    let mut dirs: Vec<(&str, std::path::PathBuf, bool)> = vec![
        ("config directory", paths.resolve("/etc/patchd"), false),
        ("state directory", paths.state_dir(), true),
        ("cache directory", paths.cache_dir(), true),
        ("health checks", paths.health_dir(), true),
    ];
    if let Some(dir) = paths.resolve(&cfg.audit.path).parent() {
        dirs.push(("audit log directory", dir.to_path_buf(), true));
    }
    let mut out = Vec::new();
    for (what, dir, may_be_missing) in dirs {
        match std::fs::metadata(&dir) {
            Err(_) if may_be_missing => {}
            Err(e) => out.push(Finding::fail(
                what,
                format!("{}: {e}", dir.display()),
                format!("create it: install -d -m 0755 {}", dir.display()),
            )),
            Ok(m) if !m.is_dir() => out.push(Finding::fail(
                what,
                format!("{} is not a directory", dir.display()),
                "move the file away",
            )),
            Ok(m) if (m.uid() != 0 && m.uid() != me) || m.mode() & 0o022 != 0 => {
                out.push(Finding::fail(
                    what,
                    format!(
                        "{} is owned by uid {} with mode {:o}: others could change what patchd reads",
                        dir.display(),
                        m.uid(),
                        m.mode() & 0o7777
                    ),
                    format!("chown root:root {0} && chmod go-w {0}", dir.display()),
                ))
            }
            Ok(_) => {}
        }
    }
    if let Some(t) = &cfg.metrics.textfile {
        let r = paths.resolve(t);
        if r.parent().is_some_and(|d| !d.is_dir()) {
            out.push(Finding::fail(
                "metrics textfile",
                format!("the directory of {} does not exist", r.display()),
                "create it (node-exporter's textfile directory) or remove [metrics] textfile",
            ));
        }
    }
    if out.is_empty() {
        out.push(Finding::ok(
            "directories",
            "owned by root, not writable by others",
        ));
    }
    out
}
