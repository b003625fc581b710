//! Argument checks done before anything else happens to a call: sizes, characters and
//! option keys. Anything refused here becomes `InvalidArgument`.

use std::collections::HashMap;

use jiff::Timestamp;
use zbus::zvariant::OwnedValue;

use super::types::HistoryFilter;

/// Upper bounds for string arguments (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgLimits {
    pub release: usize,
    pub reason: usize,
    pub option_entries: usize,
    pub kind: usize,
}

impl Default for ArgLimits {
    fn default() -> Self {
        Self {
            release: 128,
            reason: 1024,
            option_entries: 16,
            kind: 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {problem}")]
pub struct ArgError {
    pub what: &'static str,
    pub problem: String,
}

fn arg_err(what: &'static str, problem: impl Into<String>) -> ArgError {
    ArgError {
        what,
        problem: problem.into(),
    }
}

/// A release or version string: printable ASCII without spaces, at most `max` bytes.
/// Empty is allowed (means "none"/"newest") and returned as `None`.
pub fn version_arg(what: &'static str, s: &str, max: usize) -> Result<Option<String>, ArgError> {
    if s.len() > max {
        return Err(arg_err(what, format!("longer than {max} bytes")));
    }
    if s.is_empty() {
        return Ok(None);
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(arg_err(what, format!("character {c:?} not allowed")));
    }
    Ok(Some(s.to_owned()))
}

/// A string argument already checked by its rule: empty means none.
pub fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Free text for the audit trail (reasons): no control characters, at most `max` bytes.
pub fn text_arg(
    what: &'static str,
    s: &str,
    max: usize,
    required: bool,
) -> Result<String, ArgError> {
    if s.len() > max {
        return Err(arg_err(what, format!("longer than {max} bytes")));
    }
    if s.chars().any(char::is_control) {
        return Err(arg_err(what, "control characters not allowed"));
    }
    if required && s.trim().is_empty() {
        return Err(arg_err(what, "must not be empty"));
    }
    Ok(s.to_owned())
}

/// RFC 3339 timestamp, or empty for "none".
pub fn timestamp_arg(what: &'static str, s: &str) -> Result<Option<Timestamp>, ArgError> {
    if s.is_empty() {
        return Ok(None);
    }
    if s.len() > 64 {
        return Err(arg_err(what, "longer than 64 bytes"));
    }
    s.parse::<Timestamp>()
        .map(Some)
        .map_err(|e| arg_err(what, format!("not an RFC 3339 timestamp: {e}")))
}

/// Typed view of an `a{sv}` options argument: only `allowed` keys, each with its type.
pub struct Options<'a> {
    map: &'a HashMap<String, OwnedValue>,
}

impl<'a> Options<'a> {
    pub fn new(
        map: &'a HashMap<String, OwnedValue>,
        allowed: &[&str],
        limits: &ArgLimits,
    ) -> Result<Self, ArgError> {
        if map.len() > limits.option_entries {
            return Err(arg_err(
                "options",
                format!("more than {} entries", limits.option_entries),
            ));
        }
        if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            let shown: String = k.chars().take(64).collect();
            return Err(arg_err(
                "options",
                format!("unknown key {shown:?} (known: {})", allowed.join(", ")),
            ));
        }
        Ok(Self { map })
    }

    /// A view of options already checked against their rule (by
    /// [`super::checked`], before the method body runs).
    pub fn checked(map: &'a HashMap<String, OwnedValue>) -> Self {
        Self { map }
    }

    /// The value at `key` as a `T`; `what` says which D-Bus type it must be.
    fn typed<T: TryFrom<&'a OwnedValue>>(
        &self,
        key: &'static str,
        what: &str,
    ) -> Result<Option<T>, ArgError> {
        self.map
            .get(key)
            .map(|v| T::try_from(v).map_err(|_| arg_err(key, what)))
            .transpose()
    }

    pub fn bool(&self, key: &'static str) -> Result<Option<bool>, ArgError> {
        self.typed(key, "must be a boolean (b)")
    }

    pub fn u32(&self, key: &'static str) -> Result<Option<u32>, ArgError> {
        self.typed(key, "must be an unsigned 32-bit integer (u)")
    }

    pub fn str(&self, key: &'static str, max: usize) -> Result<Option<String>, ArgError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(v) => {
                let s = <&str>::try_from(v).map_err(|_| arg_err(key, "must be a string (s)"))?;
                Ok(Some(text_arg(key, s, max, false)?))
            }
        }
    }
}

/// Keys of `Install`'s options.
pub const INSTALL_OPTIONS: &[&str] = &["switch_now"];
/// Keys of `Switch`'s options.
pub const SWITCH_OPTIONS: &[&str] = &["force"];
/// Keys of `GetHistory`'s filter.
pub const HISTORY_FILTER: &[&str] = &["limit", "since", "event", "release"];

pub fn history_filter(
    map: &HashMap<String, OwnedValue>,
    limits: &ArgLimits,
) -> Result<HistoryFilter, ArgError> {
    let o = Options::new(map, HISTORY_FILTER, limits)?;
    let since = match o.str("since", 64)? {
        Some(s) => timestamp_arg("since", &s)?,
        None => None,
    };
    let event = match o.str("event", limits.kind)? {
        Some(k) => version_arg("event", &k, limits.kind)?,
        None => None,
    };
    let release = match o.str("release", limits.release)? {
        Some(r) => version_arg("release", &r, limits.release)?,
        None => None,
    };
    Ok(HistoryFilter {
        limit: o.u32("limit")?,
        since,
        event,
        release,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_rejects_oversized_and_spaces() {
        assert!(version_arg("release", &"1".repeat(129), 128).is_err());
        assert!(version_arg("release", "1.0 beta", 128).is_err());
        assert_eq!(version_arg("release", "", 128), Ok(None));
        assert_eq!(
            version_arg("release", "1.2.3", 128),
            Ok(Some("1.2.3".to_owned()))
        );
    }

    #[test]
    fn text_rejects_control_and_empty_required() {
        assert!(text_arg("reason", "a\nb", 100, true).is_err());
        assert!(text_arg("reason", "  ", 100, true).is_err());
        assert!(text_arg("reason", "", 100, false).is_ok());
        assert!(text_arg("reason", &"x".repeat(101), 100, true).is_err());
    }

    #[test]
    fn options_reject_unknown_keys_and_wrong_types() {
        let limits = ArgLimits::default();
        let mut m = HashMap::new();
        m.insert("switch_now".to_owned(), OwnedValue::from(true));
        let o = Options::new(&m, INSTALL_OPTIONS, &limits).unwrap();
        assert_eq!(o.bool("switch_now"), Ok(Some(true)));

        m.insert("bogus".to_owned(), OwnedValue::from(1u32));
        assert!(Options::new(&m, INSTALL_OPTIONS, &limits).is_err());

        let mut m = HashMap::new();
        m.insert("switch_now".to_owned(), OwnedValue::from(1u32));
        let o = Options::new(&m, INSTALL_OPTIONS, &limits).unwrap();
        assert!(o.bool("switch_now").is_err());
    }

    #[test]
    fn history_filter_parses_and_checks() {
        let limits = ArgLimits::default();
        let mut m = HashMap::new();
        m.insert("limit".to_owned(), OwnedValue::from(5u32));
        m.insert(
            "since".to_owned(),
            OwnedValue::try_from(zbus::zvariant::Value::from("2026-01-01T00:00:00Z")).unwrap(),
        );
        let f = history_filter(&m, &limits).unwrap();
        assert_eq!(f.limit, Some(5));
        assert!(f.since.is_some());
        m.insert(
            "since".to_owned(),
            OwnedValue::try_from(zbus::zvariant::Value::from("yesterday")).unwrap(),
        );
        assert!(history_filter(&m, &limits).is_err());
    }
}
