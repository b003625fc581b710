//! The list of audit event names (`patchd::audit::events::EVENTS`, offered by `patchctl`
//! completions and printed by `patchctl __complete events`) names every event the sources
//! write: each literal passed as the event of `commit`, `commit_with`, `audit_with`, `audit_about` or
//! `Entry::new`, and each `…EVENT: &str` constant. A new event missing from the list fails
//! here, naming the file.

use std::path::Path;

/// The string literal right after `open` in `text` (skipping one `ident,` argument before
/// it, as in `commit(doc, "staged", …)`), if the call's event is a literal.
fn event_after(text: &str) -> Option<String> {
    let mut rest = text.trim_start();
    if !rest.starts_with('"') {
        let comma = rest.find(',')?;
        let first = &rest[..comma];
        if !first
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == '&')
        {
            return None;
        }
        rest = rest[comma + 1..].trim_start();
    }
    let body = rest.strip_prefix('"')?;
    let end = body.find('"')?;
    Some(body[..end].to_owned())
}

fn scan(dir: &Path, found: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            scan(&p, found);
            continue;
        }
        if p.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let file = p.display().to_string();
        for open in [
            ".commit(",
            ".commit_with(",
            ".audit_with(",
            ".audit_about(",
            "Entry::new(",
        ] {
            for (i, _) in text.match_indices(open) {
                if let Some(ev) = event_after(&text[i + open.len()..]) {
                    found.push((ev, file.clone()));
                }
            }
        }
        for (i, _) in text.match_indices("EVENT: &str = \"") {
            let body = &text[i + "EVENT: &str = \"".len()..];
            if let Some(end) = body.find('"') {
                found.push((body[..end].to_owned(), file.clone()));
            }
        }
    }
}

#[test]
fn every_event_the_sources_write_is_in_the_list() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    scan(&src, &mut found);
    // The audit room's own doc example is not an event patchd writes.
    found.retain(|(ev, file)| !(ev == "switch" && file.ends_with("audit/mod.rs")));
    assert!(
        found.len() > 20,
        "the scan finds the engine's events: {found:?}"
    );
    let list = patchd::audit::events::EVENTS;
    let missing: Vec<_> = found
        .iter()
        .filter(|(ev, _)| !list.contains(&ev.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "add these to src/audit/events.rs: {missing:?}"
    );
    let stale: Vec<_> = list
        .iter()
        .filter(|ev| !found.iter().any(|(f, _)| f == *ev))
        .collect();
    assert!(stale.is_empty(), "listed but never written: {stale:?}");
    let mut sorted = list.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, list, "EVENTS is sorted and has no repeats");
}
