//! Delegation path patterns and the encoding of repository names into file names.

/// Whether `target` matches a delegation path pattern the way python-tuf decides it:
/// both split on `/`, the same number of segments, each segment matched with shell
/// wildcards (`*`, `?`, `[seq]`, `[!seq]`) that never cross a `/`.
pub fn path_matches(pattern: &str, target: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').collect();
    let t: Vec<&str> = target.split('/').collect();
    p.len() == t.len() && p.iter().zip(&t).all(|(p, t)| segment_matches(p, t))
}

fn segment_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with single-star backtracking: linear memory, no recursion, so a
    // hostile pattern cannot blow the stack.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = class_matches(&p, pi, t[ti]) {
                        if matched {
                            pi = next;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == '[' {
                        // An unclosed '[' is a literal, as in fnmatch.
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                c if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Match `c` against the class starting at `p[start] == '['`; returns (matched, index
/// after the class), or `None` if the class is not closed.
fn class_matches(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!'));
    if negate {
        i += 1;
    }
    let first = i;
    let mut matched = false;
    while i < p.len() {
        if p[i] == ']' && i > first {
            return Some((matched != negate, i + 1));
        }
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

/// Percent-encode a repository name (role name, target path) into one file-name
/// component, like python-tuf's `urllib.parse.quote(name, safe="")`: only ASCII
/// letters, digits and `_.-~` stay; everything else, `/` and `%` included, becomes
/// `%XX`. The result never contains `/` and is never `.` or `..`.
pub fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    match out.as_str() {
        "." => "%2E".into(),
        ".." => "%2E%2E".into(),
        _ => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_like_python_tuf() {
        assert!(path_matches("files/*", "files/a.txt"));
        assert!(!path_matches("files/*", "files/sub/a.txt"));
        assert!(path_matches("*/*.tgz", "x/y.tgz"));
        assert!(path_matches("file?.txt", "file1.txt"));
        assert!(path_matches("f[0-9].txt", "f7.txt"));
        assert!(!path_matches("f[!0-9].txt", "f7.txt"));
        assert!(path_matches("a*b*c", "aXXbYYc"));
        assert!(!path_matches("a*b*c", "aXXbYY"));
        assert!(path_matches(
            "releases/*/*/manifest.json",
            "releases/p/1.0/manifest.json"
        ));
        assert!(!path_matches("releases/*", "releases"));
        assert!(path_matches("[x", "[x"));
    }

    #[test]
    fn encoding() {
        assert_eq!(encode_name("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_name(".."), "%2E%2E");
        assert_eq!(encode_name("../../etc/passwd"), "..%2F..%2Fetc%2Fpasswd");
        assert_eq!(encode_name("bin-0a"), "bin-0a");
    }
}
