//! `patchd sysext …`: maintenance of the system extensions patchd keeps — check an
//! image against this OS, install or roll one back by hand with the same A/B steps and
//! checks a release uses, list them (docs/components.md).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::component::{Installed, Installer, Job, SysextSettings, Sysexts};
use crate::manifest::{Component, ComponentMethod, Rollback};
use crate::paths::Paths;

#[derive(Debug, Args)]
pub struct SysextArgs {
    #[command(subcommand)]
    pub cmd: SysextCmd,
}

#[derive(Debug, Subcommand)]
pub enum SysextCmd {
    /// Check an extension (raw image, tar tree or directory) against this OS's
    /// os-release with systemd-sysext's rules; exit 1 naming the field that does not
    /// match (ID, VERSION_ID, SYSEXT_LEVEL, ARCHITECTURE, SYSEXT_SCOPE).
    Check {
        /// The image: a squashfs/erofs/ext4 file, a tar archive or a directory.
        image: PathBuf,
        /// Extension name (its extension-release.NAME); default: the file name without
        /// `.raw`/`.tar`.
        #[arg(long)]
        name: Option<String>,
    },
    /// Install an extension by hand as patchd installs a release's sysext component:
    /// staged into the spare copy, checked, put in use, `systemd-sysext refresh`.
    Install {
        image: PathBuf,
        #[arg(long)]
        name: String,
        /// The version recorded for it.
        #[arg(long)]
        version: String,
    },
    /// Put the previous copy of extension NAME back in use and refresh; with
    /// `--remove`, take the extension out of use (unmerged) instead.
    RollBack {
        name: String,
        #[arg(long)]
        remove: bool,
    },
    /// The extensions patchd keeps: version, copy in use, previous version, merged.
    Status,
}

fn default_name(image: &std::path::Path) -> String {
    let n = image
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    n.trim_end_matches(".raw")
        .trim_end_matches(".tar")
        .to_string()
}

fn component(name: &str, version: &str, sha256: String, size: u64) -> Component {
    Component {
        name: name.to_string(),
        version: version.to_string(),
        method: ComponentMethod::Sysext,
        target: String::new(),
        size,
        sha256,
        needs_reboot: false,
        order: 0,
        rollback: Rollback::Ab,
        units: Vec::new(),
        kind: None,
        severity: None,
        cves: Vec::new(),
    }
}

fn sha256_of(path: &std::path::Path) -> std::io::Result<(String, u64)> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let n = std::io::copy(&mut f, &mut h)?;
    Ok((hex::encode(h.finalize()), n))
}

fn describe(i: &Installed) -> String {
    format!("{} (copy {})", i.version, i.copy.as_deref().unwrap_or("?"))
}

/// Run one `patchd sysext` command; the lines to print, or the error.
pub fn run(args: &SysextArgs, paths: &Paths) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    let s = Sysexts::new(paths, SysextSettings::default());
    match &args.cmd {
        SysextCmd::Check { image, name } => {
            let name = name.clone().unwrap_or_else(|| default_name(image));
            crate::manifest::check_name("--name", &name)?;
            s.check_image(&name, image)?;
            Ok(vec![format!(
                "{}: extension {name} matches this OS",
                image.display()
            )])
        }
        SysextCmd::Install {
            image,
            name,
            version,
        } => {
            crate::manifest::check_name("--name", name)?;
            crate::manifest::check_name("--version", version)?;
            let (sha, size) =
                sha256_of(image).with_context(|| format!("reading {}", image.display()))?;
            let c = component(name, version, sha, size);
            let job = Job {
                component: &c,
                file: image,
                release: "",
                slot: "",
            };
            let before = s.installed(name)?;
            s.stage(&job)?;
            if let Err(e) = s.switch(&job) {
                // As a release would: back to what was in use.
                let back = s.roll_back(&c, before.as_ref());
                return Err(match back {
                    Ok(()) => anyhow::Error::from(e).context("rolled back"),
                    Err(b) => anyhow::Error::from(e).context(format!("rollback failed: {b}")),
                });
            }
            Ok(vec![format!("{name} {version} installed and merged")])
        }
        SysextCmd::RollBack { name, remove } => {
            let cur = s
                .installed(name)?
                .with_context(|| format!("no extension {name} installed by patchd"))?;
            let c = component(name, &cur.version, cur.sha256.clone(), 0);
            if *remove {
                s.roll_back(&c, None)?;
                return Ok(vec![format!("{name} {} removed and unmerged", cur.version)]);
            }
            let prev = s
                .previous(name)?
                .with_context(|| format!("{name} has no previous copy to go back to"))?;
            s.roll_back(&c, Some(&prev))?;
            Ok(vec![format!("{name} back at {}", describe(&prev))])
        }
        SysextCmd::Status => {
            let merged = s.merged();
            let mut out = Vec::new();
            let (all, problems) =
                crate::component::list_installed(paths, &paths.resolve(crate::component::APPS_DIR));
            for ic in all.iter().filter(|c| c.method == ComponentMethod::Sysext) {
                let prev = s.previous(&ic.name)?;
                out.push(format!(
                    "{}: {}, previous {}, {}",
                    ic.name,
                    describe(&ic.installed),
                    prev.as_ref().map_or("none".into(), describe),
                    if merged.contains(&ic.name) {
                        "merged"
                    } else {
                        "not merged"
                    }
                ));
            }
            if out.is_empty() {
                out.push("no extensions installed by patchd".into());
            }
            if !problems.is_empty() {
                anyhow::bail!("{}", problems.join("; "));
            }
            Ok(out)
        }
    }
}
