//! The configuration schema (`config::schema`) against the parser the daemon validates
//! with: every key the parser accepts is in the schema and every schema key is accepted
//! with its example value; the sample `patchd init` writes and the man page come from
//! it; docs/configuration.md names every key. Also: `[repository] dir` and `url` from
//! drop-ins.

use std::collections::BTreeSet;

use patchd::config::{load_strs, sample, schema, RepoSource};

/// The keys the parser lists in its "unknown field `__probe`, expected one of …" error
/// for a table holding only an unknown key.
fn parser_keys(section: &schema::Section) -> BTreeSet<String> {
    let doc = if section.name.is_empty() {
        "__probe = 1\n".to_string()
    } else if section.array {
        format!("[[{}]]\n__probe = 1\n", section.name)
    } else {
        format!("[{}]\n__probe = 1\n", section.name)
    };
    let err = load_strs(&[("context.toml", section.context), ("probe.toml", &doc)])
        .expect_err("an unknown key must be refused")
        .to_string();
    let listed = err
        .split_once("expected")
        .unwrap_or_else(|| panic!("[{}]: no key list in {err}", section.name))
        .1;
    listed
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

const TOP: schema::Section = schema::Section {
    name: "",
    array: false,
    about: "",
    context: "",
};

#[test]
fn every_key_the_parser_accepts_is_in_the_schema_and_back() {
    for sec in std::iter::once(&TOP).chain(schema::SECTIONS) {
        let from_parser = parser_keys(sec);
        let from_schema: BTreeSet<String> = schema::keys_of(sec.name)
            .into_iter()
            .map(str::to_string)
            .collect();
        assert_eq!(
            from_parser, from_schema,
            "[{}]: parser (left) and schema (right) disagree",
            sec.name
        );
    }
}

#[test]
fn every_schema_example_validates() {
    for sec in schema::SECTIONS {
        if sec.array {
            let mut doc = format!("[[{}]]\n", sec.name);
            for s in schema::settings_of(sec.name) {
                doc.push_str(&format!("{} = {}\n", s.key, s.example));
            }
            load_strs(&[("context.toml", sec.context), ("entry.toml", &doc)])
                .unwrap_or_else(|e| panic!("{doc}: {e}"));
            continue;
        }
        for s in schema::settings_of(sec.name) {
            let needs = match (sec.name, s.key) {
                ("slots", "dir") => "backend = \"btrfs\"\n",
                _ => "",
            };
            let doc = format!("[{}]\n{needs}{} = {}\n", sec.name, s.key, s.example);
            load_strs(&[("context.toml", sec.context), ("key.toml", &doc)])
                .unwrap_or_else(|e| panic!("{doc}: {e}"));
            if let Some(d) = s.default {
                let doc = format!("[{}]\n{needs}{} = {d}\n", sec.name, s.key);
                load_strs(&[("context.toml", sec.context), ("default.toml", &doc)])
                    .unwrap_or_else(|e| panic!("default {doc}: {e}"));
            }
        }
    }
}

#[test]
fn the_reference_sample_names_every_setting_and_parses() {
    let text = sample::reference();
    for s in schema::SETTINGS {
        assert!(
            text.contains(&format!("\n#{} = ", s.key))
                || text.contains(&format!("\n##{} = ", s.key)),
            "{}.{} missing",
            s.section,
            s.key
        );
    }
    let table: toml::Table = toml::from_str(&text).unwrap();
    assert!(table.is_empty(), "everything is commented out: {table:?}");
    // Uncommenting every key of a plain section gives a file the parser accepts.
    for sec in schema::SECTIONS.iter().filter(|s| !s.array) {
        let mut v = sample::Values::default();
        for s in schema::settings_of(sec.name) {
            if (sec.name, s.key) == ("repository", "dir") || (sec.name, s.key) == ("slots", "dir") {
                continue; // alternatives to url / to file slots
            }
            v.set(sec.name, s.key, s.default.unwrap_or(s.example).to_string());
        }
        let text = sample::render(&[], &v);
        load_strs(&[("context.toml", sec.context), ("sample.toml", &text)])
            .unwrap_or_else(|e| panic!("[{}]: {e}\n{text}", sec.name));
    }
}

#[test]
fn the_man_page_and_configuration_md_name_every_setting() {
    let page = patchd::cli::config_page::render();
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    for s in schema::SETTINGS {
        let roff_key = s.key.replace('-', "\\-");
        assert!(
            page.contains(&format!(".B {roff_key}\n")),
            "page: {}",
            s.key
        );
        assert!(
            doc.contains(&format!("`{}`", s.key)) || doc.contains(&format!(".{}`", s.key)),
            "docs/configuration.md: {}.{}",
            s.section,
            s.key
        );
    }
    for sec in schema::SECTIONS {
        assert!(
            page.contains(&sec.name.replace('-', "\\-")),
            "page: [{}]",
            sec.name
        );
    }
}

fn source(files: &[(&str, &str)]) -> Option<RepoSource> {
    load_strs(files).unwrap().repository.source
}

const MAIN: &str =
    "[device]\nproduct = \"p\"\n[repository]\nurl = \"https://updates.example.com/\"\n";

#[test]
fn a_dropin_dir_overrides_the_main_files_url() {
    let d = source(&[
        ("patchd.toml", MAIN),
        (
            "patchd.toml.d/50-usb.toml",
            "[repository]\ndir = \"/media/repo\"\n",
        ),
    ]);
    assert_eq!(d, Some(RepoSource::Dir("/media/repo".into())));
    // ... and a later url overrides that dir again.
    let u = source(&[
        ("patchd.toml", MAIN),
        (
            "patchd.toml.d/50-usb.toml",
            "[repository]\ndir = \"/media/repo\"\n",
        ),
        (
            "patchd.toml.d/60-net.toml",
            "[repository]\nurl = \"https://mirror.example.com/\"\n",
        ),
    ]);
    assert!(
        matches!(u, Some(RepoSource::Url(ref x)) if x.to_string().contains("mirror")),
        "{u:?}"
    );
}

#[test]
fn an_empty_url_clears_it() {
    assert_eq!(
        source(&[
            ("patchd.toml", MAIN),
            ("patchd.toml.d/50.toml", "[repository]\nurl = \"\"\n")
        ]),
        None
    );
    let d = source(&[
        ("patchd.toml", MAIN),
        (
            "patchd.toml.d/50.toml",
            "[repository]\nurl = \"\"\ndir = \"/media/repo\"\n",
        ),
    ]);
    assert_eq!(d, Some(RepoSource::Dir("/media/repo".into())));
    assert_eq!(
        source(&[
            (
                "patchd.toml",
                "[device]\nproduct = \"p\"\n[repository]\ndir = \"/r\"\n"
            ),
            ("patchd.toml.d/50.toml", "[repository]\ndir = \"\"\n"),
        ]),
        None
    );
}

#[test]
fn one_file_with_both_url_and_dir_is_refused_naming_it() {
    let e = load_strs(&[(
        "patchd.toml.d/50.toml",
        "[device]\nproduct = \"p\"\n[repository]\nurl = \"https://x.example/\"\ndir = \"/r\"\n",
    )])
    .unwrap_err()
    .to_string();
    assert!(e.contains("50.toml") && e.contains("not both"), "{e}");
    // A drop-in setting only keys other than the source keeps the main file's url.
    let u = source(&[
        ("patchd.toml", MAIN),
        (
            "patchd.toml.d/50.toml",
            "[repository]\ncheck_interval = \"1h\"\n",
        ),
    ]);
    assert!(matches!(u, Some(RepoSource::Url(_))), "{u:?}");
}

/// The commented file the package ships as /etc/patchd/patchd.toml is the reference
/// sample (`PATCHD_BLESS=1 cargo test --test config_schema` rewrites it).
#[test]
fn the_shipped_patchd_toml_is_the_reference_sample() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/patchd.toml");
    let want = sample::reference();
    if std::env::var_os("PATCHD_BLESS").is_some() {
        std::fs::write(path, &want).unwrap();
    }
    let shipped = std::fs::read_to_string(path).unwrap();
    assert!(
        shipped == want,
        "packaging/patchd.toml differs from config::sample::reference(); \
         regenerate with PATCHD_BLESS=1 cargo test --test config_schema"
    );
}
