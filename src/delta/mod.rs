//! Delta updates: move only what changed between releases, in bounded device memory.
//!
//! - [`format`]: the static delta file (header, entry table, payloads), strictly parsed;
//! - [`index`]: the chunk index of an image and its chunk store (dynamic deltas);
//! - [`encode`]: the publisher side (`patchpub add --delta-from`, chunk stores);
//! - [`apply`]: the device side, writing into a [`crate::slot::stage::RawSlot`];
//! - `sketch`: where a new chunk's content lies in the old image (publisher only);
//! - `codec`: zstd with the base range as a raw-content prefix.
//!
//! See docs/delta.md.

pub mod apply;
mod codec;
pub mod encode;
mod error;
pub mod format;
pub mod index;
mod sketch;

pub use apply::{
    apply_dynamic, apply_dynamic_with, apply_dynamic_within, apply_static, ApplyReport, Control,
    DynamicOptions, LocalImage, StoreFetch, TargetImage,
};
pub use encode::{
    build_chunk_store, build_chunk_store_on, encode_static, worker_threads, EncodeOptions,
    EncodeStats, DEFAULT_LEVEL, STATIC_CDC,
};
pub use error::DeltaError;
pub use index::{CdcParams, ChunkIndex, DYNAMIC_CDC};
