//! `patchpub add` defaults, as documented in docs/delta.md and its `--help`: the chunk
//! index (dynamic deltas) is published unless `--no-chunk-index`; `--delta-from`
//! publishes a static delta; the default level is patchd's `delta::DEFAULT_LEVEL`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn patchpub(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_patchpub"))
        .arg("--repo")
        .arg(dir.join("repo"))
        .arg("--keys")
        .arg(dir.join("keys"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "patchpub {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn image(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut data: Vec<u8> = (0..600_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as u8
        })
        .collect();
    data[300_000..300_008].copy_from_slice(&seed.to_le_bytes());
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Names of the files of release `version` in the repository's targets.
fn release_files(dir: &Path, version: &str) -> Vec<String> {
    let d = dir.join("repo/targets/releases/acme").join(version);
    let mut names: Vec<String> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn has(names: &[String], suffix: &str) -> bool {
    names.iter().any(|n| n.ends_with(suffix))
}

fn add(dir: &Path, version: &str, img: &Path, extra: &[&str]) {
    let mut args = vec![
        "add",
        "--product",
        "acme",
        "--version",
        version,
        "--image",
        img.to_str().unwrap(),
        "--summary",
        "test release",
    ];
    args.extend_from_slice(extra);
    patchpub(dir, &args);
}

#[test]
fn add_publishes_the_chunk_index_by_default_and_deltas_when_asked() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    patchpub(dir, &["init"]);
    add(dir, "1.0.0", &image(dir, "v1.img", 1), &[]);
    let v1 = release_files(dir, "1.0.0");
    assert!(has(&v1, ".os.rootfs.chunks.idx"), "{v1:?}");
    assert!(has(&v1, ".os.rootfs.chunks.store"), "{v1:?}");
    assert!(!v1.iter().any(|n| n.ends_with(".delta")), "{v1:?}");

    add(
        dir,
        "2.0.0",
        &image(dir, "v2.img", 2),
        &["--delta-from", "1.0.0"],
    );
    let v2 = release_files(dir, "2.0.0");
    assert!(has(&v2, ".os.rootfs.from-1.0.0.delta"), "{v2:?}");
    assert!(has(&v2, ".os.rootfs.chunks.idx"), "{v2:?}");

    add(
        dir,
        "3.0.0",
        &image(dir, "v3.img", 3),
        &["--no-chunk-index", "--delta-level", "3"],
    );
    let v3 = release_files(dir, "3.0.0");
    assert!(!v3.iter().any(|n| n.contains(".chunks.")), "{v3:?}");
    patchpub(dir, &["verify"]);
}

#[test]
fn add_help_documents_the_defaults() {
    let t = tempfile::tempdir().unwrap();
    let help = patchpub(t.path(), &["add", "--help"]);
    assert!(help.contains("--no-chunk-index"), "{help}");
    assert!(
        help.contains(&format!("[default: {}]", patchd::delta::DEFAULT_LEVEL)),
        "{help}"
    );
    assert!(help.contains("docs/delta.md"), "{help}");
}
