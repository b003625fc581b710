//! Every man page the packaging writes is clean: `packaging/gen-docs` runs over the built
//! binaries (as the Debian package build does), and each file under its `man/` directory —
//! whatever its section, so pages added later are covered too — must pass `groff -ww -z
//! -man` without a single warning and render with `man -l` (MANWIDTH=80) without one. The
//! top-level pages carry DESCRIPTION, FILES, EXIT STATUS, EXAMPLES and SEE ALSO, and
//! patchd is in section 8.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The generated pages, from `packaging/gen-docs` into a fresh directory.
fn generate() -> (tempfile::TempDir, Vec<PathBuf>) {
    let bindir = Path::new(env!("CARGO_BIN_EXE_patchd")).parent().unwrap();
    for b in ["patchctl", "patchpub"] {
        assert!(
            bindir.join(b).exists(),
            "{b} not built next to patchd in {}",
            bindir.display()
        );
    }
    let out = tempfile::tempdir().unwrap();
    let assets = out.path().join("assets");
    let r = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/gen-docs"))
        .arg(bindir)
        .arg(&assets)
        .output()
        .unwrap();
    assert!(
        r.status.success(),
        "gen-docs failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let mut pages = Vec::new();
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    walk(&assets.join("man"), &mut pages);
    pages.sort();
    (out, pages)
}

/// The page's roff source (gzip-compressed as Debian ships it, or plain).
fn source(page: &Path) -> String {
    let bytes = std::fs::read(page).unwrap();
    if page.extension().is_some_and(|e| e == "gz") {
        let out = Command::new("gzip")
            .args(["-dc"])
            .arg(page)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} does not decompress",
            page.display()
        );
        String::from_utf8(out.stdout).expect("pages are ASCII")
    } else {
        String::from_utf8(bytes).expect("pages are ASCII")
    }
}

/// `man`'s output without its overstrikes (`X\bX` bold, `_\bX` underline).
fn plain(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars.get(i + 1) == Some(&'\u{8}') {
            i += 2;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

#[test]
fn every_generated_page_is_groff_and_man_clean() {
    if !have("groff") || !have("man") {
        println!("skipped: groff or man missing (Debian groff-base, man-db)");
        return;
    }
    let (_dir, pages) = generate();
    let names: Vec<String> = pages
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "patchd.8.gz",
        "patchd-boot-check.8.gz",
        "patchctl.1.gz",
        "patchctl-install.1.gz",
        "patchpub.1.gz",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    let mut problems = Vec::new();
    for page in &pages {
        let roff = source(page);
        assert!(roff.is_ascii(), "{}: not ASCII", page.display());
        let mut groff = Command::new("groff")
            .args(["-ww", "-z", "-man"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        groff
            .stdin
            .take()
            .unwrap()
            .write_all(roff.as_bytes())
            .unwrap();
        let out = groff.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || !err.trim().is_empty() {
            problems.push(format!("groff {}: {err}", page.display()));
        }
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(page)
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_FORMATTING", "0")
            .env_remove("MANPAGER")
            .env("PAGER", "cat")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let text = plain(&String::from_utf8_lossy(&out.stdout));
        if !out.status.success() || !err.trim().is_empty() || !text.contains("NAME") {
            problems.push(format!("man -l {}: {err}", page.display()));
        }
        if let Some(long) = text.lines().find(|l| l.chars().count() > 80) {
            problems.push(format!(
                "{}: line over 80 columns: {long:?}",
                page.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn top_level_pages_have_the_sections_admins_look_for() {
    let (_dir, pages) = generate();
    for (name, section) in [("patchd", "8"), ("patchctl", "1"), ("patchpub", "1")] {
        let file = format!("{name}.{section}.gz");
        let page = pages
            .iter()
            .find(|p| p.file_name().is_some_and(|f| f.to_string_lossy() == file))
            .unwrap_or_else(|| panic!("{file} not generated"));
        let roff = source(page);
        assert!(
            roff.contains(&format!(".TH {name} {section} ")),
            "{file}: title not in section {section}"
        );
        for s in [
            "DESCRIPTION",
            "FILES",
            "EXIT STATUS",
            "EXAMPLES",
            "SEE ALSO",
        ] {
            let heading = if s.contains(' ') {
                format!(".SH \"{s}\"")
            } else {
                format!(".SH {s}")
            };
            assert!(roff.contains(&heading), "{file} lacks {s}");
        }
    }
    // patchctl's EXIT STATUS lists exactly the codes of its table.
    let page = pages.iter().find(|p| p.ends_with("patchctl.1.gz")).unwrap();
    let roff = source(page);
    let exit = &roff[roff.find(".SH \"EXIT STATUS\"").unwrap()..];
    let exit = &exit[..exit.find(".SH EXAMPLES").unwrap()];
    for (code, _) in patchd::cli::ctl::exit::TABLE {
        assert!(
            exit.contains(&format!("\\fB{code}\\fR")),
            "code {code} missing:\n{exit}"
        );
    }
}
