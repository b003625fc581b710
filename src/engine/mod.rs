//! The lifecycle state machine: one persisted state, one transition at a time.
