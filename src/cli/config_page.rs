//! The `patchd.toml(5)` man page, made from the configuration schema
//! ([`crate::config::schema`]) the drift test holds against the parser, so the page
//! lists exactly the settings the daemon validates. `patchd --generate-docs DIR` writes
//! it to `DIR/man/patchd.toml.5` beside the pages of the command lines.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::schema::{settings_of, SECTIONS};

/// Escape text for roff: backslashes, and a leading `.` or `'` that would read as a
/// request.
fn esc(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// The page as roff source.
pub fn render() -> String {
    let mut o = String::new();
    let version = env!("CARGO_PKG_VERSION");
    let _ = writeln!(
        o,
        ".TH PATCHD.TOML 5 \"\" \"patchd {version}\" \"File Formats\""
    );
    o.push_str(".SH NAME\npatchd.toml \\- configuration of the patchd update daemon\n");
    o.push_str(
        ".SH SYNOPSIS\n.B /etc/patchd/patchd.toml\n.br\n.B /etc/patchd/patchd.toml.d/*.toml\n",
    );
    o.push_str(".SH DESCRIPTION\n");
    o.push_str(&esc("patchd reads the main file, then every *.toml file of the drop-in directory in lexical order of file name. A later file wins per key; tables merge key by key at every depth; arrays (windows, tags, checks, urgency rules, slots) are replaced whole. A file naming a repository source (url or dir) replaces the source an earlier file named, and url = \"\" clears one. A missing main file means all defaults."));
    o.push_str("\n.PP\n");
    o.push_str(&esc("Every file is checked strictly: an unknown key, a value of the wrong type, a bad window, duration or URL is an error naming the file, line and column. Rules across keys are checked after merging. patchd refuses to start on any error (exit status 78); check a change first with patchd --check-config. Durations are strings such as \"30s\", \"10m\", \"6h\", \"1h 30m\", \"2d\"; paths are absolute device paths."));
    o.push('\n');
    for sec in SECTIONS {
        let head = if sec.array {
            format!("[[{}]]", sec.name)
        } else {
            format!("[{}]", sec.name)
        };
        let _ = writeln!(o, ".SS {}", esc(&head));
        let _ = writeln!(o, "{}", esc(sec.about));
        for s in settings_of(sec.name) {
            let _ = writeln!(o, ".TP\n.B {}", esc(s.key));
            let _ = writeln!(
                o,
                "({}; default: {})\n.br\n{}",
                esc(s.ty),
                esc(s.default_text()),
                esc(s.about)
            );
        }
    }
    o.push_str(".SH EXAMPLES\nA device following the stable channel from an https repository, switching on weekend nights:\n.PP\n.nf\n.RS 4\n");
    for l in [
        "[device]",
        "product = \"acme-gw\"",
        "",
        "[repository]",
        "url = \"https://updates.example.com/repo/\"",
        "",
        "[policy]",
        "time_zone = \"Europe/Berlin\"",
        "windows = [\"Sat,Sun 02:00-05:00\"]",
        "",
        "[boot]",
        "backend = \"grub\"",
        "",
        "[slots]",
        "backend = \"block\"",
        "[[slots.slot]]",
        "name = \"a\"",
        "path = \"/dev/disk/by-partlabel/root-a\"",
        "[[slots.slot]]",
        "name = \"b\"",
        "path = \"/dev/disk/by-partlabel/root-b\"",
    ] {
        let _ = writeln!(o, "{}", esc(l));
    }
    o.push_str(".RE\n.fi\n.PP\nA drop-in that installs from a mounted medium instead, /etc/patchd/patchd.toml.d/50\\-offline.toml:\n.PP\n.nf\n.RS 4\n[repository]\ndir = \"/media/patchd\\-repo\"\n.RE\n.fi\n");
    o.push_str(".SH FILES\n.TP\n.I /etc/patchd/patchd.toml\nThe main file (patchd init writes a commented one).\n.TP\n.I /etc/patchd/patchd.toml.d/\nDrop-ins, read after the main file.\n.TP\n.I /etc/patchd/health.d/\nExecutable health checks (required); wanted/ beneath it: warnings only.\n.TP\n.I /var/lib/patchd/\nState, trusted metadata, slot records, audit log.\n");
    o.push_str(".SH SEE ALSO\n.BR patchd (8),\n.BR patchctl (1),\n.BR patchpub (1)\n");
    o
}

/// Write `DIR/man/patchd.toml.5`; returns its path.
pub fn write(dir: &Path) -> std::io::Result<PathBuf> {
    let man = dir.join("man");
    std::fs::create_dir_all(&man)?;
    let path = man.join("patchd.toml.5");
    std::fs::write(&path, render())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn page_lists_every_setting_of_the_schema() {
        let page = super::render();
        for s in crate::config::schema::SETTINGS {
            assert!(
                page.contains(&format!(".B {}\n", super::esc(s.key))),
                "{}",
                s.key
            );
        }
        assert!(page.starts_with(".TH PATCHD.TOML 5"));
        assert!(!page.lines().any(|l| l.starts_with('.') && l.len() == 1));
    }
}
