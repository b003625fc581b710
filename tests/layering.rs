//! The layering of shared/DESIGN.md, checked on the source: a room (a top-level module
//! under src/) may use only rooms of a lower layer or of its own layer, and the rooms
//! of one layer must not use each other in a circle. `crate::ROOM` paths are read from
//! every file (tests inside a file included: test code that reaches up is still a tie
//! that runs up).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first (DESIGN "Layers"): a room's index is its floor.
const LAYERS: &[&[&str]] = &[
    &[
        "names",
        "paths",
        "clock",
        "fsutil",
        "failpoint",
        "logging",
        "duration",
        "sigpipe",
        "setting",
    ],
    &["fetch"],
    &[
        "trust", "slot", "boot", "audit", "health", "metrics", "fleet",
    ],
    &[
        "manifest",
        "delta",
        "policy",
        "publish",
        "sourceconf",
        "component",
    ],
    &["config"],
    &["engine", "inventory", "repair", "source"],
    &["dbus"],
    &["daemon", "cli", "demo", "testkit"],
];

fn layer_of(room: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&room))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The room of a file under src/: `src/engine/runner.rs` → `engine`, `src/clock.rs` →
/// `clock`; `None` for lib.rs and the binaries.
fn room_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    if first == "bin" || first == "lib.rs" {
        return None;
    }
    Some(first.trim_end_matches(".rs").to_owned())
}

/// Every `crate::NAME` in `text`, comments left out.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::{a, b}` lists several rooms.
            if name.is_empty() && after.starts_with('{') {
                let inner = after[1..].split('}').next().unwrap_or("");
                for part in inner.split(',') {
                    let n: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !n.is_empty() {
                        out.insert(n);
                    }
                }
            } else if !name.is_empty() {
                out.insert(name);
            }
            rest = after;
        }
    }
    out
}

#[test]
fn imports_only_point_down_the_layers_and_rooms_form_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut upward = Vec::new();
    let mut unknown = BTreeSet::new();
    for f in &files {
        let Some(room) = room_of(&src, f) else {
            continue;
        };
        let Some(from) = layer_of(&room) else {
            unknown.insert(room.clone());
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for target in crate_refs(&text) {
            if target == room {
                continue;
            }
            let Some(to) = layer_of(&target) else {
                // A macro or item defined at the crate root, not a room.
                continue;
            };
            edges
                .entry(room.clone())
                .or_default()
                .insert(target.clone());
            if to > from {
                upward.push(format!(
                    "{} (room {room}, layer {}) uses crate::{target} (layer {})",
                    f.strip_prefix(&src).unwrap().display(),
                    from + 1,
                    to + 1
                ));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "rooms missing from the layer list (add them to LAYERS and DESIGN): {unknown:?}"
    );
    assert!(
        upward.is_empty(),
        "imports that run back up:\n  {}",
        upward.join("\n  ")
    );
    // Same-layer ties must not form a circle (DFS for a back edge).
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.to_owned());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_owned());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        if let Some(c) = visit(n, &edges, &mut Vec::new(), &mut done) {
            panic!("rooms that use each other in a circle: {}", c.join(" -> "));
        }
    }
}

#[test]
fn the_reader_sees_crate_paths() {
    let refs = crate_refs(
        "use crate::{clock::Clock, fsutil};\nlet x = crate::engine::Foo; // crate::dbus\n",
    );
    assert_eq!(
        refs,
        ["clock", "engine", "fsutil"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}
