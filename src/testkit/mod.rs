//! What only tests use: the in-memory device the engine is tested on ([`engine`]), the
//! in-memory stand-in for the engine behind the D-Bus service ([`fake`]) and a real
//! etcd cluster on 127.0.0.1 for the reboot lock ([`etcd_cluster`]). Built only
//! with the `testkit` feature, which the tests switch on through the package's
//! dev-dependency on itself (Cargo.toml), so `cargo build --release` leaves it out.
//! Layer 8 (shared/DESIGN.md): it builds on the engine and the D-Bus room.

pub mod engine;
pub mod etcd_cluster;
pub mod fake;
