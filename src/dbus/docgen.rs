//! Man pages and shell completions from clap definitions.
//!
//! Convention for every binary (`patchd`, `patchctl`, `patchpub`): the library exposes its
//! clap `Command` (`fn command() -> clap::Command`), and the binary accepts a hidden
//! `--generate-docs DIR` that calls [`generate`] with it. Packaging runs each binary once
//! with that flag (`packaging/gen-docs`), so pages and completions always match the code.

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

/// Write `DIR/man/NAME.1` (plus `NAME-SUB.1` for every subcommand, recursively) and
/// `DIR/completions/{NAME.bash,_NAME,NAME.fish}`. Returns the files written.
pub fn generate(cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>, DocgenError> {
    let mut cmd = cmd;
    cmd.build();
    let name = cmd.get_name().to_owned();
    let mut written = Vec::new();
    man_pages(&cmd, &name, &dir.join("man"), &mut written)?;
    for (shell, file) in [
        (Shell::Bash, format!("{name}.bash")),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
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
