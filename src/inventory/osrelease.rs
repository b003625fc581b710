//! os-release(5) parsing: `KEY=VALUE` lines, values optionally quoted with shell-style
//! escapes, `#` comments.

use std::collections::BTreeMap;

/// Parse os-release text: the pairs, and the 1-based numbers of malformed lines.
pub fn parse_os_release(text: &str) -> (BTreeMap<String, String>, Vec<usize>) {
    let mut map = BTreeMap::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            bad.push(i + 1);
            continue;
        };
        let key_ok = !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        match (key_ok, unquote(v)) {
            (true, Some(v)) => {
                map.insert(k.to_string(), v);
            }
            _ => bad.push(i + 1),
        }
    }
    (map, bad)
}

fn unquote(v: &str) -> Option<String> {
    let q = v.chars().next();
    match q {
        Some(q @ ('"' | '\'')) => {
            let inner = v.strip_prefix(q)?.strip_suffix(q)?;
            if q == '\'' {
                return Some(inner.to_string());
            }
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    out.push(chars.next()?);
                } else {
                    out.push(c);
                }
            }
            Some(out)
        }
        _ => Some(v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quotes_and_reports_bad_lines() {
        let (m, bad) = parse_os_release(
            "# comment\nID=debian\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nX='a b'\nQ=\"say \\\"hi\\\"\"\nnonsense\nlower=x\nU=\"unterminated\n",
        );
        assert_eq!(m["ID"], "debian");
        assert_eq!(m["PRETTY_NAME"], "Debian GNU/Linux 13 (trixie)");
        assert_eq!(m["X"], "a b");
        assert_eq!(m["Q"], "say \"hi\"");
        assert_eq!(bad, vec![6, 7, 8]);
    }
}
