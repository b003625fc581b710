//! `[components]`: what this device offers for release components — where app bundles
//! live, how their units are restarted, and which executable installs each handler
//! component. Handler paths come only from here, never from a manifest: a release can
//! name a component, but only the device decides what runs for it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::app_bundle::APPS_DIR;
use crate::duration;
use crate::setting::{self, InvalidSetting};

/// `[components]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawComponents {
    pub apps_dir: Option<PathBuf>,
    pub restart_command: Option<Vec<String>>,
    #[serde(default, with = "duration::option")]
    pub handler_timeout: Option<Duration>,
    pub handler: Option<Vec<RawHandler>>,
}

/// One `[[components.handler]]` entry as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHandler {
    pub component: Option<String>,
    pub path: Option<PathBuf>,
    #[serde(default, with = "duration::option")]
    pub timeout: Option<Duration>,
    pub input: Option<String>,
}

/// How a handler is given the verified payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HandlerInput {
    /// On its standard input (a regular file, seekable).
    #[default]
    Stdin,
    /// As an inherited read-only file descriptor whose number is in `PATCHD_PAYLOAD_FD`;
    /// standard input is `/dev/null`.
    Fd,
}

impl std::str::FromStr for HandlerInput {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stdin" => Ok(HandlerInput::Stdin),
            "fd" => Ok(HandlerInput::Fd),
            other => Err(format!("{other:?}: must be \"stdin\" or \"fd\"")),
        }
    }
}

/// `[components]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentsConfig {
    /// Device path of the app bundles' directory (`NAME/{a,b,current}` below it).
    pub apps_dir: PathBuf,
    /// Program and leading arguments restarting an app bundle's units (names appended).
    pub restart_command: Vec<String>,
    /// Handler executables by component name.
    pub handlers: BTreeMap<String, HandlerEntry>,
}

/// One handler component's executable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HandlerEntry {
    /// Device path of the executable.
    pub path: PathBuf,
    /// How long one run may take before it is killed and counted as failed.
    pub timeout: Duration,
    /// How the payload is given to it.
    pub input: HandlerInput,
}

/// Default bound on one handler run.
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(600);

impl Default for ComponentsConfig {
    fn default() -> Self {
        Self {
            apps_dir: PathBuf::from(APPS_DIR),
            restart_command: vec!["systemctl".into(), "restart".into(), "--".into()],
            handlers: BTreeMap::new(),
        }
    }
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !s.starts_with('.')
}

impl ComponentsConfig {
    pub fn from_raw(raw: RawComponents) -> Result<Self, InvalidSetting> {
        let mut c = Self::default();
        if let Some(d) = raw.apps_dir {
            setting::absolute("components.apps_dir", &d)?;
            c.apps_dir = d;
        }
        if let Some(argv) = raw.restart_command {
            if argv.first().is_none_or(|p| p.is_empty()) {
                return Err(InvalidSetting::new(
                    "components.restart_command",
                    "needs a program (the unit names are appended to it)",
                ));
            }
            c.restart_command = argv;
        }
        let timeout = raw.handler_timeout.unwrap_or(DEFAULT_HANDLER_TIMEOUT);
        check_timeout("components.handler_timeout", timeout)?;
        for h in raw.handler.unwrap_or_default() {
            let name = h
                .component
                .ok_or_else(|| InvalidSetting::new("components.handler.component", "required"))?;
            if !name_ok(&name) {
                return Err(InvalidSetting::new(
                    "components.handler.component",
                    format!("{name:?}: 1 to 64 of a-z A-Z 0-9 - _ . (not starting with .)"),
                ));
            }
            let path = h
                .path
                .ok_or_else(|| InvalidSetting::new("components.handler.path", "required"))?;
            setting::absolute("components.handler.path", &path)?;
            let timeout = h.timeout.unwrap_or(timeout);
            check_timeout("components.handler.timeout", timeout)?;
            let input = match h.input {
                None => HandlerInput::default(),
                Some(i) => i
                    .parse()
                    .map_err(|why| InvalidSetting::new("components.handler.input", why))?,
            };
            if c.handlers
                .insert(
                    name.clone(),
                    HandlerEntry {
                        path,
                        timeout,
                        input,
                    },
                )
                .is_some()
            {
                return Err(InvalidSetting::new(
                    "components.handler.component",
                    format!("{name:?} is given twice"),
                ));
            }
        }
        Ok(c)
    }
}

fn check_timeout(key: &str, t: Duration) -> Result<(), InvalidSetting> {
    if t < Duration::from_secs(1) || t > Duration::from_secs(24 * 3600) {
        return Err(InvalidSetting::new(key, "must be between 1s and 24h"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ComponentsConfig, InvalidSetting> {
        ComponentsConfig::from_raw(toml::from_str(text).unwrap())
    }

    #[test]
    fn defaults_offer_app_bundles_under_var_lib_and_no_handler() {
        let c = parse("").unwrap();
        assert_eq!(c.apps_dir, PathBuf::from("/var/lib/patchd/apps"));
        assert_eq!(c.restart_command[0], "systemctl");
        assert!(c.handlers.is_empty());
    }

    #[test]
    fn handlers_by_name_with_their_own_or_the_section_timeout() {
        let c = parse(
            "handler_timeout = \"30s\"\n[[handler]]\ncomponent = \"mcu\"\npath = \"/usr/libexec/mcu\"\n\
             [[handler]]\ncomponent = \"fpga\"\npath = \"/usr/libexec/fpga\"\ntimeout = \"2m\"\n",
        )
        .unwrap();
        assert_eq!(c.handlers["mcu"].timeout, Duration::from_secs(30));
        assert_eq!(c.handlers["fpga"].timeout, Duration::from_secs(120));
        assert_eq!(c.handlers["mcu"].input, HandlerInput::Stdin, "the default");
    }

    #[test]
    fn a_handler_takes_its_payload_on_stdin_or_as_a_descriptor() {
        let entry = |input: &str| {
            parse(&format!(
                "[[handler]]\ncomponent = \"mcu\"\npath = \"/x\"\ninput = \"{input}\"\n"
            ))
        };
        assert_eq!(entry("fd").unwrap().handlers["mcu"].input, HandlerInput::Fd);
        assert_eq!(
            entry("stdin").unwrap().handlers["mcu"].input,
            HandlerInput::Stdin
        );
        let e = entry("file").unwrap_err();
        assert_eq!(e.key, "components.handler.input");
        assert!(e.to_string().contains("\"stdin\" or \"fd\""), "{e}");
    }

    #[test]
    fn bad_entries_name_their_key() {
        for (text, key) in [
            ("apps_dir = \"apps\"", "components.apps_dir"),
            ("restart_command = []", "components.restart_command"),
            ("handler_timeout = \"0s\"", "components.handler_timeout"),
            ("[[handler]]\npath = \"/x\"", "components.handler.component"),
            ("[[handler]]\ncomponent = \"../x\"\npath = \"/x\"", "components.handler.component"),
            ("[[handler]]\ncomponent = \"m\"\npath = \"x\"", "components.handler.path"),
            (
                "[[handler]]\ncomponent = \"m\"\npath = \"/x\"\ninput = \"pipe\"",
                "components.handler.input",
            ),
            (
                "[[handler]]\ncomponent = \"m\"\npath = \"/x\"\n[[handler]]\ncomponent = \"m\"\npath = \"/y\"",
                "components.handler.component",
            ),
        ] {
            assert_eq!(parse(text).unwrap_err().key, key, "{text}");
        }
    }
}
