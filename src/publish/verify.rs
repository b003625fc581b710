//! `patchpub verify`: check a repository the way a device would — start from root
//! version 1, follow the root chain, refresh, and download and check every target.

use std::io::Read;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::error::{io, PublishError};
use super::repo::Repo;
use crate::clock::{Clock, SystemClock};
use crate::fetch::FileSource;
use crate::manifest::{Compression, VerifiedManifest};
use crate::trust::source::Subdir;
use crate::trust::{Limits, TufClient};

/// What `verify` looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub root_version: u64,
    pub targets: usize,
    pub releases: Vec<String>,
}

impl Repo {
    /// Check the repository as a client would (see module docs). Image payloads are also
    /// decompressed and checked against the manifest's uncompressed size and sha256.
    pub async fn verify(&self) -> Result<VerifyReport, PublishError> {
        self.verify_with_clock(Arc::new(SystemClock)).await
    }

    pub async fn verify_with_clock(
        &self,
        clock: Arc<dyn Clock>,
    ) -> Result<VerifyReport, PublishError> {
        let first = self.metadata_dir().join("1.root.json");
        let root1 = std::fs::read(&first).map_err(io(first.display()))?;
        let tmp = tempfile::tempdir().map_err(io("temporary directory"))?;
        let limits = Limits::default();
        TufClient::init(tmp.path(), &root1, &limits)?;
        let mut client = TufClient::load(tmp.path(), clock, limits)?;
        let repo_src = FileSource::new(self.dir());
        let md = Subdir::new(&repo_src, "metadata");
        let tg = Subdir::new(&repo_src, "targets");
        client.refresh(&md).await?;
        // Every role's files, as a device resolves them: a file a delegated role lists
        // outside its paths fails the check here, not on a device.
        let listing = client.list_targets(&md, &|_| true, &|_| true).await?;
        if let Some((_, e)) = listing.unusable.into_iter().next() {
            return Err(e.into());
        }
        let mut paths: Vec<String> = Vec::new();
        for l in listing.listed {
            if !paths.contains(&l.path) {
                paths.push(l.path);
            }
        }
        let mut report = VerifyReport {
            root_version: client.root().common.version,
            targets: paths.len(),
            releases: Vec::new(),
        };
        for path in &paths {
            let target = client.target(&md, path).await?;
            if crate::manifest::parse_release_target_path(path).is_none() {
                let mut sink = tokio::io::sink();
                client.fetch_target_to(&tg, &target, &mut sink).await?;
                continue;
            }
            let bytes = client.fetch_target_bytes(&tg, &target).await?;
            let vm = VerifiedManifest::verify(&target, &bytes)?;
            for img in &vm.images {
                let it = client.target(&md, &img.target).await?;
                let file = self.targets_dir().join(it.remote_path());
                check_uncompressed(&file, img.compression, img.size, &img.sha256)?;
            }
            report
                .releases
                .push(format!("{}/{}", vm.product, vm.version));
        }
        Ok(report)
    }
}

fn check_uncompressed(
    file: &std::path::Path,
    compression: Compression,
    size: u64,
    sha256: &str,
) -> Result<(), PublishError> {
    let f = std::fs::File::open(file).map_err(io(file.display()))?;
    let mut r: Box<dyn Read> = match compression {
        Compression::None => Box::new(f),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(f).map_err(io(file.display()))?)
        }
    };
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = r.read(&mut buf).map_err(io(file.display()))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
        if n > size {
            break;
        }
    }
    if n != size || hex::encode(h.finalize()) != sha256 {
        return Err(PublishError::Invalid(format!(
            "{}: uncompressed content does not match the manifest (size {n}, expected {size})",
            file.display()
        )));
    }
    Ok(())
}
