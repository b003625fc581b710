//! Configuration loading: defaults, drop-in order, and bad input named by file and line.

use std::fs;
use std::path::Path;
use std::time::Duration;

use patchd::config::{self, ConfigError, RepoSource};
use patchd::paths::Paths;
use patchd::policy::Urgency;

fn root() -> (tempfile::TempDir, Paths) {
    let d = tempfile::tempdir().unwrap();
    let p = Paths::new(d.path());
    fs::create_dir_all(p.config_dropin_dir()).unwrap();
    (d, p)
}

fn write(p: &Path, s: &str) {
    fs::write(p, s).unwrap();
}

#[test]
fn no_files_gives_defaults() {
    let (_d, p) = root();
    let c = config::load(&p).unwrap();
    assert!(c.sources.is_empty());
    assert_eq!(c, config::Config::default());
    assert_eq!(c.boot_config, None);
    assert_eq!(c.device.channel, "stable");
    assert_eq!(c.repository.source, None);
    assert_eq!(c.repository.check_interval, Duration::from_secs(6 * 3600));
    assert!(c.policy.windows.is_empty());
    assert!(c.policy.stage_outside_windows);
    assert_eq!(c.health.deadline, Duration::from_secs(600));
    assert_eq!(c.audit.path, Path::new("/var/lib/patchd/audit.log"));
    assert!(c.policy.inhibitors.sessions);
}

const FULL: &str = r#"
[device]
product = "appliance"
channel = "staging"
tags = ["canary", "rack-7"]

[repository]
url = "https://updates.example.com/repo/"
trusted_root = "/usr/share/patchd/root.json"
check_interval = "2h"
check_jitter = "10m"

[policy]
time_zone = "Europe/Berlin"
windows = ["Mon-Fri 01:00-03:00", "Sat,Sun 02:00-06:00"]
stage_outside_windows = true

[[policy.urgency]]
kind = "security"
min_severity = "critical"
action = "immediate"

[[policy.urgency]]
kind = "feature"
action = "approval"

[policy.inhibitors]
sessions = true
inhibitor_locks = false
command = ["/usr/local/bin/ok-to-reboot"]
command_timeout = "20s"

[health]
units = ["nginx.service", "getty@tty1.service"]
deadline = "15m"
probation = "24h"

[[health.command]]
name = "db"
run = ["/usr/bin/pg_isready", "-q"]
timeout = "30s"

[[health.http]]
name = "api"
url = "http://127.0.0.1:8080/healthz"
status = 204
required = false

[boot]
backend = "grub"

[slots]
backend = "file"

[audit]
max_size = 1048576
keep = 2

[metrics]
textfile = "/var/lib/prometheus/node-exporter/patchd.prom"
"#;

#[test]
fn full_example_is_understood() {
    let (_d, p) = root();
    write(&p.config_file(), FULL);
    let c = config::load(&p).unwrap();
    assert_eq!(c.device.product.as_deref(), Some("appliance"));
    assert_eq!(c.device.tags, vec!["canary", "rack-7"]);
    assert!(
        matches!(&c.repository.source, Some(RepoSource::Url(u)) if u.0.host_str() == Some("updates.example.com"))
    );
    assert_eq!(c.repository.check_jitter, Duration::from_secs(600));
    assert_eq!(c.policy.windows.len(), 2);
    assert_eq!(c.policy.urgency[0].action, Urgency::Immediate);
    assert!(!c.policy.inhibitors.inhibitor_locks);
    assert_eq!(c.health.units.len(), 2);
    assert_eq!(c.health.commands[0].timeout, Some(Duration::from_secs(30)));
    assert!(c.health.commands[0].required);
    assert_eq!(c.health.http[0].status, 204);
    assert!(!c.health.http[0].required);
    assert_eq!(c.health.probation, Duration::from_secs(86400));
    assert_eq!(
        c.boot_config.as_ref().unwrap().backend,
        patchd::boot::BackendKind::Grub
    );
    assert_eq!(c.audit.limits.keep, 2);
    let pol = c.policy.to_policy();
    assert_eq!(pol.schedule.time_zone_name(), "Europe/Berlin");
    let report = config::check(&p).unwrap().to_string();
    assert!(
        report.contains("configuration OK") && report.contains("patchd.toml"),
        "{report}"
    );
}

#[test]
fn dropins_apply_in_lexical_order_per_key() {
    let (_d, p) = root();
    write(&p.config_file(), FULL);
    let dir = p.config_dropin_dir();
    write(
        &dir.join("20-late.toml"),
        "[device]\nchannel = \"stable\"\n[policy]\nwindows = [\"daily 03:00-04:00\"]\n",
    );
    write(
        &dir.join("10-early.toml"),
        "[device]\nchannel = \"beta\"\ntags = [\"edge\"]\n[boot.grub]\nenv = \"/boot/efi/grubenv\"\n",
    );
    write(
        &dir.join("30-ignored.toml.dpkg-old"),
        "this is not toml [[[",
    );
    write(&dir.join("README"), "not read");
    let c = config::load(&p).unwrap();
    assert_eq!(c.device.channel, "stable", "20-late wins over 10-early");
    assert_eq!(c.device.tags, vec!["edge"], "arrays are replaced whole");
    assert_eq!(
        c.device.product.as_deref(),
        Some("appliance"),
        "untouched keys stay"
    );
    assert_eq!(c.policy.windows.len(), 1);
    let boot = c.boot_config.as_ref().unwrap();
    assert_eq!(
        boot.backend,
        patchd::boot::BackendKind::Grub,
        "[boot] from the main file stays"
    );
    assert_eq!(
        boot.grub.env,
        Path::new("/boot/efi/grubenv"),
        "[boot.grub] from the drop-in"
    );
    assert_eq!(c.sources.len(), 3);
    assert!(c.sources[1].ends_with("10-early.toml"));
}

fn parse_err(main: &str) -> ConfigError {
    let (_d, p) = root();
    write(&p.config_file(), main);
    config::load(&p).unwrap_err()
}

fn assert_parse_err(main: &str, line: usize, needle: &str) {
    let e = parse_err(main);
    match &e {
        ConfigError::Parse {
            path,
            line: l,
            message,
            ..
        } => {
            assert!(path.ends_with("etc/patchd/patchd.toml"), "{e}");
            assert_eq!(*l, line, "{e}");
            assert!(message.contains(needle), "{e}");
        }
        other => panic!("expected a parse error, got {other}"),
    }
    assert!(
        e.to_string().contains(&format!("patchd.toml:{line}:")),
        "{e}"
    );
}

#[test]
fn unknown_keys_are_errors_with_line() {
    assert_parse_err(
        "[device]\nchannel = \"stable\"\nchanel = \"x\"\n",
        3,
        "unknown field",
    );
    assert_parse_err("\n\n[devices]\n", 3, "unknown field");
    assert_parse_err("[policy.inhibitors]\nusers = true\n", 2, "unknown field");
    assert_parse_err(
        "[[health.command]]\nname = \"x\"\nrun = [\"/bin/true\"]\nshell = true\n",
        4,
        "unknown field",
    );
}

#[test]
fn bad_windows_are_errors_with_line() {
    assert_parse_err(
        "[policy]\ntime_zone = \"UTC\"\nwindows = [\"Mon-Fri 01:00-03:00\", \"Fry 01:00-02:00\"]\n",
        3,
        "unknown day",
    );
    assert_parse_err(
        "[policy]\nwindows = [\"Mon 25:00-26:00\"]\n",
        2,
        "start time",
    );
}

#[test]
fn wrong_types_are_errors_with_line() {
    assert_parse_err("[device]\ntags = \"canary\"\n", 2, "invalid type");
    assert_parse_err(
        "[policy]\nstage_outside_windows = \"yes\"\n",
        2,
        "invalid type",
    );
    assert_parse_err("[audit]\nmax_size = -1\n", 2, "invalid value");
    assert_parse_err("[health]\ndeadline = 600\n", 2, "invalid type");
    assert_parse_err(
        "[health]\ndeadline = \"ten minutes\"\n",
        2,
        "invalid duration",
    );
    assert_parse_err(
        "[[policy.urgency]]\nkind = \"cosmetic\"\naction = \"window\"\n",
        2,
        "unknown variant",
    );
    assert_parse_err("[device\n", 1, "");
}

#[test]
fn bad_urls_are_errors_with_line() {
    assert_parse_err("[repository]\nurl = \"not a url\"\n", 2, "invalid URL");
    assert_parse_err(
        "[repository]\nurl = \"ftp://example.com/repo\"\n",
        2,
        "scheme",
    );
    assert_parse_err(
        "[[health.http]]\nname = \"a\"\nurl = \"localhost:80\"\n",
        3,
        "",
    );
}

#[test]
fn bad_time_zone_names_the_key() {
    let e = parse_err("[policy]\ntime_zone = \"Europe/Atlantis\"\n");
    assert!(
        matches!(&e, ConfigError::Invalid { key, .. } if key == "policy.time_zone"),
        "{e}"
    );
    assert!(
        e.to_string().contains("Europe/Atlantis") && e.to_string().contains("patchd.toml"),
        "{e}"
    );
}

#[test]
fn cross_key_rules() {
    let cases = [
        ("[device]\nproduct = \"p\"\n[repository]\nurl = \"http://10.0.0.1/repo\"\n", "repository.url"),
        ("[device]\nproduct = \"p\"\n[repository]\nurl = \"https://x/\"\ndir = \"/srv/repo\"\n", "repository"),
        ("[repository]\ndir = \"/srv/repo\"\n", "device.product"),
        ("[device]\nproduct = \"p\"\n[repository]\ndir = \"srv/repo\"\n", "repository.dir"),
        ("[device]\nproduct = \"../p\"\n", "device.product"),
        ("[health]\nunits = [\"nginx\"]\n", "health.units"),
        ("[[health.command]]\nname = \"a\"\nrun = [\"true\"]\n", "health.command"),
        ("[[health.command]]\nname = \"a\"\nrun = []\n", "health.command"),
        ("[[health.command]]\nname = \"a\"\nrun = [\"/bin/true\"]\n[[health.http]]\nname = \"a\"\nurl = \"http://x/\"\n", "health.http"),
        ("[[health.http]]\nname = \"a\"\nurl = \"http://x/\"\nstatus = 999\n", "health.http"),
        ("[health]\ndeadline = \"0s\"\n", "health.deadline"),
        ("[audit]\nmax_size = 10\n", "audit"),
        ("[audit]\npath = \"audit.log\"\n", "audit.path"),
        ("[policy.inhibitors]\ncommand = [\"who\"]\n", "policy.inhibitors.command"),
        ("[repository]\ncheck_interval = \"5s\"\n", "repository.check_interval"),
        ("[boot]\nbackend = \"lilo\"\n", "boot"),
        ("[boot]\nslots = [\"a\"]\n", "boot"),
        ("[boot]\nbackend = \"file\"\nsecret = 1\n", "boot"),
    ];
    for (text, key) in cases {
        let e = parse_err(text);
        assert!(
            matches!(&e, ConfigError::Invalid { key: k, .. } if k == key),
            "{text:?}: {e}"
        );
    }
    // Plain http is fine when explicitly allowed.
    let (_d, p) = root();
    write(&p.config_file(), "[device]\nproduct = \"p\"\n[repository]\nurl = \"http://10.0.0.1/repo\"\nallow_http = true\n");
    assert!(config::load(&p).is_ok());
}

#[test]
fn bad_dropin_is_named() {
    let (_d, p) = root();
    write(&p.config_file(), FULL);
    write(
        &p.config_dropin_dir().join("50-site.toml"),
        "[device]\n\ntagz = []\n",
    );
    let e = config::load(&p).unwrap_err();
    assert!(e.to_string().contains("50-site.toml:3:"), "{e}");
}

#[test]
fn non_utf8_file_is_an_error() {
    let (_d, p) = root();
    fs::write(p.config_file(), b"[device]\nproduct = \"\xff\"\n").unwrap();
    assert!(matches!(
        config::load(&p).unwrap_err(),
        ConfigError::Parse { .. }
    ));
}

#[test]
fn shipped_default_config_and_doc_example_are_valid() {
    let shipped = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/patchd.toml"
    ))
    .unwrap();
    let c = config::load_strs(&[("packaging/patchd.toml", &shipped)]).unwrap();
    // Everything in the shipped file is commented out: it must equal the defaults.
    assert_eq!(
        serde_json::to_value(&c.device).unwrap(),
        serde_json::to_value(&config::Config::default().device).unwrap()
    );
    // Uncommenting every `#key = value` line of the shipped file yields a valid config
    // (the comments document real keys with their defaults).
    let uncommented: String = shipped
        .lines()
        .map(|l| {
            l.strip_prefix("#")
                .filter(|r| !r.starts_with(' ') && !r.starts_with('#') && !r.is_empty())
                .unwrap_or(l)
        })
        .collect::<Vec<_>>()
        .join("\n");
    config::load_strs(&[("uncommented", &uncommented)])
        .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));

    let doc = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let start = doc
        .find("```toml\n")
        .expect("docs/configuration.md has a toml example")
        + 8;
    let end = start + doc[start..].find("```").unwrap();
    config::load_strs(&[("docs example", &doc[start..end])]).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn error_message_reads_well() {
    let e = parse_err("[device]\n\ntagz = []\n");
    let s = e.to_string();
    assert!(
        s.contains("patchd.toml:3:1: unknown field `tagz`, expected one of"),
        "{s}"
    );
}
