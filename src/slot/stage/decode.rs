//! The decoder thread: transfer hash and zstd decompression, frame boundaries for
//! checkpoints.

use std::io;

use tokio::sync::mpsc;

use super::hashes::{Digests, TransferHash};
use super::msg::{Msg, Stop};
use super::request::{check_hash, CancelToken, StageError, StageOptions, StageRequest};
use super::resume::{ResumePoint, Segment};
use crate::slot::direct::AlignedBuf;

/// The decoder: hashes the transfer (compressed images), decompresses, and marks the
/// zstd frame boundaries a checkpoint may resume from. For uncompressed images it only
/// forwards the buffers (their hash is the content hash, taken by the read-back).
#[allow(clippy::too_many_arguments)]
pub(super) fn decode_thread(
    req: &StageRequest,
    opts: &StageOptions,
    mut rx: mpsc::Receiver<(Vec<u8>, usize)>,
    transfer_pool: mpsc::Sender<Vec<u8>>,
    tx: mpsc::Sender<Msg>,
    mut pool: mpsc::Receiver<AlignedBuf>,
    hash: Option<TransferHash>,
    resume: &ResumePoint,
    cancel: &CancelToken,
) -> Result<Option<Digests>, Stop> {
    let cancelled = || {
        Stop::Failed(StageError::Cancelled {
            path: req.path.clone(),
        })
    };
    let Some(mut hash) = hash else {
        forward(req, rx, transfer_pool, tx, pool, cancel)?;
        return Ok(None);
    };
    let zerr = |e: io::Error| {
        Stop::Failed(StageError::Decompress {
            path: req.path.clone(),
            source: e,
        })
    };
    use zstd::stream::raw::Operation;
    let mut dec = zstd::stream::raw::Decoder::new().map_err(zerr)?;
    dec.set_parameter(zstd::stream::raw::DParameter::WindowLogMax(
        opts.zstd_window_log_max,
    ))
    .map_err(zerr)?;
    let mut transfer_off = resume.transfer_end;
    let mut content_off = resume.content_end;
    let mut last_mark = content_off;
    let mut out = pool.blocking_recv().ok_or(Stop::PeerGone)?;
    let mut out_pos = 0usize;
    let mut in_frame = false;
    while let Some((buf, len)) = rx.blocking_recv() {
        if cancel.is_cancelled() {
            return Err(cancelled());
        }
        let mut input = zstd::stream::raw::InBuffer::around(&buf[..len]);
        loop {
            let before = input.pos;
            let (hint, produced) = {
                let mut o = zstd::stream::raw::OutBuffer::around_pos(out.as_mut_slice(), out_pos);
                match dec.run(&mut input, &mut o) {
                    Ok(hint) => (hint, o.pos() - out_pos),
                    Err(e) => {
                        hash.update(&buf[before..len]);
                        let got = transfer_off + (len - before) as u64;
                        let _ = transfer_pool.try_send(buf);
                        return Err(undecodable(req, e, hash, got, rx, transfer_pool, cancel));
                    }
                }
            };
            hash.update(&buf[before..input.pos]);
            transfer_off += (input.pos - before) as u64;
            out_pos += produced;
            content_off += produced as u64;
            if content_off > req.size {
                return Err(Stop::Failed(StageError::DecompressedTooLarge {
                    path: req.path.clone(),
                    declared: req.size,
                }));
            }
            let full = out_pos == out.as_slice().len();
            if full {
                tx.blocking_send(Msg::Data(out, out_pos))
                    .map_err(|_| Stop::PeerGone)?;
                out = pool.blocking_recv().ok_or(Stop::PeerGone)?;
                out_pos = 0;
            }
            if input.pos > before || produced > 0 {
                // A call without progress (only asked to flush) says nothing about frames:
                // after a frame it already announces the next frame's header.
                in_frame = hint != 0;
            }
            if !in_frame && content_off - last_mark >= opts.checkpoint_every {
                // A frame ended: everything before it can be checkpointed together with
                // the transfer hash state at exactly this byte.
                if out_pos > 0 {
                    tx.blocking_send(Msg::Data(out, out_pos))
                        .map_err(|_| Stop::PeerGone)?;
                    out = pool.blocking_recv().ok_or(Stop::PeerGone)?;
                    out_pos = 0;
                }
                tx.blocking_send(Msg::FrameEnd(Segment {
                    content_end: content_off,
                    transfer_end: transfer_off,
                    crc: 0,
                    transfer_hash: Some(hash.clone()),
                }))
                .map_err(|_| Stop::PeerGone)?;
                last_mark = content_off;
            }
            if input.pos == len && !full {
                break;
            }
        }
        let _ = transfer_pool.try_send(buf);
    }
    if out_pos > 0 {
        tx.blocking_send(Msg::Data(out, out_pos))
            .map_err(|_| Stop::PeerGone)?;
    }
    if transfer_off != req.length {
        return Err(Stop::Failed(StageError::Truncated {
            path: req.path.clone(),
            got: transfer_off,
            expected: req.length,
        }));
    }
    if in_frame {
        return Err(zerr(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the transfer ends inside a zstd frame",
        )));
    }
    Ok(Some(hash.finish()))
}

/// Uncompressed: copy into aligned buffers for the writer's direct writes (one memcpy,
/// cheaper than the page-cache copy it saves).
fn forward(
    req: &StageRequest,
    mut rx: mpsc::Receiver<(Vec<u8>, usize)>,
    transfer_pool: mpsc::Sender<Vec<u8>>,
    tx: mpsc::Sender<Msg>,
    mut pool: mpsc::Receiver<AlignedBuf>,
    cancel: &CancelToken,
) -> Result<(), Stop> {
    let mut out = pool.blocking_recv().ok_or(Stop::PeerGone)?;
    let mut out_pos = 0usize;
    while let Some((buf, len)) = rx.blocking_recv() {
        if cancel.is_cancelled() {
            return Err(Stop::Failed(StageError::Cancelled {
                path: req.path.clone(),
            }));
        }
        let mut rest = &buf[..len];
        while !rest.is_empty() {
            let o = out.as_mut_slice();
            let n = rest.len().min(o.len() - out_pos);
            o[out_pos..out_pos + n].copy_from_slice(&rest[..n]);
            out_pos += n;
            rest = &rest[n..];
            if out_pos == o.len() {
                tx.blocking_send(Msg::Data(out, out_pos))
                    .map_err(|_| Stop::PeerGone)?;
                out = pool.blocking_recv().ok_or(Stop::PeerGone)?;
                out_pos = 0;
            }
        }
        let _ = transfer_pool.try_send(buf);
    }
    if out_pos > 0 {
        tx.blocking_send(Msg::Data(out, out_pos))
            .map_err(|_| Stop::PeerGone)?;
    }
    Ok(())
}

/// The decompressor refused the stream. Unverified bytes must not be judged by how they
/// parse: most often they are simply not the signed bytes (a resumed download whose
/// second part differs, a corrupting mirror), and the admin should read "hash mismatch",
/// not a zstd framing error. So the rest of the transfer (bounded by the signed length)
/// is hashed, and a transfer hash that differs from the signed one is the error; only a
/// signed, matching stream that still does not decode is reported as zstd's error.
pub(super) fn undecodable(
    req: &StageRequest,
    e: io::Error,
    mut hash: TransferHash,
    mut got: u64,
    mut rx: mpsc::Receiver<(Vec<u8>, usize)>,
    transfer_pool: mpsc::Sender<Vec<u8>>,
    cancel: &CancelToken,
) -> Stop {
    let zstd = || {
        Stop::Failed(StageError::Decompress {
            path: req.path.clone(),
            source: io::Error::new(e.kind(), e.to_string()),
        })
    };
    tracing::info!(path = %req.path, error = %e, at = got, "zstd refused the stream; hashing the rest of the transfer to tell a wrong download from a bad image");
    while let Some((buf, len)) = rx.blocking_recv() {
        if cancel.is_cancelled() {
            return Stop::Failed(StageError::Cancelled {
                path: req.path.clone(),
            });
        }
        hash.update(&buf[..len]);
        got += len as u64;
        let _ = transfer_pool.try_send(buf);
    }
    if got != req.length {
        return zstd();
    }
    let (h256, h512) = hash.finish();
    if let Err(mismatch) = check_hash(req, "transfer sha256", &req.sha256, &h256) {
        return Stop::Failed(mismatch);
    }
    if let (Some(want), Some(got)) = (&req.sha512, h512) {
        if let Err(mismatch) = check_hash(req, "transfer sha512", want, &got) {
            return Stop::Failed(mismatch);
        }
    }
    zstd()
}
