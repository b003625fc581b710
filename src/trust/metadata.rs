//! TUF metadata: the four top-level roles and delegated targets, as the publisher
//! writes them and the client reads them.
//!
//! Unknown fields are tolerated and kept (`extra`), as the specification requires:
//! they are covered by the signature. The client verifies signatures over the canonical
//! form of the `signed` value *as received* ([`verify_envelope`]) and only then turns it
//! into one of these types ([`parse_signed`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::canonical;
use super::keys::{PublicKey, Signature, SigningKey};

/// The specification version we write; we accept any `1.x.y`.
pub const SPEC_VERSION: &str = "1.0.31";

/// Expiry timestamps as TUF writes them: `YYYY-MM-DDTHH:MM:SSZ`.
pub mod expires_format {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        if !s.ends_with('Z') {
            return Err(serde::de::Error::custom(format!(
                "expires {s:?} is not UTC (…Z)"
            )));
        }
        s.parse::<Timestamp>().map_err(serde::de::Error::custom)
    }
}

fn de_version<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if v == 0 {
        return Err(serde::de::Error::custom("version must be at least 1"));
    }
    Ok(v)
}

fn de_threshold<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if v == 0 {
        return Err(serde::de::Error::custom("threshold must be at least 1"));
    }
    Ok(v)
}

fn de_spec_version<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let mut parts = s.split('.');
    if parts.next() != Some("1") || parts.count() > 2 {
        return Err(serde::de::Error::custom(format!(
            "unsupported spec_version {s:?}"
        )));
    }
    Ok(s)
}

/// The role a `signed` object claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleType {
    Root,
    Timestamp,
    Snapshot,
    Targets,
}

impl RoleType {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleType::Root => "root",
            RoleType::Timestamp => "timestamp",
            RoleType::Snapshot => "snapshot",
            RoleType::Targets => "targets",
        }
    }
}

/// Keys and threshold of one role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleKeys {
    pub keyids: Vec<String>,
    #[serde(deserialize_with = "de_threshold")]
    pub threshold: u64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Fields every role has; flattened into each role's struct.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Common {
    #[serde(rename = "_type")]
    pub type_: String,
    #[serde(deserialize_with = "de_spec_version")]
    pub spec_version: String,
    #[serde(deserialize_with = "de_version")]
    pub version: u64,
    #[serde(with = "expires_format")]
    pub expires: Timestamp,
}

impl Common {
    pub fn new(role: RoleType, version: u64, expires: Timestamp) -> Self {
        Self {
            type_: role.as_str().into(),
            spec_version: SPEC_VERSION.into(),
            version,
            expires,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    #[serde(flatten)]
    pub common: Common,
    #[serde(default)]
    pub consistent_snapshot: bool,
    pub keys: BTreeMap<String, PublicKey>,
    pub roles: BTreeMap<String, RoleKeys>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Version, length and hashes of a metadata file as listed in timestamp/snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaFile {
    #[serde(deserialize_with = "de_version")]
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashes: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl MetaFile {
    pub fn version(version: u64) -> Self {
        Self {
            version,
            length: None,
            hashes: None,
            extra: Map::new(),
        }
    }
}

/// The timestamp role (named so it does not clash with `jiff::Timestamp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimestampMeta {
    #[serde(flatten)]
    pub common: Common,
    pub meta: BTreeMap<String, MetaFile>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    #[serde(flatten)]
    pub common: Common,
    pub meta: BTreeMap<String, MetaFile>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One target file: length, hashes and opaque publisher data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetFile {
    pub length: u64,
    pub hashes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targets {
    #[serde(flatten)]
    pub common: Common,
    pub targets: BTreeMap<String, TargetFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegations: Option<Delegations>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `delegations` of a targets role: either a list of roles or succinct hash bins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegations {
    pub keys: BTreeMap<String, PublicKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<DelegatedRole>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succinct_roles: Option<SuccinctRoles>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegatedRole {
    pub name: String,
    pub keyids: Vec<String>,
    #[serde(deserialize_with = "de_threshold")]
    pub threshold: u64,
    #[serde(default)]
    pub terminating: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hash_prefixes: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Succinct hash-bin delegation (TAP 15): `2^bit_length` roles named
/// `{name_prefix}-{bin in lower-case hex, zero-padded}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuccinctRoles {
    pub keyids: Vec<String>,
    #[serde(deserialize_with = "de_threshold")]
    pub threshold: u64,
    pub bit_length: u32,
    pub name_prefix: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The metadata types that can sit in an envelope.
pub trait RoleMetadata: Serialize + serde::de::DeserializeOwned {
    const TYPE: RoleType;
    fn common(&self) -> &Common;
}

macro_rules! role_metadata {
    ($t:ty, $r:expr) => {
        impl RoleMetadata for $t {
            const TYPE: RoleType = $r;
            fn common(&self) -> &Common {
                &self.common
            }
        }
    };
}
role_metadata!(Root, RoleType::Root);
role_metadata!(TimestampMeta, RoleType::Timestamp);
role_metadata!(Snapshot, RoleType::Snapshot);
role_metadata!(Targets, RoleType::Targets);

/// Why an envelope or its `signed` part was refused (the caller adds the role name).
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("not valid JSON: {0}")]
    Json(#[from] canonical::CanonicalError),
    #[error("envelope: {0}")]
    Envelope(String),
    #[error("{valid} valid signature(s) from distinct keys, threshold is {threshold}")]
    Threshold { valid: u64, threshold: u64 },
    #[error("_type is {found:?}, expected {expected:?}")]
    WrongType {
        found: String,
        expected: &'static str,
    },
    #[error("invalid content: {0}")]
    Content(String),
}

/// A parsed but not yet verified envelope: the `signed` value and its signatures.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub signed: Value,
    pub signatures: Vec<Signature>,
    /// Canonical bytes of `signed`, what the signatures cover.
    pub canonical_signed: Vec<u8>,
}

impl Envelope {
    /// Parse the outer envelope (strict JSON: no duplicate keys, bounded depth).
    pub fn parse(bytes: &[u8], max_depth: usize) -> Result<Self, MetadataError> {
        let v = canonical::parse_strict(bytes, max_depth)?;
        let Value::Object(mut obj) = v else {
            return Err(MetadataError::Envelope("not an object".into()));
        };
        let signed = obj
            .remove("signed")
            .ok_or_else(|| MetadataError::Envelope("no \"signed\"".into()))?;
        if !signed.is_object() {
            return Err(MetadataError::Envelope(
                "\"signed\" is not an object".into(),
            ));
        }
        let sigs = obj
            .remove("signatures")
            .ok_or_else(|| MetadataError::Envelope("no \"signatures\"".into()))?;
        let signatures: Vec<Signature> = serde_json::from_value(sigs)
            .map_err(|e| MetadataError::Envelope(format!("signatures: {e}")))?;
        // Two signatures under one key id make the file malformed as a whole (python-tuf
        // refuses it too), whatever the threshold.
        let mut keyids = HashSet::new();
        if let Some(dup) = signatures.iter().find(|s| !keyids.insert(s.keyid.as_str())) {
            return Err(MetadataError::Envelope(format!(
                "two signatures with key id {}",
                dup.keyid
            )));
        }
        let canonical_signed = canonical::encode(&signed)?;
        Ok(Self {
            signed,
            signatures,
            canonical_signed,
        })
    }

    /// The `_type` the signed part claims.
    pub fn claimed_type(&self) -> Option<&str> {
        self.signed.get("_type").and_then(Value::as_str)
    }

    /// Check that at least `threshold` distinct keys among `keyids` (looked up in
    /// `keys`) signed. Key ids not in `keyids`, unknown or malformed keys, bad
    /// signatures, and a second signature by the same key (under another key id) count
    /// nothing. (Two signatures under one key id never get here: [`Envelope::parse`]
    /// refuses the file.)
    pub fn verify(
        &self,
        keys: &BTreeMap<String, PublicKey>,
        keyids: &[String],
        threshold: u64,
    ) -> Result<(), MetadataError> {
        verify_signatures(
            &self.canonical_signed,
            &self.signatures,
            keys,
            keyids,
            threshold,
        )
    }
}

/// Threshold check over `msg`; see [`Envelope::verify`].
pub fn verify_signatures(
    msg: &[u8],
    signatures: &[Signature],
    keys: &BTreeMap<String, PublicKey>,
    keyids: &[String],
    threshold: u64,
) -> Result<(), MetadataError> {
    if threshold == 0 {
        return Err(MetadataError::Threshold {
            valid: 0,
            threshold,
        });
    }
    let allowed: HashSet<&str> = keyids.iter().map(String::as_str).collect();
    let mut seen_keyids = HashSet::new();
    let mut good = BTreeSet::new();
    for sig in signatures {
        if !allowed.contains(sig.keyid.as_str()) || !seen_keyids.insert(sig.keyid.as_str()) {
            continue;
        }
        let Some(key) = keys.get(&sig.keyid) else {
            continue;
        };
        let Ok(identity) = key.identity() else {
            continue;
        };
        if good.contains(&identity) {
            continue;
        }
        if key.verify(msg, &sig.sig) {
            good.insert(identity);
        }
    }
    let valid = good.len() as u64;
    if valid >= threshold {
        Ok(())
    } else {
        Err(MetadataError::Threshold { valid, threshold })
    }
}

/// Turn a verified `signed` value into its role type, checking `_type` first (a valid
/// signature over a snapshot must never be read as a timestamp).
pub fn parse_signed<T: RoleMetadata>(signed: &Value) -> Result<T, MetadataError> {
    let found = signed.get("_type").and_then(Value::as_str).unwrap_or("");
    if found != T::TYPE.as_str() {
        return Err(MetadataError::WrongType {
            found: found.to_string(),
            expected: T::TYPE.as_str(),
        });
    }
    let t: T = serde_json::from_value(signed.clone())
        .map_err(|e| MetadataError::Content(e.to_string()))?;
    Ok(t)
}

/// Serialize `signed` and sign its canonical form with every key in `keys`; returns the
/// envelope bytes to publish (pretty JSON: readers verify the canonical form anyway).
pub fn sign_envelope<T: RoleMetadata>(
    signed: &T,
    keys: &[&SigningKey],
) -> Result<Vec<u8>, MetadataError> {
    let value = serde_json::to_value(signed).map_err(|e| MetadataError::Content(e.to_string()))?;
    sign_value(value, keys)
}

/// [`sign_envelope`] over an arbitrary `signed` value (tests build malformed metadata
/// with this; the publisher uses the typed form).
pub fn sign_value(value: Value, keys: &[&SigningKey]) -> Result<Vec<u8>, MetadataError> {
    let msg = canonical::encode(&value)?;
    // A key given twice signs once: clients refuse two signatures under one key id.
    let mut seen = HashSet::new();
    let signatures: Vec<Signature> = keys
        .iter()
        .filter(|k| seen.insert(k.keyid().to_string()))
        .map(|k| k.sign(&msg))
        .collect();
    let env = serde_json::json!({ "signatures": signatures, "signed": value });
    let mut out =
        serde_json::to_vec_pretty(&env).map_err(|e| MetadataError::Content(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

/// Add signatures by `keys` to an existing envelope (offline root signing: the new root
/// is signed by the old and the new root keys in separate steps). Existing signatures
/// by the same key ids are replaced.
pub fn add_signatures(envelope: &[u8], keys: &[&SigningKey]) -> Result<Vec<u8>, MetadataError> {
    let mut env = Envelope::parse(envelope, 64)?;
    for k in keys {
        env.signatures.retain(|s| s.keyid != k.keyid());
        env.signatures.push(k.sign(&env.canonical_signed));
    }
    let out = serde_json::json!({ "signatures": env.signatures, "signed": env.signed });
    let mut bytes =
        serde_json::to_vec_pretty(&out).map_err(|e| MetadataError::Content(e.to_string()))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Sha256/sha512 hashes of `bytes`, hex, keyed by TUF algorithm name.
pub fn hashes_of(bytes: &[u8]) -> BTreeMap<String, String> {
    use sha2::Digest;
    BTreeMap::from([
        (
            "sha256".to_string(),
            hex::encode(sha2::Sha256::digest(bytes)),
        ),
        (
            "sha512".to_string(),
            hex::encode(sha2::Sha512::digest(bytes)),
        ),
    ])
}

impl Targets {
    pub fn new(version: u64, expires: Timestamp) -> Self {
        Self {
            common: Common::new(RoleType::Targets, version, expires),
            targets: BTreeMap::new(),
            delegations: None,
            extra: Map::new(),
        }
    }
}

impl Snapshot {
    pub fn new(version: u64, expires: Timestamp) -> Self {
        Self {
            common: Common::new(RoleType::Snapshot, version, expires),
            meta: BTreeMap::new(),
            extra: Map::new(),
        }
    }
}

impl TimestampMeta {
    pub fn new(version: u64, expires: Timestamp, snapshot: MetaFile) -> Self {
        Self {
            common: Common::new(RoleType::Timestamp, version, expires),
            meta: BTreeMap::from([("snapshot.json".to_string(), snapshot)]),
            extra: Map::new(),
        }
    }
}

impl Root {
    /// A root with no keys yet; add them with [`Root::add_key`].
    pub fn new(version: u64, expires: Timestamp, consistent_snapshot: bool) -> Self {
        Self {
            common: Common::new(RoleType::Root, version, expires),
            consistent_snapshot,
            keys: BTreeMap::new(),
            roles: BTreeMap::new(),
            extra: Map::new(),
        }
    }

    /// Authorize `key` for `role`, creating the role with threshold 1 if needed.
    pub fn add_key(
        &mut self,
        role: RoleType,
        key: &PublicKey,
    ) -> Result<(), super::keys::KeyError> {
        let id = key.keyid()?;
        self.keys.insert(id.clone(), key.clone());
        let entry = self
            .roles
            .entry(role.as_str().to_string())
            .or_insert_with(|| RoleKeys {
                keyids: Vec::new(),
                threshold: 1,
                extra: Map::new(),
            });
        if !entry.keyids.contains(&id) {
            entry.keyids.push(id);
        }
        Ok(())
    }

    pub fn role(&self, role: RoleType) -> Option<&RoleKeys> {
        self.roles.get(role.as_str())
    }
}

impl SuccinctRoles {
    /// Number of hex digits in bin names.
    pub fn suffix_len(&self) -> usize {
        (self.bit_length as usize).div_ceil(4)
    }

    /// The bin (role name) responsible for `target_path`, or `None` for a bad
    /// `bit_length`.
    pub fn role_for_target(&self, target_path: &str) -> Option<String> {
        use sha2::Digest;
        if !(1..=32).contains(&self.bit_length) {
            return None;
        }
        let h = sha2::Sha256::digest(target_path.as_bytes());
        let first = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let bin = (u64::from(first) >> (32 - self.bit_length)) as u32;
        Some(self.role_name(bin))
    }

    pub fn role_name(&self, bin: u32) -> String {
        format!(
            "{}-{:0width$x}",
            self.name_prefix,
            bin,
            width = self.suffix_len()
        )
    }

    /// Whether `name` is one of this delegation's bins.
    pub fn is_bin(&self, name: &str) -> bool {
        let Some(suffix) = name
            .strip_prefix(self.name_prefix.as_str())
            .and_then(|s| s.strip_prefix('-'))
        else {
            return false;
        };
        if suffix.len() != self.suffix_len()
            || !suffix
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return false;
        }
        match u64::from_str_radix(suffix, 16) {
            Ok(n) => (1..=32).contains(&self.bit_length) && n < (1u64 << self.bit_length),
            Err(_) => false,
        }
    }
}

impl DelegatedRole {
    /// Whether this role is trusted for `target_path` (paths or path_hash_prefixes).
    pub fn matches(&self, target_path: &str) -> bool {
        if let Some(patterns) = &self.paths {
            return patterns
                .iter()
                .any(|p| super::pattern::path_matches(p, target_path));
        }
        if let Some(prefixes) = &self.path_hash_prefixes {
            use sha2::Digest;
            let h = hex::encode(sha2::Sha256::digest(target_path.as_bytes()));
            return prefixes.iter().any(|p| h.starts_with(p.as_str()));
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::keys::KeyScheme;

    fn exp() -> Timestamp {
        "2030-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn envelope_round_trip_and_threshold() {
        let k1 = SigningKey::generate(KeyScheme::Ed25519);
        let k2 = SigningKey::generate(KeyScheme::EcdsaP256);
        let mut root = Root::new(1, exp(), true);
        for r in [
            RoleType::Root,
            RoleType::Timestamp,
            RoleType::Snapshot,
            RoleType::Targets,
        ] {
            root.add_key(r, k1.public()).unwrap();
            root.add_key(r, k2.public()).unwrap();
        }
        root.roles.get_mut("root").unwrap().threshold = 2;
        let bytes = sign_envelope(&root, &[&k1, &k2]).unwrap();
        let env = Envelope::parse(&bytes, 32).unwrap();
        let rk = &root.roles["root"];
        env.verify(&root.keys, &rk.keyids, 2).unwrap();
        let parsed: Root = parse_signed(&env.signed).unwrap();
        assert_eq!(parsed, root);
        assert!(parse_signed::<Targets>(&env.signed).is_err());

        // One key signing twice: the file is refused as a whole; checked on its own,
        // the same signature twice still counts once.
        let sig = k1.sign(&env.canonical_signed);
        let one = serde_json::json!({ "signatures": [sig, sig], "signed": env.signed });
        assert!(matches!(
            Envelope::parse(&serde_json::to_vec(&one).unwrap(), 32),
            Err(MetadataError::Envelope(_))
        ));
        // The publisher never writes such a file.
        let once = sign_envelope(&root, &[&k1, &k1]).unwrap();
        assert_eq!(Envelope::parse(&once, 32).unwrap().signatures.len(), 1);
        let twice = [sig.clone(), sig];
        assert!(
            verify_signatures(&env.canonical_signed, &twice, &root.keys, &rk.keyids, 2).is_err()
        );
    }

    #[test]
    fn expires_format_matches_python_tuf() {
        let t = Targets::new(3, exp());
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["expires"], "2030-01-01T00:00:00Z");
        assert_eq!(v["_type"], "targets");
    }

    #[test]
    fn succinct_bins() {
        let s = SuccinctRoles {
            keyids: vec![],
            threshold: 1,
            bit_length: 5,
            name_prefix: "bin".into(),
            extra: Map::new(),
        };
        assert_eq!(s.role_name(3), "bin-03");
        let r = s.role_for_target("foo").unwrap();
        assert!(s.is_bin(&r));
        assert!(!s.is_bin("bin-20"));
        assert!(!s.is_bin("bin-3"));
    }
}
