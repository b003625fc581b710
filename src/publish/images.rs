//! Turning an image file into a repository target: compress with zstd (or copy),
//! hashing the uncompressed bytes (what the device writes and checks) and the stored
//! bytes (what TUF signs) in one pass, then place it under its consistent-snapshot name.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::error::{io, PublishError};
use crate::manifest::Compression;

/// A payload placed under `targets/`.
pub(crate) struct Placed {
    pub uncompressed_size: u64,
    pub uncompressed_sha256: String,
    pub stored_len: u64,
    pub stored_sha256: String,
}

impl Placed {
    /// The stored file as the targets role lists it: its length and sha256.
    pub fn target_file(&self) -> crate::trust::metadata::TargetFile {
        crate::trust::metadata::TargetFile {
            length: self.stored_len,
            hashes: std::collections::BTreeMap::from([(
                "sha256".to_string(),
                self.stored_sha256.clone(),
            )]),
            custom: None,
            extra: Default::default(),
        }
    }
}

/// Hashes everything written through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Compress/copy `src` into `targets_dir/<target_path dir>/<stored sha256>.<base name>`.
pub(crate) fn place(
    src: &Path,
    compression: Compression,
    targets_dir: &Path,
    target_path: &str,
) -> Result<Placed, PublishError> {
    let (dir, base) = target_path.rsplit_once('/').ok_or_else(|| {
        PublishError::Invalid(format!("target path {target_path:?} has no directory"))
    })?;
    let out_dir = targets_dir.join(dir);
    crate::fsutil::ensure_dir(&out_dir, 0o755).map_err(io(out_dir.display()))?;
    let tmp = tempfile::NamedTempFile::new_in(&out_dir).map_err(io(out_dir.display()))?;
    let input = File::open(src).map_err(io(src.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let mut out = HashingWriter {
        inner: std::io::BufWriter::new(tmp.as_file().try_clone().map_err(io(out_dir.display()))?),
        hasher: Sha256::new(),
        len: 0,
    };
    let (raw_len, raw_sha) = match compression {
        Compression::Zstd => compress_framed(&mut reader, &mut out, src)?,
        Compression::None => copy_hashing(&mut reader, &mut out, src)?,
    };
    out.flush().map_err(io(out_dir.display()))?;
    let HashingWriter { inner, hasher, len } = out;
    drop(inner);
    let stored_len = len;
    let stored_sha256 = hex::encode(hasher.finalize());
    tmp.as_file().sync_all().map_err(io(out_dir.display()))?;
    let final_path = out_dir.join(format!("{stored_sha256}.{base}"));
    tmp.persist(&final_path)
        .map_err(|e| io(final_path.display())(e.error))?;
    set_mode(&final_path, 0o644)?;
    crate::fsutil::fsync_dir(&out_dir).map_err(io(out_dir.display()))?;
    Ok(Placed {
        uncompressed_size: raw_len,
        uncompressed_sha256: raw_sha,
        stored_len,
        stored_sha256,
    })
}

/// Write small target bytes (a manifest) under its consistent-snapshot name.
pub(crate) fn place_bytes(
    bytes: &[u8],
    targets_dir: &Path,
    target_path: &str,
    sha256: &str,
) -> Result<(), PublishError> {
    let (dir, base) = target_path.rsplit_once('/').ok_or_else(|| {
        PublishError::Invalid(format!("target path {target_path:?} has no directory"))
    })?;
    let out_dir = targets_dir.join(dir);
    crate::fsutil::ensure_dir(&out_dir, 0o755).map_err(io(out_dir.display()))?;
    let p = out_dir.join(format!("{sha256}.{base}"));
    crate::fsutil::atomic_write_mode(&p, bytes, 0o644).map_err(io(p.display()))
}

fn set_mode(p: &Path, mode: u32) -> Result<(), PublishError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(io(p.display()))
}

/// Content bytes per zstd frame. Devices checkpoint a compressed install only at frame
/// boundaries (a decoder's state cannot be saved), so independent frames let an
/// interrupted install resume instead of starting over; 16 MiB frames cost well under
/// 1 % of compression ratio at level 3 (its window is 2 MiB anyway).
pub(crate) const ZSTD_FRAME_BYTES: u64 = 16 << 20;

/// Compress `r` into `w` as a sequence of independent zstd frames of
/// [`ZSTD_FRAME_BYTES`] content each (each with its content size in the header),
/// returning the length and sha256 of what was read.
fn compress_framed(
    r: &mut impl Read,
    w: &mut impl Write,
    src: &Path,
) -> Result<(u64, String), PublishError> {
    let mut h = Sha256::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let mut enc = zstd::stream::write::Encoder::new(&mut *w, 3).map_err(io("zstd encoder"))?;
        let mut in_frame = 0u64;
        while in_frame < ZSTD_FRAME_BYTES {
            let want = (ZSTD_FRAME_BYTES - in_frame).min(buf.len() as u64) as usize;
            let k = r.read(&mut buf[..want]).map_err(io(src.display()))?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            enc.write_all(&buf[..k]).map_err(io(src.display()))?;
            in_frame += k as u64;
        }
        // An empty image still gets one (empty) frame; otherwise no empty trailing frame.
        if in_frame > 0 || total == 0 {
            enc.finish().map_err(io("zstd finish"))?;
        }
        total += in_frame;
        if in_frame < ZSTD_FRAME_BYTES {
            return Ok((total, hex::encode(h.finalize())));
        }
    }
}

/// Copy `r` into `w`, returning the length and sha256 of what was read.
fn copy_hashing(
    r: &mut impl Read,
    w: &mut impl Write,
    src: &Path,
) -> Result<(u64, String), PublishError> {
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = r.read(&mut buf).map_err(io(src.display()))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
        w.write_all(&buf[..k]).map_err(io(src.display()))?;
    }
    Ok((n, hex::encode(h.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zstd_output_is_independent_frames() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("img");
        let len = 2 * ZSTD_FRAME_BYTES as usize + 12345;
        let data: Vec<u8> = (0..len)
            .map(|i| (i % 251) as u8 ^ (i >> 20) as u8)
            .collect();
        std::fs::write(&src, &data).unwrap();
        let mut out = Vec::new();
        let (n, sha) = compress_framed(&mut &data[..], &mut out, &src).unwrap();
        assert_eq!(n, len as u64);
        assert_eq!(sha, hex::encode(Sha256::digest(&data)));
        assert_eq!(zstd::decode_all(&out[..]).unwrap(), data);
        // Three frames, each decodable on its own from its start offset.
        let mut off = 0;
        let mut frames = 0;
        while off < out.len() {
            let size = zstd::zstd_safe::find_frame_compressed_size(&out[off..]).unwrap();
            let part = zstd::decode_all(&out[off..off + size]).unwrap();
            assert_eq!(
                part.len() as u64,
                ZSTD_FRAME_BYTES.min((len - frames * ZSTD_FRAME_BYTES as usize) as u64)
            );
            off += size;
            frames += 1;
        }
        assert_eq!(frames, 3);
    }
}
