//! The verified target: searched for through delegations, downloaded and checked
//! against its signed length and hashes.

use super::*;

/// A target the trusted metadata vouches for. Only this module builds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedTarget {
    path: String,
    length: u64,
    hashes: BTreeMap<String, String>,
    custom: Value,
    consistent: bool,
    role: String,
}

/// One target as a targets role lists it, found by [`TufClient::list_targets`]. Not a
/// verdict: only [`TufClient::target`] says which role is trusted for a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTarget {
    pub path: String,
    /// The role whose metadata lists it (`targets` for the top-level role).
    pub role: String,
    /// Whether the delegation to `role` covers the path (always for `targets`); a role
    /// listing paths outside its delegation is not trusted for them.
    pub within_paths: bool,
}

/// What [`TufClient::list_targets`] found.
#[derive(Debug, Default)]
pub struct Listing {
    /// Every wanted path each visited role lists, in the order roles were visited.
    pub listed: Vec<ListedTarget>,
    /// Delegated roles that could not be loaded, with the reason; the walk went on.
    pub unusable: Vec<(String, TrustError)>,
}

impl VerifiedTarget {
    pub fn path(&self) -> &str {
        &self.path
    }
    pub fn length(&self) -> u64 {
        self.length
    }
    /// Algorithm → lower-case hex digest; only `sha256`/`sha512`, at least one.
    pub fn hashes(&self) -> &BTreeMap<String, String> {
        &self.hashes
    }
    pub fn sha256(&self) -> Option<&str> {
        self.hashes.get("sha256").map(String::as_str)
    }
    /// The publisher's `custom` object (`Null` if absent).
    pub fn custom(&self) -> &Value {
        &self.custom
    }
    /// The targets role that vouches for this target (`targets`: the top-level one).
    pub fn role(&self) -> &str {
        &self.role
    }

    /// Path of the file in the targets directory: `dir/HASH.name` with consistent
    /// snapshots, else the target path.
    pub fn remote_path(&self) -> String {
        if !self.consistent {
            return self.path.clone();
        }
        let hash = self
            .hashes
            .get("sha256")
            .or_else(|| self.hashes.values().next())
            .map(String::as_str)
            .unwrap_or_default();
        match self.path.rsplit_once('/') {
            Some((dir, base)) => format!("{dir}/{hash}.{base}"),
            None => format!("{hash}.{}", self.path),
        }
    }

    /// A file name for this target derived only from its path (percent-encoded, one
    /// component, never `.`/`..`).
    pub fn local_file_name(&self) -> String {
        encode_name(&self.path)
    }
}

impl TufClient {
    /// Find `path` in the trusted targets metadata, following delegations (pre-order
    /// depth-first as python-tuf walks them, at most `max_delegations` roles after the
    /// top-level one, delegated roles fetched lazily from `src`, the metadata
    /// directory). Call after a successful [`TufClient::refresh`].
    pub async fn target(
        &mut self,
        src: &dyn ByteSource,
        path: &str,
    ) -> Result<VerifiedTarget, TrustError> {
        let (true, Some(now)) = (self.refreshed, self.now) else {
            return Err(TrustError::NotRefreshed);
        };
        validate_target_path(path)?;
        let mut stack = vec![(self.top_targets()?, "root".to_string())];
        let mut visited = std::collections::BTreeSet::new();
        while visited.len() <= self.limits.max_delegations {
            let Some((v, delegator)) = stack.pop() else {
                break;
            };
            if visited.contains(&v.role) {
                continue;
            }
            self.load_targets_role(src, &v, &delegator, now).await?;
            let Some(t) = self.targets.get(&v.role) else {
                return Err(TrustError::NotRefreshed);
            };
            if let Some(tf) = t.meta.targets.get(path) {
                return self.verified(path, tf, &v.role);
            }
            visited.insert(v.role.clone());
            let Some(d) = &t.meta.delegations else {
                continue;
            };
            let mut children = Vec::new();
            if let Some(succinct) = &d.succinct_roles {
                if let Some(bin) = succinct.role_for_target(path) {
                    validate_role_name(&bin)?;
                    children.push(ToVisit {
                        role: bin,
                        keys: d.keys.clone(),
                        keyids: succinct.keyids.clone(),
                        threshold: succinct.threshold,
                    });
                }
                // Hash bins are terminating by definition.
                stack.clear();
            } else if let Some(roles) = &d.roles {
                for r in roles {
                    if !r.matches(path) {
                        continue;
                    }
                    validate_role_name(&r.name)?;
                    children.push(ToVisit {
                        role: r.name.clone(),
                        keys: d.keys.clone(),
                        keyids: r.keyids.clone(),
                        threshold: r.threshold,
                    });
                    if r.terminating {
                        stack.clear();
                        break;
                    }
                }
            }
            children.reverse();
            stack.extend(children.into_iter().map(|c| (c, v.role.clone())));
        }
        Err(TrustError::TargetNotFound {
            path: path.to_string(),
        })
    }

    fn verified(
        &self,
        path: &str,
        tf: &crate::trust::metadata::TargetFile,
        role: &str,
    ) -> Result<VerifiedTarget, TrustError> {
        if tf.hashes.is_empty() {
            return Err(TrustError::NoHashes {
                file: format!("{path} (in {role})"),
            });
        }
        MultiHasher::new(path, &tf.hashes)?;
        Ok(VerifiedTarget {
            path: path.to_string(),
            length: tf.length,
            hashes: tf
                .hashes
                .iter()
                .map(|(k, v)| (k.clone(), v.to_ascii_lowercase()))
                .collect(),
            custom: tf.custom.clone().unwrap_or(Value::Null),
            consistent: self.root.meta.consistent_snapshot,
            role: role.to_string(),
        })
    }

    /// Every target path `wanted` accepts, as listed by the top-level targets role and
    /// by each delegated role reachable from it whose delegation `descend` accepts
    /// (pre-order, each role once, at most `max_delegations` delegated roles; hash-bin
    /// delegations are not enumerated). For finding releases: a listing is a hint, and
    /// each path must still be resolved with [`TufClient::target`], which applies the
    /// delegations' paths, order and terminating flags. A delegated role that cannot be
    /// loaded is reported in [`Listing::unusable`] and skipped.
    pub async fn list_targets(
        &mut self,
        src: &dyn ByteSource,
        wanted: &(dyn Fn(&str) -> bool + Sync),
        descend: &(dyn Fn(&crate::trust::metadata::DelegatedRole) -> bool + Sync),
    ) -> Result<Listing, TrustError> {
        let (true, Some(now)) = (self.refreshed, self.now) else {
            return Err(TrustError::NotRefreshed);
        };
        let mut out = Listing::default();
        let mut stack = vec![(self.top_targets()?, "root".to_string(), None)];
        let mut visited = std::collections::BTreeSet::new();
        while visited.len() <= self.limits.max_delegations {
            let Some((v, delegator, delegation)) = stack.pop() else {
                break;
            };
            if visited.contains(&v.role) {
                continue;
            }
            visited.insert(v.role.clone());
            let delegation: Option<crate::trust::metadata::DelegatedRole> = delegation;
            if let Err(e) = self.load_targets_role(src, &v, &delegator, now).await {
                if v.role == "targets" {
                    return Err(e);
                }
                out.unusable.push((v.role.clone(), e));
                continue;
            }
            let Some(t) = self.targets.get(&v.role) else {
                return Err(TrustError::NotRefreshed);
            };
            out.listed.extend(
                t.meta
                    .targets
                    .keys()
                    .filter(|p| wanted(p))
                    .map(|p| ListedTarget {
                        path: p.clone(),
                        role: v.role.clone(),
                        within_paths: delegation.as_ref().is_none_or(|r| r.matches(p)),
                    }),
            );
            let Some(roles) = t
                .meta
                .delegations
                .as_ref()
                .and_then(|d| d.roles.as_ref().map(|r| (d, r)))
            else {
                continue;
            };
            let (d, roles) = roles;
            let mut children = Vec::new();
            for r in roles.iter().filter(|r| descend(r)) {
                if validate_role_name(&r.name).is_err() {
                    continue;
                }
                children.push((
                    ToVisit {
                        role: r.name.clone(),
                        keys: d.keys.clone(),
                        keyids: r.keyids.clone(),
                        threshold: r.threshold,
                    },
                    r.clone(),
                ));
            }
            children.reverse();
            stack.extend(
                children
                    .into_iter()
                    .map(|(c, r)| (c, v.role.clone(), Some(r))),
            );
        }
        Ok(out)
    }

    /// Stream `target` from `src` (the targets directory) into `out`, checking length
    /// and hashes. `out` sees bytes before they are verified: on error the caller must
    /// discard what it wrote (the slot code never activates an unverified image).
    pub async fn fetch_target_to(
        &self,
        src: &dyn ByteSource,
        target: &VerifiedTarget,
        out: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), TrustError> {
        let remote = target.remote_path();
        let mut hasher = MultiHasher::new(&remote, &target.hashes)?;
        let secs = self.limits.stall_timeout.as_secs();
        let expected = target.length;
        let timeout = |file: &str, received: u64| TrustError::Timeout {
            file: file.to_string(),
            secs,
            received,
            expected: Some(expected),
            stalled: true,
        };
        let mut reader = match tokio::time::timeout(
            self.limits.stall_timeout,
            src.open(&remote, 0, target.length),
        )
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(source)) => {
                return Err(TrustError::Fetch {
                    file: remote,
                    source,
                })
            }
            Err(_) => return Err(timeout(&remote, 0)),
        };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match tokio::time::timeout(self.limits.stall_timeout, reader.read(&mut buf))
                .await
            {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    return Err(TrustError::Fetch {
                        file: remote.clone(),
                        source: FetchError::from_io(&remote, e),
                    })
                }
                Err(_) => return Err(timeout(&remote, hasher.len)),
            };
            if n == 0 {
                break;
            }
            if hasher.len + n as u64 > target.length {
                return Err(TrustError::LengthMismatch {
                    file: remote,
                    found: hasher.len + n as u64,
                    expected: target.length,
                });
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .await
                .map_err(io_err(format!("writing {}", target.path)))?;
        }
        if hasher.len != target.length {
            return Err(TrustError::LengthMismatch {
                file: remote,
                found: hasher.len,
                expected: target.length,
            });
        }
        hasher.finish(&remote)?;
        out.flush()
            .await
            .map_err(io_err(format!("writing {}", target.path)))?;
        Ok(())
    }

    /// Download a small target (a release manifest) into memory, verified.
    pub async fn fetch_target_bytes(
        &self,
        src: &dyn ByteSource,
        target: &VerifiedTarget,
    ) -> Result<Vec<u8>, TrustError> {
        let mut out = Vec::new();
        self.fetch_target_to(src, target, &mut out).await?;
        Ok(out)
    }

    /// Download `target` to `dest` atomically (temporary file in the same directory,
    /// renamed only once verified; removed on failure). If `dest` already holds the
    /// verified content nothing is fetched; returns whether a download happened.
    pub async fn download_target_file(
        &self,
        src: &dyn ByteSource,
        target: &VerifiedTarget,
        dest: &Path,
    ) -> Result<bool, TrustError> {
        if file_matches(dest, target) {
            return Ok(false);
        }
        let dir = dest.parent().unwrap_or(Path::new("."));
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.part.{}", std::process::id()));
        let result = async {
            let mut f = tokio::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .await
                .map_err(io_err(tmp.display()))?;
            self.fetch_target_to(src, target, &mut f).await?;
            f.sync_all().await.map_err(io_err(tmp.display()))?;
            drop(f);
            std::fs::rename(&tmp, dest).map_err(io_err(dest.display()))?;
            crate::fsutil::fsync_dir(dir).map_err(io_err(dir.display()))
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map(|()| true)
    }
}

/// Whether the file at `path` has exactly the target's length and hashes.
pub fn file_matches(path: &Path, target: &VerifiedTarget) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    match f.metadata() {
        Ok(m) if m.is_file() && m.len() == target.length => {}
        _ => return false,
    }
    let Ok(mut h) = MultiHasher::new(&target.path, &target.hashes) else {
        return false;
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(_) => return false,
        }
    }
    h.len == target.length && h.finish(&target.path).is_ok()
}

/// Target paths are repository paths: relative, `/`-separated, no `.`/`..`/empty
/// components, no control characters or backslashes.
pub fn validate_target_path(path: &str) -> Result<(), TrustError> {
    crate::fetch::validate_repo_path(path).map_err(|e| TrustError::BadTargetPath {
        path: path.to_string(),
        why: match e {
            FetchError::InvalidPath { why, .. } => why.to_string(),
            other => other.to_string(),
        },
    })
}

/// Delegated role names become file names only after [`encode_name`]; still refuse
/// names that could be confused with top-level roles, and control characters.
pub fn validate_role_name(name: &str) -> Result<(), TrustError> {
    let bad = |why| {
        Err(TrustError::BadRoleName {
            role: name.to_string(),
            why,
        })
    };
    if name.is_empty() || name.len() > 255 {
        return bad("empty or longer than 255 bytes");
    }
    if TOP_LEVEL.contains(&name) {
        return bad("a top-level role name");
    }
    if name.chars().any(char::is_control) {
        return bad("control character");
    }
    Ok(())
}
