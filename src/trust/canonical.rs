//! Canonical JSON as TUF signers produce it (securesystemslib's `encode_canonical`, the
//! OLPC form): object keys sorted by code point, no whitespace, strings escape only `"`
//! and `\` (every other character, control characters included, is written raw as
//! UTF-8), integers only. A float cannot be signed: python-tuf refuses it too.
//!
//! Parsing goes through [`parse_strict`], which rejects what serde_json would accept
//! silently: duplicate object keys (the last one would win, so a signature could cover
//! a value the parser never shows) and nesting deeper than a caller-given bound.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CanonicalError {
    #[error("number {0} is not an integer; canonical JSON has integers only")]
    NotInteger(String),
    #[error("invalid JSON: {0}")]
    Syntax(String),
}

/// Encode `v` in canonical form.
pub fn encode(v: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write_value(v, &mut out)?;
    Ok(out)
}

fn write_value(v: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out)?,
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Sorted explicitly: another crate in the build may enable serde_json's
            // `preserve_order`, which would make `Map` iterate in insertion order.
            // Byte order of UTF-8 equals code point order, which is what Python sorts by.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_value(val, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_number(n: &Number, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    if let Some(i) = n.as_i64() {
        out.extend_from_slice(i.to_string().as_bytes());
    } else if let Some(u) = n.as_u64() {
        out.extend_from_slice(u.to_string().as_bytes());
    } else {
        return Err(CanonicalError::NotInteger(n.to_string()));
    }
    Ok(())
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for b in s.bytes() {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Parse JSON, rejecting duplicate keys and nesting deeper than `max_depth`
/// (arrays and objects each count one level).
pub fn parse_strict(bytes: &[u8], max_depth: usize) -> Result<Value, CanonicalError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = StrictSeed {
        depth_left: max_depth,
    }
    .deserialize(&mut de)
    .map_err(|e| CanonicalError::Syntax(e.to_string()))?;
    de.end()
        .map_err(|e| CanonicalError::Syntax(e.to_string()))?;
    Ok(v)
}

#[derive(Clone, Copy)]
struct StrictSeed {
    depth_left: usize,
}

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl StrictSeed {
    fn nested<E: serde::de::Error>(self) -> Result<StrictSeed, E> {
        match self.depth_left.checked_sub(1) {
            Some(depth_left) => Ok(StrictSeed { depth_left }),
            None => Err(E::custom("JSON nested too deeply")),
        }
    }
}

impl<'de> Visitor<'de> for StrictSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        // Kept (so unsigned parts of a document may hold floats); canonical encoding
        // refuses them, so a signed float never verifies.
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        use serde::de::Error;
        let inner = self.nested()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(A::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let v = map.next_value_seed(inner)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_securesystemslib() {
        // Expected bytes from securesystemslib.formats.encode_canonical.
        let v = json!({"b": [1, -2, true, null], "a": "q\"\\\n\u{e9}", "A": {}});
        assert_eq!(
            encode(&v).unwrap(),
            "{\"A\":{},\"a\":\"q\\\"\\\\\n\u{e9}\",\"b\":[1,-2,true,null]}".as_bytes()
        );
        assert!(encode(&json!({"x": 1.5})).is_err());
    }

    #[test]
    fn strict_parse_rejects_duplicates_and_depth() {
        assert!(parse_strict(br#"{"a":1,"a":2}"#, 8).is_err());
        assert!(parse_strict(br#"[[[1]]]"#, 2).is_err());
        assert!(parse_strict(br#"[[[1]]]"#, 3).is_ok());
        assert!(parse_strict(br#"{"a":1} x"#, 3).is_err());
    }
}
