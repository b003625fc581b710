//! One audit record and the entry a caller builds to append one.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev` of the very first record.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Event name of the record written after a torn (incomplete) line.
pub const TORN_RECORD_EVENT: &str = "audit.torn-record";

/// Event name of the record the daemon writes at start-up when the log holds records
/// after the one its head file names (fields `head_seq`, `head_hash`, `lag_seqs`,
/// `lag_hashes`).
pub const HEAD_LAG_EVENT: &str = "audit_head_lag";

/// Who caused the event: an admin (their uid, from D-Bus credentials), the policy engine
/// acting by itself, or the daemon's own bookkeeping. Serialized as `"uid:1000"`,
/// `"policy"`, `"daemon"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Actor {
    Uid(u32),
    Policy,
    Daemon,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Uid(u) => write!(f, "uid:{u}"),
            Actor::Policy => f.write_str("policy"),
            Actor::Daemon => f.write_str("daemon"),
        }
    }
}

impl FromStr for Actor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "policy" => Ok(Actor::Policy),
            "daemon" => Ok(Actor::Daemon),
            _ => s
                .strip_prefix("uid:")
                .and_then(|u| u.parse().ok())
                .map(Actor::Uid)
                .ok_or_else(|| format!("invalid actor {s:?}: expected uid:N, policy or daemon")),
        }
    }
}

impl Serialize for Actor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One line of the audit log. Field order is the serialization order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    pub time: Timestamp,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    pub actor: Actor,
    pub reason: String,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// sha256 (hex) of the previous record's line.
    pub prev: String,
}

/// What a caller wants recorded; `seq`, `time` and `prev` are filled in by the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub event: String,
    pub release: Option<String>,
    pub slot: Option<String>,
    pub actor: Actor,
    pub reason: String,
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Entry {
    pub fn new(event: impl Into<String>, actor: Actor, reason: impl Into<String>) -> Self {
        Self {
            event: event.into(),
            release: None,
            slot: None,
            actor,
            reason: reason.into(),
            extra: serde_json::Map::new(),
        }
    }

    pub fn release(mut self, release: impl Into<String>) -> Self {
        self.release = Some(release.into());
        self
    }

    pub fn slot(mut self, slot: impl fmt::Display) -> Self {
        self.slot = Some(slot.to_string());
        self
    }

    /// Add one extra field (anything serde_json can represent).
    pub fn field(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }
}

pub(crate) fn line_hash(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_round_trip() {
        for a in [
            Actor::Uid(0),
            Actor::Uid(1000),
            Actor::Policy,
            Actor::Daemon,
        ] {
            let j = serde_json::to_string(&a).unwrap();
            assert_eq!(serde_json::from_str::<Actor>(&j).unwrap(), a);
        }
        for bad in ["\"root\"", "\"uid:\"", "\"uid:-1\"", "7"] {
            assert!(
                serde_json::from_str::<Actor>(bad).is_err(),
                "{bad} accepted"
            );
        }
    }
}
