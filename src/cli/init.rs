//! `patchd init`: bring a device up — write a commented starting `patchd.toml` for its
//! slot and boot backends, initialise the bootloader's A/B state, and record the factory
//! release of the running slot (the slot status record the engine reads at start-up to
//! know what runs). Refuses to overwrite anything that exists: every check runs before
//! the first write, and the configuration is written last, so a refused or failed run
//! leaves no half-initialised device behind.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;
use sha2::Digest;

use crate::boot::config::BackendKind;
use crate::boot::{detect::Detector, BootConfig};
use crate::config::sample::{quote, Values};
use crate::names::SlotName;
use crate::paths::Paths;
use crate::slot::SlotKind;
use crate::slot::{SlotState, SlotStatus, StatusStore};

/// What `patchd init --help` and its man page say after the options: the rules and EXAMPLES.
const AFTER_HELP: &str = "\
Checks first, writes after: an existing configuration with settings, an existing state
file or factory record, or a bootloader that already holds patchd's state is refused,
naming the file, and nothing is written. A configuration file holding only comments (the
one the package ships) is replaced.

Examples:
  A server with GRUB and two root partitions, running 1.0.0 from the first:
    patchd init --boot grub --slots block \\
      --slot a=/dev/disk/by-partlabel/root-a --slot b=/dev/disk/by-partlabel/root-b \\
      --booted a --product acme-gw --url https://updates.example.com/repo/ \\
      --factory-version 1.0.0 --factory-image /srv/images/acme-gw-1.0.0.img

  A simulated device in a test directory (image-file slots, the file bootloader):
    patchd --root /tmp/dev init --boot file --slot a=/var/lib/slots/a.img \\
      --slot b=/var/lib/slots/b.img --product test-box --repo-dir /srv/repo \\
      --trusted-root /etc/patchd/root.json --factory-version 1.0.0 \\
      --factory-image /tmp/dev/var/lib/slots/a.img

Then: patchd --check-config, and start the daemon (systemctl enable --now patchd).";

#[derive(Debug, Clone, Args)]
#[command(after_help = AFTER_HELP)]
pub struct InitArgs {
    /// Bootloader backend: grub, uboot, systemd-boot or file (simulation). Default:
    /// detected: systemd-boot when the ESP holds loader/entries/, grub when
    /// /boot/grub/ exists, uboot when /etc/fw_env.config exists.
    #[arg(long, value_name = "BACKEND", value_parser = parse_backend)]
    pub boot: Option<BackendKind>,
    /// GRUB environment block ([boot.grub] env; default /boot/grub/grubenv).
    #[arg(long, value_name = "FILE")]
    pub grub_env: Option<PathBuf>,
    /// U-Boot fw_env.config ([boot.uboot] fw_env_config; default /etc/fw_env.config).
    #[arg(long, value_name = "FILE")]
    pub fw_env_config: Option<PathBuf>,
    /// U-Boot: over a blank or corrupt environment, take every variable but the A/B ones
    /// from this default environment (name=value lines, as u-boot-initial-env).
    #[arg(long, value_name = "FILE")]
    pub uboot_defaults: Option<PathBuf>,
    /// systemd-boot: the ESP mount ([boot.systemd-boot] esp; default /boot/efi).
    #[arg(long, value_name = "DIR")]
    pub esp: Option<PathBuf>,
    /// File bootloader: its state file ([boot.file] path; default /var/lib/patchd/boot.json).
    #[arg(long, value_name = "FILE")]
    pub boot_file: Option<PathBuf>,
    /// Slot backend: file, block or btrfs. Default: btrfs with --slots-dir, block when
    /// the --slot paths are block devices, file otherwise.
    #[arg(long, value_name = "KIND", value_parser = parse_slot_kind)]
    pub slots: Option<SlotKind>,
    /// One slot, NAME=PATH (image file or block device; device paths), once per slot;
    /// btrfs slots are given as NAME alone. Default names: a and b.
    #[arg(long = "slot", value_name = "NAME=PATH")]
    pub slot: Vec<String>,
    /// btrfs: the directory on btrfs holding the slot subvolumes ([slots] dir).
    #[arg(long, value_name = "DIR")]
    pub slots_dir: Option<PathBuf>,
    /// The slot the machine runs from now: it becomes the bootloader's primary and gets
    /// the factory record. Default: detected from the kernel command line (patchd.slot=,
    /// rauc.slot=); the file bootloader starts on the first slot.
    #[arg(long, value_name = "SLOT")]
    pub booted: Option<SlotName>,
    /// Repository URL ([repository] url).
    #[arg(long, value_name = "URL", conflicts_with = "repo_dir")]
    pub url: Option<String>,
    /// Repository directory instead of a URL ([repository] dir).
    #[arg(long, value_name = "DIR")]
    pub repo_dir: Option<PathBuf>,
    /// Accept a plain http:// URL ([repository] allow_http).
    #[arg(long)]
    pub allow_http: bool,
    /// The repository's TUF root.json on the device ([repository] trusted_root; default
    /// /usr/share/patchd/root.json).
    #[arg(long, value_name = "FILE")]
    pub trusted_root: Option<PathBuf>,
    /// Product releases are published under ([device] product).
    #[arg(long, value_name = "NAME")]
    pub product: Option<String>,
    /// Channel to follow ([device] channel; default stable).
    #[arg(long, value_name = "NAME")]
    pub channel: Option<String>,
    /// A device tag for rollout stages ([device] tags), repeatable.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// The release the booted slot runs (a semantic version): recorded as its factory
    /// record, so status and the switch decision know the running version.
    #[arg(long, value_name = "VERSION")]
    pub factory_version: Option<String>,
    /// The image the booted slot was written from (a path on this machine, not under
    /// --root): hashed (sha256) and its size recorded with the factory version.
    #[arg(long, value_name = "FILE", requires = "factory_version")]
    pub factory_image: Option<PathBuf>,
    /// A package-based server: [source] kind = "apt" (the system's pending upgrades,
    /// staged in a btrfs snapshot of the running root). Refused, with a fix for each
    /// problem, unless the disk layout staging needs holds: btrfs slots, the running root
    /// one of the slot subvolumes, /var a subvolume of its own, the dpkg database in the
    /// root (docs/apt.md).
    #[arg(long)]
    pub apt: bool,
}

fn parse_backend(s: &str) -> Result<BackendKind, String> {
    toml::Value::String(s.to_string())
        .try_into()
        .map_err(|_| format!("{s:?}: use grub, uboot, systemd-boot or file"))
}

fn parse_slot_kind(s: &str) -> Result<SlotKind, String> {
    toml::Value::String(s.to_string())
        .try_into()
        .map_err(|_| format!("{s:?}: use file, block or btrfs"))
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// Something exists that init would overwrite.
    #[error("{path} {what}; patchd init does not overwrite it ({fix})")]
    Exists {
        path: PathBuf,
        what: String,
        fix: String,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bootloader: {0}")]
    Boot(#[from] super::boot::BootCliError),
    /// `--apt` on a machine whose disk layout cannot stage patch sets.
    #[error("the disk layout does not fit an apt source (docs/apt.md):\n{0}")]
    Layout(String),
    #[error("the configuration init made does not validate ({0}); please report this")]
    Invalid(String),
    /// Everything was written but its audit record.
    #[error("the device is set up, but its audit record could not be written: {0}")]
    Audit(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InitError + '_ {
    move |source| InitError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What init decided, before anything is written.
struct Plan {
    boot: BootConfig,
    slots_kind: SlotKind,
    slots: Vec<(SlotName, Option<PathBuf>)>,
    booted: SlotName,
    values: Values,
    factory: Option<SlotStatus>,
}

/// Run `patchd init`; returns the lines to print.
pub fn run(args: &InitArgs, paths: &Paths) -> Result<Vec<String>, InitError> {
    let plan = plan(args, paths)?;
    refuse_existing(&plan, paths)?;
    let bl = crate::boot::open(&plan.boot, paths).map_err(|e| InitError::Boot(e.into()))?;
    let mut out = Vec::new();
    for d in ["/etc/patchd", "/var/lib/patchd"] {
        let dir = paths.resolve(d);
        let mode = if d == "/var/lib/patchd" { 0o700 } else { 0o755 };
        crate::fsutil::ensure_dir(&dir, mode).map_err(io(&dir))?;
    }
    if plan.boot.backend == BackendKind::File {
        let f = paths.resolve(&plan.boot.file.path);
        if let Some(dir) = f.parent() {
            crate::fsutil::ensure_dir(dir, 0o700).map_err(io(dir))?;
        }
    }
    let reset = super::boot::reset_state(
        &plan.boot,
        bl.as_ref(),
        paths,
        &plan.booted,
        args.uboot_defaults.as_deref(),
        false,
    )?;
    let others: Vec<&str> = plan
        .boot
        .slots
        .iter()
        .filter(|s| **s != plan.booted)
        .map(SlotName::as_str)
        .collect();
    out.push(format!(
        "bootloader: {} state initialised: slot {} primary and good, {} unused",
        plan.boot.backend.as_str(),
        plan.booted,
        others.join(", ")
    ));
    if let Some(r) = &reset {
        // U-Boot: which variables were kept, and where the raw copies were saved.
        out.extend(
            super::boot::render_reset(r)
                .lines()
                .map(|l| format!("  {l}")),
        );
    }
    match &plan.factory {
        Some(rec) => {
            let store = StatusStore::new(&paths.state_dir(), plan.booted.clone());
            store.save(rec).map_err(|e| InitError::Io {
                path: store.path(),
                source: std::io::Error::other(e.to_string()),
            })?;
            let hash = rec.sha256.as_ref().map_or(String::new(), |h| {
                format!(" (sha256 {h}, {} bytes)", rec.size.unwrap_or(0))
            });
            out.push(format!(
                "factory release: slot {} runs {}{hash}, recorded in {}",
                plan.booted,
                rec.version.as_deref().unwrap_or("?"),
                store.path().display()
            ));
        }
        None => out.push(format!(
            "factory release: not recorded (no --factory-version): the running version of slot {} stays unknown until the first update",
            plan.booted
        )),
    }
    let cfg_path = paths.config_file();
    let text = render(args, &plan);
    crate::fsutil::atomic_write_mode(&cfg_path, text.as_bytes(), 0o644).map_err(io(&cfg_path))?;
    let slots: Vec<String> = plan
        .slots
        .iter()
        .map(|(n, p)| match p {
            Some(p) => format!("{n}={}", p.display()),
            None => n.to_string(),
        })
        .collect();
    out.insert(
        0,
        format!(
            "wrote {} (boot {}, slots {} {})",
            cfg_path.display(),
            plan.boot.backend.as_str(),
            slot_kind_str(plan.slots_kind),
            slots.join(" ")
        ),
    );
    out.push("next: patchd --check-config, then start patchd".to_string());
    audit(paths, &plan, &out[0]).map_err(InitError::Audit)?;
    Ok(out)
}

/// The first record of the device's audit log: what init set up, and who ran it.
fn audit(paths: &Paths, plan: &Plan, what: &str) -> Result<(), String> {
    use crate::audit::{Actor, AuditLimits, AuditLog, Entry};
    let path = paths.resolve(crate::config::DEFAULT_AUDIT_PATH);
    let mut log = AuditLog::open(&path, AuditLimits::default()).map_err(|e| e.to_string())?;
    let mut entry = Entry::new(
        "initialised",
        Actor::Uid(nix::unistd::geteuid().as_raw()),
        format!("patchd init: {what}"),
    )
    .slot(&plan.booted);
    if let Some(v) = plan.factory.as_ref().and_then(|f| f.version.clone()) {
        entry = entry.release(v);
    }
    log.append(entry, jiff::Timestamp::now())
        .map(|_| ())
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn slot_kind_str(k: SlotKind) -> &'static str {
    match k {
        SlotKind::File => "file",
        SlotKind::Block => "block",
        SlotKind::Btrfs => "btrfs",
    }
}

fn plan(args: &InitArgs, paths: &Paths) -> Result<Plan, InitError> {
    let backend = match args.boot {
        Some(b) => b,
        None => detect_backend(args, paths)?,
    };
    let mut slots = Vec::new();
    for s in &args.slot {
        let (name, path) = match s.split_once('=') {
            Some((n, p)) => (n, Some(PathBuf::from(p))),
            None => (s.as_str(), None),
        };
        let name = SlotName::new(name).map_err(|e| InitError::Usage(format!("--slot {s}: {e}")))?;
        slots.push((name, path));
    }
    if slots.is_empty() {
        slots = ["a", "b"]
            .into_iter()
            .filter_map(|n| SlotName::new(n).ok())
            .map(|n| (n, None))
            .collect();
    }
    let slots_kind = match args.slots {
        Some(k) => k,
        None if args.slots_dir.is_some() => SlotKind::Btrfs,
        None => {
            let block = slots.iter().all(|(_, p)| {
                p.as_ref().is_some_and(|p| {
                    use std::os::unix::fs::FileTypeExt;
                    std::fs::metadata(paths.resolve(p))
                        .is_ok_and(|m| m.file_type().is_block_device())
                })
            });
            if block {
                SlotKind::Block
            } else {
                SlotKind::File
            }
        }
    };
    let mut boot = BootConfig::with_backend(backend);
    boot.slots = slots.iter().map(|(n, _)| n.clone()).collect();
    if let Some(p) = &args.grub_env {
        boot.grub.env = p.clone();
    }
    if let Some(p) = &args.fw_env_config {
        boot.uboot.fw_env_config = Some(p.clone());
    }
    if let Some(p) = &args.esp {
        boot.systemd_boot.esp = p.clone();
    }
    if let Some(p) = &args.boot_file {
        boot.file.path = p.clone();
    }
    let booted = match &args.booted {
        Some(b) if boot.slots.contains(b) => b.clone(),
        Some(b) => {
            return Err(InitError::Usage(format!(
                "--booted {b}: not one of the slots ({})",
                crate::boot::ab::join(&boot.slots)
            )))
        }
        None => detect_booted(&boot, paths)?,
    };
    let factory = match &args.factory_version {
        None => None,
        Some(v) => Some(factory_record(&booted, v, args.factory_image.as_deref())?),
    };
    let mut plan = Plan {
        boot,
        slots_kind,
        slots,
        booted,
        values: Values::default(),
        factory,
    };
    if args.apt {
        apt_layout(args, &plan, paths)?;
    }
    plan.values = values(args, &plan);
    let text = render(args, &plan);
    crate::config::load_strs(&[("patchd.toml (made by patchd init)", &text)]).map_err(
        |e| match e {
            crate::config::ConfigError::Invalid { key, why, .. } => {
                InitError::Usage(format!("{key}: {why}"))
            }
            other => InitError::Invalid(other.to_string()),
        },
    )?;
    Ok(plan)
}

/// `--apt`: the layout check of `patchd --check-config`, before anything is written.
fn apt_layout(args: &InitArgs, plan: &Plan, paths: &Paths) -> Result<(), InitError> {
    let sc = crate::slot::SlotsConfig {
        backend: plan.slots_kind,
        dir: args.slots_dir.clone(),
        checkpoint_every: None,
        slot: plan
            .slots
            .iter()
            .map(|(name, path)| crate::slot::SlotEntry {
                name: name.clone(),
                path: path.clone(),
            })
            .collect(),
    };
    let problems = crate::source::apt::layout::check(Some(&sc), paths);
    if problems.is_empty() {
        return Ok(());
    }
    let text: Vec<String> = problems
        .iter()
        .map(|p| format!("  {}\n     fix: {}", p.problem, p.fix))
        .collect();
    Err(InitError::Layout(text.join("\n")))
}

fn detect_backend(args: &InitArgs, paths: &Paths) -> Result<BackendKind, InitError> {
    let esp = args.esp.clone().unwrap_or_else(|| "/boot/efi".into());
    let grub = args
        .grub_env
        .as_ref()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| "/boot/grub".into());
    let fw = args
        .fw_env_config
        .clone()
        .unwrap_or_else(|| "/etc/fw_env.config".into());
    let found = [
        (
            paths.resolve(&esp).join("loader/entries"),
            BackendKind::SystemdBoot,
        ),
        (paths.resolve(&grub), BackendKind::Grub),
        (paths.resolve(&fw), BackendKind::Uboot),
    ];
    for (p, kind) in &found {
        if p.exists() {
            return Ok(*kind);
        }
    }
    Err(InitError::Usage(format!(
        "cannot tell the bootloader (looked for {}); pass --boot grub|uboot|systemd-boot|file",
        found
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

fn detect_booted(boot: &BootConfig, paths: &Paths) -> Result<SlotName, InitError> {
    if boot.backend == BackendKind::File {
        return boot
            .slots
            .first()
            .cloned()
            .ok_or_else(|| InitError::Usage("no slots".into()));
    }
    Detector::new(paths, &boot.slots, &boot.detect)
        .detect(None)
        .map_err(|e| {
            InitError::Usage(format!(
                "cannot tell which slot runs now ({e}); pass --booted SLOT"
            ))
        })
}

fn factory_record(
    slot: &SlotName,
    version: &str,
    image: Option<&Path>,
) -> Result<SlotStatus, InitError> {
    semver::Version::parse(version).map_err(|e| {
        InitError::Usage(format!(
            "--factory-version {version:?}: not a semantic version ({e}); releases are versioned like 1.0.0"
        ))
    })?;
    let (sha256, size) = match image {
        None => (None, None),
        Some(p) => {
            let (h, n) = hash_file(p)?;
            (Some(h), Some(n))
        }
    };
    Ok(SlotStatus {
        slot: slot.clone(),
        state: SlotState::Good,
        version: Some(version.to_string()),
        sha256,
        size,
        installed_at: None,
    })
}

/// sha256 (hex) and length of a file, streamed.
fn hash_file(path: &Path) -> Result<(String, u64), InitError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(h.finalize()), total))
}

/// Refuse when a configuration, state, a factory record or the bootloader's A/B state
/// already exists.
fn refuse_existing(plan: &Plan, paths: &Paths) -> Result<(), InitError> {
    let cfg = paths.config_file();
    if let Ok(text) = std::fs::read_to_string(&cfg) {
        let has_settings = toml::from_str::<toml::Table>(&text).map_or(true, |t| !t.is_empty());
        if has_settings {
            return Err(InitError::Exists {
                path: cfg,
                what: "already holds a configuration".into(),
                fix:
                    "edit it and check it with patchd --check-config, or move it away to start over"
                        .into(),
            });
        }
    }
    let state = paths.state_dir().join("state.json");
    if state.exists() {
        return Err(InitError::Exists {
            path: state,
            what: "exists: patchd already ran on this device".into(),
            fix: "patchctl status shows its state".into(),
        });
    }
    for (name, _) in &plan.slots {
        let rec = StatusStore::new(&paths.state_dir(), name.clone()).path();
        if rec.exists() {
            return Err(InitError::Exists {
                path: rec,
                what: format!("already records what slot {name} holds"),
                fix: "move it away to record the factory release anew".into(),
            });
        }
    }
    let bl = crate::boot::open(&plan.boot, paths).map_err(|e| InitError::Boot(e.into()))?;
    let in_use = match plan.boot.backend {
        // The entries are the distribution's; only a trial in progress is patchd's state.
        BackendKind::SystemdBoot => bl
            .slots()
            .is_ok_and(|s| s.iter().any(|i| i.tries_left.is_some_and(|t| t > 0))),
        _ => bl.primary_slot().is_ok(),
    };
    if in_use {
        let path = match plan.boot.backend {
            BackendKind::Grub => paths.resolve(&plan.boot.grub.env),
            BackendKind::File => paths.resolve(&plan.boot.file.path),
            BackendKind::SystemdBoot => paths.resolve(&plan.boot.systemd_boot.esp),
            BackendKind::Uboot => paths.resolve(
                plan.boot
                    .uboot
                    .fw_env_config
                    .as_deref()
                    .unwrap_or(Path::new("/etc/fw_env.config")),
            ),
        };
        return Err(InitError::Exists {
            path,
            what: "already holds patchd's boot state".into(),
            fix: "patchd boot status shows it; patchd boot reset --primary SLOT rewrites it".into(),
        });
    }
    Ok(())
}

fn values(args: &InitArgs, plan: &Plan) -> Values {
    let mut v = Values::default();
    if let Some(p) = &args.product {
        v.set("device", "product", quote(p));
    }
    if let Some(c) = &args.channel {
        v.set("device", "channel", quote(c));
    }
    if !args.tags.is_empty() {
        let tags: Vec<String> = args.tags.iter().map(|t| quote(t)).collect();
        v.set("device", "tags", format!("[{}]", tags.join(", ")));
    }
    if let Some(u) = &args.url {
        v.set("repository", "url", quote(u));
    }
    if let Some(d) = &args.repo_dir {
        v.set("repository", "dir", path_value(d));
    }
    if args.allow_http {
        v.set("repository", "allow_http", "true".into());
    }
    if let Some(t) = &args.trusted_root {
        v.set("repository", "trusted_root", path_value(t));
    }
    if args.apt {
        v.set("source", "kind", quote("apt"));
    }
    v.set("boot", "backend", quote(plan.boot.backend.as_str()));
    let names: Vec<String> = plan.boot.slots.iter().map(|s| quote(s.as_str())).collect();
    if names != ["\"a\"", "\"b\""] {
        v.set("boot", "slots", format!("[{}]", names.join(", ")));
    }
    match plan.boot.backend {
        BackendKind::Grub => v.set("boot.grub", "env", path_value(&plan.boot.grub.env)),
        BackendKind::File => v.set("boot.file", "path", path_value(&plan.boot.file.path)),
        BackendKind::SystemdBoot => v.set(
            "boot.systemd-boot",
            "esp",
            path_value(&plan.boot.systemd_boot.esp),
        ),
        BackendKind::Uboot => {
            if let Some(f) = &plan.boot.uboot.fw_env_config {
                v.set("boot.uboot", "fw_env_config", path_value(f));
            }
        }
    }
    v.set("slots", "backend", quote(slot_kind_str(plan.slots_kind)));
    if let Some(d) = &args.slots_dir {
        v.set("slots", "dir", path_value(d));
    }
    for (name, path) in &plan.slots {
        let mut entry = vec![("name", quote(name.as_str()))];
        if let Some(p) = path {
            entry.push(("path", path_value(p)));
        }
        v.push("slots.slot", entry);
    }
    v
}

fn path_value(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

fn render(args: &InitArgs, plan: &Plan) -> String {
    let mut what = format!(
        "Written by patchd init for this device: bootloader {}, {} slots, slot {} running",
        plan.boot.backend.as_str(),
        slot_kind_str(plan.slots_kind),
        plan.booted
    );
    if let Some(v) = &args.factory_version {
        what.push_str(&format!(" {v}"));
    }
    what.push('.');
    crate::config::sample::render(
        &[
            what,
            "The settings init chose are active; every other one is commented out showing its default (or an example). Put site changes in /etc/patchd/patchd.toml.d/*.toml (a later file wins per key) and check them with: patchd --check-config. Reference: patchd.toml(5).".into(),
        ],
        &plan.values,
    )
}
