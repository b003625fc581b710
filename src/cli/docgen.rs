//! Man pages and shell completions from clap definitions.
//!
//! Convention for every binary (`patchd`, `patchctl`, `patchpub`): the library exposes its
//! clap `Command` (`fn command() -> clap::Command`), and the binary accepts a hidden
//! `--generate-docs DIR` that calls [`generate`] with it. Packaging runs each binary once
//! with that flag (`packaging/gen-docs`), so pages and completions always match the code.
//!
//! ```no_run
//! // in src/bin/NAME.rs, before anything else:
//! # let dir = std::path::PathBuf::from("target/assets");
//! patchd::cli::docgen::generate(patchd::cli::ctl::command(), &dir)?;
//! # Ok::<(), patchd::cli::docgen::DocgenError>(())
//! ```

#[cfg(test)]
mod tests {
    #[test]
    fn pages_and_completions_for_every_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let files = super::generate(crate::cli::ctl::command(), dir.path()).unwrap();
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
        assert!(
            page.contains("Exit status"),
            "exit codes belong in the man page"
        );
        let bash = std::fs::read_to_string(dir.path().join("completions/bash/patchctl")).unwrap();
        assert!(bash.contains("release-hold"));
    }
}

use std::io;
use std::path::{Path, PathBuf};

use clap_complete::Shell;

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

/// Write `DIR/man/NAME.1` (plus `NAME-SUB.1` for every subcommand, recursively) and the
/// completions under the names their shells look for: `DIR/completions/bash/NAME`,
/// `DIR/completions/zsh/_NAME`, `DIR/completions/fish/NAME.fish`. Returns the files
/// written.
pub fn generate(cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>, DocgenError> {
    let mut cmd = cmd;
    cmd.build();
    let name = cmd.get_name().to_owned();
    let mut written = Vec::new();
    man_pages(&cmd, &name, &dir.join("man"), &mut written)?;
    for (shell, file) in [
        (Shell::Bash, format!("bash/{name}")),
        (Shell::Zsh, format!("zsh/_{name}")),
        (Shell::Fish, format!("fish/{name}.fish")),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), name.clone(), &mut buf);
        written.push(write(dir.join("completions").join(file), &buf)?);
    }
    Ok(written)
}

fn man_pages(
    cmd: &clap::Command,
    page: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<(), DocgenError> {
    let mut buf = Vec::new();
    let path = dir.join(format!("{page}.1"));
    // After `build()`, clap has named subcommands `parent-sub` (display name), which
    // clap_mangen uses for the title and NAME section.
    clap_mangen::Man::new(cmd.clone())
        .render(&mut buf)
        .map_err(|source| DocgenError {
            path: path.clone(),
            source,
        })?;
    written.push(write(path, &buf)?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        man_pages(sub, &format!("{page}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
