//! What one check costs the CDN, measured rather than assumed: a repository published by
//! the real publisher (`patchd::publish::Repo`, what `patchpub` runs) and the device's
//! real check (`RepoUpdates::discover`: TUF refresh, release listing, manifest
//! downloads) reading it through a source that counts every request and every byte.

use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use patchd::engine::ports::Updates;
use patchd::fetch::{BoxFuture, ByteReader, ByteSource, FetchError, FileSource};
use patchd::manifest::{Kind, Rollout, Severity};
use patchd::publish::{AddRelease, InitOptions, Repo};
use patchd::slot::stage::StageOptions;
use patchd::source::RepoUpdates;
use patchd::trust::{Limits, TufClient};
use tokio::io::{AsyncRead, ReadBuf};

use super::Params;

/// Response header bytes a CDN adds to each answer (status line, date, cache and
/// content headers): an assumption, typical of the large CDNs; TLS is not counted.
pub const HEADER_BYTES: u64 = 400;

/// One request as the repository saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub found: bool,
    /// Body bytes the client read.
    pub bytes: Arc<AtomicU64>,
}

type Log = Arc<Mutex<Vec<Request>>>;

/// A directory source that logs what it is asked for.
struct Counting {
    inner: FileSource,
    prefix: &'static str,
    log: Log,
}

struct CountingReader {
    inner: ByteReader,
    n: Arc<AtomicU64>,
}

impl AsyncRead for CountingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let got = (buf.filled().len() - before) as u64;
        self.n.fetch_add(got, Ordering::Relaxed);
        r
    }
}

impl Counting {
    fn note(
        &self,
        path: &str,
        r: Result<ByteReader, FetchError>,
    ) -> Result<ByteReader, FetchError> {
        let n = Arc::new(AtomicU64::new(0));
        self.log.lock().unwrap().push(Request {
            path: format!("{}/{path}", self.prefix),
            found: !matches!(r, Err(FetchError::NotFound { .. })),
            bytes: n.clone(),
        });
        r.map(|inner| Box::new(CountingReader { inner, n }) as ByteReader)
    }
}

impl ByteSource for Counting {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn open<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        limit: u64,
    ) -> BoxFuture<'a, Result<ByteReader, FetchError>> {
        Box::pin(async move {
            let r = self.inner.open(path, offset, limit).await;
            self.note(path, r)
        })
    }
    fn open_exact<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<ByteReader, FetchError>> {
        Box::pin(async move {
            let r = self.inner.open_exact(path, offset, len).await;
            self.note(path, r)
        })
    }
    fn open_range<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        len: u64,
        file_len: u64,
    ) -> BoxFuture<'a, Result<ByteReader, FetchError>> {
        Box::pin(async move {
            let r = self.inner.open_range(path, offset, len, file_len).await;
            self.note(path, r)
        })
    }
}

/// The requests of one check.
#[derive(Debug, Clone, Default)]
pub struct CheckCost {
    pub requests: Vec<(String, bool, u64)>,
}

impl CheckCost {
    pub fn count(&self) -> usize {
        self.requests.len()
    }
    pub fn body_bytes(&self) -> u64 {
        self.requests.iter().map(|r| r.2).sum()
    }
    /// Body plus response headers: what the CDN sends.
    pub fn wire_bytes(&self) -> u64 {
        self.body_bytes() + HEADER_BYTES * self.count() as u64
    }
    pub fn not_found(&self) -> Vec<&str> {
        self.requests
            .iter()
            .filter(|r| !r.1)
            .map(|r| r.0.as_str())
            .collect()
    }
    pub fn under(&self, prefix: &str) -> Vec<&(String, bool, u64)> {
        self.requests
            .iter()
            .filter(|r| r.0.starts_with(prefix))
            .collect()
    }
    pub fn describe(&self) -> String {
        self.requests
            .iter()
            .map(|(p, found, n)| {
                if *found {
                    format!("{p} ({n} B)")
                } else {
                    format!("{p} (404)")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The checks a device makes over one release's life.
#[derive(Debug, Clone)]
pub struct Measured {
    /// A new device's first check (one release listed).
    pub first: CheckCost,
    /// Nothing changed, one release listed.
    pub no_change: CheckCost,
    /// The check that finds a new release (two listed).
    pub release_day: CheckCost,
    /// Nothing changed, two releases listed.
    pub no_change_two: CheckCost,
    /// The check after the new release was paused.
    pub after_pause: CheckCost,
}

fn release(p: &Params, dir: &Path, version: &str, seed: u8) -> AddRelease {
    let img = dir.join(format!("{version}.img"));
    // Incompressible, so the image target is a realistic share of its size.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(seed);
    let bytes: Vec<u8> = (0..256 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(&img, bytes).unwrap();
    let mut r = AddRelease::new("acme", version.parse().unwrap(), &img);
    r.kind = Kind::Security;
    r.severity = Severity::High;
    r.security_version = 2;
    r.cves = vec!["CVE-2026-10001".into(), "CVE-2026-10002".into()];
    r.summary = "OpenSSH and glibc security fixes; kernel 6.1.119".into();
    r.rollout = Rollout {
        paused: false,
        stages: p.stages.clone(),
        guarded: false,
    };
    r
}

async fn check(u: &RepoUpdates, log: &Log) -> CheckCost {
    log.lock().unwrap().clear();
    u.discover().await.unwrap();
    let requests = log
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.path.clone(), r.found, r.bytes.load(Ordering::Relaxed)))
        .collect();
    CheckCost { requests }
}

/// Publish, then check as a device would over one release.
pub async fn measure(p: &Params, dir: &Path) -> Measured {
    let repo = Repo::init(dir.join("repo"), &InitOptions::new(dir.join("keys"))).unwrap();
    repo.add_release(&release(p, dir, "1.0.0", 1)).unwrap();
    let tuf = dir.join("tuf");
    TufClient::init(&tuf, &repo.root_bytes().unwrap(), &Limits::default()).unwrap();
    let client = TufClient::load(
        &tuf,
        Arc::new(patchd::clock::SystemClock),
        Limits::default(),
    )
    .unwrap();
    let log: Log = Arc::default();
    let md: Arc<dyn ByteSource> = Arc::new(Counting {
        inner: FileSource::new(repo.metadata_dir()),
        prefix: "metadata",
        log: log.clone(),
    });
    let tg: Arc<dyn ByteSource> = Arc::new(Counting {
        inner: FileSource::new(repo.targets_dir()),
        prefix: "targets",
        log: log.clone(),
    });
    let u = RepoUpdates::new(
        client,
        md,
        tg,
        "acme".into(),
        None,
        "stable".into(),
        vec![],
        StageOptions::default(),
    );
    let first = check(&u, &log).await;
    let no_change = check(&u, &log).await;
    repo.add_release(&release(p, dir, "2.0.0", 2)).unwrap();
    let release_day = check(&u, &log).await;
    let no_change_two = check(&u, &log).await;
    repo.pause("acme", &"2.0.0".parse().unwrap()).unwrap();
    let after_pause = check(&u, &log).await;
    Measured {
        first,
        no_change,
        release_day,
        no_change_two,
        after_pause,
    }
}
