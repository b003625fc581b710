//! `patchctl completions SHELL` and the hidden `patchctl __complete WHAT` the scripts call.
//!
//! The scripts are clap_complete's, generated from a copy of the command line whose
//! release and event arguments list one placeholder value each; the placeholder is then
//! replaced by the shell's way of running `patchctl __complete releases|events`. So the
//! versions come from the running daemon when the user presses TAB (nothing when it is
//! not reachable), and the event names from `patchd::audit::events::EVENTS`.

use clap_complete::Shell;

use crate::dbus::proxy::ManagerProxy;

const RELEASES: &str = "__patchctl_releases__";
const EVENTS: &str = "__patchctl_events__";

/// Shells `patchctl completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShellName {
    Bash,
    Zsh,
    Fish,
}

impl From<ShellName> for Shell {
    fn from(s: ShellName) -> Self {
        match s {
            ShellName::Bash => Shell::Bash,
            ShellName::Zsh => Shell::Zsh,
            ShellName::Fish => Shell::Fish,
        }
    }
}

/// What `__complete` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Completing {
    /// Versions the daemon offers (and the staged and running ones), one per line.
    Releases,
    /// Audit event names, one per line.
    Events,
}

/// The arguments whose values are completed dynamically: (subcommand, argument id, kind).
const DYNAMIC: &[(&str, &str, &str)] = &[
    ("install", "release", RELEASES),
    ("hold", "max_version", RELEASES),
    ("history", "release", RELEASES),
    ("history", "event", EVENTS),
];

/// `cmd` with each dynamic argument offering its placeholder as its only value.
fn with_placeholders(cmd: &clap::Command) -> clap::Command {
    let mut cmd = cmd.clone();
    for (sub, arg, placeholder) in DYNAMIC {
        let placeholder: &'static str = placeholder;
        cmd = cmd.mut_subcommand(*sub, |s| {
            s.mut_arg(*arg, |a| {
                a.value_parser(clap::builder::PossibleValuesParser::new([placeholder]))
            })
        });
    }
    cmd
}

/// The completion script for `shell`, values included.
pub fn script(cmd: &clap::Command, shell: Shell) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut c = with_placeholders(cmd);
    let name = c.get_name().to_owned();
    clap_complete::generate(shell, &mut c, name, &mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let text = match shell {
        Shell::Bash => {
            // Inside the generated double-quoted word lists: a command substitution.
            let t = text
                .replace(RELEASES, "$(_patchctl_values releases)")
                .replace(EVENTS, "$(_patchctl_values events)");
            format!("{BASH_HELPER}\n{t}")
        }
        Shell::Zsh => {
            let t = text
                .replace(&format!("({RELEASES})"), "{_patchctl_values releases}")
                .replace(&format!("({EVENTS})"), "{_patchctl_values events}");
            // The helper after the `#compdef` line, which must stay first.
            match t.split_once('\n') {
                Some((first, rest)) => format!("{first}\n{ZSH_HELPER}\n{rest}"),
                None => t,
            }
        }
        // `complete -a` expands a command substitution given in single quotes when the
        // user presses TAB; clap writes the value (with an empty description) in double
        // quotes, where fish would not.
        Shell::Fish => text
            .replace(
                &format!("\"{RELEASES}\\t''\""),
                "'(patchctl __complete releases 2>/dev/null)'",
            )
            .replace(
                &format!("\"{EVENTS}\\t''\""),
                "'(patchctl __complete events 2>/dev/null)'",
            )
            .replace(RELEASES, "(patchctl __complete releases 2>/dev/null)")
            .replace(EVENTS, "(patchctl __complete events 2>/dev/null)")
            // clap writes no values for a positional: install's release.
            + "complete -c patchctl -n \"__fish_patchctl_using_subcommand install\" -f -a '(patchctl __complete releases 2>/dev/null)'\n",
        _ => text,
    };
    text.into_bytes()
}

const BASH_HELPER: &str = r#"# Values from the running daemon (releases) or from patchctl itself (events); the same
# --bus-address as on the command line being completed.
_patchctl_values() {
    local i bus=()
    for ((i = 1; i < ${#COMP_WORDS[@]} - 1; i++)); do
        case "${COMP_WORDS[i]}" in
            --bus-address) bus=(--bus-address "${COMP_WORDS[i+1]}") ;;
            --bus-address=*) bus=("${COMP_WORDS[i]}") ;;
        esac
    done
    command patchctl "${bus[@]}" __complete "$1" 2>/dev/null
}
"#;

const ZSH_HELPER: &str = r#"_patchctl_values() {
    local -a vals
    vals=(${(f)"$(command patchctl __complete $1 2>/dev/null)"})
    compadd -a vals
}
"#;

/// Answer `__complete`: one value per line on stdout. Releases need the daemon; when it
/// cannot be reached nothing is printed (the shell offers nothing) and the exit status
/// says why.
pub async fn answer(p: &ManagerProxy<'_>, what: Completing) -> Result<(), zbus::Error> {
    match what {
        Completing::Events => print_events(),
        Completing::Releases => {
            // Offered, being staged (neither offered nor staged yet), staged, running.
            let status: serde_json::Value =
                serde_json::from_str(&p.get_status().await?).unwrap_or_default();
            let mut versions: Vec<String> = Vec::new();
            let listed = status["available"].as_array().cloned().unwrap_or_default();
            let candidates = listed.iter().map(|a| &a["version"]).chain([
                &status["last_job"]["release"],
                &status["staged_version"],
                &status["current_version"],
            ]);
            for v in candidates.filter_map(|v| v.as_str()) {
                if !v.is_empty() && !versions.iter().any(|x| x == v) {
                    versions.push(v.to_owned());
                }
            }
            for v in versions {
                println!("{v}");
            }
        }
    }
    Ok(())
}

pub fn print_events() {
    for e in crate::audit::events::EVENTS {
        println!("{e}");
    }
}
