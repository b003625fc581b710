//! Length and hash checks for metadata and target files (sha256, sha512; any other
//! algorithm name is refused rather than skipped, so a file cannot escape checking by
//! being listed only under a name we do not know).

use std::collections::BTreeMap;

use sha2::Digest;

use super::TrustError;

pub(crate) enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

/// Running hashes for every algorithm listed; built only when all are known.
pub(crate) struct MultiHasher {
    hashers: Vec<(String, String, Hasher)>,
    pub(crate) len: u64,
}

impl MultiHasher {
    pub(crate) fn new(file: &str, hashes: &BTreeMap<String, String>) -> Result<Self, TrustError> {
        let mut hashers = Vec::new();
        for (alg, expected) in hashes {
            let h = match alg.as_str() {
                "sha256" => Hasher::Sha256(sha2::Sha256::new()),
                "sha512" => Hasher::Sha512(sha2::Sha512::new()),
                _ => {
                    return Err(TrustError::UnknownHashAlgorithm {
                        file: file.to_string(),
                        algorithm: alg.clone(),
                    })
                }
            };
            hashers.push((alg.clone(), expected.to_ascii_lowercase(), h));
        }
        Ok(Self { hashers, len: 0 })
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        self.len += data.len() as u64;
        for (_, _, h) in &mut self.hashers {
            match h {
                Hasher::Sha256(h) => h.update(data),
                Hasher::Sha512(h) => h.update(data),
            }
        }
    }

    /// Check every hash; the first mismatch is the error.
    pub(crate) fn finish(self, file: &str) -> Result<(), TrustError> {
        for (alg, expected, h) in self.hashers {
            let got = match h {
                Hasher::Sha256(h) => hex::encode(h.finalize()),
                Hasher::Sha512(h) => hex::encode(h.finalize()),
            };
            if got != expected {
                return Err(TrustError::HashMismatch {
                    file: file.to_string(),
                    algorithm: alg,
                });
            }
        }
        Ok(())
    }
}

/// Check `bytes` against an optional signed length and optional hashes.
pub(crate) fn check_bytes(
    file: &str,
    bytes: &[u8],
    length: Option<u64>,
    hashes: Option<&BTreeMap<String, String>>,
) -> Result<(), TrustError> {
    if let Some(expected) = length {
        if bytes.len() as u64 != expected {
            return Err(TrustError::LengthMismatch {
                file: file.to_string(),
                found: bytes.len() as u64,
                expected,
            });
        }
    }
    if let Some(hashes) = hashes {
        let mut h = MultiHasher::new(file, hashes)?;
        h.update(bytes);
        h.finish(file)?;
    }
    Ok(())
}
