//! Delegated targets roles: the top-level targets role hands a set of paths (say
//! `releases/acme-gw/*/*`) to a team's own keys, and that team then publishes releases
//! into its role with `patchpub add --role NAME` without holding the targets keys.
//!
//! Only delegations from the top-level targets role are created here (one level); the
//! client follows deeper graphs published by other tools as the TUF specification says.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::error::{meta, PublishError};
use super::keystore;
use super::repo::Repo;
use super::state::{self, read_role, State};
use crate::trust::metadata::{sign_envelope, DelegatedRole, Delegations, Targets};
use crate::trust::{KeyScheme, SigningKey};

/// A delegation to create with [`Repo::delegate`].
#[derive(Debug, Clone)]
pub struct Delegation {
    /// Role name (a plain name: letters, digits, `.`, `_`, `-`, `+`).
    pub name: String,
    /// Path patterns the role is trusted for (`*` and `?` never cross a `/`).
    pub paths: Vec<String>,
    /// Keys to generate for the role into `keys_dir`.
    pub keys: usize,
    pub threshold: u64,
    /// A terminating role ends the search for its paths: roles delegated after it are
    /// not asked for them, even when it does not list the target.
    pub terminating: bool,
    /// Where the role's private keys are created (hand this directory to the team).
    pub keys_dir: PathBuf,
    pub scheme: KeyScheme,
}

/// What [`Repo::delegate`] created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegateReport {
    pub name: String,
    pub keyids: Vec<String>,
    pub paths: Vec<String>,
}

/// Who signs a release into a delegated role: the role's name and the directory of its
/// private keys.
#[derive(Debug, Clone)]
pub struct RoleSigner {
    pub name: String,
    pub keys_dir: PathBuf,
}

/// The paths of `rel_paths` that the delegation `role` is not trusted for.
pub(crate) fn outside_paths<'a>(role: &DelegatedRole, rel_paths: &'a [String]) -> Vec<&'a str> {
    rel_paths
        .iter()
        .filter(|p| !role.matches(p))
        .map(String::as_str)
        .collect()
}

pub(crate) fn delegated_role<'a>(
    st: &'a State,
    name: &str,
) -> Result<&'a DelegatedRole, PublishError> {
    st.targets
        .delegations
        .as_ref()
        .and_then(|d| d.roles.as_ref())
        .and_then(|roles| roles.iter().find(|r| r.name == name))
        .ok_or_else(|| {
            PublishError::Invalid(format!(
                "targets delegates no role named {name:?}: create it with `patchpub delegate`"
            ))
        })
}

/// The current metadata of delegated role `name` (the version snapshot lists).
pub(crate) fn load_role(repo: &Repo, st: &State, name: &str) -> Result<Targets, PublishError> {
    let v = st
        .snapshot
        .meta
        .get(&format!("{name}.json"))
        .map(|m| m.version)
        .ok_or_else(|| PublishError::Invalid(format!("snapshot lists no {name}.json")))?;
    let (t, _) = read_role::<Targets>(&repo.metadata_dir().join(format!("{v}.{name}.json")))?;
    Ok(t)
}

/// The keys in `signer.keys_dir` that `role` names, failing below its threshold.
pub(crate) fn role_signers(
    role: &DelegatedRole,
    signer: &RoleSigner,
) -> Result<Vec<SigningKey>, PublishError> {
    let mut keys: Vec<SigningKey> = Vec::new();
    for (_, k) in keystore::load_all(&signer.keys_dir)? {
        if role.keyids.iter().any(|i| i == k.keyid())
            && !keys.iter().any(|o| o.keyid() == k.keyid())
        {
            keys.push(k);
        }
    }
    if (keys.len() as u64) < role.threshold {
        return Err(PublishError::MissingKeys {
            role: role.name.clone(),
            have: keys.len(),
            threshold: role.threshold,
            keys_dir: signer.keys_dir.display().to_string(),
        });
    }
    Ok(keys)
}

/// Sign `targets` as the next version of delegated role `name` and publish it with a
/// new snapshot and timestamp.
pub(crate) fn publish_role(
    repo: &Repo,
    st: &mut State,
    name: &str,
    mut targets: Targets,
    keys: &[SigningKey],
) -> Result<(), PublishError> {
    let now = repo.now();
    targets.common.version += 1;
    targets.common.expires = state::expiry(now, repo.expiries().targets)?;
    let refs: Vec<_> = keys.iter().collect();
    let file = format!("{name}.json");
    let bytes = sign_envelope(&targets, &refs).map_err(meta(&file))?;
    state::write_role_file(repo.dir(), name, targets.common.version, &bytes)?;
    repo.publisher(now)
        .snapshot_with(st, &file, targets.common.version, &bytes)
}

impl Repo {
    /// Delegate `d.paths` from the top-level targets role to a new role with its own
    /// keys: generates the keys into `d.keys_dir`, publishes the role (empty, version 1)
    /// and a new targets, snapshot and timestamp. Needs the targets, snapshot and
    /// timestamp keys in the repository's keys directory.
    pub fn delegate(&self, d: &Delegation) -> Result<DelegateReport, PublishError> {
        crate::manifest::check_name("role name", &d.name)?;
        if matches!(
            d.name.as_str(),
            "root" | "targets" | "snapshot" | "timestamp"
        ) {
            return Err(PublishError::Invalid(format!(
                "{:?} is a top-level role name; choose another name for the delegation",
                d.name
            )));
        }
        if d.paths.is_empty() {
            return Err(PublishError::Invalid(
                "a delegation needs at least one --path pattern".into(),
            ));
        }
        for p in &d.paths {
            if p.is_empty() || p.starts_with('/') || p.split('/').any(|s| s == ".." || s == ".") {
                return Err(PublishError::Invalid(format!(
                    "path pattern {p:?}: must be relative, without empty, '.' or '..' segments"
                )));
            }
        }
        if d.threshold == 0 || d.keys < d.threshold as usize {
            return Err(PublishError::Invalid(format!(
                "{}: threshold {} needs 1 <= threshold <= keys ({})",
                d.name, d.threshold, d.keys
            )));
        }
        let _lock = state::lock(self.dir())?;
        let mut st = state::load(self.dir())?;
        let exists = st
            .targets
            .delegations
            .as_ref()
            .and_then(|x| x.roles.as_ref())
            .is_some_and(|roles| roles.iter().any(|r| r.name == d.name));
        if exists || st.snapshot.meta.contains_key(&format!("{}.json", d.name)) {
            return Err(PublishError::Invalid(format!(
                "role {:?} exists already",
                d.name
            )));
        }
        // Fail on missing top-level keys before creating any team key.
        keystore::signers(self.keys_dir(), &st.root, "targets")?;
        let mut keys = Vec::new();
        for _ in 0..d.keys {
            let suffix: u32 = rand::random();
            keys.push(keystore::generate(
                &d.keys_dir,
                &format!("{}-{suffix:08x}", d.name),
                d.scheme,
            )?);
        }
        let keyids: Vec<String> = keys.iter().map(|k| k.keyid().to_string()).collect();
        let role = DelegatedRole {
            name: d.name.clone(),
            keyids: keyids.clone(),
            threshold: d.threshold,
            terminating: d.terminating,
            paths: Some(d.paths.clone()),
            path_hash_prefixes: None,
            extra: Default::default(),
        };
        let delegations = st.targets.delegations.get_or_insert_with(|| Delegations {
            keys: BTreeMap::new(),
            roles: Some(Vec::new()),
            succinct_roles: None,
            extra: Default::default(),
        });
        if delegations.succinct_roles.is_some() {
            return Err(PublishError::Invalid(
                "targets delegates to hash bins; named delegations cannot be added next to them"
                    .into(),
            ));
        }
        for k in &keys {
            delegations
                .keys
                .insert(k.keyid().to_string(), k.public().clone());
        }
        delegations.roles.get_or_insert_with(Vec::new).push(role);
        let now = self.now();
        // The empty role is listed in snapshot before targets names it, so no client
        // ever finds a delegation it cannot fetch.
        let name = d.name.clone();
        let refs: Vec<_> = keys.iter().collect();
        let role_meta = Targets::new(1, state::expiry(now, self.expiries().targets)?);
        let file = format!("{name}.json");
        let bytes = sign_envelope(&role_meta, &refs).map_err(meta(&file))?;
        state::write_role_file(self.dir(), &name, 1, &bytes)?;
        st.snapshot.meta.insert(file, state::meta_file(1, &bytes));
        self.publisher(now).targets(&mut st)?;
        tracing::info!(role = %name, keys = keyids.len(), threshold = d.threshold, terminating = d.terminating, "delegation created");
        Ok(DelegateReport {
            name,
            keyids,
            paths: d.paths.clone(),
        })
    }
}
