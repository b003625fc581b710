//! A commented `patchd.toml` made from the [`super::schema`]: every section and key with
//! its description; the keys given values are written active, every other one commented
//! out showing its default (or an example where there is none).
//!
//! `patchd init` writes one for the device it sets up; with no values it is the
//! reference file of every setting.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::schema::{settings_of, Setting, SECTIONS};

/// The values to write active: per section, its entries (one for a plain table, one per
/// element for an array of tables), each a list of `key = TOML value`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Values {
    tables: BTreeMap<&'static str, Vec<Vec<(&'static str, String)>>>,
}

impl Values {
    /// Set `key` in `section` (a plain table) to the TOML text `value`.
    pub fn set(&mut self, section: &'static str, key: &'static str, value: String) {
        let entries = self.tables.entry(section).or_default();
        if entries.is_empty() {
            entries.push(Vec::new());
        }
        entries[0].retain(|(k, _)| *k != key);
        entries[0].push((key, value));
    }

    /// Add one entry to the array of tables `section`.
    pub fn push(&mut self, section: &'static str, entry: Vec<(&'static str, String)>) {
        self.tables.entry(section).or_default().push(entry);
    }

    fn entries(&self, section: &str) -> &[Vec<(&'static str, String)>] {
        self.tables.get(section).map_or(&[], Vec::as_slice)
    }
}

/// Keys that exclude another one of their section: `dir` instead of `url`, btrfs's `dir`
/// instead of file and block slots' paths.
const ALTERNATIVES: [(&str, &str); 2] = [("repository", "dir"), ("slots", "dir")];

/// A TOML string literal (basic string, escaped).
pub fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Word-wrap `text` into `# `-comment lines of at most 88 columns.
fn comment(out: &mut String, text: &str) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > 88 && line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

fn header(section: &str, array: bool) -> String {
    if array {
        format!("[[{section}]]")
    } else {
        format!("[{section}]")
    }
}

fn key_line(out: &mut String, s: &Setting, value: Option<&str>) {
    comment(out, s.about);
    match value {
        Some(v) => {
            let _ = writeln!(out, "{} = {v}", s.key);
        }
        // An alternative to another key of its section (only one may be set) is
        // commented twice, so uncommenting every `#key` line still gives a valid file.
        None if ALTERNATIVES.contains(&(s.section, s.key)) => {
            let _ = writeln!(out, "##{} = {}", s.key, s.default.unwrap_or(s.example));
        }
        None => {
            let _ = writeln!(out, "#{} = {}", s.key, s.default.unwrap_or(s.example));
        }
    }
}

/// The commented file: `intro` comment lines first, then every section.
pub fn render(intro: &[String], values: &Values) -> String {
    let mut out = String::new();
    for l in intro {
        comment(&mut out, l);
    }
    for sec in SECTIONS {
        out.push('\n');
        comment(&mut out, sec.about);
        let entries = values.entries(sec.name);
        if entries.is_empty() {
            let _ = writeln!(out, "#{}", header(sec.name, sec.array));
            for s in settings_of(sec.name) {
                key_line(&mut out, s, None);
            }
            continue;
        }
        for entry in entries {
            let _ = writeln!(out, "{}", header(sec.name, sec.array));
            for s in settings_of(sec.name) {
                let v = entry.iter().find(|(k, _)| *k == s.key).map(|(_, v)| v);
                key_line(&mut out, s, v.map(String::as_str));
            }
        }
    }
    out
}

/// The reference file: every setting commented out, nothing active.
pub fn reference() -> String {
    render(
        &[
            "patchd configuration: /etc/patchd/patchd.toml, then /etc/patchd/patchd.toml.d/*.toml in lexical order; a later file wins per key, arrays are replaced whole.".into(),
            "Every setting is commented out showing its default (or an example where there is none). Check changes with: patchd --check-config. Reference: patchd.toml(5).".into(),
        ],
        &Values::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_active_and_the_rest_stays_commented() {
        let mut v = Values::default();
        v.set("device", "product", quote("box"));
        v.push("slots.slot", vec![("name", quote("a"))]);
        v.push("slots.slot", vec![("name", quote("b"))]);
        let text = render(&["hello".into()], &v);
        assert!(text.starts_with("# hello\n"), "{text}");
        assert!(text.contains("\n[device]\n"), "{text}");
        assert!(text.contains("\nproduct = \"box\"\n"), "{text}");
        assert!(text.contains("\n#channel = \"stable\"\n"), "{text}");
        assert_eq!(text.matches("\n[[slots.slot]]\n").count(), 2, "{text}");
        assert!(text.contains("\n#[repository]\n"), "{text}");
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(table.len(), 2, "{table:?}");
        assert!(text.lines().all(|l| l.len() <= 88 || !l.starts_with("# ")));
    }
}
