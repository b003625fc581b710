//! D-Bus service `org.patchd.Patchd1` and the typed client proxy used by `patchctl`.
//!
//! The service is written against [`ManagerBackend`], a small trait of its own, so it can
//! be driven by the lifecycle engine (through an adapter) or by the in-memory fake of
//! `testkit::fake` in tests. Its methods are declared once, in [`methods`]. Everything
//! that crosses the bus is checked here first: argument sizes and syntax ([`limits`],
//! enforced by [`checked`]), polkit authorization for every mutating call ([`authz`]),
//! one mutating call at a time, and secrets scrubbed from every answer ([`redact`]).

pub mod authz;
pub mod backend;
pub mod checked;
pub mod degraded;
pub mod engine_backend;
pub mod error;
pub mod limits;
pub mod methods;
pub mod proxy;
pub mod redact;
pub mod service;
pub mod types;

pub use authz::AuthMode;
pub use backend::{BackendError, BoxFuture, ManagerBackend};
pub use error::Error;
pub use service::{serve, Bus, Service, ServiceError, ServiceOptions};
pub use types::{
    AvailableView, Caller, DeniedCall, HistoryFilter, HoldRequest, HoldView, ProgressView,
    SlotView, StatusView,
};

/// Well-known bus name the daemon owns on the system bus.
pub const BUS_NAME: &str = "org.patchd.Patchd1";
/// The one object the daemon exports.
pub const OBJECT_PATH: &str = "/org/patchd/Patchd1";
/// The manager interface on [`OBJECT_PATH`].
pub const INTERFACE: &str = "org.patchd.Patchd1.Manager";
/// Checked-in introspection XML of [`INTERFACE`] (kept in sync by `tests/dbus_introspection.rs`).
pub const INTROSPECTION_XML_PATH: &str = "packaging/dbus/org.patchd.Patchd1.Manager.xml";
