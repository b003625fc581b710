//! A pre-pass over JSON bytes that serde's derive cannot do for us: reject duplicate
//! object keys (serde_json keeps the last one silently, and a derived struct only notices
//! duplicates of its own fields, not inside maps) and bound nesting depth.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;

/// What the pre-pass found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// `key` appears twice in the object at `at` (a JSON-pointer-like path).
    DuplicateKey { at: String, key: String },
    /// Nesting deeper than allowed at `at`.
    TooDeep { at: String, limit: usize },
}

/// Walk `bytes` as JSON; `Ok(Ok(()))` when well-formed without duplicates, `Ok(Err(p))`
/// for a structural problem, `Err` for malformed JSON.
pub fn check(bytes: &[u8], max_depth: usize) -> Result<Result<(), Problem>, serde_json::Error> {
    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let walk = Walk {
        depth: 0,
        max_depth,
        at: String::new(),
        found: &found,
    };
    let res = walk.deserialize(&mut de).and_then(|()| de.end());
    if let Some(p) = found.into_inner() {
        return Ok(Err(p));
    }
    res.map(Ok)
}

struct Walk<'a> {
    depth: usize,
    max_depth: usize,
    at: String,
    found: &'a RefCell<Option<Problem>>,
}

impl Walk<'_> {
    fn child(&self, seg: &str) -> Walk<'_> {
        Walk {
            depth: self.depth + 1,
            max_depth: self.max_depth,
            at: format!("{}/{}", self.at, seg),
            found: self.found,
        }
    }

    fn fail<E: serde::de::Error>(&self, p: Problem) -> E {
        let msg = format!("{p:?}");
        *self.found.borrow_mut() = Some(p);
        E::custom(msg)
    }

    fn enter<E: serde::de::Error>(&self) -> Result<(), E> {
        if self.depth >= self.max_depth {
            return Err(self.fail(Problem::TooDeep {
                at: self.at.clone(),
                limit: self.max_depth,
            }));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.enter()?;
        let mut i = 0usize;
        while seq.next_element_seed(self.child(&i.to_string()))?.is_some() {
            i += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.enter()?;
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(self.fail(Problem::DuplicateKey {
                    at: if self.at.is_empty() {
                        "/".into()
                    } else {
                        self.at.clone()
                    },
                    key,
                }));
            }
            map.next_value_seed(self.child(&key))?;
            seen.insert(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_found_at_any_depth() {
        assert_eq!(check(br#"{"a":1,"b":[{"c":1}]}"#, 8).unwrap(), Ok(()));
        assert_eq!(
            check(br#"{"a":1,"a":2}"#, 8).unwrap(),
            Err(Problem::DuplicateKey {
                at: "/".into(),
                key: "a".into()
            })
        );
        assert_eq!(
            check(br#"{"x":[{"c":1,"c":1}]}"#, 8).unwrap(),
            Err(Problem::DuplicateKey {
                at: "/x/0".into(),
                key: "c".into()
            })
        );
    }

    #[test]
    fn escaped_duplicates_are_duplicates() {
        // "\u0061" is "a": the check must compare decoded keys.
        assert!(check(br#"{"a":1,"\u0061":2}"#, 8).unwrap().is_err());
    }

    #[test]
    fn depth_is_bounded() {
        let deep = format!("{}{}", "[".repeat(20), "]".repeat(20));
        assert!(matches!(
            check(deep.as_bytes(), 10).unwrap(),
            Err(Problem::TooDeep { .. })
        ));
        assert_eq!(check(deep.as_bytes(), 30).unwrap(), Ok(()));
    }

    #[test]
    fn malformed_and_trailing_bytes_are_errors() {
        assert!(check(b"{", 8).is_err());
        assert!(check(b"{} x", 8).is_err());
    }
}
