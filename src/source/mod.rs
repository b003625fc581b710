//! Where releases come from, as the engine's [`Updates`](crate::engine::ports::Updates)
//! port: the signed TUF repository (`repository`: refresh, discovery, verified manifests,
//! staging into the slot backends) and its deltas (`delta`: static and dynamic deltas
//! against what the device already holds), and offline bundles (`bundle`: a bundle
//! passed as a descriptor, copied into the daemon's directory and read like the
//! repository).
//!
//! A room of its own beside the engine (layer 6): it implements the engine's port over
//! `trust`, `manifest`, `slot` and `delta`, and the engine knows only the port. Another
//! source of patches is another file here; the system's apt is `apt`.

pub mod apt;
pub mod bundle;
mod delta;
pub mod repository;

pub use apt::AptUpdates;
pub use bundle::BundleOpener;
pub use repository::{RepoUpdates, ROOTFS_CLASS};
