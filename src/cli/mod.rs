//! All command-line code: `patchd` itself ([`patchd`]), `patchctl` ([`ctl`]), `patchd
//! boot-check` ([`bootcheck`]), `patchd boot` ([`boot`]), `patchd audit verify`
//! ([`audit`]) and the generation of man pages and shell completions ([`docgen`]). The
//! binaries in `src/bin/` only call in here (`patchpub`'s command line is still in its
//! binary).
//! Layer 8 (shared/DESIGN.md), beside the daemon's composition root: a CLI may use any
//! room below, and nothing below knows a CLI exists.

pub mod audit;
pub mod boot;
pub mod bootcheck;
pub mod ctl;
pub mod docgen;
pub mod manual;
pub mod patchd;
