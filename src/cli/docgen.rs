//! Man pages and shell completions from clap definitions.
//!
//! Convention for every binary (`patchd`, `patchctl`, `patchpub`): the library exposes its
//! clap `Command` (`fn command() -> clap::Command`) and its [`Manual`] (the sections clap
//! does not know, in [`super::manual`]), and the binary accepts a hidden
//! `--generate-docs DIR` that calls [`generate`] with both. Packaging runs each binary
//! once with that flag (`packaging/gen-docs`), so pages and completions always match the
//! code. Pages are `DIR/man/NAME.SECTION` (`patchd.8`, `patchctl.1`, `patchctl-install.1`);
//! `tests/man_pages.rs` lints every file under `DIR/man` with groff and man.
//!
//! ```no_run
//! // in src/bin/NAME.rs, before anything else:
//! # let dir = std::path::PathBuf::from("target/assets");
//! patchd::cli::docgen::generate(patchd::cli::ctl::command(), &patchd::cli::manual::patchctl(), &dir)?;
//! # Ok::<(), patchd::cli::docgen::DocgenError>(())
//! ```

#[cfg(test)]
mod tests {
    #[test]
    fn pages_and_completions_for_every_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let files = super::generate(
            crate::cli::ctl::command(),
            &crate::cli::manual::patchctl(),
            dir.path(),
        )
        .unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        for want in [
            "man/patchctl.1",
            "man/patchctl-install.1",
            "man/patchctl-audit-verify.1",
            "completions/bash/patchctl",
            "completions/zsh/_patchctl",
            "completions/fish/patchctl.fish",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
        let page = std::fs::read_to_string(dir.path().join("man/patchctl.1")).unwrap();
        for section in [
            "DESCRIPTION",
            "FILES",
            "EXIT STATUS",
            "EXAMPLES",
            "SEE ALSO",
        ] {
            assert!(
                page.contains(&format!(".SH \"{section}\""))
                    || page.contains(&format!(".SH {section}")),
                "{section} missing:\n{page}"
            );
        }
        assert!(
            page.contains("patchd \\(8)") || page.contains("patchd(8)"),
            "{page}"
        );
        let bash = std::fs::read_to_string(dir.path().join("completions/bash/patchctl")).unwrap();
        assert!(bash.contains("release-hold"));
    }
}

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap_complete::Shell;
use roff::{bold, roman, Roff};

use super::manual::Manual;

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct DocgenError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn write(path: PathBuf, bytes: &[u8]) -> Result<PathBuf, DocgenError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| DocgenError {
            path: dir.to_owned(),
            source,
        })?;
    }
    std::fs::write(&path, bytes).map_err(|source| DocgenError {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// clap_complete's script for `shell`, as every binary without its own ships.
pub fn plain_completion(cmd: &clap::Command, shell: Shell) -> Vec<u8> {
    let mut buf = Vec::new();
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd.clone(), name, &mut buf);
    buf
}

/// Write `DIR/man/NAME.SECTION` (plus `NAME-SUB.SECTION` for every subcommand,
/// recursively) and the completions under the names their shells look for:
/// `DIR/completions/bash/NAME`, `DIR/completions/zsh/_NAME`,
/// `DIR/completions/fish/NAME.fish`. Returns the files written.
pub fn generate(
    cmd: clap::Command,
    manual: &Manual,
    dir: &Path,
) -> Result<Vec<PathBuf>, DocgenError> {
    generate_with(cmd, manual, dir, plain_completion)
}

/// [`generate`] with the binary's own completion scripts (patchctl adds dynamic values).
pub fn generate_with(
    cmd: clap::Command,
    manual: &Manual,
    dir: &Path,
    completion: impl Fn(&clap::Command, Shell) -> Vec<u8>,
) -> Result<Vec<PathBuf>, DocgenError> {
    let mut cmd = cmd;
    cmd.build();
    let name = cmd.get_name().to_owned();
    let mut written = Vec::new();
    let man = dir.join("man");
    let path = man.join(format!("{name}.{}", manual.section));
    let mut buf = Vec::new();
    top_page(&cmd, manual, &mut buf).map_err(|source| DocgenError {
        path: path.clone(),
        source,
    })?;
    written.push(write(path, &ascii_roff(&buf))?);
    for sub in visible_subcommands(&cmd) {
        sub_pages(
            sub,
            &format!("{name}-{}", sub.get_name()),
            manual.section,
            &man,
            &mut written,
        )?;
    }
    for (shell, file) in [
        (Shell::Bash, format!("bash/{name}")),
        (Shell::Zsh, format!("zsh/_{name}")),
        (Shell::Fish, format!("fish/{name}.fish")),
    ] {
        let buf = completion(&cmd, shell);
        written.push(write(dir.join("completions").join(file), &buf)?);
    }
    Ok(written)
}

/// clap_mangen puts a command's `--help` epilogue under the heading EXTRA; man pages call
/// an exit status list EXIT STATUS, anything else NOTES.
/// The list's `  N  meaning` lines become tagged paragraphs, as in the top-level pages.
fn extra_heading(page: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(page);
    let mut out = String::new();
    let mut in_exit = false;
    for line in text.lines() {
        if line == ".SH EXTRA" {
            out.push_str(".SH NOTES\n");
            continue;
        }
        if line == "Exit status:" && out.ends_with(".SH NOTES\n") {
            out.truncate(out.len() - ".SH NOTES\n".len());
            out.push_str(".SH \"EXIT STATUS\"\n");
            in_exit = true;
            continue;
        }
        if line.starts_with(".SH") {
            in_exit = false;
        }
        let code = line.trim_start().split_once(char::is_whitespace);
        match code {
            Some((n, what)) if in_exit && n.parse::<u8>().is_ok() => {
                out.push_str(&format!(".TP\n\\fB{n}\\fR\n{}\n", what.trim_start()));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out.into_bytes()
}

/// `page` with every character outside ASCII written as groff's `\[uXXXX]` escape: groff
/// reads its input as Latin-1 unless preprocessed, so "…" in a help text would be three
/// invalid characters (a warning under `groff -ww`, garbage on some terminals).
fn ascii_roff(page: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(page);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    out.into_bytes()
}

fn visible_subcommands(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

/// The binary's own page (what `generate` writes as `NAME.SECTION`): clap's NAME, SYNOPSIS, DESCRIPTION, OPTIONS and COMMANDS,
/// then the manual's sections. clap's EXTRA section (the `--help` epilogue, which for
/// patchctl is the exit status list) is left out: EXIT STATUS says it.
pub fn render_page(cmd: &clap::Command, manual: &Manual, w: &mut dyn Write) -> io::Result<()> {
    let mut out = Vec::new();
    top_page(cmd, manual, &mut out)?;
    w.write_all(&ascii_roff(&out))
}

fn top_page(cmd: &clap::Command, manual: &Manual, w: &mut dyn Write) -> io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone()).section(manual.section);
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    let mut r = Roff::new();
    for p in manual.description {
        r.control("PP", []).text([roman(*p)]);
    }
    w.write_all(r.to_roff().as_bytes())?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(w)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(w)?;
    }
    let mut r = Roff::new();
    r.control("SH", ["FILES"]);
    for (path, what) in manual.files {
        r.control("TP", []).text([bold(*path)]).text([roman(*what)]);
    }
    r.control("SH", ["EXIT STATUS"]);
    for (code, what) in &manual.exit_status {
        r.control("TP", [])
            .text([bold(code.as_ref())])
            .text([roman(what.as_ref())]);
    }
    r.control("SH", ["EXAMPLES"]);
    for (what, line) in manual.examples {
        r.control("PP", []).text([roman(*what)]);
        // No filling: a command line is shown as typed, never hyphenated or joined.
        r.control("RS", ["4"]).control("nf", []);
        for l in line.lines() {
            r.text([bold(l)]);
        }
        r.control("fi", []).control("RE", []);
    }
    r.control("SH", ["SEE ALSO"]);
    let refs: Vec<_> = manual
        .see_also
        .iter()
        .enumerate()
        .flat_map(|(i, page)| {
            let (name, sect) = page.split_once('(').unwrap_or((page, ")"));
            let sep = if i + 1 < manual.see_also.len() {
                ", "
            } else {
                ""
            };
            [bold(name), roman(format!("({sect}{sep}"))]
        })
        .collect();
    r.text(refs);
    w.write_all(r.to_roff().as_bytes())?;
    man.render_version_section(w)?;
    Ok(())
}

fn sub_pages(
    cmd: &clap::Command,
    page: &str,
    section: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<(), DocgenError> {
    let mut buf = Vec::new();
    let path = dir.join(format!("{page}.{section}"));
    // After `build()`, clap has named subcommands `parent-sub` (display name), which
    // clap_mangen uses for the title and NAME section.
    clap_mangen::Man::new(cmd.clone())
        .section(section)
        .render(&mut buf)
        .map_err(|source| DocgenError {
            path: path.clone(),
            source,
        })?;
    written.push(write(path, &ascii_roff(&extra_heading(&buf)))?);
    for sub in visible_subcommands(cmd) {
        sub_pages(
            sub,
            &format!("{page}-{}", sub.get_name()),
            section,
            dir,
            written,
        )?;
    }
    Ok(())
}
