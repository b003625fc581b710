//! Shared by the tests/tuf_*.rs files: builds TUF repositories with the trust module's
//! own metadata writer, and a device-side client over them.
#![allow(dead_code)]

pub mod raw_http;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use patchd::clock::SimClock;
use patchd::fetch::FileSource;
use patchd::trust::keys::{KeyScheme, SigningKey};
use patchd::trust::metadata::{
    hashes_of, sign_envelope, sign_value, DelegatedRole, Delegations, MetaFile, RoleType, Root,
    Snapshot, TargetFile, Targets, TimestampMeta,
};
use patchd::trust::{Limits, TrustError, TufClient};
use serde_json::{Map, Value};

pub fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Simulated "now" of every test; metadata expires a year later by default.
pub const NOW: &str = "2027-06-01T00:00:00Z";
pub const EXPIRES: &str = "2028-06-01T00:00:00Z";

pub struct Delegated {
    pub meta: Targets,
    pub keys: Vec<SigningKey>,
}

/// A repository on disk: `<dir>/metadata/…`, `<dir>/targets/…`.
pub struct Repo {
    pub tmp: tempfile::TempDir,
    pub consistent: bool,
    pub root: Root,
    pub root_keys: Vec<SigningKey>,
    pub timestamp_keys: Vec<SigningKey>,
    pub snapshot_keys: Vec<SigningKey>,
    pub targets_keys: Vec<SigningKey>,
    pub targets: Targets,
    pub delegated: BTreeMap<String, Delegated>,
    pub snapshot_version: u64,
    pub timestamp_version: u64,
    pub expires: Timestamp,
    /// Put length and hashes of snapshot into timestamp and of targets into snapshot.
    pub with_hashes: bool,
}

impl Repo {
    pub fn new(consistent: bool) -> Self {
        let key = || SigningKey::generate(KeyScheme::Ed25519);
        let mut r = Self {
            tmp: tempfile::tempdir().unwrap(),
            consistent,
            root: Root::new(1, ts(EXPIRES), consistent),
            root_keys: vec![key()],
            timestamp_keys: vec![key()],
            snapshot_keys: vec![key()],
            targets_keys: vec![key()],
            targets: Targets::new(1, ts(EXPIRES)),
            delegated: BTreeMap::new(),
            snapshot_version: 0,
            timestamp_version: 0,
            expires: ts(EXPIRES),
            with_hashes: true,
        };
        std::fs::create_dir_all(r.meta_dir()).unwrap();
        std::fs::create_dir_all(r.targets_dir()).unwrap();
        r.set_root_keys();
        r.write_root(&[]);
        r.targets.common.version = 0;
        r.publish();
        r
    }

    pub fn meta_dir(&self) -> PathBuf {
        self.tmp.path().join("metadata")
    }

    pub fn targets_dir(&self) -> PathBuf {
        self.tmp.path().join("targets")
    }

    pub fn meta_source(&self) -> FileSource {
        FileSource::new(self.meta_dir())
    }

    pub fn targets_source(&self) -> FileSource {
        FileSource::new(self.targets_dir())
    }

    /// Root's key lists from the current key vectors (thresholds kept).
    pub fn set_root_keys(&mut self) {
        let thresholds: BTreeMap<String, u64> = self
            .root
            .roles
            .iter()
            .map(|(k, v)| (k.clone(), v.threshold))
            .collect();
        self.root.keys.clear();
        self.root.roles.clear();
        for (role, keys) in [
            (RoleType::Root, &self.root_keys),
            (RoleType::Timestamp, &self.timestamp_keys),
            (RoleType::Snapshot, &self.snapshot_keys),
            (RoleType::Targets, &self.targets_keys),
        ] {
            for k in keys {
                self.root.add_key(role, k.public()).unwrap();
            }
            if let Some(t) = thresholds.get(role.as_str()) {
                self.root.roles.get_mut(role.as_str()).unwrap().threshold = *t;
            }
        }
    }

    /// Sign the current root with its own keys plus `extra` (old root keys on
    /// rotation) and write `N.root.json` (and `root.json`).
    pub fn write_root(&mut self, extra: &[&SigningKey]) {
        let mut signers: Vec<&SigningKey> = self.root_keys.iter().collect();
        signers.extend_from_slice(extra);
        let bytes = sign_envelope(&self.root, &signers).unwrap();
        let v = self.root.common.version;
        std::fs::write(self.meta_dir().join(format!("{v}.root.json")), &bytes).unwrap();
        std::fs::write(self.meta_dir().join("root.json"), &bytes).unwrap();
    }

    /// New root version with (possibly) new keys, signed by old and new root keys.
    pub fn rotate_root(&mut self, new_root_keys: Option<Vec<SigningKey>>) {
        let old = match new_root_keys {
            Some(k) => std::mem::replace(&mut self.root_keys, k),
            None => Vec::new(),
        };
        self.root.common.version += 1;
        self.set_root_keys();
        let old_refs: Vec<&SigningKey> = old.iter().collect();
        self.write_root(&old_refs);
    }

    pub fn root_bytes(&self, version: u64) -> Vec<u8> {
        std::fs::read(self.meta_dir().join(format!("{version}.root.json"))).unwrap()
    }

    /// Add a target to the top-level targets role (written at the next publish).
    pub fn add_target(&mut self, path: &str, content: &[u8]) {
        let tf = self.write_target_file(path, content);
        self.targets.targets.insert(path.to_string(), tf);
    }

    /// Add a target to a delegated role.
    pub fn add_delegated_target(&mut self, role: &str, path: &str, content: &[u8]) {
        let tf = self.write_target_file(path, content);
        self.delegated
            .get_mut(role)
            .unwrap()
            .meta
            .targets
            .insert(path.to_string(), tf);
    }

    pub fn write_target_file(&self, path: &str, content: &[u8]) -> TargetFile {
        let hashes: BTreeMap<String, String> = hashes_of(content)
            .into_iter()
            .filter(|(k, _)| k == "sha256")
            .collect();
        let full = self.targets_dir().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        if self.consistent {
            let (dir, base) = match path.rsplit_once('/') {
                Some((d, b)) => (format!("{d}/"), b.to_string()),
                None => (String::new(), path.to_string()),
            };
            let name = format!("{dir}{}.{base}", hashes["sha256"]);
            std::fs::write(self.targets_dir().join(name), content).unwrap();
        } else {
            std::fs::write(&full, content).unwrap();
        }
        TargetFile {
            length: content.len() as u64,
            hashes,
            custom: None,
            extra: Map::new(),
        }
    }

    /// Delegate `paths` from top-level targets to a new role with a fresh key.
    pub fn delegate(&mut self, name: &str, paths: &[&str], terminating: bool) {
        let key = SigningKey::generate(KeyScheme::EcdsaP256);
        let d = self.targets.delegations.get_or_insert_with(|| Delegations {
            keys: BTreeMap::new(),
            roles: Some(Vec::new()),
            succinct_roles: None,
            extra: Map::new(),
        });
        d.keys.insert(key.keyid().to_string(), key.public().clone());
        d.roles.get_or_insert_with(Vec::new).push(DelegatedRole {
            name: name.to_string(),
            keyids: vec![key.keyid().to_string()],
            threshold: 1,
            terminating,
            paths: Some(paths.iter().map(|s| s.to_string()).collect()),
            path_hash_prefixes: None,
            extra: Map::new(),
        });
        let mut meta = Targets::new(0, self.expires);
        meta.common.version = 0;
        self.delegated.insert(
            name.to_string(),
            Delegated {
                meta,
                keys: vec![key],
            },
        );
    }

    /// The repository file name of role `name` at `version` (consistent or not).
    pub fn role_file(&self, name: &str, version: u64) -> String {
        let enc = patchd::trust::pattern::encode_name(name);
        if self.consistent {
            format!("{version}.{enc}.json")
        } else {
            format!("{enc}.json")
        }
    }

    /// Bump and sign targets, delegated roles, snapshot and timestamp.
    pub fn publish(&mut self) {
        let mut snapshot = Snapshot::new(self.snapshot_version + 1, self.expires);
        self.targets.common.version += 1;
        self.targets.common.expires = self.expires;
        let signers: Vec<&SigningKey> = self.targets_keys.iter().collect();
        let bytes = sign_envelope(&self.targets, &signers).unwrap();
        let file = self.role_file("targets", self.targets.common.version);
        std::fs::write(self.meta_dir().join(&file), &bytes).unwrap();
        snapshot.meta.insert(
            "targets.json".into(),
            self.meta_file(self.targets.common.version, &bytes),
        );
        let names: Vec<String> = self.delegated.keys().cloned().collect();
        for name in names {
            let d = self.delegated.get_mut(&name).unwrap();
            d.meta.common.version += 1;
            d.meta.common.expires = self.expires;
            let signers: Vec<&SigningKey> = d.keys.iter().collect();
            let bytes = sign_envelope(&d.meta, &signers).unwrap();
            let v = d.meta.common.version;
            let file = self.role_file(&name, v);
            std::fs::write(self.meta_dir().join(&file), &bytes).unwrap();
            snapshot
                .meta
                .insert(format!("{name}.json"), self.meta_file(v, &bytes));
        }
        self.write_snapshot(&snapshot);
    }

    pub fn meta_file(&self, version: u64, bytes: &[u8]) -> MetaFile {
        let mut mf = MetaFile::version(version);
        if self.with_hashes {
            mf.length = Some(bytes.len() as u64);
            mf.hashes = Some(hashes_of(bytes));
        }
        mf
    }

    /// Sign and write `snapshot`, then a new timestamp for it.
    pub fn write_snapshot(&mut self, snapshot: &Snapshot) {
        self.snapshot_version = snapshot.common.version;
        let signers: Vec<&SigningKey> = self.snapshot_keys.iter().collect();
        let bytes = sign_envelope(snapshot, &signers).unwrap();
        let file = self.role_file("snapshot", snapshot.common.version);
        std::fs::write(self.meta_dir().join(file), &bytes).unwrap();
        let mf = self.meta_file(snapshot.common.version, &bytes);
        self.write_timestamp(mf);
    }

    pub fn write_timestamp(&mut self, snapshot: MetaFile) {
        self.timestamp_version += 1;
        let t = TimestampMeta::new(self.timestamp_version, self.expires, snapshot);
        let signers: Vec<&SigningKey> = self.timestamp_keys.iter().collect();
        let bytes = sign_envelope(&t, &signers).unwrap();
        std::fs::write(self.meta_dir().join("timestamp.json"), bytes).unwrap();
    }

    /// Overwrite a metadata file with `signed` signed by `keys` (for forged files).
    pub fn write_signed_value(&self, file: &str, signed: Value, keys: &[&SigningKey]) {
        let bytes = sign_value(signed, keys).unwrap();
        std::fs::write(self.meta_dir().join(file), bytes).unwrap();
    }

    pub fn read_meta(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.meta_dir().join(file)).unwrap()
    }

    pub fn write_meta(&self, file: &str, bytes: &[u8]) {
        std::fs::write(self.meta_dir().join(file), bytes).unwrap();
    }
}

/// A device: trusted metadata dir initialised with the repository's root v1.
pub struct Device {
    pub dir: tempfile::TempDir,
    pub clock: SimClock,
}

impl Device {
    pub fn new(repo: &Repo) -> Self {
        let dir = tempfile::tempdir().unwrap();
        TufClient::init(dir.path(), &repo.root_bytes(1), &Limits::default()).unwrap();
        Self {
            dir,
            clock: SimClock::new(ts(NOW)),
        }
    }

    pub fn client(&self) -> TufClient {
        self.client_with(Limits::default())
    }

    pub fn client_with(&self, limits: Limits) -> TufClient {
        TufClient::load(self.dir.path(), Arc::new(self.clock.clone()), limits).unwrap()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Name → bytes of every file in the trusted metadata directory.
    pub fn snapshot_files(&self) -> BTreeMap<String, Vec<u8>> {
        files_in(self.dir.path())
    }

    pub async fn refresh(&self, repo: &Repo) -> Result<TufClient, TrustError> {
        let mut c = self.client();
        c.refresh(&repo.meta_source()).await?;
        Ok(c)
    }
}

/// Role file name (without `.json`) → `signed.version` of every `*.json` file in `dir`:
/// what a device trusts, as the conformance suite reads it.
pub fn versions_in(dir: &Path) -> BTreeMap<String, u64> {
    files_in(dir)
        .into_iter()
        .filter_map(|(name, bytes)| {
            let role = name.strip_suffix(".json")?.to_string();
            let v: Value = serde_json::from_slice(&bytes).ok()?;
            Some((role, v["signed"]["version"].as_u64()?))
        })
        .collect()
}

/// `[("root", 2), ("timestamp", 2)]` as a map, for comparisons with [`versions_in`].
pub fn versions(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(r, v)| (r.to_string(), *v)).collect()
}

pub fn files_in(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            out.insert(
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            );
        }
    }
    out
}

/// Where a role comes in the client workflow: root, timestamp, snapshot, targets, then
/// delegated roles; anything else in the directory (the clock file) last.
fn stage(file: &str) -> u8 {
    match file.strip_suffix(".json") {
        Some("root") => 0,
        Some("timestamp") => 1,
        Some("snapshot") => 2,
        Some("targets") => 3,
        Some(_) => 4,
        None => 5,
    }
}

/// The trusted-directory file of the role a rejection names (`2.snapshot.json` and
/// role `snapshot` both give `snapshot.json`).
fn rejected_file(e: &TrustError) -> Option<String> {
    use TrustError::*;
    let role = match e {
        Metadata { role, .. }
        | BadTrustedMetadata { role, .. }
        | VersionMismatch { role, .. }
        | Rollback { role, .. }
        | Expired { role, .. }
        | NotListed { role, .. }
        | RoleUndefined { role, .. }
        | BadRoleName { role, .. } => patchd::trust::pattern::encode_name(role),
        Fetch { file, .. }
        | Timeout { file, .. }
        | LengthMismatch { file, .. }
        | HashMismatch { file, .. }
        | UnknownHashAlgorithm { file, .. }
        | NoHashes { file, .. } => {
            let f = file.strip_suffix(".json")?;
            match f.split_once('.') {
                Some((v, rest)) if v.bytes().all(|b| b.is_ascii_digit()) => rest.to_string(),
                _ => f.to_string(),
            }
        }
        _ => return None,
    };
    Some(format!("{role}.json"))
}

/// Assert `result` failed with an error matching `pred`, that the rejected role was not
/// written, and that nothing later in the workflow changed either (roles verified
/// before the failure are kept, TUF 1.0 §5: each role is persisted once verified; an
/// expired final root too). Errors that name no role must leave the directory exactly
/// as it was.
#[track_caller]
pub fn assert_rejected<T: std::fmt::Debug>(
    result: Result<T, TrustError>,
    pred: impl Fn(&TrustError) -> bool,
    device: &Device,
    before: &BTreeMap<String, Vec<u8>>,
) {
    let e = match result {
        Ok(v) => panic!("expected a rejection, got {v:?}"),
        Err(e) => e,
    };
    assert!(pred(&e), "unexpected error: {e} ({e:?})");
    let after = device.snapshot_files();
    // Files up to (not including) this stage may have been updated.
    let keep_from = match rejected_file(&e) {
        Some(f) if f == "root.json" && matches!(e, TrustError::Expired { .. }) => 1,
        Some(f) => stage(&f),
        None => 0,
    };
    let names: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for name in names {
        if stage(name) >= keep_from {
            assert!(
                before.get(name) == after.get(name),
                "{name} changed although the refresh failed at or before it: {e}"
            );
        }
    }
}

/// The `signed` part of a metadata file, as JSON.
pub fn signed_of(bytes: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(bytes).unwrap();
    v["signed"].clone()
}

/// The `tuf-client` example binary next to this test's executable, if built.
pub fn tuf_client() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("examples/tuf-client");
    p.exists().then_some(p)
}

/// `python3 -m http.server` serving a directory on a free 127.0.0.1 port; requests are
/// logged to `log` so tests can count them.
pub struct Server {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn start(dir: &Path, log: PathBuf) -> Option<Server> {
        use std::process::{Command, Stdio};
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).ok()?)
            .spawn()
            .ok()?;
        let s = Server { child, port, log };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(s);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    pub fn url(&self, sub: &str) -> String {
        format!("http://127.0.0.1:{}/{sub}", self.port)
    }

    pub fn requests_for(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET ") && l.contains(needle))
            .count()
    }
}
