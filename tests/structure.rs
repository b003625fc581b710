//! Size rules of the architecture (docs/architecture.md "Sizes"): no source file under
//! src/ over 800 lines, and no function over 150 lines unless the comment above it says
//! why ("Long on purpose: …"). Read from the source as text: rustfmt puts a function's
//! closing brace at the indentation of its `fn`, which is what this counts to.

use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 800;
const MAX_FN_LINES: usize = 150;
const WHY_MARK: &str = "Long on purpose:";

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The name of the function a line starts, if it starts one with a body.
fn fn_start(line: &str) -> Option<(usize, &str)> {
    let indent = line.len() - line.trim_start().len();
    let mut rest = line.trim_start();
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    let name = rest.strip_prefix("fn ")?;
    let end = name
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(name.len());
    Some((indent, &name[..end]))
}

/// `(name, first line (1-based), length)` of every function in `text` with a body.
fn functions(text: &str) -> Vec<(String, usize, usize, bool)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((indent, name)) = fn_start(line) else {
            continue;
        };
        // The signature ends at the first line ending in `{` (a body) or `;` (none).
        let Some(open) = (i..lines.len()).find(|&j| {
            let l = lines[j].trim_end();
            l.ends_with('{') || l.ends_with(';')
        }) else {
            continue;
        };
        if lines[open].trim_end().ends_with(';') {
            continue;
        }
        let close = format!("{}}}", " ".repeat(indent));
        let Some(end) = (open + 1..lines.len()).find(|&j| lines[j] == close) else {
            continue;
        };
        let why = lines[..i]
            .iter()
            .rev()
            .take_while(|l| {
                let t = l.trim_start();
                t.starts_with("//") || t.starts_with("#[")
            })
            .any(|l| l.contains(WHY_MARK));
        out.push((name.to_string(), i + 1, end - i + 1, why));
    }
    out
}

#[test]
fn no_source_file_or_function_is_too_long() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let rel = f.strip_prefix(&src).unwrap().display().to_string();
        let n = text.lines().count();
        if n > MAX_FILE_LINES {
            problems.push(format!(
                "src/{rel}: {n} lines (at most {MAX_FILE_LINES}): split it by job"
            ));
        }
        for (name, line, len, why) in functions(&text) {
            if len > MAX_FN_LINES && !why {
                problems.push(format!(
                    "src/{rel}:{line}: fn {name} is {len} lines (at most {MAX_FN_LINES}, or say why in a comment above it starting \"{WHY_MARK}\")"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_counter_sees_long_functions_and_their_reasons() {
    let body = |n: usize| "    let x = 1;\n".repeat(n);
    let text = format!(
        "fn short() {{\n{}}}\n\n/// Long on purpose: a table.\npub(crate) async fn long_ok(\n    a: u8,\n) {{\n{}}}\n\nimpl X {{\n    pub fn long_bad(&self) {{\n{}    }}\n    fn decl(&self);\n}}\n",
        body(3),
        body(200),
        body(160).replace("    let", "        let")
    );
    let fns = functions(&text);
    let got: Vec<(&str, usize, bool)> = fns
        .iter()
        .map(|(n, _, len, why)| (n.as_str(), *len, *why))
        .collect();
    assert_eq!(
        got,
        vec![
            ("short", 5, false),
            ("long_ok", 204, true),
            ("long_bad", 162, false)
        ]
    );
}
