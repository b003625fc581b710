//! The release manifest (a TUF target): what a release is and how to install it.
//!
//! [`Manifest`] is the strictly parsed document; [`VerifiedManifest`] can only be built
//! from bytes that matched a TUF-verified target, so code that installs takes the latter.
//! [`discover`] finds the newest release for a device from signed targets metadata plus
//! one manifest download.

mod component;
mod component_check;
mod discovery;
mod eligibility;
mod gate;
mod packages;
mod parse;
mod strict_json;
mod summary;
mod types;
mod verified;

pub use component::{install_order, Component, Method as ComponentMethod, Rollback};
pub use discovery::{
    candidates, discover, fetch_verified, fetch_verified_reusing, list_candidates, Candidate,
    Discovery, DiscoveryError, Listing, Refused,
};
pub use eligibility::{check as check_eligibility, DeviceProfile, Ineligible};
pub use gate::{RolloutGate, GATE_KEY};
pub use packages::{PackageChange, PackageStanding};
pub use parse::check_name;
pub use parse::{check_target_path, ManifestError, MAX_DEPTH, MAX_MANIFEST_LEN};
pub use summary::{ReleaseSummary, CUSTOM_KEY};
pub use types::{
    parse_release_target_path, release_target_path, schema_for, ChunksRef, Compression, DeltaRef,
    Image, ImageFormat, Kind, Manifest, Rollout, RolloutStage, Severity, MIN_SCHEMA_VERSION,
    SCHEMA_VERSION,
};
pub use verified::VerifiedManifest;
