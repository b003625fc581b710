//! Trust: canonical JSON, keys and signatures, TUF metadata and the TUF client workflow
//! (TUF specification 1.0, section 5).
//!
//! # API for the publisher (`patchpub`, `manifest`)
//!
//! - [`canonical::encode`] — canonical JSON bytes of a `serde_json::Value` (what is signed);
//!   [`canonical::parse_strict`] — JSON parse refusing duplicate keys and deep nesting.
//! - [`keys::SigningKey`] — `generate(KeyScheme::Ed25519 | KeyScheme::EcdsaP256)`,
//!   `save(path)` / `load(path)` (PKCS#8 PEM, 0600, atomic), `public() -> &PublicKey`,
//!   `keyid()`, `sign(bytes) -> Signature`.
//! - [`keys::PublicKey`] — TUF JSON form; `keyid()`, `verify(msg, sig_hex) -> bool`.
//! - [`metadata`] — `Root`, `TimestampMeta`, `Snapshot`, `Targets` (+ `Delegations`,
//!   `DelegatedRole`, `SuccinctRoles`, `TargetFile`, `MetaFile`), each with a `common:
//!   Common { type_, spec_version, version, expires }` and `extra` for unknown fields;
//!   `sign_envelope(&role, &[&key]) -> Vec<u8>` writes a signed file;
//!   `add_signatures(bytes, &[&key])` adds signatures (offline root signing);
//!   `hashes_of(bytes)` gives sha256+sha512 for `MetaFile`/`TargetFile`;
//!   `Envelope::parse` + `Envelope::verify` + `parse_signed` check a file.
//! - [`pattern::encode_name`] — how role names and target paths become file names.
//!
//! # API for the device (`engine`)
//!
//! - [`client::TufClient::load(metadata_dir, clock, limits)`](client::TufClient::load) —
//!   reload and re-verify the trusted metadata kept on disk (the device image installs
//!   the initial `root.json` there; [`client::TufClient::init`] does it from bytes).
//! - `client.refresh(&dyn ByteSource).await` — root rotation, timestamp, snapshot, top-level
//!   targets. The source serves the *metadata directory* (`1.root.json`, `timestamp.json`…);
//!   wrap a whole-repository source with [`source::Subdir`] (`metadata/`).
//! - `client.target(&dyn ByteSource, path).await -> VerifiedTarget` — delegation search.
//! - `client.fetch_target_to(&dyn ByteSource, &VerifiedTarget, &mut AsyncWrite)`,
//!   `fetch_target_bytes`, `download_target_file` — streaming download checked against
//!   length and hashes; the source serves the *targets directory*.
//! - [`client::VerifiedTarget`] — only this module can build one.
//! - Errors: [`TrustError`], one variant per failure naming the role or file.

pub mod canonical;
pub mod client;
mod error;
mod hashing;
pub mod keys;
pub mod metadata;
mod offline;
pub mod pattern;
pub mod source;

pub use client::{
    ExpiredLog, ExpiredRole, Limits, ListedTarget, Listing, TufClient, VerifiedTarget,
};
pub use error::TrustError;
pub use keys::{KeyScheme, PublicKey, Signature, SigningKey};
pub use offline::{OfflineConfig, RawOffline};
