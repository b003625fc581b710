//! `patchpub`: build and maintain a signed patchd update repository. Thin binary: the
//! logic lives in `patchd::publish`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use jiff::SignedDuration;
use patchd::manifest::{ImageFormat, Kind, Rollout, Severity};
use patchd::publish::{self, AddRelease, Expiries, InitOptions, Repo, RoleSpec, RootChanges};
use patchd::trust::{KeyScheme, SigningKey};

/// Publish patchd releases as a static, TUF-signed repository.
///
/// The repository directory (`--repo`) holds `metadata/` and `targets/` and can be served
/// as-is by any static web server or CDN. Private keys live in a separate directory
/// (`--keys`, mode 0700, each key 0600); keep root keys offline when you can and use the
/// `root export` / `root sign` / `root import` flow to change root.
#[derive(Parser)]
#[command(name = "patchpub", version, max_term_width = 100)]
struct Cli {
    /// Repository directory to create or update (served to devices).
    #[arg(long, global = true, env = "PATCHPUB_REPO", default_value = "repo")]
    repo: PathBuf,
    /// Directory of private signing keys (never served).
    #[arg(long, global = true, env = "PATCHPUB_KEYS", default_value = "keys")]
    keys: PathBuf,
    #[command(flatten)]
    expiry: ExpiryArgs,
    /// Write man pages and shell completions into DIR and exit (packaging).
    #[arg(long, hide = true, value_name = "DIR", exclusive = true)]
    generate_docs: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

/// The command line, for documentation generation.
fn command() -> clap::Command {
    Cli::command()
}

/// Validity periods applied to metadata signed by this invocation.
#[derive(Args)]
struct ExpiryArgs {
    /// Days a new root version stays valid.
    #[arg(long, global = true, default_value_t = 365, value_name = "DAYS")]
    root_expiry: u32,
    /// Days targets metadata stays valid.
    #[arg(long, global = true, default_value_t = 90, value_name = "DAYS")]
    targets_expiry: u32,
    /// Days snapshot metadata stays valid.
    #[arg(long, global = true, default_value_t = 7, value_name = "DAYS")]
    snapshot_expiry: u32,
    /// Hours timestamp metadata stays valid (run `refresh` well within this).
    #[arg(long, global = true, default_value_t = 24, value_name = "HOURS")]
    timestamp_expiry: u32,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate a signing key: NAME.pem (private, 0600) and NAME.pub.json (public, TUF form).
    Keygen {
        /// Path without extension, e.g. offline/root-2.
        out: PathBuf,
        /// Signature scheme.
        #[arg(long, default_value = "ed25519", value_parser = ["ed25519", "ecdsa-sha2-nistp256"])]
        scheme: String,
    },
    /// Create a repository: keys for every role in --keys, root v1, empty targets.
    Init(InitArgs),
    /// Publish a release: compress and hash its images, write its manifest, re-sign.
    Add(Box<AddArgs>),
    /// Delegate target paths to a team's own key: a new targets role NAME.
    ///
    /// The top-level targets role trusts role NAME for the paths given with --path,
    /// so a team can publish its product's releases with `patchpub add --role NAME`
    /// holding only its own key (plus, to publish, the snapshot and timestamp keys),
    /// never the targets keys. The role's keys are generated into --role-keys (default:
    /// --keys); hand that directory to the team. Devices find releases in delegated roles
    /// as in the top-level one, and refuse any release a role signs outside its paths.
    ///
    /// Patterns are matched segment by segment: `*` and `?` never cross a `/`, so
    /// `releases/acme-gw/*/*` covers every file of every acme-gw release (manifest,
    /// images, deltas) and nothing else. --product PRODUCT is short for exactly that
    /// pattern. Needs the targets, snapshot and timestamp keys in --keys.
    ///
    /// Example: patchpub delegate gw-team --product acme-gw --role-keys team-keys
    Delegate(DelegateArgs),
    /// Offer RELEASE (PRODUCT/VERSION) on another channel as well.
    Promote {
        release: String,
        #[arg(long)]
        channel: String,
    },
    /// Pause RELEASE's rollout: devices that have not started it will not start.
    Pause { release: String },
    /// Resume a paused rollout.
    Resume { release: String },
    /// Withdraw RELEASE: devices stop offering or installing it.
    Withdraw { release: String },
    /// Re-sign snapshot and timestamp with fresh expiries (run from a timer).
    ///
    /// With --if-expiring-within, only what expires within that time is re-signed (the
    /// snapshot with the timestamp, or the timestamp alone), so a timer may run it every
    /// hour; it prints what it did and exits 0 either way. Targets or root expiring within
    /// the window are named too: they need other keys.
    Refresh {
        /// Re-sign only the timestamp.
        #[arg(long)]
        timestamp_only: bool,
        /// Re-sign only what expires within DURATION (e.g. 12h, 2d); otherwise nothing.
        #[arg(long, value_name = "DURATION", value_parser = patchd::duration::parse)]
        if_expiring_within: Option<std::time::Duration>,
    },
    /// Replace ROLE's keys (root, targets, snapshot or timestamp); publishes root N+1
    /// signed by the old and the new root keys. Needs the root keys in --keys.
    Rotate {
        role: String,
        #[arg(long, default_value = "ed25519", value_parser = ["ed25519", "ecdsa-sha2-nistp256"])]
        scheme: String,
    },
    /// Offline root signing: export, sign, import a new root version.
    #[command(subcommand)]
    Root(RootCmd),
    /// Check the repository as a device would (root chain, signatures, hashes, manifests).
    Verify,
    /// List releases with their channels and state.
    List,
    /// Write a self-contained offline bundle of RELEASE (a directory, or a tar file when
    /// OUT ends in .tar) for installation from removable media.
    Bundle {
        release: String,
        #[arg(long)]
        out: PathBuf,
        /// Re-sign snapshot and timestamp (in the repository too) to expire at TIME
        /// (RFC 3339) or after DURATION (30d, 12h), so the bundle outlives its trip.
        #[arg(long, value_name = "DURATION|TIME")]
        expires: Option<String>,
    },
    /// Guard a rollout from fleet health in Prometheus, or show it: `rollout guard`
    /// (pause a failing release, renew its gate; for a timer), `rollout status`.
    #[command(subcommand)]
    Rollout(patchd::cli::rollout::RolloutCmd),
    /// Print the patchpub(1) man page (roff) to stdout.
    Man,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum RootCmd {
    /// Write root version N+1 (unsigned) with the given changes to --out.
    Export {
        #[arg(long)]
        out: PathBuf,
        /// Authorize a public key (a .pub.json file) for a role: ROLE=FILE. Repeatable.
        #[arg(long, value_name = "ROLE=FILE")]
        add_key: Vec<String>,
        /// Remove a key id from a role: ROLE=KEYID. Repeatable.
        #[arg(long, value_name = "ROLE=KEYID")]
        remove_key: Vec<String>,
        /// Set a role's threshold: ROLE=N. Repeatable.
        #[arg(long, value_name = "ROLE=N")]
        threshold: Vec<String>,
    },
    /// Add signatures to an exported root with private keys (run on the offline machine).
    Sign {
        file: PathBuf,
        /// Private key file (.pem). Repeatable.
        #[arg(long, required = true)]
        key: Vec<PathBuf>,
    },
    /// Check a signed root against the old and new thresholds and publish it.
    Import { file: PathBuf },
}

#[derive(Args)]
struct InitArgs {
    #[arg(long, default_value = "ed25519", value_parser = ["ed25519", "ecdsa-sha2-nistp256"])]
    scheme: String,
    /// Number of root keys to generate.
    #[arg(long, default_value_t = 1)]
    root_keys: usize,
    #[arg(long, default_value_t = 1)]
    root_threshold: u64,
    #[arg(long, default_value_t = 1)]
    targets_keys: usize,
    #[arg(long, default_value_t = 1)]
    targets_threshold: u64,
    #[arg(long, default_value_t = 1)]
    snapshot_keys: usize,
    #[arg(long, default_value_t = 1)]
    snapshot_threshold: u64,
    #[arg(long, default_value_t = 1)]
    timestamp_keys: usize,
    #[arg(long, default_value_t = 1)]
    timestamp_threshold: u64,
}

#[derive(Args)]
struct DelegateArgs {
    /// Name of the new role (letters, digits, '.', '_', '-', '+').
    name: String,
    /// Path pattern the role is trusted for. Repeatable.
    #[arg(
        long = "path",
        value_name = "PATTERN",
        required_unless_present = "product"
    )]
    paths: Vec<String>,
    /// Trust the role for every file of PRODUCT's releases (`releases/PRODUCT/*/*`).
    /// Repeatable; may be combined with --path.
    #[arg(long, value_name = "PRODUCT")]
    product: Vec<String>,
    /// Number of keys to generate for the role.
    #[arg(long, default_value_t = 1, value_name = "N")]
    role_key_count: usize,
    /// Signatures needed on the role's metadata.
    #[arg(long, default_value_t = 1, value_name = "N")]
    threshold: u64,
    /// End the search at this role: for its paths, devices ask no role delegated after
    /// it, even when this role does not list the file.
    #[arg(long)]
    terminating: bool,
    /// Where the role's private keys are written (default: --keys).
    #[arg(long, value_name = "DIR")]
    role_keys: Option<PathBuf>,
    #[arg(long, default_value = "ed25519", value_parser = ["ed25519", "ecdsa-sha2-nistp256"])]
    scheme: String,
}

#[derive(Args)]
struct AddArgs {
    /// Publish into delegated role NAME (see `patchpub delegate`), signed with its keys
    /// from --role-keys instead of the targets keys. Every file of the release must lie
    /// inside the role's paths.
    #[arg(long, value_name = "NAME")]
    role: Option<String>,
    /// Directory of the delegated role's private keys (default: --keys).
    #[arg(long, value_name = "DIR", requires = "role")]
    role_keys: Option<PathBuf>,
    #[arg(long)]
    product: String,
    /// Semantic version of the release.
    #[arg(long)]
    version: semver::Version,
    /// Image: FILE (os rootfs), SLOT_CLASS=FILE or COMPONENT:SLOT_CLASS=FILE. Repeatable.
    #[arg(long, required = true)]
    image: Vec<String>,
    /// Component beside the images (repeatable; makes the manifest schema 2):
    /// name=NAME,version=V,method=app-bundle|handler|firmware|sysext,file=FILE, and optionally
    /// order=N (lower installs first; firmware before all), rollback=ab|reinstall_previous|none
    /// (default ab for app-bundle and sysext, reinstall_previous for handler, none for firmware), units=A.service+B.service (restarted
    /// after an app-bundle switch), needs_reboot=true, kind=K, severity=S,
    /// cves=CVE-…+CVE-…. See docs/components.md.
    #[arg(long, value_name = "SPEC")]
    component: Vec<String>,
    /// Image format: raw (block image) or tar (file-system tree).
    #[arg(long, default_value = "raw", value_parser = ["raw", "tar"])]
    format: String,
    /// Store images uncompressed instead of zstd.
    #[arg(long)]
    no_compress: bool,
    /// Also publish a static delta from this earlier version's image (repeatable).
    #[arg(long = "delta-from", value_name = "VERSION")]
    delta_from: Vec<semver::Version>,
    /// Do not publish the chunk index and chunk store of raw images. They are published
    /// by default so that any device with a verified image can update by dynamic delta;
    /// building them costs about as much as compressing the image (every core is used;
    /// figures in docs/delta.md).
    #[arg(long)]
    no_chunk_index: bool,
    /// zstd level of delta pieces and chunk frames (level vs size vs time: docs/delta.md).
    #[arg(long, default_value_t = patchd::delta::DEFAULT_LEVEL, value_parser = clap::value_parser!(i32).range(1..=22))]
    delta_level: i32,
    /// security, bugfix or feature.
    #[arg(long, default_value = "bugfix")]
    kind: Kind,
    /// critical, high, medium or low.
    #[arg(long, default_value = "medium")]
    severity: Severity,
    /// CVE id fixed by the release (CVE-YYYY-NNNN). Repeatable.
    #[arg(long)]
    cve: Vec<String>,
    /// One-line summary.
    #[arg(long)]
    summary: String,
    #[arg(long)]
    notes_url: Option<String>,
    /// Anti-rollback floor this release raises devices to.
    #[arg(long, default_value_t = 0)]
    security_version: u64,
    /// Lowest running version this release may be installed over.
    #[arg(long)]
    min_version: Option<semver::Version>,
    /// Hardware-compatibility string. Repeatable; none means any hardware.
    #[arg(long)]
    hardware: Vec<String>,
    /// Channel to offer the release on. Repeatable.
    #[arg(long, default_values_t = vec!["stable".to_string()])]
    channel: Vec<String>,
    /// Rollout stage: tags=canary+beta,percent=10,after=24h. Repeatable, in order.
    #[arg(long)]
    stage: Vec<String>,
    /// Publish with the rollout paused.
    #[arg(long)]
    paused: bool,
    /// Gate the rollout by `patchpub rollout guard`: devices enter a stage only while
    /// a gate the guard signs (and renews) allows it, so the rollout freezes when the
    /// guard stops. Devices older than the gate refuse the manifest (fail closed).
    #[arg(long)]
    guarded: bool,
}

fn scheme(s: &str) -> Result<KeyScheme> {
    s.parse::<KeyScheme>().map_err(anyhow::Error::msg)
}

fn release(s: &str) -> Result<(String, semver::Version)> {
    Ok(publish::parse_release_name(s)?)
}

fn main() {
    patchd::sigpipe::restore_default();
    patchd::logging::init_command("PATCHPUB_LOG", "warn");
    if let Err(e) = run(Cli::parse()) {
        eprintln!("patchpub: {e:#}");
        std::process::exit(1);
    }
}

// Long on purpose: one arm per subcommand, each only turning its options into a call
// into `publish`; the arms share nothing but the expiry settings above them.
fn run(cli: Cli) -> Result<()> {
    let e = &cli.expiry;
    let expiries = Expiries {
        root: SignedDuration::from_hours(24 * i64::from(e.root_expiry)),
        targets: SignedDuration::from_hours(24 * i64::from(e.targets_expiry)),
        snapshot: SignedDuration::from_hours(24 * i64::from(e.snapshot_expiry)),
        timestamp: SignedDuration::from_hours(i64::from(e.timestamp_expiry)),
    };
    let open = || -> Result<Repo> { Ok(Repo::open(&cli.repo, &cli.keys)?.with_expiries(expiries)) };
    if let Some(dir) = &cli.generate_docs {
        patchd::cli::docgen::generate(command(), &patchd::cli::manual::patchpub(), dir)?;
        return Ok(());
    }
    let Some(cmd) = &cli.cmd else {
        command().print_help()?;
        anyhow::bail!("a subcommand is required");
    };
    match cmd {
        Cmd::Keygen { out, scheme: s } => {
            let dir = out.parent().filter(|p| !p.as_os_str().is_empty());
            let dir = dir.map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
            let name = out
                .file_name()
                .and_then(|n| n.to_str())
                .context("key path has no file name")?;
            let key = publish::keystore::generate(&dir, name, scheme(s)?)?;
            let base = dir.join(name);
            println!(
                "wrote {}.pem (private, 0600) and {}.pub.json: {s} key {}",
                base.display(),
                base.display(),
                key.keyid()
            );
        }
        Cmd::Init(a) => {
            let opts = InitOptions {
                keys_dir: cli.keys.clone(),
                scheme: scheme(&a.scheme)?,
                root: RoleSpec {
                    keys: a.root_keys,
                    threshold: a.root_threshold,
                },
                targets: RoleSpec {
                    keys: a.targets_keys,
                    threshold: a.targets_threshold,
                },
                snapshot: RoleSpec {
                    keys: a.snapshot_keys,
                    threshold: a.snapshot_threshold,
                },
                timestamp: RoleSpec {
                    keys: a.timestamp_keys,
                    threshold: a.timestamp_threshold,
                },
                expiries,
            };
            Repo::init(&cli.repo, &opts)?;
            println!(
                "initialized {} (keys in {}): {}",
                cli.repo.display(),
                cli.keys.display(),
                signed(&cli.repo)
            );
        }
        Cmd::Add(a) => {
            let format = if a.format == "tar" {
                ImageFormat::Tar
            } else {
                ImageFormat::Raw
            };
            let images = a
                .image
                .iter()
                .map(|s| publish::parse_image_spec(s, format, !a.no_compress))
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            let stages = a
                .stage
                .iter()
                .map(|s| publish::parse_stage(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            let components = a
                .component
                .iter()
                .map(|s| publish::parse_component_spec(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            let rel = AddRelease {
                product: a.product.clone(),
                version: a.version.clone(),
                hardware: a.hardware.clone(),
                security_version: a.security_version,
                kind: a.kind,
                severity: a.severity,
                cves: a.cve.clone(),
                summary: a.summary.clone(),
                notes_url: a.notes_url.clone(),
                min_version: a.min_version.clone(),
                images,
                components,
                rollout: Rollout {
                    paused: a.paused,
                    stages,
                    guarded: a.guarded,
                },
                channels: a.channel.clone(),
                published: None,
            };
            let deltas = publish::DeltaOptions {
                from: a.delta_from.clone(),
                chunk_index: !a.no_chunk_index,
                level: a.delta_level,
            };
            let signer = a.role.as_ref().map(|name| publish::RoleSigner {
                name: name.clone(),
                keys_dir: a.role_keys.clone().unwrap_or_else(|| cli.keys.clone()),
            });
            let m = open()?.add_release_to(&rel, &deltas, signer.as_ref())?;
            println!(
                "published {} {} as {} in {}: {}",
                m.product,
                m.version,
                m.target_path(),
                cli.repo.display(),
                signed(&cli.repo)
            );
        }
        Cmd::Delegate(a) => {
            let mut paths = a.paths.clone();
            for p in &a.product {
                patchd::manifest::check_name("product", p)?;
                paths.push(format!("releases/{p}/*/*"));
            }
            let d = publish::Delegation {
                name: a.name.clone(),
                paths,
                keys: a.role_key_count,
                threshold: a.threshold,
                terminating: a.terminating,
                keys_dir: a.role_keys.clone().unwrap_or_else(|| cli.keys.clone()),
                scheme: scheme(&a.scheme)?,
            };
            let r = open()?.delegate(&d)?;
            println!(
                "delegated {} to role {} (keys {}) in {}: {}",
                r.paths.join(", "),
                r.name,
                r.keyids.join(", "),
                cli.repo.display(),
                signed(&cli.repo)
            );
        }
        Cmd::Promote {
            release: r,
            channel,
        } => {
            let (p, v) = release(r)?;
            let m = open()?.promote(&p, &v, channel)?;
            println!(
                "promoted {p}/{v} to {channel} (channels: {}) in {}: {}",
                m.channels.join(", "),
                cli.repo.display(),
                signed(&cli.repo)
            );
        }
        Cmd::Pause { release: r } => {
            let (p, v) = release(r)?;
            open()?.pause(&p, &v)?;
            println!(
                "paused the rollout of {p}/{v} in {}: {}",
                cli.repo.display(),
                signed(&cli.repo)
            );
        }
        Cmd::Resume { release: r } => {
            let (p, v) = release(r)?;
            open()?.resume(&p, &v)?;
            println!(
                "resumed the rollout of {p}/{v} in {}: {}",
                cli.repo.display(),
                signed(&cli.repo)
            );
        }
        Cmd::Withdraw { release: r } => {
            let (p, v) = release(r)?;
            open()?.withdraw(&p, &v)?;
            println!(
                "withdrew {p}/{v} in {}: {}",
                cli.repo.display(),
                signed(&cli.repo)
            );
        }
        Cmd::Refresh {
            timestamp_only,
            if_expiring_within: Some(within),
        } => {
            let r = open()?.refresh_if_expiring(*within, *timestamp_only)?;
            let window = patchd::duration::format(within);
            let when = |t: &jiff::Timestamp| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string();
            if r.resigned.is_empty() {
                println!("nothing to re-sign: no role patchpub refreshes expires within {window}");
            } else {
                println!(
                    "re-signed {} (expiring within {window})",
                    r.resigned.join(" and ")
                );
            }
            for (role, t) in &r.expires {
                println!("  {role} expires {}", when(t));
            }
            for (role, t) in &r.needs_keys {
                let how = if role == "root" {
                    "`patchpub root export` with the root keys"
                } else {
                    "a command that re-signs targets, e.g. `patchpub promote`"
                };
                println!(
                    "WARNING: {role} expires {} (within {window}); renew it with {how}",
                    when(t)
                );
            }
        }
        Cmd::Refresh {
            timestamp_only,
            if_expiring_within: None,
        } => {
            let repo = open()?;
            let what = if *timestamp_only {
                repo.refresh_timestamp()?;
                "timestamp"
            } else {
                repo.refresh()?;
                "snapshot and timestamp"
            };
            println!(
                "re-signed {what} in {}: {}",
                cli.repo.display(),
                signed(&cli.repo)
            );
        }
        Cmd::Rotate { role, scheme: s } => {
            open()?.rotate(publish::parse_role(role)?, scheme(s)?)?;
            println!(
                "replaced the {role} keys ({s}) in {}; new keys in {}: {}",
                cli.repo.display(),
                cli.keys.display(),
                signed(&cli.repo)
            );
        }
        Cmd::Root(RootCmd::Export {
            out,
            add_key,
            remove_key,
            threshold,
        }) => {
            let mut ch = RootChanges::default();
            for a in add_key {
                let (role, file) = publish::parse_role_assignment(a).map_err(anyhow::Error::msg)?;
                ch.add_keys
                    .push((role, publish::keystore::read_public(file.as_ref())?));
            }
            for a in remove_key {
                ch.remove_keys
                    .push(publish::parse_role_assignment(a).map_err(anyhow::Error::msg)?);
            }
            for a in threshold {
                let (role, n) = publish::parse_role_assignment(a).map_err(anyhow::Error::msg)?;
                ch.thresholds
                    .push((role, n.parse().with_context(|| format!("threshold {n:?}"))?));
            }
            let bytes = open()?.root_export(&ch)?;
            patchd::fsutil::atomic_write_mode(out, &bytes, 0o644)
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "wrote unsigned root v{} to {} (next: `patchpub root sign`, then `root import`)",
                root_version(&bytes),
                out.display()
            );
        }
        Cmd::Root(RootCmd::Sign { file, key }) => {
            let keys = key
                .iter()
                .map(|k| SigningKey::load(k))
                .collect::<Result<Vec<_>, _>>()?;
            let refs: Vec<_> = keys.iter().collect();
            let bytes =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let signed = publish::sign_root(&bytes, &refs)?;
            patchd::fsutil::atomic_write_mode(file, &signed, 0o644)
                .with_context(|| format!("writing {}", file.display()))?;
            println!(
                "signed root v{} in {} with {} key(s): {}",
                root_version(&signed),
                file.display(),
                keys.len(),
                keys.iter()
                    .map(|k| k.keyid().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Cmd::Root(RootCmd::Import { file }) => {
            let bytes =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            open()?.root_import(&bytes)?;
            println!(
                "published root v{} from {} in {}: {}",
                root_version(&bytes),
                file.display(),
                cli.repo.display(),
                signed(&cli.repo)
            );
        }
        Cmd::Verify => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let report = rt.block_on(open()?.verify())?;
            println!(
                "ok: root version {}, {} targets, releases: {}",
                report.root_version,
                report.targets,
                report.releases.join(" ")
            );
        }
        Cmd::List => {
            for s in open()?.releases()? {
                let mut state = Vec::new();
                if s.withdrawn {
                    state.push("withdrawn");
                }
                if s.paused {
                    state.push("paused");
                }
                println!(
                    "{}/{}\t{}\t{}\tsecurity_version={}\tchannels={}\t{}",
                    s.product,
                    s.version,
                    s.kind,
                    s.severity,
                    s.security_version,
                    s.channels.join(","),
                    state.join(",")
                );
            }
        }
        Cmd::Rollout(r) => {
            let code = patchd::cli::rollout::run(r, &open()?)?;
            if code != 0 {
                std::process::exit(code);
            }
        }
        Cmd::Man => {
            patchd::cli::docgen::render_page(
                &command(),
                &patchd::cli::manual::patchpub(),
                &mut std::io::stdout(),
            )?;
        }
        Cmd::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "patchpub",
                &mut std::io::stdout(),
            );
        }
        Cmd::Bundle {
            release: r,
            out,
            expires,
        } => {
            let (p, v) = release(r)?;
            let until = expires
                .as_deref()
                .map(|e| patchd::publish::parse_expires(e, jiff::Timestamp::now()))
                .transpose()?;
            let rep = open()?.bundle_until(&p, &v, out, until)?;
            println!(
                "wrote the bundle of {p}/{v} to {} ({} files); timestamp expires {}, snapshot {}, targets {}",
                out.display(),
                rep.files,
                rep.timestamp_expires,
                rep.snapshot_expires,
                rep.targets_expires
            );
        }
    }
    Ok(())
}

/// `root v1, targets v3, snapshot v4, timestamp v5`: the versions now signed in `repo`
/// (from its unversioned metadata files), for the line each command prints.
fn signed(repo: &std::path::Path) -> String {
    let mut parts = Vec::new();
    for role in ["root", "targets", "snapshot", "timestamp"] {
        let path = repo.join("metadata").join(format!("{role}.json"));
        let version = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["signed"]["version"].as_u64());
        match version {
            Some(n) => parts.push(format!("{role} v{n}")),
            None => parts.push(format!("{role} unreadable")),
        }
    }
    parts.join(", ")
}

/// The version an (unsigned or signed) root document says it is.
fn root_version(bytes: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v["signed"]["version"].as_u64())
        .map_or_else(|| "?".into(), |n| n.to_string())
}
