//! All command-line code: `patchd` itself ([`patchd`]), `patchctl` ([`ctl`]), `patchd
//! boot-check` ([`bootcheck`]), `patchd boot` ([`boot`]), `patchd audit verify`
//! ([`audit`]), `patchd sysext` ([`sysext`]), `patchd init` ([`init`]), `patchd --check-config` ([`preflight`]), the
//! patchd.toml(5) page ([`config_page`]) and the generation of man pages and shell completions ([`docgen`]). The
//! binaries in `src/bin/` only call in here (`patchpub`'s command line is still in its
//! binary, except `patchpub rollout`: [`rollout`]).
//! Layer 8 (shared/DESIGN.md), beside the daemon's composition root: a CLI may use any
//! room below, and nothing below knows a CLI exists.

pub mod audit;
pub mod boot;
pub mod bootcheck;
pub mod config_page;
pub mod ctl;
pub mod docgen;
pub mod init;
pub mod manual;
pub mod patchd;
pub mod preflight;
pub mod rollout;
pub mod sysext;
