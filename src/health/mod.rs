//! Health checks after the first boot of a new slot.

pub mod spec;

pub use spec::{valid_unit_name, CommandCheck, HttpProbe, HttpUrl};
