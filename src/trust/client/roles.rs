//! Verifying each role as §5.3–5.6 of the specification order it: root rotation,
//! timestamp, snapshot, top-level and delegated targets; each persisted the moment it
//! verified.

use super::*;

impl TufClient {
    /// The top-level targets role with the keys and threshold root gives it.
    pub(super) fn top_targets(&self) -> Result<ToVisit, TrustError> {
        let role =
            self.root
                .meta
                .roles
                .get("targets")
                .ok_or_else(|| TrustError::RoleUndefined {
                    role: "targets".into(),
                    delegator: "root".into(),
                })?;
        Ok(ToVisit {
            role: "targets".into(),
            keys: self.root.meta.keys.clone(),
            keyids: role.keyids.clone(),
            threshold: role.threshold,
        })
    }

    /// §5.3: rotate through `N+1.root.json` … until the repository has no next version.
    /// Each new root is persisted as soon as it verified (§5.3.8); expiry of the final
    /// root is judged afterwards (§5.3.10, in [`Self::check_root_fresh`]).
    pub(super) async fn update_root(&mut self, src: &dyn ByteSource) -> Result<(), TrustError> {
        for _ in 0..self.limits.max_root_rotations {
            let next = self.root.meta.common.version + 1;
            let file = format!("{next}.root.json");
            let bytes = match self.fetch(src, &file, self.limits.root_max_len).await {
                Ok(b) => b,
                Err(TrustError::Fetch {
                    source: FetchError::NotFound { .. },
                    ..
                }) => break,
                Err(e) => return Err(e),
            };
            // Signed by the trusted root's threshold …
            let old =
                self.root
                    .meta
                    .roles
                    .get("root")
                    .ok_or_else(|| TrustError::RoleUndefined {
                        role: "root".into(),
                        delegator: "root".into(),
                    })?;
            let new: Root = verify_bytes(
                &bytes,
                "root",
                &file,
                &self.root.meta.keys,
                &old.keyids,
                old.threshold,
                &self.limits,
            )?;
            if new.common.version != next {
                return Err(TrustError::VersionMismatch {
                    role: "root".into(),
                    file,
                    found: new.common.version,
                    expected: next,
                });
            }
            // … and by its own.
            let new: Root = {
                let own = new
                    .roles
                    .get("root")
                    .ok_or_else(|| TrustError::RoleUndefined {
                        role: "root".into(),
                        delegator: file.clone(),
                    })?;
                verify_bytes(
                    &bytes,
                    "root",
                    &file,
                    &new.keys,
                    &own.keyids,
                    own.threshold,
                    &self.limits,
                )?
            };
            self.persist("root.json", &bytes)?;
            tracing::info!(version = next, "root rotated");
            self.root = Trusted { meta: new };
        }
        Ok(())
    }

    /// §5.3.10: the final root must not have expired; checked before any timestamp is
    /// accepted.
    pub(super) fn check_root_fresh(&self, now: Timestamp) -> Result<(), TrustError> {
        self.check_expiry("root", self.root.meta.common.expires, now)
    }

    /// §5.4. The trusted timestamp (from the directory, verified by the current root;
    /// possibly expired) guards against rollback of the new one; a new timestamp with the
    /// same version is discarded and the trusted one kept.
    pub(super) async fn load_timestamp(
        &mut self,
        src: &dyn ByteSource,
        now: Timestamp,
    ) -> Result<(), TrustError> {
        let file = "timestamp.json";
        if self.check_root_fresh(now).is_ok() && !self.snapshot_keys_rotated() {
            if let Some(bytes) = self.read_local(file) {
                match self.verify_top::<TimestampMeta>("timestamp", file, &bytes) {
                    Ok(meta) => self.timestamp = Some(Trusted { meta }),
                    Err(e) => tracing::debug!(error = %e, "trusted timestamp not usable"),
                }
            }
        }
        let bytes = self.fetch(src, file, self.limits.timestamp_max_len).await?;
        self.check_root_fresh(now)?;
        let new: TimestampMeta = self.verify_top("timestamp", file, &bytes)?;
        let new_snap = snapshot_meta(&new, file)?;
        if let Some(trusted) = &self.timestamp {
            let (tv, nv) = (trusted.meta.common.version, new.common.version);
            if nv < tv {
                return Err(TrustError::Rollback {
                    role: "timestamp".into(),
                    new: nv,
                    trusted: tv,
                });
            }
            if nv == tv {
                // Same version: keep the copy we trust (its expiry is judged with the
                // snapshot step).
                return Ok(());
            }
            let trusted_snap = snapshot_meta(&trusted.meta, file)?;
            if new_snap.version < trusted_snap.version {
                return Err(TrustError::Rollback {
                    role: "snapshot".into(),
                    new: new_snap.version,
                    trusted: trusted_snap.version,
                });
            }
        }
        self.check_expiry_of(
            "timestamp",
            Some(new.common.version),
            new.common.expires,
            now,
        )?;
        self.persist(file, &bytes)?;
        self.timestamp = Some(Trusted { meta: new });
        Ok(())
    }

    /// §5.3.11 (fast-forward recovery): when the trusted snapshot no longer verifies
    /// under the current root, its keys were rotated, and the trusted timestamp, which
    /// pins the snapshot version the attacker may have pushed up, is not used either.
    /// The files stay until replaced (as python-tuf keeps them); they are just not
    /// trusted.
    pub(super) fn snapshot_keys_rotated(&self) -> bool {
        let Some(bytes) = self.read_local("snapshot.json") else {
            return false;
        };
        let rotated = self
            .verify_top::<Snapshot>("snapshot", "snapshot.json", &bytes)
            .is_err();
        if rotated {
            tracing::warn!("trusted snapshot no longer verifies (snapshot keys rotated): trusted timestamp and snapshot dropped");
        }
        rotated
    }

    pub(super) fn final_timestamp(
        &self,
        now: Timestamp,
    ) -> Result<&Trusted<TimestampMeta>, TrustError> {
        let ts = self.timestamp.as_ref().ok_or(TrustError::NotRefreshed)?;
        self.check_expiry_of(
            "timestamp",
            Some(ts.meta.common.version),
            ts.meta.common.expires,
            now,
        )?;
        Ok(ts)
    }

    /// The snapshot is final when it is fresh and has the version the timestamp names.
    pub(super) fn check_final_snapshot(&self, now: Timestamp) -> Result<(), TrustError> {
        let ts = self.timestamp.as_ref().ok_or(TrustError::NotRefreshed)?;
        let snap = self.snapshot.as_ref().ok_or(TrustError::NotRefreshed)?;
        self.check_expiry_of(
            "snapshot",
            Some(snap.meta.common.version),
            snap.meta.common.expires,
            now,
        )?;
        let want = snapshot_meta(&ts.meta, "timestamp.json")?.version;
        if snap.meta.common.version != want {
            return Err(TrustError::VersionMismatch {
                role: "snapshot".into(),
                file: "snapshot.json".into(),
                found: snap.meta.common.version,
                expected: want,
            });
        }
        Ok(())
    }

    /// §5.5. The snapshot kept in the directory is used as is when it is still the one
    /// the timestamp names; otherwise it (if it still verifies) guards the new one
    /// against rollback of any role it lists.
    pub(super) async fn load_snapshot(
        &mut self,
        src: &dyn ByteSource,
        now: Timestamp,
    ) -> Result<(), TrustError> {
        let local = match self.final_timestamp(now) {
            Ok(_) => self.read_local("snapshot.json").and_then(|bytes| {
                match self.verify_top::<Snapshot>("snapshot", "snapshot.json", &bytes) {
                    Ok(meta) => Some(Trusted { meta }),
                    Err(e) => {
                        tracing::debug!(error = %e, "trusted snapshot not usable");
                        None
                    }
                }
            }),
            Err(_) => None,
        };
        if let Some(local) = local {
            self.snapshot = Some(local);
            if self.check_final_snapshot(now).is_ok() {
                return Ok(());
            }
        }
        let ts = self.timestamp.as_ref().ok_or(TrustError::NotRefreshed)?;
        let want = snapshot_meta(&ts.meta, "timestamp.json")?.clone();
        let file = if self.root.meta.consistent_snapshot {
            format!("{}.snapshot.json", want.version)
        } else {
            "snapshot.json".to_string()
        };
        let limit = want.length.unwrap_or(self.limits.snapshot_max_len);
        let bytes = self.fetch(src, &file, limit).await?;
        self.final_timestamp(now)?;
        check_bytes(&file, &bytes, want.length, want.hashes.as_ref())?;
        let new: Snapshot = self.verify_top("snapshot", &file, &bytes)?;
        if let Some(trusted) = &self.snapshot {
            for (name, old) in &trusted.meta.meta {
                let Some(n) = new.meta.get(name) else {
                    return Err(TrustError::NotListed {
                        role: name.trim_end_matches(".json").to_string(),
                        listed_in: file.clone(),
                    });
                };
                if n.version < old.version {
                    return Err(TrustError::Rollback {
                        role: name.trim_end_matches(".json").to_string(),
                        new: n.version,
                        trusted: old.version,
                    });
                }
            }
        }
        for (name, mf) in &new.meta {
            if let Some(h) = &mf.hashes {
                MultiHasher::new(name, h)?;
            }
        }
        if new.common.version != want.version {
            return Err(TrustError::VersionMismatch {
                role: "snapshot".into(),
                file,
                found: new.common.version,
                expected: want.version,
            });
        }
        self.check_expiry_of(
            "snapshot",
            Some(new.common.version),
            new.common.expires,
            now,
        )?;
        self.persist("snapshot.json", &bytes)?;
        self.snapshot = Some(Trusted { meta: new });
        Ok(())
    }

    /// Check `bytes` as version `want` of targets role `role` signed for `delegator`.
    pub(super) fn verify_targets(
        &self,
        v: &ToVisit,
        file: &str,
        bytes: &[u8],
        want: &MetaFile,
        now: Timestamp,
    ) -> Result<Targets, TrustError> {
        check_bytes(file, bytes, want.length, want.hashes.as_ref())?;
        let meta: Targets = verify_bytes(
            bytes,
            &v.role,
            file,
            &v.keys,
            &v.keyids,
            v.threshold,
            &self.limits,
        )?;
        if meta.common.version != want.version {
            return Err(TrustError::VersionMismatch {
                role: v.role.clone(),
                file: file.to_string(),
                found: meta.common.version,
                expected: want.version,
            });
        }
        self.check_expiry_of(&v.role, Some(meta.common.version), meta.common.expires, now)?;
        Ok(meta)
    }

    /// §5.6 for the top-level targets and each delegated role: make `v.role` trusted
    /// (already verified for this delegator in this refresh, else the copy in the
    /// directory, else `src`), exactly the version the trusted snapshot lists, signed by
    /// the keys and threshold its delegator gives it. A role fetched from `src` is
    /// persisted at once.
    pub(super) async fn load_targets_role(
        &mut self,
        src: &dyn ByteSource,
        v: &ToVisit,
        delegator: &str,
        now: Timestamp,
    ) -> Result<(), TrustError> {
        let key = (delegator.to_string(), v.role.clone());
        if self.delegations.contains(&key) && self.targets.contains_key(&v.role) {
            return Ok(());
        }
        self.check_final_snapshot(now)?;
        let snapshot = self.snapshot.as_ref().ok_or(TrustError::NotRefreshed)?;
        let listed = format!("{}.json", v.role);
        let want =
            snapshot
                .meta
                .meta
                .get(&listed)
                .cloned()
                .ok_or_else(|| TrustError::NotListed {
                    role: v.role.clone(),
                    listed_in: "snapshot".into(),
                })?;
        let local_file = format!("{}.json", encode_name(&v.role));
        if let Some(bytes) = self.read_local(&local_file) {
            match self.verify_targets(v, &local_file, &bytes, &want, now) {
                Ok(meta) => {
                    self.targets.insert(v.role.clone(), Trusted { meta });
                    self.delegations.insert(key);
                    return Ok(());
                }
                Err(e) => tracing::debug!(role = %v.role, error = %e, "trusted copy not usable"),
            }
        }
        let file = if self.root.meta.consistent_snapshot {
            format!("{}.{}.json", want.version, encode_name(&v.role))
        } else {
            local_file.clone()
        };
        let limit = want.length.unwrap_or(self.limits.targets_max_len);
        let bytes = self.fetch(src, &file, limit).await?;
        self.check_final_snapshot(now)?;
        let meta = self.verify_targets(v, &file, &bytes, &want, now)?;
        self.persist(&local_file, &bytes)?;
        self.targets.insert(v.role.clone(), Trusted { meta });
        self.delegations.insert(key);
        Ok(())
    }
}

pub(super) fn snapshot_meta<'a>(
    ts: &'a TimestampMeta,
    file: &str,
) -> Result<&'a MetaFile, TrustError> {
    let mf = ts
        .meta
        .get("snapshot.json")
        .ok_or_else(|| TrustError::NotListed {
            role: "snapshot".into(),
            listed_in: file.to_string(),
        })?;
    if let Some(h) = &mf.hashes {
        MultiHasher::new(file, h)?;
    }
    Ok(mf)
}

/// Envelope → threshold check → typed parse, all errors naming `role`/`file`.
pub(super) fn verify_bytes<T: RoleMetadata>(
    bytes: &[u8],
    role: &str,
    file: &str,
    keys: &BTreeMap<String, PublicKey>,
    keyids: &[String],
    threshold: u64,
    limits: &Limits,
) -> Result<T, TrustError> {
    let wrap = |source: MetadataError| TrustError::Metadata {
        role: role.to_string(),
        file: file.to_string(),
        source,
    };
    let env = Envelope::parse(bytes, limits.max_json_depth).map_err(wrap)?;
    env.verify(keys, keyids, threshold).map_err(wrap)?;
    parse_signed::<T>(&env.signed).map_err(wrap)
}

/// Whether `bytes` are a root signed by its own threshold, as [`TufClient::init`] needs
/// (nothing is stored).
pub fn verify_root_bytes(bytes: &[u8], limits: &Limits) -> Result<(), TrustError> {
    verify_self_signed(bytes, "root.json", limits).map(|_| ())
}

pub(super) fn verify_self_signed(
    bytes: &[u8],
    file: &str,
    limits: &Limits,
) -> Result<Root, TrustError> {
    let wrap = |source: MetadataError| TrustError::Metadata {
        role: "root".into(),
        file: file.to_string(),
        source,
    };
    let env = Envelope::parse(bytes, limits.max_json_depth).map_err(wrap)?;
    let root: Root = parse_signed(&env.signed).map_err(wrap)?;
    let rk = root
        .roles
        .get("root")
        .ok_or_else(|| TrustError::RoleUndefined {
            role: "root".into(),
            delegator: file.to_string(),
        })?;
    env.verify(&root.keys, &rk.keyids, rk.threshold)
        .map_err(wrap)?;
    Ok(root)
}
