//! Inventory: what runs where, as one JSON document.
