//! Oversized and malformed arguments are refused with
//! `org.patchd.Patchd1.Error.InvalidArgument` before anything else happens (no polkit
//! prompt, no backend call, nothing audited but the refusal to the caller).

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::Duration;

use patchd::dbus::{BUS_NAME, INTERFACE, OBJECT_PATH};
use patchd::testkit::fake::FakeBackend;
use support::*;
use zbus::zvariant::Value;

fn error_name(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, _, _) => name.to_string(),
        zbus::Error::FDO(f) => format!("fdo:{f}"),
        other => format!("other:{other}"),
    }
}

const INVALID: &str = "org.patchd.Patchd1.Error.InvalidArgument";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_arguments_rejected() {
    let Some(bus) = TestBus::start() else { return };
    let backend = FakeBackend::new(Duration::from_millis(1)).into_arc();
    let _svc = start_service(&bus, backend.clone(), root_only()).await;
    let conn = bus.connect().await;

    let call = |method: &'static str, body: zbus::zvariant::Structure<'static>| {
        let conn = conn.clone();
        async move {
            conn.call_method(Some(BUS_NAME), OBJECT_PATH, Some(INTERFACE), method, &body)
                .await
        }
    };
    let empty: HashMap<String, Value<'static>> = HashMap::new();
    let big = "1".repeat(100_000);
    let mut many: HashMap<String, Value<'static>> = HashMap::new();
    for i in 0..100 {
        many.insert(format!("k{i}"), Value::from(true));
    }
    let mut unknown: HashMap<String, Value<'static>> = HashMap::new();
    unknown.insert("reboot_everything".into(), Value::from(true));
    let mut wrong_type: HashMap<String, Value<'static>> = HashMap::new();
    wrong_type.insert("switch_now".into(), Value::from("yes"));
    let mut force_wrong: HashMap<String, Value<'static>> = HashMap::new();
    force_wrong.insert("force".into(), Value::from(1u32));
    let mut bad_since: HashMap<String, Value<'static>> = HashMap::new();
    bad_since.insert("since".into(), Value::from("last tuesday"));
    let mut bad_limit: HashMap<String, Value<'static>> = HashMap::new();
    bad_limit.insert("limit".into(), Value::from("ten"));

    use zbus::zvariant::StructureBuilder as SB;
    let cases: Vec<(&str, &'static str, zbus::zvariant::Structure<'static>)> = vec![
        (
            "oversized release",
            "Install",
            SB::new()
                .add_field(big.clone())
                .add_field(empty.clone())
                .build()
                .unwrap(),
        ),
        (
            "release with space",
            "Install",
            SB::new()
                .add_field("1.0 beta".to_owned())
                .add_field(empty.clone())
                .build()
                .unwrap(),
        ),
        (
            "release with newline",
            "Install",
            SB::new()
                .add_field("1.0\n".to_owned())
                .add_field(empty.clone())
                .build()
                .unwrap(),
        ),
        (
            "too many options",
            "Install",
            SB::new()
                .add_field(String::new())
                .add_field(many.clone())
                .build()
                .unwrap(),
        ),
        (
            "unknown option",
            "Install",
            SB::new()
                .add_field(String::new())
                .add_field(unknown.clone())
                .build()
                .unwrap(),
        ),
        (
            "option of wrong type",
            "Install",
            SB::new()
                .add_field(String::new())
                .add_field(wrong_type)
                .build()
                .unwrap(),
        ),
        (
            "switch option of wrong type",
            "Switch",
            SB::new().add_field(force_wrong).build().unwrap(),
        ),
        (
            "switch unknown option",
            "Switch",
            SB::new().add_field(unknown).build().unwrap(),
        ),
        (
            "oversized rollback reason",
            "Rollback",
            SB::new().add_field(big.clone()).build().unwrap(),
        ),
        (
            "mark-bad without reason",
            "MarkBad",
            SB::new().add_field(String::new()).build().unwrap(),
        ),
        (
            "reason with control chars",
            "MarkBad",
            SB::new()
                .add_field("a\u{1b}[2Jb".to_owned())
                .build()
                .unwrap(),
        ),
        (
            "hold without reason",
            "Hold",
            SB::new()
                .add_field(String::new())
                .add_field(String::new())
                .add_field(String::new())
                .build()
                .unwrap(),
        ),
        (
            "hold until garbage",
            "Hold",
            SB::new()
                .add_field("x".to_owned())
                .add_field("next week".to_owned())
                .add_field(String::new())
                .build()
                .unwrap(),
        ),
        (
            "hold oversized max_version",
            "Hold",
            SB::new()
                .add_field("x".to_owned())
                .add_field(String::new())
                .add_field(big.clone())
                .build()
                .unwrap(),
        ),
        (
            "history bad since",
            "GetHistory",
            SB::new().add_field(bad_since).build().unwrap(),
        ),
        (
            "history bad limit",
            "GetHistory",
            SB::new().add_field(bad_limit).build().unwrap(),
        ),
        (
            "history too many keys",
            "GetHistory",
            SB::new().add_field(many).build().unwrap(),
        ),
    ];
    for (what, method, body) in cases {
        let e = call(method, body)
            .await
            .expect_err(&format!("{what}: call must fail"));
        assert_eq!(error_name(&e), INVALID, "{what}: {e:?}");
    }
    // A body of the wrong D-Bus type never reaches the method: the service checks the
    // signature before zbus's dispatcher would answer with its own error name.
    let wrong: Vec<(&'static str, zbus::zvariant::Structure<'static>)> = vec![
        ("Install", SB::new().add_field(42u32).build().unwrap()),
        (
            "Install",
            SB::new().add_field("1.0".to_owned()).build().unwrap(),
        ),
        (
            "Hold",
            SB::new()
                .add_field("x".to_owned())
                .add_field(1u64)
                .add_field(String::new())
                .build()
                .unwrap(),
        ),
        ("Rollback", SB::new().add_field(true).build().unwrap()),
        (
            "Check",
            SB::new().add_field("extra".to_owned()).build().unwrap(),
        ),
        ("GetHistory", SB::new().add_field(7u32).build().unwrap()),
    ];
    for (method, body) in wrong {
        let e = call(method, body)
            .await
            .expect_err("wrong signature must fail");
        assert_eq!(error_name(&e), INVALID, "{method}: {e:?}");
        assert!(format!("{e:?}").contains("D-Bus type"), "{method}: {e:?}");
    }
    // The same with a raw message from another tool.
    if have("dbus-send") {
        let out = tokio::process::Command::new("dbus-send")
            .arg(format!("--bus={}", bus.address))
            .arg("--print-reply")
            .arg(format!("--dest={BUS_NAME}"))
            .arg(OBJECT_PATH)
            .arg(format!("{INTERFACE}.Install"))
            .arg("uint32:42")
            .output()
            .await
            .expect("dbus-send");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "dbus-send: {err}");
        assert!(err.contains(INVALID), "dbus-send: {err}");
    } else {
        println!("skipped part: dbus-send not installed (apt-get install dbus-bin)");
    }
    // Calls with the right types still reach the method through the checking wrapper.
    let reply = conn
        .call_method(
            Some(BUS_NAME),
            OBJECT_PATH,
            Some(INTERFACE),
            "GetStatus",
            &(),
        )
        .await
        .expect("GetStatus without arguments");
    let status: String = reply.body().deserialize().expect("GetStatus returns s");
    assert!(status.contains("\"state\""), "{status}");
    assert!(
        backend.records().is_empty(),
        "nothing reached the backend: {:?}",
        backend.records()
    );

    // Through patchctl: exit code 5.
    let long = "9".repeat(300);
    let r = patchctl(&bus, &["install", &long]).await;
    assert_eq!(r.code, 5, "{r:?}");
    let r = patchctl(&bus, &["hold", "--reason", "x", "--until", "whenever"]).await;
    assert_eq!(r.code, 5, "{r:?}");
    let r = patchctl(&bus, &["history", "--event", "has space"]).await;
    assert_eq!(r.code, 5, "{r:?}");
}
