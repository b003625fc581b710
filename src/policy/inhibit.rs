//! Reboot inhibitors (placeholder).
