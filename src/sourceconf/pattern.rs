//! `*`/`?` globs for package names and origin fields.

/// Does `s` match `pattern` (`*` any run, `?` one character, anything else itself)?
pub fn glob(pattern: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        // Iterative with one backtrack point: linear enough for names and origins.
        let (mut pi, mut si) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            match p.get(pi) {
                Some(b'*') => {
                    star = Some((pi, si));
                    pi += 1;
                }
                Some(&c) if c == b'?' || c == s[si] => {
                    pi += 1;
                    si += 1;
                }
                _ => match star {
                    Some((sp, ss)) => {
                        pi = sp + 1;
                        si = ss + 1;
                        star = Some((sp, ss + 1));
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|c| *c == b'*')
    }
    go(pattern.as_bytes(), s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn stars_and_marks() {
        assert!(glob("*-security", "bookworm-security"));
        assert!(glob("lib*", "libssl3"));
        assert!(glob("*", ""));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(!glob("*-security", "bookworm-updates"));
        assert!(glob("o*n*l", "openssl"));
        assert!(!glob("openssl", "openssl3"));
    }
}
