//! Components through a real `patchpub` repository: `patchpub add --component` writes a
//! schema 2 manifest whose component files are TUF targets; a device client finds the
//! release, fetches each component verified against its signed target, and the
//! component room installs them in order on a temporary root. A release without
//! components stays schema 1, which this build still reads.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use patchd::clock::SystemClock;
use patchd::component::{apply, AppBundles, Handler, HandlerSettings, Hooks, Installers, Journal};
use patchd::fetch::FileSource;
use patchd::manifest::{discover, Component, ComponentMethod, DeviceProfile, Manifest};
use patchd::paths::Paths;
use patchd::trust::source::Subdir;
use patchd::trust::{Limits, TufClient};

fn patchpub(tmp: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_patchpub"))
        .arg("--repo")
        .arg(tmp.join("repo"))
        .arg("--keys")
        .arg(tmp.join("keys"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "patchpub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn app_tar(path: &Path, body: &str) {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, "VERSION", body.as_bytes()).unwrap();
    std::fs::write(path, b.into_inner().unwrap()).unwrap();
}

/// The newest release for an `acme` device, and a client (with its metadata directory)
/// to fetch its targets.
async fn newest(repo: &Path) -> (Manifest, TufClient, tempfile::TempDir) {
    let md = tempfile::tempdir().unwrap();
    let root1 = std::fs::read(repo.join("metadata/1.root.json")).unwrap();
    TufClient::init(md.path(), &root1, &Limits::default()).unwrap();
    let mut c = TufClient::load(md.path(), Arc::new(SystemClock), Limits::default()).unwrap();
    let src = FileSource::new(repo);
    let m = Subdir::new(&src, "metadata");
    c.refresh(&m).await.unwrap();
    let dev = DeviceProfile {
        product: "acme".into(),
        hardware: None,
        channel: "stable".into(),
        running_version: Some("1.0.0".parse().unwrap()),
        security_floor: 0,
    };
    let t = Subdir::new(&src, "targets");
    let d = discover(&mut c, &m, &t, &dev).await.unwrap();
    let newest: Manifest = d.newest.unwrap().manifest().clone();
    (newest, c, md)
}

#[tokio::test]
async fn components_are_published_verified_and_installed_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    patchpub(dir, &["init"]);
    let os = dir.join("rootfs.img");
    std::fs::write(&os, vec![7u8; 8192]).unwrap();
    patchpub(
        dir,
        &["add", "--product", "acme", "--version", "1.1.0", "--image"]
            .iter()
            .map(|s| s.to_string())
            .chain([os.display().to_string()])
            .chain(["--summary".into(), "os only".into()])
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let (old, _, _md) = newest(&dir.join("repo")).await;
    assert_eq!(old.schema_version, 1, "no components: still schema 1");
    assert!(old.components.is_empty());

    let (web, api, mcu) = (
        dir.join("web.tar"),
        dir.join("api.tar"),
        dir.join("mcu.bin"),
    );
    app_tar(&web, "web 1.3\n");
    app_tar(&api, "api 4.1\n");
    std::fs::write(&mcu, b"mcu firmware 8").unwrap();
    let spec = |s: String| s;
    let args: Vec<String> = [
        "add", "--product", "acme", "--version", "1.2.0", "--summary", "apps", "--image",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        os.display().to_string(),
        "--component".into(),
        spec(format!("name=api,version=4.1,method=app-bundle,file={},order=2,units=api.service", api.display())),
        "--component".into(),
        spec(format!("name=web,version=1.3,method=app-bundle,file={},order=1,units=web.service", web.display())),
        "--component".into(),
        spec(format!("name=mcu,version=8,method=handler,file={},order=3,needs_reboot=true,kind=security,severity=high,cves=CVE-2026-2222", mcu.display())),
    ])
    .collect();
    patchpub(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let (m, mut client, _md2) = newest(&dir.join("repo")).await;
    assert_eq!(
        (m.version.to_string().as_str(), m.schema_version),
        ("1.2.0", 2)
    );
    let names: Vec<&str> = patchd::manifest::install_order(&m.components)
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["web", "api", "mcu"]);

    // Each payload is a signed target; fetch it verified and keep it for the installer.
    let src = FileSource::new(dir.join("repo"));
    let (md, td) = (Subdir::new(&src, "metadata"), Subdir::new(&src, "targets"));
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for c in &m.components {
        let target = client.target(&md, &c.target).await.unwrap();
        let bytes = client.fetch_target_bytes(&td, &target).await.unwrap();
        assert_eq!(bytes.len() as u64, c.size);
        let p = dir.join(format!("verified-{}", c.name));
        std::fs::write(&p, &bytes).unwrap();
        files.push((c.name.clone(), p));
    }

    // Install them on a temporary root.
    let root = dir.join("root");
    std::fs::create_dir(&root).unwrap();
    let paths = Paths::new(&root);
    let tools = dir.join("tools");
    std::fs::create_dir(&tools).unwrap();
    let handler = tools.join("handler");
    std::fs::write(&handler, "#!/bin/sh\ncat > \"$(dirname \"$0\")/flashed\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&handler, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&tools, std::fs::Permissions::from_mode(0o755)).unwrap();
    let installers = Installers::new()
        .with(
            ComponentMethod::AppBundle,
            Arc::new(AppBundles::new(
                &paths,
                patchd::component::Restarter {
                    argv: vec!["true".into()],
                },
            )),
        )
        .with(
            ComponentMethod::Handler,
            Arc::new(Handler::new(
                &paths,
                HandlerSettings {
                    path: handler,
                    timeout: Duration::from_secs(10),
                    trusted_uid: nix::unistd::geteuid().as_raw(),
                    input: Default::default(),
                },
            )),
        );
    let mut events = Vec::new();
    let mut file = |c: &Component| Ok(files.iter().find(|f| f.0 == c.name).unwrap().1.clone());
    let mut health = |_: &Component| Ok(());
    let mut record =
        |e: &patchd::component::StepEvent| events.push(format!("{} {}", e.event, e.component));
    let mut hooks = Hooks {
        file: &mut file,
        health: &mut health,
        record: &mut record,
        #[cfg(feature = "failpoints")]
        failpoints: None,
    };
    let applied = apply(
        &Journal::path(&paths),
        "1.2.0",
        "b",
        &m.components,
        &installers,
        &mut hooks,
    )
    .unwrap();
    assert!(applied.needs_reboot, "mcu takes effect at the next boot");
    assert_eq!(
        events[3..],
        [
            "component_switched web",
            "component_switched api",
            "component_switched mcu"
        ]
    );
    let live = root.join("var/lib/patchd/apps/web/current/VERSION");
    assert_eq!(std::fs::read_to_string(live).unwrap(), "web 1.3\n");
    assert_eq!(
        std::fs::read(tools.join("flashed")).unwrap(),
        b"mcu firmware 8"
    );
}
