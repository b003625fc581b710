//! Scrubs secrets from everything the service answers: read-only calls are open to every
//! local user, so credentials in repository URLs, tokens in query strings and fields
//! named like secrets must never leave the daemon.

use serde_json::Value;

const REDACTED: &str = "<redacted>";

/// Object keys whose values are always hidden (compared case-insensitively, `-` = `_`).
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "token",
    "access_token",
    "secret",
    "client_secret",
    "authorization",
    "api_key",
    "apikey",
    "private_key",
    "credentials",
    "cookie",
];

/// Query parameters whose values are hidden in URLs found in text.
const SECRET_PARAMS: &[&str] = &[
    "token",
    "access_token",
    "password",
    "secret",
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "api_key",
    "apikey",
    "key",
];

fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase().replace('-', "_");
    SECRET_KEYS.contains(&k.as_str())
}

/// Scrub a JSON document in place.
pub fn redact_json(v: &mut Value) {
    match v {
        Value::String(s) => {
            let r = redact_text(s);
            if r != *s {
                *s = r;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_json),
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if is_secret_key(k) && !v.is_null() {
                    *v = Value::String(REDACTED.to_owned());
                } else {
                    redact_json(v);
                }
            }
        }
        _ => {}
    }
}

/// Scrub URLs inside free text: `scheme://user:pass@host` loses its user info and secret
/// query parameters lose their values.
pub fn redact_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The URL runs until whitespace or a quote.
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>'))
            .unwrap_or(tail.len());
        let (url, after) = tail.split_at(end);
        out.push_str(&redact_url_rest(url));
        rest = after;
    }
    out.push_str(rest);
    out
}

/// `url` is everything after `scheme://`.
fn redact_url_rest(url: &str) -> String {
    let auth_end = url.find(['/', '?', '#']).unwrap_or(url.len());
    let (authority, path) = url.split_at(auth_end);
    let authority = match authority.rfind('@') {
        Some(at) => format!("{REDACTED}@{}", &authority[at + 1..]),
        None => authority.to_owned(),
    };
    let Some(q) = path.find('?') else {
        return authority + path;
    };
    let (p, query) = path.split_at(q + 1);
    let (query, frag) = match query.find('#') {
        Some(h) => query.split_at(h),
        None => (query, ""),
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                format!("{k}={REDACTED}")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{authority}{p}{}{frag}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strips_user_info_and_secret_params() {
        let s = "fetch https://bob:hunter2@repo.example/metadata/root.json?token=abc&x=1 failed";
        let r = redact_text(s);
        assert!(!r.contains("hunter2"), "{r}");
        assert!(!r.contains("abc"), "{r}");
        assert!(r.contains("repo.example/metadata/root.json"), "{r}");
        assert!(r.contains("x=1"), "{r}");
    }

    #[test]
    fn plain_text_untouched() {
        let s = "slot b verified: 1.2.3 (sha256 ab12)";
        assert_eq!(redact_text(s), s);
        assert_eq!(redact_text("file:///var/lib/x"), "file:///var/lib/x");
    }

    #[test]
    fn secret_keys_hidden_in_json() {
        let mut v = json!({
            "repo": {"url": "https://u:p@h/x", "Access-Token": "t0k", "password": "pw"},
            "list": ["http://a:b@c/"],
            "token": null
        });
        redact_json(&mut v);
        let s = v.to_string();
        for secret in ["t0k", "pw\"", "u:p", "a:b"] {
            assert!(!s.contains(secret), "{secret} in {s}");
        }
        assert_eq!(v["token"], Value::Null);
    }
}
