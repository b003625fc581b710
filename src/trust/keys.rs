//! Keys and signatures in TUF's JSON form.
//!
//! A public key is `{"keytype", "scheme", "keyval": {"public": …}}` (plus any unknown
//! fields, kept because they are part of what the key id was computed over). Its key id
//! is the hex SHA-256 of that object's canonical JSON. Supported schemes:
//!
//! | keytype                         | scheme                 | `keyval.public`        | signature (hex) |
//! |---------------------------------|------------------------|------------------------|-----------------|
//! | `ed25519`                       | `ed25519`              | 32 bytes hex           | 64 bytes        |
//! | `ecdsa` / `ecdsa-sha2-nistp256` | `ecdsa-sha2-nistp256`  | SPKI PEM               | DER (r, s)      |
//! | `rsa`                           | `rsassa-pss-sha256`    | SPKI PEM               | PSS, MGF1-SHA256|
//!
//! Anything else — unknown scheme, a key that does not decode, a signature that is not
//! hex — makes that one signature invalid; nothing here panics on repository input.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::canonical;

/// A public key as it appears in root and delegating targets metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    pub keytype: String,
    pub scheme: String,
    pub keyval: BTreeMap<String, Value>,
    /// Unknown fields, kept: they are covered by the signature and the key id.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One signature in a metadata envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub keyid: String,
    pub sig: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What identifies a key regardless of how it was spelt (hex case, PEM line breaks) or
/// which key ids it was listed under: thresholds count these, not key ids.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyIdentity(String, Vec<u8>);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unsupported key type/scheme {keytype}/{scheme}")]
    Unsupported { keytype: String, scheme: String },
    #[error("malformed {scheme} public key: {why}")]
    Malformed { scheme: String, why: String },
    #[error("key file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path}: {why}")]
    Pem { path: String, why: String },
    #[error("canonical encoding: {0}")]
    Canonical(#[from] canonical::CanonicalError),
}

/// Signature schemes we can create keys for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyScheme {
    #[default]
    Ed25519,
    EcdsaP256,
}

impl std::str::FromStr for KeyScheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ed25519" => Ok(Self::Ed25519),
            "ecdsa" | "ecdsa-sha2-nistp256" | "p256" => Ok(Self::EcdsaP256),
            other => Err(format!(
                "unknown key scheme {other:?} (ed25519, ecdsa-sha2-nistp256)"
            )),
        }
    }
}

enum Verifier {
    Ed25519(ed25519_dalek::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
    Rsa(rsa::RsaPublicKey),
}

impl PublicKey {
    /// The key id: hex SHA-256 of this key's canonical JSON.
    pub fn keyid(&self) -> Result<String, KeyError> {
        let v = serde_json::to_value(self).map_err(|e| KeyError::Malformed {
            scheme: self.scheme.clone(),
            why: e.to_string(),
        })?;
        Ok(hex::encode(Sha256::digest(canonical::encode(&v)?)))
    }

    fn public_str(&self) -> Result<&str, KeyError> {
        match self.keyval.get("public") {
            Some(Value::String(s)) => Ok(s),
            _ => Err(self.malformed("keyval.public missing or not a string")),
        }
    }

    fn malformed(&self, why: impl Into<String>) -> KeyError {
        KeyError::Malformed {
            scheme: self.scheme.clone(),
            why: why.into(),
        }
    }

    fn verifier(&self) -> Result<Verifier, KeyError> {
        use p256::pkcs8::DecodePublicKey;
        match (self.keytype.as_str(), self.scheme.as_str()) {
            ("ed25519", "ed25519") => {
                let bytes =
                    hex::decode(self.public_str()?).map_err(|e| self.malformed(e.to_string()))?;
                let arr: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| self.malformed("ed25519 key is not 32 bytes"))?;
                ed25519_dalek::VerifyingKey::from_bytes(&arr)
                    .map(Verifier::Ed25519)
                    .map_err(|e| self.malformed(e.to_string()))
            }
            ("ecdsa" | "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256") => {
                p256::ecdsa::VerifyingKey::from_public_key_pem(self.public_str()?.trim())
                    .map(Verifier::P256)
                    .map_err(|e| self.malformed(e.to_string()))
            }
            ("rsa", "rsassa-pss-sha256") => {
                rsa::RsaPublicKey::from_public_key_pem(self.public_str()?.trim())
                    .map(Verifier::Rsa)
                    .map_err(|e| self.malformed(e.to_string()))
            }
            (keytype, scheme) => Err(KeyError::Unsupported {
                keytype: keytype.to_string(),
                scheme: scheme.to_string(),
            }),
        }
    }

    /// The identity thresholds count; an error for keys we cannot use.
    pub fn identity(&self) -> Result<KeyIdentity, KeyError> {
        use rsa::traits::PublicKeyParts;
        Ok(match self.verifier()? {
            Verifier::Ed25519(k) => KeyIdentity("ed25519".into(), k.to_bytes().to_vec()),
            Verifier::P256(k) => {
                KeyIdentity("p256".into(), k.to_encoded_point(false).as_bytes().to_vec())
            }
            Verifier::Rsa(k) => {
                let mut b = k.n().to_bytes_be();
                b.push(0xff);
                b.extend(k.e().to_bytes_be());
                KeyIdentity("rsa".into(), b)
            }
        })
    }

    /// Whether `sig_hex` is a valid signature by this key over `msg`. Every failure,
    /// including a key or signature that does not decode, is simply `false`.
    pub fn verify(&self, msg: &[u8], sig_hex: &str) -> bool {
        let Ok(sig) = hex::decode(sig_hex) else {
            return false;
        };
        let Ok(verifier) = self.verifier() else {
            return false;
        };
        match verifier {
            Verifier::Ed25519(k) => match ed25519_dalek::Signature::from_slice(&sig) {
                Ok(s) => k.verify_strict(msg, &s).is_ok(),
                Err(_) => false,
            },
            Verifier::P256(k) => {
                use p256::ecdsa::signature::Verifier as _;
                match p256::ecdsa::DerSignature::from_bytes(&sig) {
                    Ok(s) => k.verify(msg, &s).is_ok(),
                    Err(_) => false,
                }
            }
            Verifier::Rsa(k) => {
                use rsa::signature::Verifier as _;
                let Ok(s) = rsa::pss::Signature::try_from(sig.as_slice()) else {
                    return false;
                };
                // securesystemslib signs with a digest-length salt; older releases used
                // the maximum salt length. Accept both (verification is exact per length).
                use rsa::traits::PublicKeyParts;
                let max_salt = k.n().bits().div_ceil(8).saturating_sub(32 + 2);
                [32usize, max_salt].iter().any(|&salt| {
                    rsa::pss::VerifyingKey::<Sha256>::new_with_salt_len(k.clone(), salt)
                        .verify(msg, &s)
                        .is_ok()
                })
            }
        }
    }
}

/// A private signing key (publisher side, and tests).
#[derive(Clone)]
pub struct SigningKey {
    inner: SigningInner,
    public: PublicKey,
    keyid: String,
}

#[derive(Clone)]
enum SigningInner {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SigningKey")
            .field("scheme", &self.public.scheme)
            .field("keyid", &self.keyid)
            .finish()
    }
}

impl SigningKey {
    /// A fresh key from the OS random number generator.
    pub fn generate(scheme: KeyScheme) -> Self {
        let mut rng = rand::rngs::OsRng;
        let inner = match scheme {
            KeyScheme::Ed25519 => {
                SigningInner::Ed25519(ed25519_dalek::SigningKey::generate(&mut rng))
            }
            KeyScheme::EcdsaP256 => SigningInner::P256(p256::ecdsa::SigningKey::random(&mut rng)),
        };
        Self::from_inner(inner)
    }

    fn from_inner(inner: SigningInner) -> Self {
        use p256::pkcs8::{EncodePublicKey, LineEnding};
        let (keytype, scheme, public) = match &inner {
            SigningInner::Ed25519(k) => (
                "ed25519",
                "ed25519",
                hex::encode(k.verifying_key().to_bytes()),
            ),
            SigningInner::P256(k) => (
                "ecdsa",
                "ecdsa-sha2-nistp256",
                // Encoding a valid in-memory point as SPKI cannot fail.
                k.verifying_key()
                    .to_public_key_pem(LineEnding::LF)
                    .unwrap_or_default(),
            ),
        };
        let public = PublicKey {
            keytype: keytype.into(),
            scheme: scheme.into(),
            keyval: BTreeMap::from([("public".to_string(), Value::String(public))]),
            extra: Map::new(),
        };
        let keyid = public.keyid().unwrap_or_default();
        Self {
            inner,
            public,
            keyid,
        }
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    pub fn keyid(&self) -> &str {
        &self.keyid
    }

    pub fn scheme(&self) -> KeyScheme {
        match self.inner {
            SigningInner::Ed25519(_) => KeyScheme::Ed25519,
            SigningInner::P256(_) => KeyScheme::EcdsaP256,
        }
    }

    /// Sign `msg` (normally the canonical JSON of a `signed` object).
    pub fn sign(&self, msg: &[u8]) -> Signature {
        let sig = match &self.inner {
            SigningInner::Ed25519(k) => {
                use ed25519_dalek::Signer;
                k.sign(msg).to_bytes().to_vec()
            }
            SigningInner::P256(k) => {
                use p256::ecdsa::signature::Signer;
                let s: p256::ecdsa::Signature = k.sign(msg);
                s.to_der().as_bytes().to_vec()
            }
        };
        Signature {
            keyid: self.keyid.clone(),
            sig: hex::encode(sig),
            extra: Map::new(),
        }
    }

    /// PKCS#8 PEM of the private key.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        let pem = match &self.inner {
            SigningInner::Ed25519(k) => k.to_pkcs8_pem(LineEnding::LF),
            SigningInner::P256(k) => k.to_pkcs8_pem(LineEnding::LF),
        };
        pem.map(|z| z.to_string()).map_err(|e| KeyError::Pem {
            path: "<memory>".into(),
            why: e.to_string(),
        })
    }

    /// Parse a PKCS#8 PEM private key (ed25519 or P-256).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, String> {
        use p256::pkcs8::DecodePrivateKey;
        if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            return Ok(Self::from_inner(SigningInner::Ed25519(k)));
        }
        p256::ecdsa::SigningKey::from_pkcs8_pem(pem)
            .map(|k| Self::from_inner(SigningInner::P256(k)))
            .map_err(|e| format!("neither an ed25519 nor a P-256 PKCS#8 key: {e}"))
    }

    /// Write the private key as PKCS#8 PEM, mode 0600, atomically.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let pem = self.to_pkcs8_pem()?;
        crate::fsutil::atomic_write_mode(path, pem.as_bytes(), 0o600).map_err(|source| {
            KeyError::Io {
                path: path.display().to_string(),
                source,
            }
        })
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_pkcs8_pem(&pem).map_err(|why| KeyError::Pem {
            path: path.display().to_string(),
            why,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_both_schemes_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        for scheme in [KeyScheme::Ed25519, KeyScheme::EcdsaP256] {
            let k = SigningKey::generate(scheme);
            let s = k.sign(b"msg");
            assert_eq!(s.keyid, k.keyid());
            assert!(k.public().verify(b"msg", &s.sig));
            assert!(!k.public().verify(b"msh", &s.sig));
            assert!(!k.public().verify(b"msg", "zz"));
            let p = dir.path().join("k.pem");
            k.save(&p).unwrap();
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
            let k2 = SigningKey::load(&p).unwrap();
            assert_eq!(k2.keyid(), k.keyid());
            assert_eq!(
                k2.public().identity().unwrap(),
                k.public().identity().unwrap()
            );
        }
    }

    #[test]
    fn malformed_and_unknown_keys_never_verify() {
        let k = SigningKey::generate(KeyScheme::Ed25519);
        let s = k.sign(b"m");
        let mut bad = k.public().clone();
        bad.scheme = "ed448".into();
        assert!(!bad.verify(b"m", &s.sig));
        let mut bad = k.public().clone();
        bad.keyval
            .insert("public".into(), Value::String("abc".into()));
        assert!(!bad.verify(b"m", &s.sig));
        bad.keyval.insert("public".into(), Value::Bool(true));
        assert!(!bad.verify(b"m", &s.sig));
        // Same key, upper-case hex: same identity.
        let mut upper = k.public().clone();
        let hexu = k.public().keyval["public"].as_str().unwrap().to_uppercase();
        upper.keyval.insert("public".into(), Value::String(hexu));
        assert_eq!(upper.identity().unwrap(), k.public().identity().unwrap());
        assert_ne!(upper.keyid().unwrap(), k.keyid());
    }

    #[test]
    fn rsassa_pss_sha256_verifies() {
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        use rsa::signature::{RandomizedSigner, SignatureEncoding};
        let mut rng = rand::rngs::OsRng;
        let private = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let key = PublicKey {
            keytype: "rsa".into(),
            scheme: "rsassa-pss-sha256".into(),
            keyval: BTreeMap::from([("public".to_string(), Value::String(pem))]),
            extra: Map::new(),
        };
        let signer = rsa::pss::BlindedSigningKey::<Sha256>::new(private);
        let sig = hex::encode(signer.sign_with_rng(&mut rng, b"msg").to_bytes());
        assert!(key.verify(b"msg", &sig));
        assert!(!key.verify(b"other", &sig));
        assert!(key.identity().is_ok());
        let mut wrong_scheme = key.clone();
        wrong_scheme.keytype = "ed25519".into();
        assert!(!wrong_scheme.verify(b"msg", &sig));
    }
}
