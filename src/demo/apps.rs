//! The demo's application: `web`, an app bundle (a tar tree) installed by the real
//! app-bundle installer into `var/lib/patchd/apps/web/{a,b}` under the demo's root,
//! switched by its `current` symlink. Its unit is "restarted" by a small script standing
//! in for `systemctl restart --` (the demo has no systemd): it notes which version each
//! start ran, so the story can show and check that the restart happened.
//!
//! The bundle holds `VERSION`, `web.conf` and `bin/web`, whose `--check` is the app's
//! self-test; the demo's health drop-in runs it from the copy in use. A broken bundle's
//! `web.conf` lacks its listen address, so that self-test fails.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::DemoError;
use crate::component::{AppBundles, Installer, Job, Restarter, APPS_DIR};
use crate::manifest::Component;
use crate::paths::Paths;

/// The app's component name.
pub const APP: &str = "web";
/// The systemd unit it runs as (named in the release manifest).
pub const UNIT: &str = "demo-web.service";

/// The app bundle as the system shows it (read back by the installer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppView {
    pub version: String,
    /// The copy `current` names (`a` or `b`).
    pub copy: String,
}

pub struct DemoApps {
    apps_dir: PathBuf,
    restart_script: PathBuf,
    restart_log: PathBuf,
    build: PathBuf,
}

fn dev_err(what: &str, e: impl std::fmt::Display) -> DemoError {
    DemoError::Device(format!("{what}: {e}"))
}

fn write_exec(p: &Path, body: &str) -> Result<(), DemoError> {
    std::fs::write(p, body).map_err(|e| dev_err(&p.display().to_string(), e))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| dev_err(&p.display().to_string(), e))
}

impl DemoApps {
    /// The app's directories and restart script under `paths`' root; bundles are built
    /// in `build`.
    pub fn create(paths: &Paths, build: &Path) -> Result<Self, DemoError> {
        let apps_dir = paths.resolve(APPS_DIR);
        let bin = paths.resolve("/usr/lib/demo");
        for d in [&apps_dir, &bin] {
            crate::fsutil::ensure_dir(d, 0o755)
                .map_err(|e| dev_err(&d.display().to_string(), e))?;
        }
        let a = Self {
            restart_script: bin.join("restart-units"),
            restart_log: paths.resolve("/run/demo/unit-starts.log"),
            build: build.to_path_buf(),
            apps_dir,
        };
        let current = a.apps_dir.join(APP).join("current");
        write_exec(
            &a.restart_script,
            &format!(
                "#!/bin/sh\n# The demo's stand-in for `systemctl restart --`: each unit starts from\n\
                 # the app's copy in use; note which version that is.\n\
                 for unit in \"$@\"; do\n  \
                 echo \"$unit started web $(cat '{c}/VERSION') from copy $(readlink '{c}')\" >> '{log}'\n\
                 done\n",
                c = current.display(),
                log = a.restart_log.display()
            ),
        )?;
        Ok(a)
    }

    /// The installer the device offers for `app-bundle` components: the real one, with
    /// the demo's restart command.
    pub fn installer(&self) -> AppBundles {
        AppBundles::at(
            self.apps_dir.clone(),
            Restarter {
                argv: vec![self.restart_script.display().to_string()],
            },
        )
    }

    /// The body of the health drop-in that probes the app in use.
    pub fn health_check(&self) -> String {
        format!(
            "#!/bin/sh\n# demo health check: does the app in use pass its self-test?\n\
             exec /bin/sh '{}' --check\n",
            self.apps_dir.join(APP).join("current/bin/web").display()
        )
    }

    /// Build the bundle of app `version` (a tar file); `broken`: its config is wrong.
    pub fn bundle(&self, version: &str, broken: bool) -> Result<PathBuf, DemoError> {
        let conf = if broken {
            // A typo in the key: the app finds no listen address.
            "lisen=127.0.0.1:8080\n"
        } else {
            "listen=127.0.0.1:8080\n"
        };
        let web = "#!/bin/sh\n# web, the demo's application; `web --check` is its self-test.\n\
                   here=$(dirname \"$0\")/..\nv=$(cat \"$here/VERSION\")\n\
                   addr=$(sed -n 's/^listen=//p' \"$here/web.conf\")\n\
                   if [ -n \"$addr\" ]; then echo \"web $v answers on $addr\"; exit 0; fi\n\
                   echo \"web $v does not start: web.conf has no listen address\"; exit 1\n";
        let path = self.build.join(format!("{APP}-{version}.tar"));
        let mut b = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_mtime(0);
        dir.set_size(0);
        dir.set_uid(0);
        dir.set_gid(0);
        let tar_err = |e: std::io::Error| dev_err(&format!("building {}", path.display()), e);
        b.append_data(&mut dir, "bin/", std::io::empty())
            .map_err(tar_err)?;
        for (name, body, mode) in [
            ("VERSION", format!("{version}\n"), 0o644),
            ("web.conf", conf.to_string(), 0o644),
            ("bin/web", web.to_string(), 0o755),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(mode);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_size(body.len() as u64);
            b.append_data(&mut h, name, body.as_bytes())
                .map_err(tar_err)?;
        }
        let bytes = b.into_inner().map_err(tar_err)?;
        let mut f = std::fs::File::create(&path).map_err(tar_err)?;
        f.write_all(&bytes).map_err(tar_err)?;
        Ok(path)
    }

    /// The factory installs app `version` (through the same installer a release uses).
    pub fn factory_install(&self, version: &str, release: &str) -> Result<(), DemoError> {
        use sha2::Digest;
        let file = self.bundle(version, false)?;
        let bytes = std::fs::read(&file).map_err(|e| dev_err(&file.display().to_string(), e))?;
        let c: Component = serde_json::from_value(serde_json::json!({
            "name": APP, "version": version, "method": "app-bundle",
            "target": format!("factory/{APP}"), "size": bytes.len(),
            "sha256": hex::encode(sha2::Sha256::digest(&bytes)),
            "rollback": "ab", "units": [UNIT],
        }))
        .map_err(|e| dev_err("factory app entry", e))?;
        let job = Job {
            component: &c,
            file: &file,
            release,
            slot: "a",
        };
        let i = self.installer();
        i.stage(&job)
            .and_then(|()| i.switch(&job))
            .map_err(|e| dev_err("factory install of the app", e))
    }

    /// The app as the installer reads it back from the system (`None`: not installed).
    pub fn view(&self) -> Result<Option<AppView>, DemoError> {
        let got = self
            .installer()
            .installed(APP)
            .map_err(|e| dev_err("reading the app back", e))?;
        Ok(got.map(|i| AppView {
            version: i.version,
            copy: i.copy.unwrap_or_default(),
        }))
    }

    /// Where `current` points, as the file system says (for the story's own check).
    pub fn link(&self) -> Result<String, DemoError> {
        let p = self.apps_dir.join(APP).join("current");
        std::fs::read_link(&p)
            .map(|t| t.display().to_string())
            .map_err(|e| dev_err(&p.display().to_string(), e))
    }

    /// The unit starts the restart command noted, oldest first.
    pub fn starts(&self) -> Result<Vec<String>, DemoError> {
        match std::fs::read_to_string(&self.restart_log) {
            Ok(t) => Ok(t.lines().map(String::from).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(dev_err(&self.restart_log.display().to_string(), e)),
        }
    }
}
