//! Any bytes through the release manifest parser and the release-summary reader: errors,
//! never a panic; whatever parses must serialize and parse back to the same manifest.
#![no_main]
use libfuzzer_sys::fuzz_target;
use patchd::manifest::{Manifest, ReleaseSummary};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::from_slice(data) {
        let again = Manifest::from_slice(&m.to_vec().expect("valid manifest serializes"))
            .expect("serialized manifest parses");
        assert_eq!(m, again);
        let _ = ReleaseSummary::of(&m).mismatches(&m);
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = ReleaseSummary::from_custom(Some(&v));
    }
});
