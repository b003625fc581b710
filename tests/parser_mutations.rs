//! The fuzz targets' properties (fuzz/, run with cargo-fuzz on nightly) as a stable test
//! over mutations of real, valid input: random byte flips, truncations and splices of
//! the metadata and the manifest a publisher writes. None may panic; mutated metadata
//! that still verifies must mean exactly what the original meant (a change outside the
//! signed content, e.g. one blank swapped for another); a manifest that parses must
//! serialize and parse back to itself.

use std::path::Path;

use patchd::manifest::Manifest;
use patchd::publish::{AddRelease, ImageInput, InitOptions, Repo};
use patchd::trust::canonical::{encode, parse_strict};
use patchd::trust::metadata::{parse_signed, Envelope, Root, Snapshot, Targets, TimestampMeta};
use patchd::trust::pattern::{encode_name, path_matches};
use proptest::prelude::*;

/// Valid input: every metadata file of a small repository, and one release manifest.
struct Corpus {
    root: Vec<u8>,
    metadata: Vec<Vec<u8>>,
    manifest: Vec<u8>,
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn corpus() -> &'static Corpus {
    static C: std::sync::OnceLock<Corpus> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        let top = tempfile::tempdir().unwrap();
        let repo = Repo::init(
            top.path().join("repo"),
            &InitOptions::new(top.path().join("keys")),
        )
        .unwrap();
        let img = top.path().join("img");
        std::fs::write(&img, vec![7u8; 4096]).unwrap();
        let mut rel = AddRelease::new("box", "1.0.0".parse().unwrap(), &img);
        rel.images = vec![ImageInput::rootfs(&img)];
        rel.cves = vec!["CVE-2026-1234".into()];
        repo.add_release(&rel).unwrap();
        let mut files = Vec::new();
        walk(&top.path().join("repo"), &mut files);
        let read = |p: &std::path::PathBuf| std::fs::read(p).unwrap();
        let metadata: Vec<Vec<u8>> = files
            .iter()
            .filter(|p| p.starts_with(top.path().join("repo/metadata")))
            .map(read)
            .collect();
        let manifest = files
            .iter()
            .find(|p| p.to_string_lossy().ends_with("manifest.json"))
            .map(read)
            .expect("a manifest");
        Corpus {
            root: repo.root_bytes().unwrap(),
            metadata,
            manifest,
        }
    })
}

/// What fuzz/fuzz_targets/metadata_parse.rs does with its input, plus the property that
/// a root that verifies against its own keys means the original root.
fn metadata_properties(bytes: &[u8], original_root: &[u8]) {
    let Ok(env) = Envelope::parse(bytes, 32) else {
        return;
    };
    if let Ok(root) = parse_signed::<Root>(&env.signed) {
        if let Some(r) = root.roles.get("root") {
            // The keys must be the original's: keys from the mutated file could be an
            // attacker's own.
            let orig = Envelope::parse(original_root, 32).unwrap();
            let trusted = parse_signed::<Root>(&orig.signed).unwrap();
            let tr = trusted.roles.get("root").unwrap();
            if env.verify(&trusted.keys, &tr.keyids, tr.threshold).is_ok() {
                assert_eq!(
                    encode(&env.signed).unwrap(),
                    encode(&orig.signed).unwrap(),
                    "a changed root verified"
                );
            }
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
            }
        }
    }
    if let Ok(v) = parse_strict(bytes, 64) {
        if let Ok(enc) = encode(&v) {
            // OLPC canonical JSON escapes only `"` and `\`: a string holding a control
            // character (written escaped in the input) comes out raw, which strict JSON
            // refuses; that output is hashed and signed, never parsed again. Whatever
            // does parse back must be a fixed point.
            if let Ok(back) = parse_strict(&enc, 64) {
                assert_eq!(encode(&back).unwrap(), enc, "not a fixed point");
            }
        }
    }
}

fn manifest_properties(bytes: &[u8]) {
    if let Ok(m) = Manifest::from_slice(bytes) {
        let again = Manifest::from_slice(&m.to_vec().expect("a parsed manifest serializes"))
            .expect("a serialized manifest parses");
        assert_eq!(m, again);
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Vec<(usize, u8)>),
    Truncate(usize),
    Splice {
        at: usize,
        other: usize,
        from: usize,
    },
}

fn apply(m: &Mutation, base: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    match m {
        Mutation::Flip(flips) => {
            let mut b = base.to_vec();
            for (i, x) in flips {
                if !b.is_empty() {
                    let i = i % b.len();
                    b[i] ^= x.max(&1);
                }
            }
            b
        }
        Mutation::Truncate(n) => base[..n % (base.len() + 1)].to_vec(),
        Mutation::Splice { at, other, from } => {
            let o = &others[other % others.len()];
            let at = at % (base.len() + 1);
            let from = from % (o.len() + 1);
            let mut b = base[..at].to_vec();
            b.extend_from_slice(&o[from..]);
            b
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        prop::collection::vec((any::<usize>(), any::<u8>()), 1..4).prop_map(Mutation::Flip),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(at, other, from)| Mutation::Splice { at, other, from }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn mutated_metadata_never_panics_and_never_verifies_changed(
        which in any::<usize>(),
        m in mutation(),
    ) {
        let c = corpus();
        let base = &c.metadata[which % c.metadata.len()];
        let bytes = apply(&m, base, &c.metadata);
        metadata_properties(&bytes, &c.root);
        let root = apply(&m, &c.root, &c.metadata);
        metadata_properties(&root, &c.root);
    }

    #[test]
    fn mutated_manifests_never_panic_and_round_trip(m in mutation()) {
        let c = corpus();
        let others = vec![c.manifest.clone(), c.root.clone()];
        manifest_properties(&apply(&m, &c.manifest, &others));
    }

    #[test]
    fn patterns_and_names_never_panic(pattern in ".{0,40}", target in ".{0,60}") {
        let _ = path_matches(&pattern, &target);
        let enc = encode_name(&target);
        prop_assert!(!enc.contains('/') && enc != "." && enc != "..");
    }
}

/// The mutations reach the interesting cases: some mutated roots still parse (the
/// "verifies only if unchanged" property is exercised, not vacuous).
#[test]
fn some_mutations_still_parse() {
    let c = corpus();
    let parsed = (0..200usize)
        .filter(|i| {
            let b = apply(&Mutation::Flip(vec![(i * 7919, 1)]), &c.root, &c.metadata);
            Envelope::parse(&b, 32).is_ok()
        })
        .count();
    assert!(parsed > 10, "only {parsed} of 200 one-bit flips parse");
}
