//! Reading what apt prints: the simulated upgrade (`apt-get -s dist-upgrade`), the
//! package files with their Release fields (`apt-cache policy`), each package's version
//! table (`apt-cache policy PKG…`) and its fields (`apt-cache show PKG=VER…`).

use std::collections::BTreeMap;

/// One `Inst` line of the simulation: a package apt would upgrade (or newly install).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub name: String,
    pub arch: String,
    /// `None`: not installed yet (a new dependency of an upgrade).
    pub installed: Option<String>,
    pub candidate: String,
}

/// `Inst foo [1.0-1] (1.0-2 Debian-Security:12/stable-security [amd64])`.
pub fn simulation(stdout: &str) -> Vec<Pending> {
    let mut out = Vec::new();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("Inst ") else {
            continue;
        };
        let mut words = rest.splitn(2, ' ');
        let name = words.next().unwrap_or_default().to_string();
        let rest = words.next().unwrap_or_default();
        let (installed, rest) = match rest.strip_prefix('[') {
            Some(r) => match r.split_once(']') {
                Some((v, r)) => (Some(v.to_string()), r.trim_start()),
                None => continue,
            },
            None => (None, rest),
        };
        let Some(inner) = rest
            .strip_prefix('(')
            .and_then(|r| r.rsplit_once(')'))
            .map(|p| p.0)
        else {
            continue;
        };
        let candidate = inner
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let arch = inner
            .rsplit_once('[')
            .and_then(|(_, a)| a.split_once(']'))
            .map_or_else(String::new, |(a, _)| a.to_string());
        if name.is_empty() || candidate.is_empty() {
            continue;
        }
        out.push(Pending {
            name,
            arch,
            installed,
            candidate,
        });
    }
    out
}

/// The Release fields of one package file (`release o=Debian,a=stable-security,…`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub fields: BTreeMap<&'static str, String>,
}

impl Origin {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }

    /// `origin/suite` as status shows it.
    pub fn short(&self) -> String {
        let o = self.get("label").or(self.get("origin")).unwrap_or("?");
        format!("{o}/{}", self.get("suite").unwrap_or("?"))
    }
}

/// A package file as `apt-cache policy` names it (`file:/srv/repo ./ Packages`,
/// `http://deb.debian.org/debian-security bookworm-security/main amd64 Packages`): the
/// priority cut off.
fn file_key(line: &str) -> Option<String> {
    let t = line.trim();
    let (prio, rest) = t.split_once(' ')?;
    prio.trim_start_matches('-')
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| rest.trim().to_string())
}

/// `apt-cache policy` without arguments: each package file and its Release fields.
pub fn package_files(stdout: &str) -> BTreeMap<String, Origin> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in stdout.lines() {
        let t = line.trim();
        if let Some(rel) = t.strip_prefix("release ") {
            let Some(key) = &current else { continue };
            let o: &mut Origin = out.entry(key.clone()).or_default();
            for kv in rel.split(',') {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let field = match k {
                    "o" => "origin",
                    "l" => "label",
                    "a" => "suite",
                    "n" => "codename",
                    "c" => "component",
                    "v" => "version",
                    "b" => "arch",
                    _ => continue,
                };
                o.fields.insert(field, v.to_string());
            }
        } else if let Some(site) = t.strip_prefix("origin ") {
            if let Some(key) = &current {
                let o: &mut Origin = out.entry(key.clone()).or_default();
                o.fields.insert("site", site.trim().to_string());
            }
        } else if line.starts_with(' ') && t.ends_with("Packages") || t.contains("/dpkg/status") {
            current = file_key(line);
        }
    }
    out
}

/// One package in `apt-cache policy PKG…`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackagePolicy {
    pub installed: Option<String>,
    pub candidate: Option<String>,
    /// The package files each version is in.
    pub files: BTreeMap<String, Vec<String>>,
}

/// `apt-cache policy PKG…`, by package name (as apt prints it, `foo` or `foo:i386`).
pub fn package_policies(stdout: &str) -> BTreeMap<String, PackagePolicy> {
    let mut out: BTreeMap<String, PackagePolicy> = BTreeMap::new();
    let mut name: Option<String> = None;
    let mut version: Option<String> = None;
    let none = |v: &str| (v != "(none)").then(|| v.to_string());
    for line in stdout.lines() {
        if !line.starts_with(' ') {
            if let Some(n) = line.trim_end().strip_suffix(':') {
                name = Some(n.to_string());
                version = None;
                out.entry(n.to_string()).or_default();
            }
            continue;
        }
        let Some(p) = name.as_ref().and_then(|n| out.get_mut(n)) else {
            continue;
        };
        let t = line.trim();
        let indent = line.len() - line.trim_start().len();
        if let Some(v) = t.strip_prefix("Installed:") {
            p.installed = none(v.trim());
        } else if let Some(v) = t.strip_prefix("Candidate:") {
            p.candidate = none(v.trim());
        } else if t == "Version table:" {
        } else if line.starts_with(" *** ") || (indent <= 5 && !t.is_empty()) {
            let v = t.trim_start_matches("*** ").split_whitespace().next();
            version = v.map(str::to_string);
        } else if let (Some(v), Some(key)) = (&version, file_key(line)) {
            p.files.entry(v.clone()).or_default().push(key);
        }
    }
    out
}

/// The fields of each `apt-cache show` paragraph, by `(Package, Version)`.
pub fn show(stdout: &str) -> BTreeMap<(String, String), BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for para in stdout.split("\n\n") {
        let mut fields = BTreeMap::new();
        for line in para.lines() {
            if line.starts_with([' ', '\t']) {
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                fields.insert(k.to_string(), v.trim().to_string());
            }
        }
        if let (Some(p), Some(v)) = (fields.get("Package"), fields.get("Version")) {
            out.insert((p.clone(), v.clone()), fields);
        }
    }
    out
}

/// The installed packages of a dpkg status file (stanzas whose `Status` ends in
/// `installed`), sorted by name and architecture.
pub fn installed_packages(status: &str) -> Vec<crate::inventory::InstalledPackage> {
    let mut out: Vec<crate::inventory::InstalledPackage> = status
        .split("\n\n")
        .filter_map(|stanza| {
            let field = |k: &str| {
                stanza.lines().find_map(|l| {
                    l.strip_prefix(k)
                        .and_then(|r| r.strip_prefix(':'))
                        .map(|v| v.trim().to_string())
                })
            };
            field("Status")?.ends_with(" installed").then_some(())?;
            Some(crate::inventory::InstalledPackage {
                name: field("Package")?,
                arch: field("Architecture").unwrap_or_default(),
                version: field("Version")?,
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulation_lines() {
        let s = "Reading package lists...\n\
                 Inst libc6 [2.36-9+deb12u3] (2.36-9+deb12u4 Debian:12.5/stable, Debian-Security:12/stable-security [amd64]) []\n\
                 Inst newdep (1.2-1 Debian:12.5/stable [all])\n\
                 Conf libc6 (2.36-9+deb12u4 Debian:12.5/stable [amd64])\n";
        let p = simulation(s);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "libc6");
        assert_eq!(p[0].installed.as_deref(), Some("2.36-9+deb12u3"));
        assert_eq!(p[0].candidate, "2.36-9+deb12u4");
        assert_eq!(p[0].arch, "amd64");
        assert_eq!(
            (p[1].installed.as_deref(), p[1].arch.as_str()),
            (None, "all")
        );
    }

    #[test]
    fn policy_tables() {
        let files = package_files(
            "Package files:\n 100 /var/lib/dpkg/status\n     release a=now\n \
             500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages\n     \
             release v=12,o=Debian,a=stable-security,n=bookworm-security,l=Debian-Security,c=main,b=amd64\n     \
             origin deb.debian.org\nPinned packages:\n",
        );
        let key = "http://deb.debian.org/debian-security bookworm-security/main amd64 Packages";
        let o = &files[key];
        assert_eq!(o.get("label"), Some("Debian-Security"));
        assert_eq!(o.get("site"), Some("deb.debian.org"));
        assert_eq!(o.short(), "Debian-Security/stable-security");
        let pol = package_policies(&format!(
            "libc6:\n  Installed: 2.36-9+deb12u3\n  Candidate: 2.36-9+deb12u4\n  Version table:\n     \
             2.36-9+deb12u4 500\n        500 {key}\n *** 2.36-9+deb12u3 100\n        100 /var/lib/dpkg/status\n\
             gone:\n  Installed: (none)\n  Candidate: (none)\n  Version table:\n"
        ));
        assert_eq!(pol["libc6"].candidate.as_deref(), Some("2.36-9+deb12u4"));
        assert_eq!(pol["libc6"].files["2.36-9+deb12u4"], [key]);
        assert_eq!(pol["gone"].installed, None);
    }

    #[test]
    fn installed_packages_are_the_installed_stanzas() {
        let status = "Package: b\nStatus: install ok installed\nArchitecture: all\nVersion: 2\n\n\
                      Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
                      Package: a\nStatus: hold ok installed\nArchitecture: amd64\nVersion: 1:1.0-1\n";
        let got = super::installed_packages(status);
        let names: Vec<(&str, &str)> = got
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(names, [("a", "1:1.0-1"), ("b", "2")]);
    }
}
