//! The checked-in introspection XML (`packaging/dbus/org.patchd.Patchd1.Manager.xml`) is
//! exactly what the running service exports, as `busctl` (or `gdbus`) reads it from the
//! bus. Regenerate after an intended API change with `PATCHD_BLESS=1 cargo test --test
//! dbus_introspection`.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use patchd::dbus::{methods, BUS_NAME, INTERFACE, INTROSPECTION_XML_PATH, OBJECT_PATH};
use patchd::testkit::fake::FakeBackend;
use support::*;

/// The `<interface name="org.patchd.Patchd1.Manager">` element, one trimmed line per
/// line, blank lines dropped.
fn manager_interface(xml: &str) -> Option<Vec<String>> {
    let start = xml.find(&format!("<interface name=\"{INTERFACE}\">"))?;
    let len = xml[start..].find("</interface>")? + "</interface>".len();
    Some(
        xml[start..start + len]
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect(),
    )
}

const HEADER: &str = r#"<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<!-- org.patchd.Patchd1.Manager, as exported by patchd on /org/patchd/Patchd1.
     Generated from the running service; kept in sync by tests/dbus_introspection.rs.
     Reference: docs/admin.md. -->
<node name="/org/patchd/Patchd1">
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_matches_checked_in_xml() {
    let Some(bus) = TestBus::start() else { return };
    let backend = FakeBackend::new(Duration::from_millis(1)).into_arc();
    let _svc = start_service(&bus, backend, root_only()).await;

    let out = if have("busctl") {
        tokio::process::Command::new("busctl")
            .arg(format!("--address={}", bus.address))
            .args(["introspect", "--xml-interface", BUS_NAME, OBJECT_PATH])
            .output()
            .await
            .expect("busctl")
    } else if have("gdbus") {
        tokio::process::Command::new("gdbus")
            .args(["introspect", "--xml", "--address", &bus.address])
            .args(["--dest", BUS_NAME, "--object-path", OBJECT_PATH])
            .output()
            .await
            .expect("gdbus")
    } else {
        println!("skipped: neither busctl nor gdbus installed (apt-get install systemd)");
        return;
    };
    assert!(out.status.success(), "introspect failed: {out:?}");
    let live_xml = String::from_utf8_lossy(&out.stdout);
    // Clients such as dbus-python and xml.dom parse the introspection with a real XML
    // parser: a `--` inside a doc comment made both the bus answer and the file unusable.
    assert_well_formed("live introspection", &live_xml);
    let live = manager_interface(&live_xml)
        .unwrap_or_else(|| panic!("no {INTERFACE} in introspection:\n{live_xml}"));
    // The service's hand-written #[interface] exports exactly the methods of the one
    // table (dbus::methods::METHODS): members, argument names and types, results. The
    // proxy and the signature checks are generated from that table.
    assert_eq!(
        methods::parse_methods(&live.join("\n")),
        methods::table_rows(),
        "the #[interface] in src/dbus/service.rs differs from dbus::methods::METHODS"
    );
    for p in [
        "State",
        "Progress",
        "BootedSlot",
        "Slots",
        "CurrentVersion",
        "StagedVersion",
        "Available",
        "NextWindow",
        "LastCheck",
        "LastError",
        "Holds",
        "Next",
    ] {
        assert!(
            live.iter()
                .any(|l| l.starts_with(&format!("<property name=\"{p}\""))
                    && l.contains("access=\"read\"")),
            "read-only property {p} missing"
        );
    }

    let path = repo_root().join(INTROSPECTION_XML_PATH);
    if std::env::var_os("PATCHD_BLESS").is_some() {
        let mut text = String::from(HEADER);
        for l in &live {
            let indent = if l.starts_with("<!--") || l.starts_with("-->") {
                4
            } else if l.starts_with("<interface") || l.starts_with("</interface") {
                2
            } else if l.starts_with("<method")
                || l.starts_with("</method")
                || l.starts_with("<property")
                || l.starts_with("</property")
                || l.starts_with("<signal")
                || l.starts_with("</signal")
            {
                4
            } else {
                6
            };
            text.push_str(&" ".repeat(indent));
            text.push_str(l);
            text.push('\n');
        }
        text.push_str("</node>\n");
        std::fs::write(&path, text).expect("write introspection XML");
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with PATCHD_BLESS=1 to create)",
            path.display()
        )
    });
    assert_well_formed(INTROSPECTION_XML_PATH, &checked_in);
    let expected = manager_interface(&checked_in).expect("interface in checked-in XML");
    assert_eq!(
        live, expected,
        "exported interface differs from {INTROSPECTION_XML_PATH}; if intended, run PATCHD_BLESS=1 cargo test --test dbus_introspection and update docs/admin.md"
    );
}

/// Parses `xml` with Python's `xml.dom.minidom` (a strict, real XML parser); panics with
/// the parser's message when the document is not well-formed.
fn assert_well_formed(what: &str, xml: &str) {
    use std::io::Write;
    let Some(python) = python3() else {
        println!("skipped: XML parse of {what}: no python3");
        return;
    };
    let mut child = std::process::Command::new(python)
        .args([
            "-c",
            "import sys, xml.dom.minidom; xml.dom.minidom.parseString(sys.stdin.buffer.read())",
        ])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(xml.as_bytes())
        .expect("write XML to python3");
    let out = child.wait_with_output().expect("python3");
    assert!(
        out.status.success(),
        "{what} is not well-formed XML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn python3() -> Option<String> {
    if let Some(p) = std::env::var_os("PATCHD_TEST_PYTHON") {
        return Some(p.to_string_lossy().into_owned());
    }
    have("python3").then(|| "python3".to_string())
}

#[test]
fn shipped_introspection_xml_is_well_formed() {
    let path = repo_root().join(INTROSPECTION_XML_PATH);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_well_formed(INTROSPECTION_XML_PATH, &text);
}
