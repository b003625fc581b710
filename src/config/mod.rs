//! Configuration: `/etc/patchd/patchd.toml` plus drop-ins; raw → merged → validated.
