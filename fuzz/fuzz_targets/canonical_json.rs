//! Canonical encoding is a fixed point: encode(parse(encode(v))) == encode(v).
#![no_main]
use libfuzzer_sys::fuzz_target;
use patchd::trust::canonical::{encode, parse_strict};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = parse_strict(data, 64) else {
        return;
    };
    let Ok(bytes) = encode(&v) else {
        return;
    };
    if let Ok(back) = parse_strict(&bytes, 64) {
        assert_eq!(encode(&back).unwrap(), bytes);
    }
});
