//! Canonical JSON properties: round trip, key order, escapes.
use patchd::trust::canonical::{encode, parse_strict};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| Value::Number(i.into())),
        any::<u64>().prop_map(|u| Value::Number(u.into())),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #[test]
    fn round_trip(v in json_value()) {
        let bytes = encode(&v).unwrap();
        let back = parse_strict(&bytes, 64);
        // Raw control characters are not valid JSON for strict parsers, so only
        // documents without them must round-trip.
        let has_control = String::from_utf8_lossy(&bytes).chars().any(|c| c.is_control());
        if !has_control {
            prop_assert_eq!(back.unwrap(), v.clone());
        }
        // Encoding is a fixed point.
        if let Ok(back) = parse_strict(&bytes, 64) {
            prop_assert_eq!(encode(&back).unwrap(), bytes);
        }
    }

    #[test]
    fn keys_sorted_by_code_point(keys in prop::collection::btree_set("[a-zA-Z0-9é€😀_]{0,6}", 0..8)) {
        let m: Map<String, Value> = keys.iter().rev().map(|k| (k.clone(), Value::Null)).collect();
        let bytes = encode(&Value::Object(m)).unwrap();
        let s = String::from_utf8(bytes).unwrap();
        let mut pos = 0;
        let mut sorted: Vec<&String> = keys.iter().collect();
        sorted.sort_by(|a, b| a.chars().cmp(b.chars()));
        for k in sorted {
            let needle = format!("\"{k}\":null");
            let at = s[pos..].find(&needle).map(|i| i + pos);
            prop_assert!(at.is_some(), "{} missing or out of order in {}", k, s);
            pos = at.unwrap() + needle.len();
        }
        prop_assert!(!s.contains(' '));
    }

    #[test]
    fn only_quote_and_backslash_escaped(s in any::<String>()) {
        let bytes = encode(&Value::String(s.clone())).unwrap();
        let mut expected = String::from("\"");
        for c in s.chars() {
            if c == '"' || c == '\\' {
                expected.push('\\');
            }
            expected.push(c);
        }
        expected.push('"');
        prop_assert_eq!(String::from_utf8(bytes).unwrap(), expected);
    }
}

#[test]
fn floats_are_refused() {
    assert!(encode(&serde_json::json!({"a": 0.5})).is_err());
    assert!(encode(&serde_json::json!([1e300])).is_err());
}
