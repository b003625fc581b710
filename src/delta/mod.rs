//! Delta updates: static deltas between known releases and chunk-index dynamic deltas.
