//! The release manifest parser refuses hostile documents with an error naming the
//! problem: duplicate keys, unknown fields, oversized documents and fields, `..`,
//! absolute paths and control characters in names, bad CVE ids, unknown schemas.

use patchd::manifest::{Manifest, ManifestError, MAX_MANIFEST_LEN};
use serde_json::{json, Value};

fn example() -> Value {
    json!({
        "schema_version": 1,
        "product": "acme-gateway",
        "hardware": ["acme-gw-rev2"],
        "version": "2.4.1",
        "security_version": 7,
        "kind": "security",
        "severity": "high",
        "cves": ["CVE-2026-1234"],
        "summary": "OpenSSH fixes",
        "notes_url": "https://updates.example.com/2.4.1.html",
        "published": "2026-11-28T04:00:00Z",
        "min_version": "2.0.0",
        "images": [{
            "component": "os",
            "slot_class": "rootfs",
            "target": "releases/acme-gateway/2.4.1/os.rootfs.img.zst",
            "format": "raw",
            "compression": "zstd",
            "size": 4096,
            "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        }],
        "rollout": {"paused": false, "stages": [{"tags": ["canary"], "percent": 0, "after_secs": 0}]},
        "channels": ["stable"],
        "withdrawn": false
    })
}

fn parse(v: &Value) -> Result<Manifest, ManifestError> {
    Manifest::from_slice(&serde_json::to_vec(v).unwrap())
}

fn field_error(v: &Value, field: &str) -> String {
    match parse(v) {
        Err(ManifestError::Field { field: f, why }) => {
            assert!(
                f.starts_with(field),
                "error names {f:?}, expected {field:?} ({why})"
            );
            why
        }
        other => panic!("expected a field error for {field}, got {other:?}"),
    }
}

#[test]
fn baseline_example_parses() {
    parse(&example()).unwrap();
}

#[test]
fn duplicate_json_keys_are_rejected() {
    // serde_json would silently keep the second "withdrawn".
    let text = serde_json::to_string(&example()).unwrap();
    let evil = text.replacen(
        "\"withdrawn\":false",
        "\"withdrawn\":true,\"withdrawn\":false",
        1,
    );
    assert_ne!(text, evil);
    match Manifest::from_slice(evil.as_bytes()) {
        Err(ManifestError::DuplicateKey { key, .. }) => assert_eq!(key, "withdrawn"),
        other => panic!("expected a duplicate key error, got {other:?}"),
    }
    // Also inside nested objects.
    let evil = text.replacen(
        "\"format\":\"raw\"",
        "\"format\":\"raw\",\"format\":\"tar\"",
        1,
    );
    match Manifest::from_slice(evil.as_bytes()) {
        Err(ManifestError::DuplicateKey { key, at }) => {
            assert_eq!(key, "format");
            assert_eq!(at, "/images/0");
        }
        other => panic!("expected a duplicate key error, got {other:?}"),
    }
}

#[test]
fn unknown_fields_are_rejected() {
    let mut v = example();
    v["install_hook"] = json!("curl evil | sh");
    let err = parse(&v).unwrap_err();
    assert!(err.to_string().contains("install_hook"), "{err}");
    let mut v = example();
    v["images"][0]["exec"] = json!(true);
    assert!(parse(&v).unwrap_err().to_string().contains("exec"));
}

#[test]
fn unknown_schema_version_is_rejected() {
    let mut v = example();
    v["schema_version"] = json!(3);
    assert!(matches!(
        parse(&v),
        Err(ManifestError::UnsupportedSchema { found: 3, .. })
    ));
}

#[test]
fn oversized_manifest_is_rejected_before_parsing() {
    let mut big = serde_json::to_vec(&example()).unwrap();
    big.resize(MAX_MANIFEST_LEN as usize + 1, b' ');
    assert!(matches!(
        Manifest::from_slice(&big),
        Err(ManifestError::TooLarge { .. })
    ));
}

#[test]
fn oversized_fields_are_rejected() {
    let mut v = example();
    v["summary"] = json!("x".repeat(201));
    field_error(&v, "summary");
    let mut v = example();
    v["product"] = json!("p".repeat(65));
    field_error(&v, "product");
    let mut v = example();
    v["cves"] = json!((0..300)
        .map(|i| format!("CVE-2026-{:05}", i))
        .collect::<Vec<_>>());
    field_error(&v, "cves");
    let mut v = example();
    v["notes_url"] = json!(format!("https://x/{}", "a".repeat(3000)));
    field_error(&v, "notes_url");
}

#[test]
fn deeply_nested_json_is_rejected() {
    let mut v = example();
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!([deep]);
    }
    v["rollout"]["stages"][0]["tags"] = deep;
    assert!(matches!(parse(&v), Err(ManifestError::TooDeep { .. })));
}

#[test]
fn dotdot_in_names_is_rejected() {
    let mut v = example();
    v["images"][0]["target"] = json!("releases/acme-gateway/../../../etc/shadow");
    assert!(field_error(&v, "images[0].target").contains(".."));
    let mut v = example();
    v["product"] = json!("..");
    field_error(&v, "product");
    let mut v = example();
    v["images"][0]["slot_class"] = json!("..");
    field_error(&v, "images[0].slot_class");
}

#[test]
fn absolute_paths_are_rejected() {
    let mut v = example();
    v["images"][0]["target"] = json!("/dev/sda");
    assert!(field_error(&v, "images[0].target").contains("absolute"));
    let mut v = example();
    v["product"] = json!("/etc/passwd");
    field_error(&v, "product");
}

#[test]
fn control_characters_are_rejected() {
    for (field, value) in [
        ("product", "acme\u{0}gw"),
        ("summary", "fixes\u{1b}[2J"),
        ("summary", "line\nbreak"),
    ] {
        let mut v = example();
        v[field] = json!(value);
        field_error(&v, field);
    }
    let mut v = example();
    v["images"][0]["target"] = json!("releases/a\u{7}/x");
    field_error(&v, "images[0].target");
    let mut v = example();
    v["channels"] = json!(["stable\r"]);
    field_error(&v, "channels[0]");
}

#[test]
fn malformed_cve_ids_are_rejected() {
    let mut v = example();
    v["cves"] = json!(["CVE-2026-1"]);
    field_error(&v, "cves[0]");
}

#[test]
fn min_version_above_release_is_rejected() {
    let mut v = example();
    v["min_version"] = json!("3.0.0");
    field_error(&v, "min_version");
}

#[test]
fn non_lowercase_hex_digest_is_rejected() {
    let mut v = example();
    v["images"][0]["sha256"] =
        json!("9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08");
    field_error(&v, "images[0].sha256");
}

fn with_components() -> Value {
    let mut v = example();
    v["schema_version"] = json!(2);
    v["components"] = json!([
        {
            "name": "web", "version": "1.3", "method": "app-bundle",
            "target": "releases/acme-gateway/2.4.1/web.tar", "size": 10240,
            "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "order": 1, "rollback": "ab", "units": ["web.service"],
            "kind": "security", "severity": "high", "cves": ["CVE-2026-1111"]
        },
        {
            "name": "mcu", "version": "7", "method": "handler",
            "target": "releases/acme-gateway/2.4.1/mcu.bin", "size": 100,
            "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "needs_reboot": true, "order": 0, "rollback": "none"
        }
    ]);
    v
}

#[test]
fn schema_1_manifest_is_still_read_as_os_image_only() {
    let m = parse(&example()).unwrap();
    assert_eq!(m.schema_version, 1);
    assert!(m.components.is_empty());
    // Written back it stays schema 1, without a components key.
    let again: Value = serde_json::from_slice(&m.to_vec().unwrap()).unwrap();
    assert!(again.get("components").is_none());
}

#[test]
fn schema_2_components_parse_in_install_order() {
    let m = parse(&with_components()).unwrap();
    let order: Vec<&str> = patchd::manifest::install_order(&m.components)
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(order, ["mcu", "web"]);
    assert_eq!(Manifest::from_slice(&m.to_vec().unwrap()).unwrap(), m);
}

#[test]
fn components_need_schema_2_and_known_methods() {
    let mut v = with_components();
    v["schema_version"] = json!(1);
    let e = parse(&v).unwrap_err().to_string();
    assert!(
        e.contains("components") && e.contains("schema_version 2"),
        "{e}"
    );
    let mut v = with_components();
    v["components"][0]["method"] = json!("firmware");
    assert!(parse(&v).unwrap_err().to_string().contains("firmware"));
    let mut v = with_components();
    v["components"][0]["exec"] = json!("/bin/sh");
    assert!(parse(&v).unwrap_err().to_string().contains("exec"));
    let mut v = with_components();
    v["components"][1]["rollback"] = json!("ab");
    let e = parse(&v).unwrap_err().to_string();
    assert!(e.contains("components[1].rollback"), "{e}");
}
