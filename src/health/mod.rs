//! Health checks after the first boot of a new slot.
