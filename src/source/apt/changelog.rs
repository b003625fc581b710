//! Debian changelogs: the entries a package's upgrade brings (newer than the installed
//! version, up to the candidate), the CVE ids they name and their highest urgency.
//! The changelog comes from the candidate .deb itself (`/usr/share/doc/<pkg>/
//! changelog.Debian.gz`), which apt fetched and checked against the signed index.

use std::cmp::Ordering;
use std::io::Read;

use super::debversion;
use crate::sourceconf::Urgency;

/// One entry's header: `pkg (version) dist; urgency=…`, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub version: String,
    pub urgency: Option<Urgency>,
    pub body: String,
    /// The day of the trailer line (` -- Name <mail>  Mon, 07 Dec 2026 10:00:00 +0000`).
    pub date: Option<jiff::civil::Date>,
}

/// What the entries between two versions say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Since {
    pub cves: Vec<String>,
    pub urgency: Option<Urgency>,
    /// How many entries lie between the versions.
    pub entries: usize,
    /// The newest entry's day.
    pub newest: Option<jiff::civil::Date>,
}

/// The entries of a changelog, newest first as written.
pub fn parse(text: &str) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for line in text.lines() {
        if let Some(e) = header(line) {
            out.push(e);
        } else if let Some(e) = out.last_mut() {
            if let Some(t) = line.strip_prefix(" -- ") {
                e.date = t
                    .split_once(">  ")
                    .and_then(|(_, d)| jiff::fmt::rfc2822::parse(d.trim()).ok())
                    .map(|z| z.date());
            }
            e.body.push_str(line);
            e.body.push('\n');
        }
    }
    out
}

fn header(line: &str) -> Option<Entry> {
    // A header starts in column one with a package name; bodies are indented.
    if line.starts_with([' ', '\t']) || line.is_empty() {
        return None;
    }
    let open = line.find(" (")?;
    let close = line[open..].find(')')? + open;
    let version = line[open + 2..close].trim().to_string();
    let rest = &line[close + 1..];
    let urgency = rest
        .split(';')
        .nth(1)
        .and_then(|kv| {
            kv.split(',')
                .find_map(|p| p.trim().strip_prefix("urgency="))
        })
        .and_then(Urgency::parse);
    Some(Entry {
        version,
        urgency,
        body: String::new(),
        date: None,
    })
}

/// Entries newer than `installed` and not newer than `candidate`.
pub fn since(entries: &[Entry], installed: &str, candidate: &str) -> Since {
    let mut s = Since::default();
    for e in entries {
        let newer = debversion::compare(&e.version, installed) == Ordering::Greater;
        let within = debversion::compare(&e.version, candidate) != Ordering::Greater;
        if !(newer && within) {
            continue;
        }
        s.entries += 1;
        s.urgency = s.urgency.max(e.urgency);
        s.newest = s.newest.max(e.date);
        for c in cve_ids(&e.body) {
            if !s.cves.contains(&c) {
                s.cves.push(c);
            }
        }
    }
    s.cves.sort();
    s
}

/// Every `CVE-YYYY-NNNN…` in `text`, as written (upper case).
pub fn cve_ids(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = find_ci(&b[i..], b"CVE-").map(|p| p + i) {
        let year = &b[at + 4..];
        let y = year.iter().take_while(|c| c.is_ascii_digit()).count();
        if y == 4 && year.get(4) == Some(&b'-') {
            let num = &year[5..];
            let n = num.iter().take_while(|c| c.is_ascii_digit()).count();
            if n >= 4 {
                let id = format!(
                    "CVE-{}-{}",
                    String::from_utf8_lossy(&year[..4]),
                    String::from_utf8_lossy(&num[..n])
                );
                if !out.contains(&id) {
                    out.push(id);
                }
            }
        }
        i = at + 4;
    }
    out
}

fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// The changelog of `package` inside a .deb's data archive (the tar `dpkg-deb
/// --fsys-tarfile` writes), still gzip-compressed; `None` when the package ships none.
pub fn find_in_tar(tar_bytes: &[u8], package: &str) -> std::io::Result<Option<Vec<u8>>> {
    let wanted = [
        format!("usr/share/doc/{package}/changelog.Debian.gz"),
        format!("usr/share/doc/{package}/changelog.gz"),
    ];
    let mut archive = tar::Archive::new(tar_bytes);
    let mut found: Vec<(usize, Vec<u8>)> = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if let Some(rank) = wanted.iter().position(|w| *w == path) {
            if entry.header().entry_type().is_file() {
                let mut data = Vec::new();
                entry.by_ref().take(16 << 20).read_to_end(&mut data)?;
                found.push((rank, data));
            }
        }
    }
    found.sort_by_key(|(r, _)| *r);
    Ok(found.into_iter().next().map(|(_, d)| d))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
openssl (3.0.15-1~deb12u1) bookworm-security; urgency=high

  * New upstream release.
    - Fixes CVE-2024-5535 and cve-2024-9143.

 -- Maintainer <m@example.org>  Mon, 28 Oct 2024 10:00:00 +0000

openssl (3.0.14-1~deb12u2) bookworm; urgency=medium

  * Fix CVE-2024-4741 (and again CVE-2024-4741).

 -- Maintainer <m@example.org>  Mon, 01 Jul 2024 10:00:00 +0000

openssl (3.0.13-1~deb12u1) bookworm-security; urgency=emergency

  * CVE-2024-0727.
";

    #[test]
    fn entries_between_installed_and_candidate() {
        let e = parse(LOG);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].version, "3.0.15-1~deb12u1");
        assert_eq!(e[2].urgency, Some(Urgency::Emergency));
        let s = since(&e, "3.0.13-1~deb12u1", "3.0.15-1~deb12u1");
        assert_eq!(s.entries, 2);
        assert_eq!(s.cves, ["CVE-2024-4741", "CVE-2024-5535", "CVE-2024-9143"]);
        assert_eq!(s.urgency, Some(Urgency::High));
        assert_eq!(s.newest, Some(jiff::civil::date(2024, 10, 28)));
        // A candidate below the newest entry leaves that entry out.
        let s = since(&e, "3.0.13-1~deb12u1", "3.0.14-1~deb12u2");
        assert_eq!((s.entries, s.urgency), (1, Some(Urgency::Medium)));
        assert_eq!(since(&e, "3.0.15-1~deb12u1", "3.0.15-1~deb12u1").entries, 0);
    }

    #[test]
    fn cve_ids_need_four_digit_years_and_numbers() {
        assert_eq!(
            cve_ids("CVE-2024-12345, CVE-24-1234, CVE-2024-12, xCVE-2023-0001"),
            ["CVE-2024-12345", "CVE-2023-0001"]
        );
    }
}
