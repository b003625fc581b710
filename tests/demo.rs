//! `patchd demo` (README's first command) runs the whole story through the real engine
//! on a simulated device and ends with the summary line; exit code 0 only on success.

use std::process::Command;

#[test]
fn demo_tells_the_whole_story_and_ends_with_the_summary_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_patchd"))
        .arg("demo")
        .env_remove("PATCHD_LOG")
        .output()
        .expect("run patchd demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "patchd demo failed ({:?})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(
        last, "demo: committed=3.1.0 rolled_back=3.0.0,3.2.0 audit=verified",
        "\n{stdout}"
    );
    // The story's milestones, in order.
    let mut at = 0;
    for milestone in [
        "security",
        "inactive slot",
        "still staged",
        "window is open",
        "health checks passed",
        "health checks failed",
        "never retried automatically",
        "quarter-end change freeze",
        "hold expired",
        "3.0.1 is committed",
        // The app patch without a reboot.
        "app: web 1.0 → 1.1, no reboot",
        "[unit] demo-web.service started web 1.1 from copy b",
        "3.1.0 is committed without a reboot (still slot a",
        // The broken app, rolled back alone.
        "[unit] demo-web.service started web 1.2 from copy a",
        "20-app (drop-in): fail: web 1.2 does not start",
        "web/current -> b (web 1.1) again",
        "[unit] demo-web.service started web 1.1 from copy b",
        "3.2.0 is rolled back and blocked here",
        "chain verified",
        "\"machine_id\"",
    ] {
        let found = stdout[at..].find(milestone).unwrap_or_else(|| {
            panic!("milestone {milestone:?} missing or out of order:\n{stdout}")
        });
        at += found;
    }
    // Releases are published with static deltas from earlier ones (docs/delta.md): 2.0.0
    // is staged by delta from the factory image, fetching a small part of it.
    let staged = stdout
        .lines()
        .find(|l| l.contains("inactive slot"))
        .unwrap_or_default();
    assert!(staged.contains("static_delta"), "{staged}");
    // The app chapters happen without a power cycle: the last one is 3.0.1's.
    let app_chapters = &stdout[stdout.find("\n11. ").expect("chapter 11")..];
    let app_chapters = &app_chapters[..app_chapters.find("\n13. ").expect("chapter 13")];
    assert!(
        !app_chapters.contains("power cycle") && !app_chapters.contains("reboot requested"),
        "{app_chapters}"
    );
    // The audit listing has each component step under its release.
    for line in [
        "component_switched    3.1.0  daemon    web 1.1",
        "component_committed   3.1.0  daemon    web 1.1",
        "component_rolled_back 3.2.0  daemon    web 1.2",
    ] {
        assert!(stdout.contains(line), "{line:?} missing:\n{stdout}");
    }
}

#[test]
fn demo_keeps_the_device_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("device");
    let out = Command::new(env!("CARGO_BIN_EXE_patchd"))
        .args(["demo", "--keep"])
        .arg(&keep)
        .output()
        .expect("run patchd demo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The audit log and the state file stay for inspection.
    assert!(keep.join("device/var/lib/patchd/audit.log").is_file());
    assert!(keep.join("device/var/lib/patchd/state.json").is_file());
    // The app bundle as the real installer left it: both copies, `current` back on the
    // good one (1.1), the broken 1.2 still in the other copy for inspection.
    let apps = keep.join("device/var/lib/patchd/apps/web");
    let link = std::fs::read_link(apps.join("current")).unwrap();
    assert_eq!(link, std::path::Path::new("b"));
    assert_eq!(
        std::fs::read_to_string(apps.join("b/VERSION")).unwrap(),
        "1.1\n"
    );
    assert_eq!(
        std::fs::read_to_string(apps.join("a/VERSION")).unwrap(),
        "1.2\n"
    );
    // Running it again over a used directory is refused clearly, never mixed.
    let again = Command::new(env!("CARGO_BIN_EXE_patchd"))
        .args(["demo", "--keep"])
        .arg(&keep)
        .output()
        .expect("run patchd demo");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
}
