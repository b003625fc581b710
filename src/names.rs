//! Validated names that may end up in file names, bootloader variables or logs.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid slot name {0:?}: use 1-32 characters of a-z, 0-9, '_' or '-'")]
pub struct InvalidSlotName(pub String);

/// A slot's name (`a`, `b`, or a btrfs snapshot name). Safe to use as a file name and as
/// part of a bootloader variable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SlotName(String);

impl SlotName {
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidSlotName> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(s))
        } else {
            Err(InvalidSlotName(s))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SlotName {
    type Error = InvalidSlotName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<SlotName> for String {
    fn from(s: SlotName) -> String {
        s.0
    }
}

impl fmt::Display for SlotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for SlotName {
    type Err = InvalidSlotName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names() {
        assert!(SlotName::new("a").is_ok());
        assert!(SlotName::new("root_b-2").is_ok());
        for bad in ["", "A", "../a", "a/b", "a b", &"x".repeat(33)] {
            assert!(SlotName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(serde_json::from_str::<SlotName>("\"../x\"").is_err());
    }
}
