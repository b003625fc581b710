//! The simulated device `patchd demo` runs on, built from the real simulated twins:
//! image-file slots, the file bootloader with its simulated reboot, a local repository
//! signed with the publisher library and read through the TUF client, the health runner
//! with one drop-in check, the audit log and the inventory — all under one temporary
//! directory, without root and without a network.
//!
//! The "operating system" in an image is one text line per fact, then a NUL and the
//! same incompressible "rest of the system" in every release (so a delta is much smaller
//! than the full image, as on a real device); on every power cycle the device copies the
//! booted slot's text to `/run/demo/booted-os` (as a real machine would have its root
//! mounted), and the health drop-in reads it.
//!
//! The app bundle `web` ([`super::apps`]) is installed at the factory and patched by
//! releases of components only, through the real app-bundle installer; a second health
//! drop-in runs its self-test.
//!
//! The publisher publishes every release with a static delta from each earlier release
//! (the factory release 1.0.0 included), as `patchpub add --delta-from` does, plus the
//! chunk index: the demo stages by static delta and shows the bytes fetched and reused.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::apps::{AppView, DemoApps, APP, UNIT};
use super::{DemoDevice, DemoError, DemoRelease};
use crate::audit::{AuditLimits, AuditLog};
use crate::boot::file::FileBootloader;
use crate::boot::Bootloader;
use crate::clock::{Clock, SimClock};
use crate::config::{DeviceConfig, HealthConfig};
use crate::daemon::health::PlanHealth;
use crate::engine::ports::{PortError, Reboot};
use crate::engine::runner::{EngineParts, EngineSettings};
use crate::fetch::{BoxFuture, ByteSource, FileSource};
use crate::health::{FixedUnits, HealthPlan};
use crate::names::SlotName;
use crate::paths::Paths;
use crate::policy::{DeviceFacts, Policy, Schedule};
use crate::publish::{AddRelease, DeltaOptions, InitOptions, Repo};
use crate::slot::stage::{RawSlot, StageOptions};
use crate::slot::{ImageFileSlot, Slot, SlotBackend, SlotState, SlotStatus};
use crate::source::RepoUpdates;
use crate::trust::client::Limits;
use crate::trust::TufClient;

const PRODUCT: &str = "demo-appliance";
const WINDOWS: [&str; 1] = ["Sat,Sun 02:00-05:00"];
const IMAGE_SIZE: usize = 256 * 1024;

/// The demo's reboot: record the request; the story power-cycles the device.
struct DemoReboot;

impl Reboot for DemoReboot {
    fn inhibitors(&self) -> BoxFuture<'_, Vec<String>> {
        Box::pin(async { Vec::new() })
    }
    fn reboot<'a>(&'a self, _reason: &'a str) -> BoxFuture<'a, Result<(), PortError>> {
        Box::pin(async { Ok(()) })
    }
}

pub struct DemoWorld {
    top: PathBuf,
    paths: Paths,
    clock: SimClock,
    repo: Repo,
    slots: Vec<SlotName>,
    audit: Arc<Mutex<AuditLog>>,
    apps: DemoApps,
    /// Releases published so far with the OS image each carries: each new one gets a
    /// static delta from every distinct image.
    published: Mutex<Vec<(semver::Version, String)>>,
}

fn dev_err(what: &str, e: impl std::fmt::Display) -> DemoError {
    DemoError::Device(format!("{what}: {e}"))
}

fn io(what: &Path) -> impl Fn(std::io::Error) -> DemoError + '_ {
    move |e| dev_err(&what.display().to_string(), e)
}

/// The content of a release's image: a tiny "OS" whose service works or not, then the
/// rest of the system (the same pseudo-random bytes in every release).
fn image_bytes(version: &str, healthy: bool) -> Vec<u8> {
    let mut b = format!(
        "os=patchd-demo version={version}\nservice={}\n\0",
        if healthy { "ok" } else { "broken" }
    )
    .into_bytes();
    // xorshift64: fixed seed, so every release shares it and runs are reproducible.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while b.len() < IMAGE_SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.extend_from_slice(&x.to_le_bytes());
    }
    b.truncate(IMAGE_SIZE);
    b
}

impl DemoWorld {
    /// Build the device under `top` (which must be empty or absent).
    pub fn create(top: &Path, start: jiff::Timestamp) -> Result<Self, DemoError> {
        // A used directory would mix two devices' state: refuse it.
        if std::fs::read_dir(top).is_ok_and(|mut d| d.next().is_some()) {
            return Err(dev_err(
                &top.display().to_string(),
                "directory is not empty; give a new or empty directory",
            ));
        }
        let clock = SimClock::new(start);
        let paths = Paths::new(top.join("device"));
        for d in [
            paths.state_dir(),
            paths.resolve("/etc/patchd"),
            paths.resolve("/run/demo"),
            paths.resolve("/var/lib/slots"),
            top.join("build"),
        ] {
            crate::fsutil::ensure_dir(&d, 0o755).map_err(io(&d))?;
        }
        let write = |p: PathBuf, b: &[u8]| std::fs::write(&p, b).map_err(io(&p));
        write(
            paths.resolve("/etc/machine-id"),
            b"5e1f0c0ffee5e1f0c0ffee5e1f0c0ffe\n",
        )?;
        write(paths.resolve("/etc/hostname"), b"demo-device\n")?;
        write(
            paths.resolve("/etc/os-release"),
            b"ID=patchd-demo\nPRETTY_NAME=\"patchd demo appliance\"\nVERSION_ID=1.0.0\n",
        )?;

        // The health drop-in: the service of the booted "OS" must say ok. Owned by us
        // and not group/world-writable, as the health runner requires.
        let hdir = paths.health_dir();
        crate::fsutil::ensure_dir(&hdir, 0o755).map_err(io(&hdir))?;
        let booted_os = paths.resolve("/run/demo/booted-os");
        let script = hdir.join("10-service");
        write(
            script.clone(),
            format!(
                "#!/bin/sh\n# demo health check: is the service of the running system up?\n\
                 if grep -q '^service=ok' '{}'; then echo 'service is up'; exit 0; fi\n\
                 echo 'service failed to start'; exit 1\n",
                booted_os.display()
            )
            .as_bytes(),
        )?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .map_err(io(&script))?;
        // The app: installed at the factory, probed by a second drop-in.
        let apps = DemoApps::create(&paths, &top.join("build"))?;
        apps.factory_install("1.0", "1.0.0")?;
        let app_check = hdir.join("20-app");
        write(app_check.clone(), apps.health_check().as_bytes())?;
        std::fs::set_permissions(&app_check, std::fs::Permissions::from_mode(0o755))
            .map_err(io(&app_check))?;

        // The publisher's repository, signed with fresh keys, expiries on the sim clock.
        let repo = Repo::init(top.join("repo"), &InitOptions::new(top.join("keys")))
            .map_err(|e| dev_err("publisher repository", e))?
            .with_clock(Arc::new(clock.clone()));
        let root = repo
            .root_bytes()
            .map_err(|e| dev_err("publisher root", e))?;
        TufClient::init(&paths.state_dir().join("tuf"), &root, &Limits::default())
            .map_err(|e| dev_err("installing the trusted root", e))?;

        // Slot a runs 1.0.0 (installed at the factory); slot b is empty.
        let slots = vec![slot_name("a")?, slot_name("b")?];
        let img_a = Self::image_path(&paths, &slots[0]);
        let v1 = image_bytes("1.0.0", true);
        write(img_a, &v1)?;
        let a = ImageFileSlot::new(
            slots[0].clone(),
            Self::image_path(&paths, &slots[0]),
            &paths.state_dir(),
        );
        use sha2::Digest;
        a.store()
            .save(&SlotStatus {
                slot: slots[0].clone(),
                state: SlotState::Good,
                version: Some("1.0.0".into()),
                sha256: Some(hex::encode(sha2::Sha256::digest(&v1))),
                size: Some(v1.len() as u64),
                installed_at: Some(start),
            })
            .map_err(|e| dev_err("slot a", e))?;
        let bl = FileBootloader::new(paths.resolve("/boot/patchd-boot.json"), slots.clone());
        let bdir = paths.resolve("/boot");
        crate::fsutil::ensure_dir(&bdir, 0o755).map_err(io(&bdir))?;
        bl.init(&slots[0]).map_err(|e| dev_err("bootloader", e))?;
        let audit = AuditLog::open(paths.state_dir().join("audit.log"), AuditLimits::default())
            .map_err(|e| dev_err("audit log", e))?;
        let w = Self {
            top: top.to_path_buf(),
            paths,
            clock,
            repo,
            slots,
            audit: Arc::new(Mutex::new(audit)),
            apps,
            published: Mutex::new(Vec::new()),
        };
        // The factory release is in the repository too: later releases carry a static
        // delta from it.
        w.publish(&DemoRelease {
            version: "1.0.0".into(),
            security_version: 1,
            kind: crate::policy::Kind::Bugfix,
            severity: crate::policy::Severity::Medium,
            cves: vec![],
            healthy: true,
            os_of: None,
            app: None,
        })?;
        w.mount_booted(&w.slots[0])?;
        Ok(w)
    }

    fn image_path(paths: &Paths, slot: &SlotName) -> PathBuf {
        paths.resolve(format!("/var/lib/slots/slot-{slot}.img"))
    }

    fn bootloader(&self) -> FileBootloader {
        FileBootloader::new(
            self.paths.resolve("/boot/patchd-boot.json"),
            self.slots.clone(),
        )
    }

    /// What a real machine does by booting: the booted slot's content becomes the running
    /// system (here: its first line is copied where the health check looks).
    fn mount_booted(&self, slot: &SlotName) -> Result<(), DemoError> {
        let img = Self::image_path(&self.paths, slot);
        let bytes = std::fs::read(&img).map_err(io(&img))?;
        let text: Vec<u8> = bytes.into_iter().take_while(|b| *b != 0).collect();
        let p = self.paths.resolve("/run/demo/booted-os");
        std::fs::write(&p, text).map_err(io(&p))
    }

    pub fn policy() -> Result<Policy, DemoError> {
        Ok(Policy {
            schedule: Schedule::parse("UTC", &WINDOWS).map_err(|e| dev_err("windows", e))?,
            ..Policy::default()
        })
    }

    pub fn top(&self) -> &Path {
        &self.top
    }
}

fn slot_name(s: &str) -> Result<SlotName, DemoError> {
    SlotName::new(s).map_err(|e| dev_err("slot name", e))
}

impl DemoDevice for DemoWorld {
    fn describe(&self) -> String {
        format!(
            "image-file slots a/b, file bootloader, signed repository {} (TUF), app bundle {APP} (A/B copies behind a symlink), health drop-ins; all under {}",
            self.repo.dir().display(),
            self.top.display()
        )
    }

    fn windows(&self) -> String {
        format!("{} (UTC)", WINDOWS.join(", "))
    }

    fn clock(&self) -> &SimClock {
        &self.clock
    }

    fn parts(&self) -> Result<EngineParts, DemoError> {
        let bl = self.bootloader();
        let booted = bl.booted_slot().map_err(|e| dev_err("bootloader", e))?;
        let state_dir = self.paths.state_dir();
        let raw: Vec<Arc<ImageFileSlot>> = self
            .slots
            .iter()
            .map(|s| {
                Arc::new(
                    ImageFileSlot::new(s.clone(), Self::image_path(&self.paths, s), &state_dir)
                        .with_booted(*s == booted),
                )
            })
            .collect();
        let clock: Arc<dyn Clock> = Arc::new(self.clock.clone());
        let client = TufClient::load(&state_dir.join("tuf"), clock.clone(), Limits::default())
            .map_err(|e| dev_err("TUF client", e))?;
        let metadata: Arc<dyn ByteSource> = Arc::new(FileSource::new(self.repo.metadata_dir()));
        let targets: Arc<dyn ByteSource> = Arc::new(FileSource::new(self.repo.targets_dir()));
        let updates = RepoUpdates::new(
            client,
            metadata,
            targets,
            PRODUCT.into(),
            None,
            "stable".into(),
            raw.iter()
                .map(|s| s.clone() as Arc<dyn SlotBackend>)
                .collect(),
            StageOptions::default(),
        )
        .with_component_dir(crate::component::staged_dir(&self.paths));
        let mut plan = HealthPlan::from_config(&HealthConfig::default(), &self.paths);
        // The demo runs unprivileged: the drop-ins are trusted when owned by us.
        plan.trusted_uid = nix::unistd::getuid().as_raw();
        Ok(EngineParts {
            // The real app-bundle installer; the demo's device offers no other method.
            components: crate::engine::ports::DeviceComponents::with(
                crate::component::Installers::new().with(
                    crate::manifest::ComponentMethod::AppBundle,
                    Arc::new(self.apps.installer()),
                ),
                &self.paths,
            ),
            paths: self.paths.clone(),
            clock,
            bootloader: Arc::new(bl),
            slots: raw.into_iter().map(|s| s as Arc<dyn Slot>).collect(),
            updates: Some(Arc::new(updates)),
            bundles: None,
            policy: Self::policy()?,
            device: DeviceFacts {
                machine_id: "5e1f0c0ffee5e1f0c0ffee5e1f0c0ffe".into(),
                product: PRODUCT.into(),
                hardware: None,
                channel: "stable".into(),
                tags: vec![],
            },
            health: Arc::new(PlanHealth {
                plan,
                units: Arc::new(FixedUnits(Default::default())),
            }),
            audit: self.audit.clone(),
            reboot: Arc::new(DemoReboot),
            device_config: DeviceConfig {
                product: Some(PRODUCT.into()),
                channel: "stable".into(),
                tags: vec![],
                machine_id_path: "/etc/machine-id".into(),
                hardware: None,
            },
            settings: EngineSettings {
                check_interval: None,
                check_jitter: std::time::Duration::ZERO,
                evaluate_every: std::time::Duration::from_secs(3600),
                health_deadline: std::time::Duration::from_secs(300),
                probation: None,
                probation_check_every: std::time::Duration::from_secs(3600),
                boot_attempts: 1,
                ..Default::default()
            },
            fleet: None,
            #[cfg(feature = "failpoints")]
            failpoints: Default::default(),
        })
    }

    fn has_app(&self) -> bool {
        true
    }

    fn app(&self) -> Result<Option<AppView>, DemoError> {
        self.apps.view()
    }

    fn app_link(&self) -> Result<String, DemoError> {
        self.apps.link()
    }

    fn unit_starts(&self) -> Result<Vec<String>, DemoError> {
        self.apps.starts()
    }

    fn publish(&self, r: &DemoRelease) -> Result<(), DemoError> {
        let img = self.top.join("build").join(format!("{}.img", r.version));
        // A release of components only carries the OS image the device already runs.
        let os = r.os_of.as_deref().unwrap_or(&r.version);
        std::fs::write(&img, image_bytes(os, r.healthy)).map_err(io(&img))?;
        let version = r
            .version
            .parse()
            .map_err(|e| dev_err(&format!("version {}", r.version), e))?;
        let mut rel = AddRelease::new(PRODUCT, version, &img);
        rel.security_version = r.security_version;
        rel.kind = match r.kind {
            crate::policy::Kind::Security => crate::manifest::Kind::Security,
            crate::policy::Kind::Bugfix => crate::manifest::Kind::Bugfix,
            crate::policy::Kind::Feature => crate::manifest::Kind::Feature,
        };
        rel.severity = match r.severity {
            crate::policy::Severity::Low => crate::manifest::Severity::Low,
            crate::policy::Severity::Medium => crate::manifest::Severity::Medium,
            crate::policy::Severity::High => crate::manifest::Severity::High,
            crate::policy::Severity::Critical => crate::manifest::Severity::Critical,
        };
        rel.cves = r.cves.clone();
        rel.summary = format!("demo release {}", r.version);
        rel.published = Some(self.clock.now());
        if let Some(app) = &r.app {
            rel.components.push(crate::publish::ComponentInput {
                name: APP.into(),
                version: app.version.clone(),
                method: crate::manifest::ComponentMethod::AppBundle,
                file: self.apps.bundle(&app.version, app.broken)?,
                needs_reboot: false,
                order: 0,
                rollback: crate::manifest::Rollback::Ab,
                units: vec![UNIT.into()],
                kind: None,
                severity: None,
                cves: vec![],
            });
        }
        let mut published = self
            .published
            .lock()
            .map_err(|_| dev_err("publisher", "release list poisoned"))?;
        // One delta per distinct image (a release of components only repeats one).
        let mut from: Vec<semver::Version> = Vec::new();
        for (i, (v, o)) in published.iter().enumerate() {
            if !published[..i].iter().any(|(_, e)| e == o) {
                from.push(v.clone());
            }
        }
        let opts = DeltaOptions {
            from,
            ..DeltaOptions::publisher_default()
        };
        self.repo
            .add_release_with(&rel, &opts)
            .map_err(|e| dev_err(&format!("publishing {}", r.version), e))?;
        published.push((rel.version, os.to_string()));
        Ok(())
    }

    fn time_passed(&self) -> Result<(), DemoError> {
        self.repo
            .refresh()
            .map_err(|e| dev_err("publisher re-signing snapshot and timestamp", e))
    }

    fn power_cycle(&self) -> Result<SlotName, DemoError> {
        let slot = self
            .bootloader()
            .simulate_reboot()
            .map_err(|e| dev_err("simulated reboot", e))?;
        self.mount_booted(&slot)?;
        Ok(slot)
    }
}

/// `patchd demo`: the story of [`super::story`] told on a [`DemoWorld`].
pub async fn run(args: super::DemoArgs) -> Result<(), DemoError> {
    let tmp;
    let top = match &args.keep {
        Some(dir) => dir.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("patchd-demo-")
                .tempdir()
                .map_err(DemoError::Output)?;
            tmp.path().to_path_buf()
        }
    };
    let start: jiff::Timestamp = "2026-11-25T12:00:00Z"
        .parse()
        .map_err(|e| DemoError::Story {
            step: "clock".into(),
            why: format!("{e}"),
        })?;
    let world = DemoWorld::create(&top, start)?;
    let stdout = std::io::stdout();
    let outcome = super::story(&world, stdout.lock()).await?;
    println!(
        "demo: committed={} rolled_back={} audit=verified",
        outcome.committed, outcome.rolled_back
    );
    Ok(())
}
