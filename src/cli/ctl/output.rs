//! Human output of `patchctl`: short, aligned, no decoration. (Status and the release
//! lists are in `status_text`.)

use std::fmt::Write as _;

use serde_json::Value;

use crate::dbus::types::ProgressView;

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = String>| {
        let cells: Vec<String> = cells.collect();
        let n = cells.len();
        let mut l = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 < n {
                let _ = write!(l, "{c:<w$}  ", w = widths[i]);
            } else {
                l.push_str(&c);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, &mut header.iter().map(|h| h.to_string()));
    for r in rows {
        line(&mut out, &mut r.iter().cloned());
    }
    out
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn progress(p: &ProgressView) -> String {
    let mut s = p.phase.clone();
    if p.total > 0 {
        let pct = p.done as f64 * 100.0 / p.total as f64;
        let _ = write!(s, " {} / {} ({pct:.0}%)", bytes(p.done), bytes(p.total));
    } else if p.done > 0 {
        let _ = write!(s, " {}", bytes(p.done));
    }
    if p.rate > 0.0 {
        let _ = write!(s, " at {}/s", bytes(p.rate as u64));
    }
    s
}

/// History records: time, kind, actor, then the remaining fields as `key=value`.
pub fn history(v: &Value) -> String {
    let empty = Vec::new();
    let recs = v.as_array().unwrap_or(&empty);
    let rows: Vec<Vec<String>> = recs
        .iter()
        .map(|r| {
            let field = |k: &str| match &r[k] {
                Value::String(s) => s.clone(),
                Value::Null => "-".into(),
                other => other.to_string(),
            };
            let rest = r
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| {
                            !matches!(k.as_str(), "seq" | "time" | "event" | "actor" | "prev")
                        })
                        .map(|(k, v)| match v {
                            Value::String(s) => format!("{k}={s}"),
                            other => format!("{k}={other}"),
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            vec![
                field("seq"),
                field("time"),
                field("event"),
                field("actor"),
                rest,
            ]
        })
        .collect();
    table(&["SEQ", "TIME", "EVENT", "ACTOR", "DETAILS"], &rows)
}

/// Any JSON document as an indented `key: value` tree.
pub fn tree(v: &Value) -> String {
    fn go(out: &mut String, v: &Value, indent: usize) {
        let pad = " ".repeat(indent);
        match v {
            Value::Object(m) => {
                let w = m.keys().map(|k| k.len()).max().unwrap_or(0) + 1;
                for (k, val) in m {
                    match val {
                        Value::Object(o) if !o.is_empty() => {
                            let _ = writeln!(out, "{pad}{k}:");
                            go(out, val, indent + 2);
                        }
                        Value::Array(a) if a.iter().any(|x| x.is_object()) => {
                            let _ = writeln!(out, "{pad}{k}:");
                            for (i, x) in a.iter().enumerate() {
                                let _ = writeln!(out, "{pad}  [{i}]");
                                go(out, x, indent + 4);
                            }
                        }
                        _ => {
                            let _ = writeln!(
                                out,
                                "{pad}{:<w$} {}",
                                format!("{k}:"),
                                scalar(val),
                                w = w
                            );
                        }
                    }
                }
            }
            other => {
                let _ = writeln!(out, "{pad}{}", scalar(other));
            }
        }
    }
    fn scalar(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            Value::Array(a) => a.iter().map(scalar).collect::<Vec<_>>().join(", "),
            other => other.to_string(),
        }
    }
    let mut out = String::new();
    go(&mut out, v, 0);
    out
}

/// The strings of a JSON array (none when `v` is not one).
pub fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `patchctl repair`'s report for people.
pub fn repair_report(v: &serde_json::Value) -> String {
    let mut o = String::new();
    let list = |key: &str| strings(&v[key]);
    if let Some(d) = v["moved"].as_str().filter(|d| !d.is_empty()) {
        o.push_str(&format!(
            "Moved {d} aside to {}.\n",
            v["moved_to"].as_str().unwrap_or("?")
        ));
    }
    for r in list("rebuilt") {
        o.push_str(&format!("Rebuilt: {r}\n"));
    }
    for l in list("lost") {
        o.push_str(&format!("Lost: {l}\n"));
    }
    o.push_str("patchd now starts normally; see `patchctl status`.\n");
    o
}

/// `permissions`: one row per polkit action (its short name), the answer and why.
pub fn permissions(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(action, r)| {
                    vec![
                        action
                            .strip_prefix("org.patchd.patchd1.")
                            .unwrap_or(action)
                            .to_owned(),
                        r["result"].as_str().unwrap_or("?").to_owned(),
                        r["text"].as_str().unwrap_or_default().to_owned(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["ACTION", "MAY", "WHY NOT"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["long".into(), "x".into()],
                vec!["s".into(), "y".into()],
            ],
        );
        assert_eq!(t, "A     BB\nlong  x\ns     y\n");
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(64 * 1024 * 1024), "64.0 MiB");
    }
}
