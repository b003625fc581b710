//! zstd with a raw-content prefix: a piece compressed against its base range of the old
//! image, and decoded with exactly that base. A prefix (unlike a dictionary) is always
//! taken as raw content, whatever bytes the base starts with.

use zstd::zstd_safe::{self, CCtx, CParameter, DCtx, DParameter};

use super::error::{zstd_err, DeltaError};

/// Window of the frames we write: covers a base (≤ 8 MiB) plus its piece.
const WINDOW_LOG: u32 = 24;

pub(crate) fn compress(
    level: i32,
    prefix: Option<&[u8]>,
    src: &[u8],
) -> Result<Vec<u8>, DeltaError> {
    let mut c: CCtx<'_> =
        CCtx::try_create().ok_or_else(|| DeltaError::Zstd("out of memory".into()))?;
    c.set_parameter(CParameter::CompressionLevel(level))
        .map_err(zstd_err)?;
    c.set_parameter(CParameter::ContentSizeFlag(true))
        .map_err(zstd_err)?;
    if let Some(p) = prefix {
        c.set_parameter(CParameter::WindowLog(WINDOW_LOG))
            .map_err(zstd_err)?;
        c.ref_prefix(p).map_err(zstd_err)?;
    }
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(src.len()));
    c.compress2(&mut out, src).map_err(zstd_err)?;
    Ok(out)
}

/// Decode one frame into exactly `out_len` bytes (more is an error, not a reallocation:
/// memory stays bounded by the signed length).
pub(crate) fn decompress(
    prefix: Option<&[u8]>,
    frame: &[u8],
    out_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), DeltaError> {
    let mut d: DCtx<'_> =
        DCtx::try_create().ok_or_else(|| DeltaError::Zstd("out of memory".into()))?;
    d.set_parameter(DParameter::WindowLogMax(WINDOW_LOG))
        .map_err(zstd_err)?;
    if let Some(p) = prefix {
        d.ref_prefix(p).map_err(zstd_err)?;
    }
    out.clear();
    out.reserve_exact(out_len);
    let n = d.decompress(out, frame).map_err(zstd_err)?;
    if n != out_len {
        return Err(DeltaError::Zstd(format!(
            "frame holds {n} bytes, {out_len} expected"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_round_trip_and_wrong_base() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let base: Vec<u8> = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let mut new = base[1000..150_000].to_vec();
        new[500..600].fill(1);
        let plain = compress(3, None, &new).unwrap();
        let z = compress(3, Some(&base), &new).unwrap();
        assert!(z.len() * 10 < plain.len(), "{} vs {}", z.len(), plain.len());
        let mut out = Vec::new();
        decompress(Some(&base), &z, new.len(), &mut out).unwrap();
        assert_eq!(out, new);
        // a shorter claimed length is refused
        assert!(decompress(Some(&base), &z, new.len() - 1, &mut out).is_err());
        // another base decodes to other bytes (caught by the piece hash)
        let mut other = base.clone();
        for i in (1000..150_000).step_by(1000) {
            other[i] ^= 1;
        }
        let r = decompress(Some(&other), &z, new.len(), &mut out);
        assert!(r.is_err() || out != new);
    }
}
