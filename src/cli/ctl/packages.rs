//! The packages of a package patch set (the `apt` source) for people: one line per
//! patch set in `status`, one table per patch set in `list --verbose`.

use std::fmt::Write as _;

use super::output::table;
use crate::dbus::types::AvailableView;

/// `status`: "2026.12.7+…: 2026-12-07 patch set: 3 packages (1 held by apt-mark)" per
/// patch set.
pub fn patch_set_lines(list: &[AvailableView]) -> Vec<String> {
    list.iter()
        .filter(|a| !a.packages.is_empty())
        .map(|a| {
            format!(
                "{}: {}",
                a.version,
                a.description.as_deref().unwrap_or("package patch set")
            )
        })
        .collect()
}

/// `list --verbose`: each patch set's packages as a table.
pub fn tables(list: &[AvailableView]) -> String {
    let mut out = String::new();
    for a in list.iter().filter(|a| !a.packages.is_empty()) {
        let rows: Vec<Vec<String>> = a
            .packages
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    p.installed.clone(),
                    p.candidate.clone(),
                    p.origin.clone(),
                    p.kind.to_string(),
                    p.severity.to_string(),
                    if p.cves.is_empty() {
                        "-".into()
                    } else {
                        p.cves.join(",")
                    },
                    p.standing.as_str().to_string(),
                ]
            })
            .collect();
        let _ = writeln!(out, "\nPackages of {}:", a.version);
        let t = table(
            &[
                "PACKAGE",
                "INSTALLED",
                "CANDIDATE",
                "ORIGIN",
                "KIND",
                "SEVERITY",
                "CVES",
                "STATUS",
            ],
            &rows,
        );
        for line in t.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}
