//! Staging requests for test images, as signed metadata would describe them.

use patchd::slot::{Compression, ImageFormat, StageRequest};
use sha2::{Digest, Sha256};

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// The request for `content` published zstd-compressed as `z`.
pub fn zstd_request(
    path: &str,
    version: &str,
    format: ImageFormat,
    content: &[u8],
    z: &[u8],
) -> StageRequest {
    StageRequest {
        path: path.into(),
        version: version.into(),
        length: z.len() as u64,
        sha256: sha256_hex(z),
        sha512: None,
        compression: Compression::Zstd,
        format,
        size: content.len() as u64,
        content_sha256: sha256_hex(content),
    }
}
