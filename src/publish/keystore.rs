//! The publisher's private keys: one PKCS#8 PEM file per key (mode 0600) in a keys
//! directory kept apart from the served repository, plus the public half as TUF JSON.
//! Which key signs which role is read from root metadata, so the directory needs no
//! index of its own.

use std::path::{Path, PathBuf};

use super::error::{io, PublishError};
use crate::trust::metadata::Root;
use crate::trust::{KeyScheme, PublicKey, SigningKey};

/// Generate a key, write `DIR/NAME.pem` (0600) and `DIR/NAME.pub.json`; returns the key.
pub fn generate(dir: &Path, name: &str, scheme: KeyScheme) -> Result<SigningKey, PublishError> {
    crate::manifest::check_name("key name", name)?;
    crate::fsutil::ensure_dir(dir, 0o700).map_err(io(dir.display()))?;
    let key = SigningKey::generate(scheme);
    let pem = dir.join(format!("{name}.pem"));
    if pem.exists() {
        return Err(PublishError::Invalid(format!(
            "{} exists; not overwriting a private key",
            pem.display()
        )));
    }
    key.save(&pem)?;
    write_public(&dir.join(format!("{name}.pub.json")), key.public())?;
    tracing::info!(key = %pem.display(), keyid = key.keyid(), "generated key");
    Ok(key)
}

pub fn write_public(path: &Path, key: &PublicKey) -> Result<(), PublishError> {
    let mut bytes = serde_json::to_vec_pretty(key)
        .map_err(|e| PublishError::Invalid(format!("public key: {e}")))?;
    bytes.push(b'\n');
    crate::fsutil::atomic_write_mode(path, &bytes, 0o644).map_err(io(path.display()))
}

pub fn read_public(path: &Path) -> Result<PublicKey, PublishError> {
    let bytes = std::fs::read(path).map_err(io(path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        PublishError::Invalid(format!("{}: not a TUF public key: {e}", path.display()))
    })
}

/// Every private key in `dir` (files ending in `.pem`).
pub fn load_all(dir: &Path) -> Result<Vec<(PathBuf, SigningKey)>, PublishError> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(dir.display())(e)),
    };
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pem"))
        .collect();
    paths.sort();
    for p in paths {
        let k = SigningKey::load(&p)?;
        out.push((p, k));
    }
    Ok(out)
}

/// The keys in `dir` authorized for `role` by `root` (at most one per key id).
pub fn keys_for(dir: &Path, root: &Root, role: &str) -> Result<Vec<SigningKey>, PublishError> {
    let ids = root
        .roles
        .get(role)
        .map(|r| r.keyids.clone())
        .unwrap_or_default();
    let mut out: Vec<SigningKey> = Vec::new();
    for (_, k) in load_all(dir)? {
        if ids.iter().any(|i| i == k.keyid()) && !out.iter().any(|o| o.keyid() == k.keyid()) {
            out.push(k);
        }
    }
    Ok(out)
}

/// [`keys_for`], failing unless the role's threshold is met.
pub fn signers(dir: &Path, root: &Root, role: &str) -> Result<Vec<SigningKey>, PublishError> {
    let keys = keys_for(dir, root, role)?;
    let threshold = root.roles.get(role).map(|r| r.threshold).unwrap_or(1);
    if (keys.len() as u64) < threshold {
        return Err(PublishError::MissingKeys {
            role: role.to_string(),
            have: keys.len(),
            threshold,
            keys_dir: dir.display().to_string(),
        });
    }
    Ok(keys)
}
