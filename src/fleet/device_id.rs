//! The id this device gives the fleet lock service: derived from the machine id the way
//! systemd's `sd_id128_get_machine_app_specific()` does (and Zincati, for the same
//! protocol), so it is stable across boots and reinstalls of patchd but does not hand
//! the raw machine id (a local secret, see machine-id(5)) to a network service.

use std::path::Path;

use ring::hmac;

/// Our application id for the derivation. patchd's own (generated once, random) rather
/// than Zincati's: systemd asks every application for its own id so that two programs'
/// derived ids cannot be correlated, and a device running both must not look like one
/// client to a shared lock service. Changing it changes every device's lock id.
pub const APP_ID: [u8; 16] = [
    0x5b, 0x2f, 0x8e, 0x31, 0xc4, 0x7a, 0x4d, 0x0e, 0x9a, 0x61, 0x3c, 0xd2, 0x75, 0xe8, 0x04, 0xb9,
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    #[error("cannot read machine id {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("machine id {path} is not 32 hex digits: {found:?}")]
    Malformed { path: String, found: String },
}

/// The app-specific id from a machine id as written in /etc/machine-id (32 hex digits):
/// HMAC-SHA256 keyed with the machine id's 16 bytes over [`APP_ID`], the first 16 bytes
/// marked as a version 4 (random) UUID, written as 32 lowercase hex digits like
/// `sd_id128_to_string()`.
pub fn from_machine_id(machine_id: &str) -> Option<String> {
    let text = machine_id.trim();
    if text.len() != 32 {
        return None;
    }
    let key_bytes = hex::decode(text).ok()?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key_bytes);
    let tag = hmac::sign(&key, &APP_ID);
    let mut id = [0u8; 16];
    id.copy_from_slice(&tag.as_ref()[..16]);
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    Some(hex::encode(id))
}

/// The device id from the machine id file (normally `/etc/machine-id`).
pub fn from_file(path: &Path) -> Result<String, DeviceIdError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| DeviceIdError::Read {
        path: shown.clone(),
        detail: e.to_string(),
    })?;
    from_machine_id(&text).ok_or_else(|| DeviceIdError::Malformed {
        path: shown,
        found: text.trim().chars().take(64).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_a_version_4_uuid_and_rejects_garbage() {
        let id = from_machine_id("0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(&id[12..13], "4");
        assert!(matches!(&id[16..17], "8" | "9" | "a" | "b"), "{id}");
        assert_eq!(from_machine_id("not-a-machine-id"), None);
        assert_eq!(from_machine_id(&"zz".repeat(16)), None);
    }
}
