//! The publisher behind `patchpub`: builds and maintains a static, TUF-signed
//! repository (`metadata/`, `targets/`) that any web server or CDN can serve.
//!
//! Programmatic use (the demo and tests):
//! ```no_run
//! # use patchd::publish::*;
//! let repo = Repo::init("/tmp/repo", &InitOptions::new("/tmp/keys"))?;
//! let rel = AddRelease::new("acme-gw", "1.1.0".parse().unwrap(), "/tmp/rootfs.img");
//! repo.add_release(&rel)?;
//! repo.withdraw("acme-gw", &"1.1.0".parse().unwrap())?;
//! # Ok::<(), PublishError>(())
//! ```

mod bundle;
mod components;
mod delegate;
mod delta;
mod error;
mod gate;
pub mod guard;
mod images;
pub mod keystore;
mod repo;
mod root;
mod spec;
mod state;
mod verify;

pub use bundle::{parse_expires, BundleReport};
pub use components::{parse_component_spec, ComponentInput};
pub use delegate::{DelegateReport, Delegation, RoleSigner};
pub use delta::DeltaOptions;
pub use error::PublishError;
pub use gate::RolloutView;
pub use repo::{
    parse_release_name, AddRelease, ImageInput, InitOptions, RefreshReport, Repo, RoleSpec,
};
pub use root::{role_keyids, sign_root, RootChanges};
pub use spec::{parse_duration_secs, parse_image_spec, parse_role_assignment, parse_stage};
pub use state::Expiries;
pub use verify::VerifyReport;

pub(crate) use root::role_from_str;

/// Parse a role name (`root`, `targets`, `snapshot`, `timestamp`).
pub fn parse_role(s: &str) -> Result<crate::trust::metadata::RoleType, PublishError> {
    role_from_str(s)
}
