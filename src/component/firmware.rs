//! `firmware`: a cabinet archive (`.cab`) handed to the system's fwupd over D-Bus.
//!
//! fwupd stays in charge of what it is in charge of: which present devices a cabinet
//! matches (`GetDetails` on the verified file's descriptor), whether a version may be
//! installed (no downgrade or reinstall is forced), signatures it requires, and the
//! flashing itself (`Install` with the descriptor, its result from `GetResults`).
//! patchd keeps, per component, which devices the cabinet matched, what it staged and
//! what fwupd last confirmed, in `/var/lib/patchd/firmware/NAME/record.json`; what is
//! installed is the matched devices' version as fwupd reports it now (read back).
//! Firmware has no rollback; a cabinet no present device matches is skipped.

use std::future::Future;
use std::path::{Path, PathBuf};

use super::fwupd::{self, Device, Fwupd, FwupdBus, FwupdError};
use super::{io_err, ComponentError, Installed, Installer, Job};
use crate::fsutil;
use crate::manifest::Component;
use crate::paths::Paths;

/// Where patchd keeps its firmware component records, below the root.
pub const FIRMWARE_DIR: &str = "/var/lib/patchd/firmware";

/// How the synchronous installer runs the async D-Bus calls: on the daemon's runtime
/// when it is built inside one, else on a small runtime of its own.
enum Exec {
    Shared(tokio::runtime::Handle),
    Own(Option<tokio::runtime::Runtime>),
}

pub struct Firmware {
    bus: FwupdBus,
    exec: Exec,
    base: PathBuf,
}

impl Drop for Firmware {
    fn drop(&mut self) {
        // A runtime dropped inside another one would panic; this never blocks.
        if let Exec::Own(rt) = &mut self.exec {
            if let Some(rt) = rt.take() {
                rt.shutdown_background();
            }
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    /// fwupd's ids of the present devices the cabinet matched when it was staged.
    devices: Vec<String>,
    /// The version being installed (staged, not yet confirmed).
    #[serde(default)]
    staged: Option<Installed>,
    /// The last install fwupd confirmed.
    #[serde(default)]
    installed: Option<Installed>,
    /// fwupd's result of the last install, as it worded it.
    #[serde(default)]
    result: String,
}

impl Firmware {
    /// fwupd on the system bus.
    pub fn system(paths: &Paths) -> Result<Self, ComponentError> {
        Self::on_bus(paths, FwupdBus::System)
    }

    /// fwupd on `bus` (tests use a private one).
    pub fn on_bus(paths: &Paths, bus: FwupdBus) -> Result<Self, ComponentError> {
        let exec = match tokio::runtime::Handle::try_current() {
            // A current-thread runtime is only driven by its own block_on.
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                Exec::Shared(h)
            }
            _ => Exec::Own(Some(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| ComponentError::io("firmware", "starting the fwupd client", e))?,
            )),
        };
        Ok(Self {
            bus,
            exec,
            base: paths.resolve(FIRMWARE_DIR),
        })
    }

    /// Run `f` to its end. A fresh thread has no runtime context, so this never nests
    /// a runtime in the caller's (which would panic) whatever thread calls it.
    fn run<T: Send>(
        &self,
        name: &str,
        f: impl Future<Output = Result<T, FwupdError>> + Send,
    ) -> Result<T, ComponentError> {
        let exec = &self.exec;
        let out = std::thread::scope(|s| {
            s.spawn(move || match exec {
                Exec::Shared(h) => Some(h.block_on(f)),
                Exec::Own(Some(rt)) => Some(rt.block_on(f)),
                Exec::Own(None) => None,
            })
            .join()
        });
        match out {
            Ok(Some(r)) => r.map_err(|e| ComponentError::failed(name, e.to_string())),
            Ok(None) => Err(ComponentError::failed(
                name,
                "the fwupd client is shut down",
            )),
            Err(_) => Err(ComponentError::failed(
                name,
                "the fwupd client thread failed",
            )),
        }
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.base.join(name).join("record.json")
    }

    fn read_record(&self, name: &str) -> Result<Option<Record>, ComponentError> {
        read_record_at(&self.record_path(name), name)
    }

    fn write_record(&self, name: &str, r: &Record) -> Result<(), ComponentError> {
        let dir = self.base.join(name);
        fsutil::ensure_dir(&dir, 0o700)
            .map_err(io_err(name, "creating the firmware record directory"))?;
        let body = serde_json::to_vec_pretty(r)
            .map_err(|e| ComponentError::failed(name, e.to_string()))?;
        fsutil::atomic_write(&self.record_path(name), &body)
            .map_err(io_err(name, "writing the firmware record"))
    }

    /// What fwupd makes of the cabinet of `job`: the entries a present device matches,
    /// and the reasons fwupd gave for the others.
    fn details(&self, job: &Job<'_>) -> Result<(Vec<Device>, Vec<String>), ComponentError> {
        let name = job.component.name.as_str();
        let file = open(job.file, name)?;
        let bus = self.bus.clone();
        let all = self.run(name, async move {
            Fwupd::connect(&bus).await?.details(&file).await
        })?;
        let (matched, other): (Vec<Device>, Vec<Device>) =
            all.into_iter().partition(|d| !d.id.is_empty());
        let why = other
            .iter()
            .map(|d| {
                let what = if d.guids.is_empty() {
                    "a cabinet component".to_string()
                } else {
                    format!("GUID {}", d.guids.join(", "))
                };
                let reason = if d.update_error.is_empty() {
                    "no present device"
                } else {
                    d.update_error.as_str()
                };
                format!("{what}: {reason}")
            })
            .collect();
        Ok((matched, why))
    }

    fn devices(&self, name: &str) -> Result<Vec<Device>, ComponentError> {
        let bus = self.bus.clone();
        self.run(
            name,
            async move { Fwupd::connect(&bus).await?.devices().await },
        )
    }
}

/// What fwupd last confirmed for firmware component `name` (directory `dir`), by
/// patchd's record: the inventory's view without asking fwupd.
pub(super) fn confirmed_in(dir: &Path, name: &str) -> Result<Option<Installed>, ComponentError> {
    Ok(read_record_at(&dir.join("record.json"), name)?.and_then(|r| r.installed))
}

fn read_record_at(p: &Path, name: &str) -> Result<Option<Record>, ComponentError> {
    match std::fs::read(p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| ComponentError::failed(name, format!("{}: {e}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ComponentError::io(
            name,
            format!("reading {}", p.display()),
            e,
        )),
    }
}

fn open(path: &Path, name: &str) -> Result<std::fs::File, ComponentError> {
    std::fs::File::open(path).map_err(io_err(name, "opening the cabinet"))
}

impl Installer for Firmware {
    /// The version fwupd shows now on the devices the cabinet matched. The payload hash
    /// is the staged or last confirmed one when the device shows that version, else
    /// unknown (someone else changed it).
    fn installed(&self, name: &str) -> Result<Option<Installed>, ComponentError> {
        let Some(r) = self.read_record(name)? else {
            return Ok(None);
        };
        let present = self.devices(name)?;
        let versions: Vec<&str> = r
            .devices
            .iter()
            .filter_map(|id| present.iter().find(|d| &d.id == id))
            .map(|d| d.version.as_str())
            .collect();
        let Some(version) = versions.first().copied() else {
            return Ok(None);
        };
        let all_at = |i: &Installed| versions.iter().all(|v| *v == i.version);
        let known = [r.staged.as_ref(), r.installed.as_ref()]
            .into_iter()
            .flatten()
            .find(|i| all_at(i));
        Ok(Some(match known {
            Some(i) => i.clone(),
            None => Installed {
                version: version.to_string(),
                sha256: String::new(),
                copy: None,
                origin: String::new(),
            },
        }))
    }

    fn skip_reason(&self, job: &Job<'_>) -> Result<Option<String>, ComponentError> {
        let (matched, why) = self.details(job)?;
        if !matched.is_empty() {
            return Ok(None);
        }
        Ok(Some(format!(
            "no device here matches the firmware cabinet ({})",
            if why.is_empty() {
                "fwupd found no component in it".to_string()
            } else {
                why.join("; ")
            }
        )))
    }

    /// Ask fwupd which present devices the cabinet matches and record them; nothing
    /// is written to a device. The cabinet's release must be the manifest's version.
    fn stage(&self, job: &Job<'_>) -> Result<(), ComponentError> {
        let c = job.component;
        let name = c.name.as_str();
        let (matched, why) = self.details(job)?;
        if matched.is_empty() {
            return Err(ComponentError::failed(
                name,
                format!("no device here matches the cabinet: {}", why.join("; ")),
            ));
        }
        for d in &matched {
            if !d.release_versions.contains(&c.version) {
                return Err(ComponentError::failed(
                    name,
                    format!(
                        "the cabinet's release for {} ({}) is {}, the manifest says {}",
                        d.name,
                        d.id,
                        list(&d.release_versions),
                        c.version
                    ),
                ));
            }
        }
        let before = self.read_record(name)?.unwrap_or_default();
        let r = Record {
            devices: matched.iter().map(|d| d.id.clone()).collect(),
            staged: Some(Installed {
                version: c.version.clone(),
                sha256: c.sha256.clone(),
                copy: None,
                origin: job.release.to_string(),
            }),
            installed: before.installed,
            result: before.result,
        };
        self.write_record(name, &r)
    }

    /// Install on every matched device; fwupd's refusal or failure is the error, in
    /// fwupd's words. A repeat after a power cut finds the devices at the new version
    /// and does nothing.
    fn switch(&self, job: &Job<'_>) -> Result<(), ComponentError> {
        let c = job.component;
        let name = c.name.as_str();
        if self
            .installed(name)?
            .is_some_and(|i| i.sha256 == c.sha256 && i.version == c.version)
        {
            return Ok(());
        }
        let Some(mut r) = self.read_record(name)? else {
            return Err(ComponentError::failed(name, "switch before stage"));
        };
        let mut results = Vec::new();
        for id in r.devices.clone() {
            let file = open(job.file, name)?;
            let bus = self.bus.clone();
            let (comp, dev) = (name.to_string(), id.clone());
            let outcome = self.run(name, async move {
                let fw = Fwupd::connect(&bus).await?;
                let mut last = (0, 0);
                let mut progress = |s: Option<u32>, p: Option<u32>| {
                    last = (s.unwrap_or(last.0), p.unwrap_or(last.1));
                    tracing::info!(
                        component = %comp,
                        device = %dev,
                        percent = last.1,
                        "fwupd: {}",
                        fwupd::status_name(last.0)
                    );
                };
                fw.install(&dev, &file, &mut progress).await?;
                // Not every device keeps history; Install's own answer then stands.
                Ok(fw.results(&dev).await.ok())
            });
            let res = match outcome {
                Ok(res) => res,
                Err(e) => {
                    r.result = e.to_string();
                    self.write_record(name, &r)?;
                    return Err(e);
                }
            };
            match res {
                Some(d)
                    if d.update_state == fwupd::STATE_FAILED
                        || d.update_state == fwupd::STATE_FAILED_TRANSIENT =>
                {
                    r.result = format!("fwupd: update of {id} failed: {}", d.update_error);
                    self.write_record(name, &r)?;
                    return Err(ComponentError::failed(name, r.result.clone()));
                }
                Some(d) if d.update_state == fwupd::STATE_NEEDS_REBOOT => {
                    results.push(format!("{id}: needs reboot"))
                }
                Some(d) if d.update_state == fwupd::STATE_SUCCESS => {
                    results.push(format!("{id}: success"))
                }
                _ => results.push(format!("{id}: installed")),
            }
        }
        if !c.needs_reboot {
            let now = self.devices(name)?;
            for id in &r.devices {
                let v = now.iter().find(|d| &d.id == id).map(|d| d.version.as_str());
                if v != Some(c.version.as_str()) {
                    r.result = format!(
                        "fwupd reported the install on {id} done, but the device shows version {}",
                        v.unwrap_or("none (gone)")
                    );
                    self.write_record(name, &r)?;
                    return Err(ComponentError::failed(name, r.result.clone()));
                }
            }
        }
        r.result = results.join(", ");
        r.installed = r.staged.clone();
        self.write_record(name, &r)?;
        tracing::info!(component = name, version = %c.version, result = %r.result, "firmware installed");
        Ok(())
    }

    fn roll_back(&self, c: &Component, _before: Option<&Installed>) -> Result<(), ComponentError> {
        Err(ComponentError::failed(
            &c.name,
            "firmware cannot be rolled back",
        ))
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
