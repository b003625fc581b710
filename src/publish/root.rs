//! Key rotation and the offline root-signing flow. A new root version N+1 must be signed
//! by the threshold of root keys in N (so devices accept it) and by the threshold of its
//! own root keys (so it can vouch for N+2).

use std::collections::BTreeMap;

use super::error::{meta, PublishError};
use super::keystore;
use super::repo::Repo;
use super::state::{self, State};
use crate::trust::metadata::{add_signatures, parse_signed, sign_value, Envelope, RoleType, Root};
use crate::trust::{KeyScheme, PublicKey, SigningKey};

/// Edits for a new root version made by [`Repo::root_export`].
#[derive(Debug, Clone, Default)]
pub struct RootChanges {
    /// Keys to authorize, per role.
    pub add_keys: Vec<(RoleType, PublicKey)>,
    /// Key ids to remove from a role.
    pub remove_keys: Vec<(RoleType, String)>,
    pub thresholds: Vec<(RoleType, u64)>,
}

pub(crate) fn role_from_str(s: &str) -> Result<RoleType, PublishError> {
    match s {
        "root" => Ok(RoleType::Root),
        "targets" => Ok(RoleType::Targets),
        "snapshot" => Ok(RoleType::Snapshot),
        "timestamp" => Ok(RoleType::Timestamp),
        _ => Err(PublishError::Invalid(format!(
            "unknown role {s:?} (root, targets, snapshot, timestamp)"
        ))),
    }
}

/// Drop keys no role refers to any more.
fn prune_keys(root: &mut Root) {
    let used: std::collections::HashSet<String> = root
        .roles
        .values()
        .flat_map(|r| r.keyids.iter().cloned())
        .collect();
    root.keys.retain(|id, _| used.contains(id));
}

fn next_root(repo: &Repo, st: &State) -> Result<Root, PublishError> {
    let mut r = st.root.clone();
    r.common.version += 1;
    r.common.expires = state::expiry(repo.now(), repo.expiries().root)?;
    Ok(r)
}

fn check_thresholds(old: &Root, new: &Root, bytes: &[u8]) -> Result<(), PublishError> {
    let env = Envelope::parse(bytes, 64).map_err(meta("new root"))?;
    let v = new.common.version;
    for (which, r) in [("old", old), ("new", new)] {
        let rk = r
            .roles
            .get("root")
            .cloned()
            .unwrap_or_else(|| crate::trust::metadata::RoleKeys {
                keyids: vec![],
                threshold: 1,
                extra: Default::default(),
            });
        env.verify(&r.keys, &rk.keyids, rk.threshold)
            .map_err(|source| PublishError::RootNotSigned {
                version: v,
                which,
                source,
            })?;
    }
    Ok(())
}

impl Repo {
    /// Replace `role`'s keys with new ones (as many as its threshold) and publish root
    /// N+1 signed by the old and new root keys, then re-sign what the new keys sign.
    /// Needs the root keys in the keys directory; otherwise use the offline flow.
    pub fn rotate(&self, role: RoleType, scheme: KeyScheme) -> Result<(), PublishError> {
        let _lock = state::lock(self.dir())?;
        let mut st = self.load_state()?;
        let old_signers = keystore::signers(self.keys_dir(), &st.root, "root")?;
        let mut new = next_root(self, &st)?;
        let threshold = new.role(role).map(|r| r.threshold).unwrap_or(1).max(1);
        if let Some(r) = new.roles.get_mut(role.as_str()) {
            r.keyids.clear();
        }
        let mut fresh = Vec::new();
        for _ in 0..threshold {
            let k = self.new_key(role, scheme)?;
            new.add_key(role, k.public())?;
            fresh.push(k);
        }
        if let Some(r) = new.roles.get_mut(role.as_str()) {
            r.threshold = threshold;
        }
        prune_keys(&mut new);
        let mut signers: Vec<&SigningKey> = old_signers.iter().collect();
        if role == RoleType::Root {
            signers.extend(fresh.iter());
        }
        let value =
            serde_json::to_value(&new).map_err(|e| PublishError::Invalid(format!("root: {e}")))?;
        let bytes = sign_value(value, &signers).map_err(meta("new root"))?;
        check_thresholds(&st.root, &new, &bytes)?;
        self.publish_root(&mut st, new, bytes, role)
    }

    fn publish_root(
        &self,
        st: &mut State,
        new: Root,
        bytes: Vec<u8>,
        changed: RoleType,
    ) -> Result<(), PublishError> {
        let v = new.common.version;
        state::write_root_bytes(self.dir(), v, &bytes)?;
        st.root = new;
        st.root_bytes = bytes;
        tracing::info!(version = v, role = changed.as_str(), "new root published");
        let p = self.publisher(self.now());
        match changed {
            RoleType::Targets => p.targets(st),
            RoleType::Snapshot => p.snapshot(st),
            // Root changes: re-sign the timestamp so clients notice promptly.
            RoleType::Timestamp | RoleType::Root => p.timestamp(st),
        }
    }

    /// Root version N+1 with `changes`, unsigned: carry it to the offline machine, sign
    /// it there with [`sign_root`], bring it back to [`Repo::root_import`].
    pub fn root_export(&self, changes: &RootChanges) -> Result<Vec<u8>, PublishError> {
        let st = self.load_state()?;
        let mut new = next_root(self, &st)?;
        for (role, id) in &changes.remove_keys {
            if let Some(r) = new.roles.get_mut(role.as_str()) {
                r.keyids.retain(|k| k != id);
            }
        }
        for (role, key) in &changes.add_keys {
            new.add_key(*role, key)?;
        }
        for (role, t) in &changes.thresholds {
            if let Some(r) = new.roles.get_mut(role.as_str()) {
                r.threshold = *t;
            }
        }
        for (name, r) in &new.roles {
            if r.threshold == 0 || (r.keyids.len() as u64) < r.threshold {
                return Err(PublishError::Invalid(format!(
                    "role {name}: threshold {} with {} key(s)",
                    r.threshold,
                    r.keyids.len()
                )));
            }
        }
        prune_keys(&mut new);
        let value =
            serde_json::to_value(&new).map_err(|e| PublishError::Invalid(format!("root: {e}")))?;
        sign_value(value, &[]).map_err(meta("new root"))
    }

    /// Publish a root made by [`Repo::root_export`] and signed offline, after checking it
    /// is the next version and meets both the old and its own root threshold. Then
    /// targets, snapshot and timestamp are re-signed with the (possibly new) online keys.
    pub fn root_import(&self, bytes: &[u8]) -> Result<(), PublishError> {
        let _lock = state::lock(self.dir())?;
        let mut st = self.load_state()?;
        let env = Envelope::parse(bytes, 64).map_err(meta("imported root"))?;
        let new: Root = parse_signed(&env.signed).map_err(meta("imported root"))?;
        if new.common.version != st.root.common.version + 1 {
            return Err(PublishError::Invalid(format!(
                "imported root has version {}, expected {}",
                new.common.version,
                st.root.common.version + 1
            )));
        }
        check_thresholds(&st.root, &new, bytes)?;
        let v = new.common.version;
        state::write_root_bytes(self.dir(), v, bytes)?;
        st.root = new;
        st.root_bytes = bytes.to_vec();
        tracing::info!(version = v, "imported root published");
        self.publisher(self.now()).targets(&mut st)
    }
}

/// Add signatures by `keys` to an exported root (run on the offline machine).
pub fn sign_root(bytes: &[u8], keys: &[&SigningKey]) -> Result<Vec<u8>, PublishError> {
    add_signatures(bytes, keys).map_err(meta("root"))
}

/// Key ids per role in a root (for display).
pub fn role_keyids(root: &Root) -> BTreeMap<String, Vec<String>> {
    root.roles
        .iter()
        .map(|(k, v)| (k.clone(), v.keyids.clone()))
        .collect()
}
