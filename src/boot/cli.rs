//! `patchd boot …`: the low-level command for integrators and rescue work.
