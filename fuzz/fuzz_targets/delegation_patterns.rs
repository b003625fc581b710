//! Path-pattern matching and name encoding on arbitrary input: no panic, no blow-up,
//! and encoded names are always one safe path component.
#![no_main]
use libfuzzer_sys::fuzz_target;
use patchd::trust::pattern::{encode_name, path_matches};

fuzz_target!(|data: (&str, &str)| {
    let (pattern, target) = data;
    let _ = path_matches(pattern, target);
    let enc = encode_name(target);
    assert!(!enc.contains('/') && enc != "." && enc != "..");
});
