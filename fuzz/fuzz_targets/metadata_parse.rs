//! Any bytes through the envelope parser, the signature check and every role parser:
//! must return errors, never panic, loop or exhaust the stack.
#![no_main]
use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use patchd::trust::metadata::{parse_signed, Envelope, Root, Snapshot, Targets, TimestampMeta};

fuzz_target!(|data: &[u8]| {
    let Ok(env) = Envelope::parse(data, 32) else {
        return;
    };
    if let Ok(root) = parse_signed::<Root>(&env.signed) {
        if let Some(r) = root.roles.get("root") {
            let _ = env.verify(&root.keys, &r.keyids, r.threshold);
        }
        for k in root.keys.values() {
            let _ = k.keyid();
            let _ = k.identity();
        }
    }
    let _ = parse_signed::<TimestampMeta>(&env.signed);
    let _ = parse_signed::<Snapshot>(&env.signed);
    if let Ok(t) = parse_signed::<Targets>(&env.signed) {
        if let Some(d) = &t.delegations {
            let _ = env.verify(&d.keys, &[], 1);
            for path in t.targets.keys() {
                for r in d.roles.iter().flatten() {
                    let _ = r.matches(path);
                }
                if let Some(s) = &d.succinct_roles {
                    let _ = s.role_for_target(path);
                }
            }
        }
    }
    let _ = env.verify(&BTreeMap::new(), &[], 1);
});
