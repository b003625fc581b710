//! Shared set-up for the manifest discovery tests: a patchpub repository in a temp dir
//! and a device-side TUF client over it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use patchd::clock::SystemClock;
use patchd::fetch::FileSource;
use patchd::manifest::{discover, DeviceProfile, Discovery, DiscoveryError};
use patchd::publish::{AddRelease, InitOptions, Repo};
use patchd::trust::source::Subdir;
use patchd::trust::{Limits, TufClient};

pub struct World {
    pub tmp: tempfile::TempDir,
    pub repo: Repo,
}

impl World {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repo::init(
            tmp.path().join("repo"),
            &InitOptions::new(tmp.path().join("keys")),
        )
        .unwrap();
        World { tmp, repo }
    }

    pub fn image(&self, name: &str, len: usize) -> PathBuf {
        let p = self.tmp.path().join(name);
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&p, data).unwrap();
        p
    }

    pub fn release(&self, product: &str, version: &str, sv: u64) -> AddRelease {
        let img = self.image(&format!("{product}-{version}.img"), 4096);
        let mut r = AddRelease::new(product, version.parse().unwrap(), img);
        r.security_version = sv;
        r.summary = format!("{product} {version}");
        r
    }

    pub fn device_dir(&self) -> PathBuf {
        self.tmp.path().join("device-metadata")
    }

    /// A device client initialised with root v1 and refreshed.
    pub async fn client(&self) -> TufClient {
        let dir = self.device_dir();
        if !dir.join("root.json").exists() {
            let root1 = std::fs::read(self.repo.metadata_dir().join("1.root.json")).unwrap();
            TufClient::init(&dir, &root1, &Limits::default()).unwrap();
        }
        let mut c = TufClient::load(&dir, Arc::new(SystemClock), Limits::default()).unwrap();
        let src = FileSource::new(self.repo.dir());
        c.refresh(&Subdir::new(&src, "metadata")).await.unwrap();
        c
    }

    pub async fn discover(
        &self,
        client: &mut TufClient,
        dev: &DeviceProfile,
    ) -> Result<Discovery, DiscoveryError> {
        let src = FileSource::new(self.repo.dir());
        discover(
            client,
            &Subdir::new(&src, "metadata"),
            &Subdir::new(&src, "targets"),
            dev,
        )
        .await
    }
}

pub fn device(product: &str, floor: u64, running: Option<&str>) -> DeviceProfile {
    DeviceProfile {
        product: product.into(),
        hardware: None,
        channel: "stable".into(),
        running_version: running.map(|v| v.parse().unwrap()),
        security_floor: floor,
    }
}

/// Every file in `dir` with its bytes: to assert trusted metadata did not change.
pub fn snapshot_dir(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        out.insert(
            e.file_name().to_string_lossy().into_owned(),
            std::fs::read(e.path()).unwrap(),
        );
    }
    out
}
