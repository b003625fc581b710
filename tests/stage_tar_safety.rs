//! Hostile tar archives never write outside the extraction directory: `../`, absolute
//! paths, symlink escapes, hard links to outside, device nodes when not allowed.

use std::path::Path;

use patchd::slot::extract::{extract, ExtractError, ExtractPolicy};

/// Raw tar entry with exactly the given name bytes (the tar crate's builder refuses
/// hostile names, which is precisely what we need to produce).
fn entry(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    {
        let g = h.as_gnu_mut().unwrap();
        g.name[..name.len()].copy_from_slice(name.as_bytes());
        g.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat(0u8).take(pad));
}

fn finish(mut v: Vec<u8>) -> Vec<u8> {
    v.extend(std::iter::repeat(0u8).take(1024));
    v
}

fn run(archive: &[u8]) -> (tempfile::TempDir, Result<u64, ExtractError>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("root")).unwrap();
    std::fs::create_dir(dir.path().join("outside")).unwrap();
    std::fs::write(dir.path().join("outside/secret"), b"s").unwrap();
    let r = extract(archive, &dir.path().join("root"), &ExtractPolicy::default());
    (dir, r)
}

fn outside_untouched(dir: &Path) {
    let names: Vec<_> = std::fs::read_dir(dir.join("outside"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["secret"], "something was written outside");
    assert_eq!(std::fs::read(dir.join("outside/secret")).unwrap(), b"s");
    let top: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top.len(), 2, "stray file next to the root: {top:?}");
}

#[test]
fn a_normal_archive_extracts_with_modes_symlinks_and_hard_links() {
    let mut v = Vec::new();
    entry(&mut v, "./", tar::EntryType::Directory, "", b"");
    entry(&mut v, "usr/bin/", tar::EntryType::Directory, "", b"");
    entry(
        &mut v,
        "usr/bin/tool",
        tar::EntryType::Regular,
        "",
        b"#!/bin/sh\n",
    );
    entry(&mut v, "bin", tar::EntryType::Symlink, "usr/bin", b"");
    entry(
        &mut v,
        "etc/abs-link",
        tar::EntryType::Symlink,
        "/usr/bin/tool",
        b"",
    );
    entry(
        &mut v,
        "usr/bin/tool2",
        tar::EntryType::Link,
        "usr/bin/tool",
        b"",
    );
    let (dir, r) = run(&finish(v));
    assert_eq!(r.unwrap(), 5);
    let root = dir.path().join("root");
    assert_eq!(
        std::fs::read(root.join("usr/bin/tool2")).unwrap(),
        b"#!/bin/sh\n"
    );
    assert_eq!(
        std::fs::read_link(root.join("etc/abs-link")).unwrap(),
        Path::new("/usr/bin/tool")
    );
    use std::os::unix::fs::MetadataExt;
    let m1 = std::fs::metadata(root.join("usr/bin/tool")).unwrap();
    let m2 = std::fs::metadata(root.join("usr/bin/tool2")).unwrap();
    assert_eq!(m1.ino(), m2.ino());
    assert_eq!(m1.mode() & 0o777, 0o644);
    outside_untouched(dir.path());
}

#[test]
fn dot_dot_is_refused() {
    let mut v = Vec::new();
    entry(&mut v, "../outside/evil", tar::EntryType::Regular, "", b"x");
    let (dir, r) = run(&finish(v));
    assert!(matches!(r, Err(ExtractError::DotDot { .. })), "{r:?}");
    outside_untouched(dir.path());
}

#[test]
fn absolute_path_is_refused() {
    let mut v = Vec::new();
    let target = std::env::temp_dir().join("patchd-absolute-evil");
    entry(
        &mut v,
        target.to_str().unwrap(),
        tar::EntryType::Regular,
        "",
        b"x",
    );
    let (dir, r) = run(&finish(v));
    assert!(matches!(r, Err(ExtractError::AbsolutePath { .. })), "{r:?}");
    assert!(!target.exists());
    outside_untouched(dir.path());
}

#[test]
fn writing_through_a_symlink_is_refused() {
    for link in ["../outside", "/"] {
        let mut v = Vec::new();
        entry(&mut v, "esc", tar::EntryType::Symlink, link, b"");
        entry(&mut v, "esc/pwned", tar::EntryType::Regular, "", b"x");
        let (dir, r) = run(&finish(v));
        assert!(
            matches!(r, Err(ExtractError::SymlinkEscape { .. })),
            "{link}: {r:?}"
        );
        outside_untouched(dir.path());
    }
}

#[test]
fn hard_links_to_outside_are_refused() {
    for target in ["/etc/passwd", "../outside/secret", "missing", "sym"] {
        let mut v = Vec::new();
        entry(
            &mut v,
            "sym",
            tar::EntryType::Symlink,
            "../outside/secret",
            b"",
        );
        entry(&mut v, "h", tar::EntryType::Link, target, b"");
        let (dir, r) = run(&finish(v));
        assert!(
            matches!(r, Err(ExtractError::HardLinkOutside { .. })),
            "{target}: {r:?}"
        );
        outside_untouched(dir.path());
    }
}

#[test]
fn device_nodes_only_when_allowed() {
    let mut v = Vec::new();
    entry(&mut v, "dev/null", tar::EntryType::Char, "", b"");
    let (dir, r) = run(&finish(v));
    assert!(matches!(r, Err(ExtractError::DeviceNode { .. })), "{r:?}");
    outside_untouched(dir.path());
}
