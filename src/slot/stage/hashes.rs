//! The hashes a raw staging run keeps: of the content (from the read-back or the
//! written stream) and, resumable, of a compressed transfer.

use serde::{Deserialize, Serialize};

use super::request::{Compression, StageRequest};
use crate::slot::sha::{Sha256State, Sha512State};

/// Digests of the transfer (compressed images only) and of the content.
pub(super) type Digests = (String, Option<String>);

/// Hashes of the content, from the slot (read-back) or from the written stream.
#[derive(Clone)]
pub(super) struct ContentHash {
    pub(super) sha256: ring::digest::Context,
    /// Raw images only: the signed sha512 of the transfer is the content's.
    pub(super) sha512: Option<ring::digest::Context>,
}

impl ContentHash {
    pub(super) fn new(req: &StageRequest) -> Self {
        Self {
            sha256: ring::digest::Context::new(&ring::digest::SHA256),
            sha512: (req.compression == Compression::None && req.sha512.is_some())
                .then(|| ring::digest::Context::new(&ring::digest::SHA512)),
        }
    }
    pub(super) fn update(&mut self, b: &[u8]) {
        self.sha256.update(b);
        if let Some(h) = &mut self.sha512 {
            h.update(b);
        }
    }
    pub(super) fn finish(self) -> Digests {
        (
            hex::encode(self.sha256.finish()),
            self.sha512.map(|h| hex::encode(h.finish())),
        )
    }
}

/// Resumable hashes of a compressed transfer (saved in checkpoints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TransferHash {
    pub(super) sha256: Sha256State,
    pub(super) sha512: Option<Sha512State>,
}

impl TransferHash {
    pub(super) fn new(req: &StageRequest) -> Self {
        Self {
            sha256: Sha256State::new(),
            sha512: req.sha512.as_ref().map(|_| Sha512State::new()),
        }
    }
    pub(super) fn update(&mut self, b: &[u8]) {
        self.sha256.update(b);
        if let Some(h) = &mut self.sha512 {
            h.update(b);
        }
    }
    pub(super) fn fits(&self, req: &StageRequest, transfer_end: u64) -> bool {
        self.sha256.is_valid()
            && self.sha256.len() == transfer_end
            && self.sha512.is_some() == req.sha512.is_some()
            && self
                .sha512
                .as_ref()
                .is_none_or(|h| h.is_valid() && h.len() == transfer_end)
    }
    pub(super) fn finish(self) -> Digests {
        (
            hex::encode(self.sha256.finalize()),
            self.sha512.map(|h| hex::encode(h.finalize())),
        )
    }
}
