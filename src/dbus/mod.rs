//! D-Bus service `org.patchd.Patchd1` and the typed client proxy used by `patchctl`.
