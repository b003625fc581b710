//! `patchctl`: the admin command line over D-Bus.
