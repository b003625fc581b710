//! One-line answers of mutating verbs whose reply says more than "done".

use serde_json::Value;

/// `hold`: "Hold placed." and, when it replaced one, which (`PlaceHold`'s `replaced`).
pub fn hold_placed(v: &Value) -> String {
    let replaced: Vec<String> = v["replaced"]
        .as_array()
        .map(|a| a.iter().map(describe_hold).collect())
        .unwrap_or_default();
    if replaced.is_empty() {
        "Hold placed.\n".into()
    } else {
        format!(
            "Hold placed; replaced the hold {}.\n",
            replaced.join("; and the hold ")
        )
    }
}

/// `install --now` once the daemon asked for the reboot (and went away, or sits waiting
/// for it): what happened and what comes next. The exit code is success: the switch is
/// under way, and its end is known only after the reboot.
pub fn rebooting(json: bool, v: &mut Value, ver: &str, slot: &str) -> u8 {
    if json {
        v["state"] = Value::from("switching");
        v["outcome"] = Value::from("rebooting");
        v["error"] = Value::Null;
        super::print_json(v);
    } else {
        println!(
            "Installed {ver} into slot {slot}; rebooting into it now.\n\
             After the reboot patchd checks {ver} and commits it, or falls back to the \
             release it came from (patchctl status, patchctl history)."
        );
    }
    super::exit::OK
}

/// `by uid:0: "freeze" (until …, up to 2.0.0)`.
/// After `rollback` or `mark-bad`: the release is blocked here and the daemon reboots
/// into the slot it came from (the engine always reboots after a successful rollback).
pub fn rolled_back(from: Option<&str>, what: &str) -> String {
    let release = from.map_or_else(|| "the booted release".to_owned(), |v| v.to_owned());
    format!(
        "{release} {what}: it is never installed here again (patchctl retry lifts that); \
         patchd is rebooting into the release it came from. After the reboot: patchctl \
         status, patchctl history."
    )
}

fn describe_hold(h: &Value) -> String {
    let by = h["by"].as_str().unwrap_or("?");
    let reason = h["reason"].as_str().unwrap_or("");
    let mut extra = Vec::new();
    if let Some(u) = h["until"].as_str() {
        extra.push(format!("until {}", short_time(u)));
    }
    if let Some(m) = h["max_version"].as_str() {
        extra.push(format!("up to {m}"));
    }
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(" ({})", extra.join(", "))
    };
    format!("by {by}: {reason:?}{extra}")
}

/// An RFC 3339 time without its fraction of a second.
fn short_time(t: &str) -> String {
    match t.parse::<jiff::Timestamp>() {
        Ok(ts) => ts.strftime("%Y-%m-%d %H:%M UTC").to_string(),
        Err(_) => t.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_hold_is_named() {
        let v = serde_json::json!({ "replaced": [{
            "reason": "freeze", "by": "uid:0", "since": "2026-01-01T00:00:00Z",
            "until": "2026-01-08T00:00:00.123456Z", "max_version": null
        }]});
        assert_eq!(
            hold_placed(&v),
            "Hold placed; replaced the hold by uid:0: \"freeze\" (until 2026-01-08 00:00 UTC).\n"
        );
        assert_eq!(
            hold_placed(&serde_json::json!({ "replaced": [] })),
            "Hold placed.\n"
        );
    }
}
