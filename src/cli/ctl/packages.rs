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
        // Once staged, the versions in the snapshot (the package delta) get a column.
        let staged = a.packages.iter().any(|p| p.staged.is_some());
        let rows: Vec<Vec<String>> = a
            .packages
            .iter()
            .map(|p| {
                let mut row = vec![p.name.clone(), p.installed.clone(), p.candidate.clone()];
                if staged {
                    row.push(p.staged.clone().unwrap_or_else(|| "-".into()));
                }
                row.extend([
                    p.origin.clone(),
                    p.kind.to_string(),
                    p.severity.to_string(),
                    if p.cves.is_empty() {
                        "-".into()
                    } else {
                        p.cves.join(",")
                    },
                    p.standing.as_str().to_string(),
                ]);
                row
            })
            .collect();
        let _ = writeln!(out, "\nPackages of {}:", a.version);
        let mut head = vec!["PACKAGE", "INSTALLED", "CANDIDATE"];
        if staged {
            head.push("STAGED");
        }
        head.extend(["ORIGIN", "KIND", "SEVERITY", "CVES", "STATUS"]);
        let t = table(&head, &rows);
        for line in t.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::tables;
    use crate::dbus::types::AvailableView;
    use crate::manifest::{Kind, PackageChange, PackageStanding, Severity};

    fn view(staged: Option<&str>) -> AvailableView {
        AvailableView {
            version: "2026.12.7+abc".into(),
            packages: vec![PackageChange {
                name: "libfoo".into(),
                arch: "all".into(),
                installed: "1.0-1".into(),
                candidate: "1.0-2".into(),
                origin: "TestOS/stable-security".into(),
                kind: Kind::Security,
                severity: Severity::High,
                cves: vec![],
                standing: PackageStanding::Included,
                staged: staged.map(String::from),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_staged_column_appears_once_staged() {
        let before = tables(&[view(None)]);
        assert!(!before.contains("STAGED"), "{before}");
        let after = tables(&[view(Some("1.0-2"))]);
        let head = after.lines().find(|l| l.contains("PACKAGE")).unwrap();
        assert!(head.contains("CANDIDATE  STAGED  ORIGIN"), "{after}");
        let row = after.lines().find(|l| l.contains("libfoo")).unwrap();
        assert!(row.contains("1.0-2      1.0-2   TestOS"), "{after}");
    }
}
