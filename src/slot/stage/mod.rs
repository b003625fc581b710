//! The staging pipeline: source → (zstd) → hashes → slot, one pass, bounded memory.
//!
//! The async side only moves transfer bytes from the [`ByteSource`](crate::fetch::ByteSource)
//! into a small pool of fixed buffers. Three threads do the rest, so both cores of a small
//! machine work: the decoder (`decode.rs`) hashes the transfer of a compressed image
//! (resumable sha256/sha512, see [`super::sha`]) and decompresses it into aligned buffers;
//! the writer (`write.rs`) writes the content to the slot with `O_DIRECT` (no page-cache
//! copy, nothing left for the syncs to write back) and hands checkpoints to a sync thread;
//! the read-back (`read_back.rs`) reads the written content from the medium (`O_DIRECT`,
//! right behind the writer) and hashes it. The slot becomes `verified` only when the
//! transfer hashes and the read-back hash of every content byte matched the signed ones.
//! Uncompressed images are hashed once, by the read-back (their content hash is the
//! signed transfer hash); with `read_back` off the writer hashes the stream.
//!
//! Resume (`resume.rs`): the writer fdatasyncs the slot and records a segment (content and
//! transfer offsets, CRC32 of its content, and for compressed images the transfer hash
//! state) every `checkpoint_every` bytes (uncompressed) or at the first zstd frame
//! boundary after that many bytes (compressed; `patchpub` writes independent frames). A
//! later call with the same request re-reads the written prefix from the slot, checks it
//! segment by segment, rebuilds the content hash from it, and continues with a range
//! request from the last good segment, so a resumed install ends in exactly the same
//! verified state. A zstd stream without frame boundaries resumes from 0 (or through the
//! download cache, [`super::cache`]).
//!
//! Files: `request.rs` (what to stage, options, progress, errors), `pipeline.rs` (the run
//! and its threads), `decode.rs`, `write.rs`, `read_back.rs`, `resume.rs`, `hashes.rs`,
//! `msg.rs` (what the threads send each other).

mod decode;
mod hashes;
mod msg;
mod pipeline;
mod read_back;
mod request;
mod resume;
mod write;

pub use super::raw::{drop_page_cache, RawSlot};
pub use pipeline::stage_image;
pub(in crate::slot) use pipeline::{join_err, pump_source, ChanRead};
pub use read_back::{supports_direct_read, verify_slot_content};
pub(in crate::slot) use request::{check_hash, emit};
pub use request::{
    CancelToken, Compression, ImageFormat, Phase, ProgressFn, StageError, StageOptions,
    StageProgress, StageRequest,
};
