//! kill -9 during a btrfs (tar.zst) install, then resume: the kept download is replayed
//! from disk and only the rest is fetched with `Range`; the extraction continues from its
//! last checkpoint (a snapshot of the partial subvolume at an entry boundary plus the
//! zstd frame and hash states) instead of starting over; and the result is the same
//! verified tree — contents, modes, owners, xattrs, symlinks, hard links — as an
//! uninterrupted install. A resumed archive cannot get past a check a fresh extraction
//! makes, and a checkpoint of another archive is thrown away. Root only: real btrfs on a
//! loop device.
//!
//! The installer runs in a child process (this test binary re-executed with
//! `PATCHD_TAR_CHILD` set), so SIGKILL hits a real process mid-install.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::disk::{tree_listing, Btrfs};
use common::http::{FaultServer, Faults};
use common::image::zstd_request;
use patchd::fetch::{HttpOptions, HttpSource};
use patchd::names::SlotName;
use patchd::slot::{
    BtrfsSlots, CancelToken, ImageFormat, Slot, SlotState, StageError, StageJob, StageOptions,
    StageRequest, TarStageReport,
};
use sha2::Digest;

const MIB: u64 = 1 << 20;

fn opts() -> StageOptions {
    StageOptions {
        checkpoint_every: MIB,
        ..StageOptions::default()
    }
}

fn slots(root: &Path, state: &Path) -> BtrfsSlots {
    BtrfsSlots::new(root, state)
}

fn slot_b() -> SlotName {
    SlotName::new("b").unwrap()
}

/// The child: stage the archive described by the environment into slot b, then exit.
#[test]
fn child_entry() {
    let Ok(root) = std::env::var("PATCHD_TAR_CHILD") else {
        return; // not a child: nothing to do
    };
    let url = std::env::var("PATCHD_TAR_URL").unwrap();
    let state = std::env::var("PATCHD_TAR_STATE").unwrap();
    let req: StageRequest =
        serde_json::from_str(&std::env::var("PATCHD_TAR_REQ").unwrap()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let src = HttpSource::new(&url, HttpOptions::default()).unwrap();
        slots(Path::new(&root), Path::new(&state))
            .stage_tar(
                &slot_b(),
                StageJob {
                    req: &req,
                    source: &src,
                    opts: &opts(),
                    progress: None,
                    cancel: &CancelToken::new(),
                },
            )
            .await
            .unwrap();
    });
}

/// A btrfs with a slots directory and a state directory.
struct Setup {
    _dir: tempfile::TempDir,
    _fs: Btrfs,
    root: PathBuf,
    state: PathBuf,
}

fn setup(test: &str) -> Option<Setup> {
    if !common::require_root(test)
        || !common::require_tools(test, &["losetup", "mkfs.btrfs", "mount"])
    {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = Btrfs::new(dir.path());
    let root = fs.mnt.join("slots");
    std::fs::create_dir(&root).unwrap();
    let state = dir.path().join("state");
    Some(Setup {
        _dir: dir,
        _fs: fs,
        root,
        state,
    })
}

fn spawn_child(s: &Setup, server: &FaultServer, req: &StageRequest, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env("PATCHD_TAR_CHILD", &s.root)
        .env("PATCHD_TAR_STATE", &s.state)
        .env("PATCHD_TAR_URL", server.url())
        .env("PATCHD_TAR_REQ", serde_json::to_string(req).unwrap())
        .env_remove("PATCHD_FAILPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn json(path: &Path) -> Option<serde_json::Value> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

fn kept_offset(root: &Path) -> u64 {
    json(&root.join(".b.download.json")).map_or(0, |v| v["offset"].as_u64().unwrap_or(0))
}

/// Sequence number of slot b's last extraction checkpoint (0: none).
fn checkpoint_seq(root: &Path) -> u64 {
    json(&root.join(".b.extract.json")).map_or(0, |v| v["seq"].as_u64().unwrap_or(0))
}

fn checkpoint_snapshots(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".cp."))
        .collect();
    v.sort();
    v
}

/// One PAX extended-header record (`"<len> <key>=<value>\n"`, len counting itself).
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// Builds test archives entry by entry.
struct Archive {
    b: tar::Builder<Vec<u8>>,
}

impl Archive {
    fn new() -> Self {
        Self {
            b: tar::Builder::new(Vec::new()),
        }
    }
    fn header(kind: tar::EntryType, mode: u32, uid: u64, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid + 7);
        h.set_mtime(1_700_000_000 + uid);
        h.set_size(size);
        h
    }
    fn xattrs(&mut self, attrs: &[(&str, &[u8])]) {
        let mut data = Vec::new();
        for (k, v) in attrs {
            data.extend(pax_record(&format!("SCHILY.xattr.{k}"), v));
        }
        let mut h = Self::header(tar::EntryType::XHeader, 0o644, 0, data.len() as u64);
        self.b
            .append_data(&mut h, "PaxHeaders/x", &data[..])
            .unwrap();
    }
    fn dir(&mut self, path: &str, mode: u32, uid: u64) {
        let mut h = Self::header(tar::EntryType::Directory, mode, uid, 0);
        self.b.append_data(&mut h, path, &[][..]).unwrap();
    }
    fn file(&mut self, path: &str, mode: u32, uid: u64, data: &[u8]) {
        let mut h = Self::header(tar::EntryType::Regular, mode, uid, data.len() as u64);
        self.b.append_data(&mut h, path, data).unwrap();
    }
    fn link(&mut self, kind: tar::EntryType, path: &str, target: &str) {
        let mut h = Self::header(kind, 0o777, 0, 0);
        self.b.append_link(&mut h, path, target).unwrap();
    }
    fn fifo(&mut self, path: &str) {
        let mut h = Self::header(tar::EntryType::Fifo, 0o600, 0, 0);
        self.b.append_data(&mut h, path, &[][..]).unwrap();
    }
    fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

/// ~12 MiB root filesystem: files with assorted modes, owners and xattrs, directories
/// with xattrs, relative and absolute symlinks, hard links and a FIFO, interleaved so
/// that checkpoints fall between entries of every kind.
fn rootfs() -> Vec<u8> {
    let mut a = Archive::new();
    a.xattrs(&[("user.dir", b"etc attribute")]);
    a.dir("etc", 0o755, 0);
    a.dir("opt/app", 0o750, 1234);
    a.file("etc/hostname", 0o644, 0, b"device\n");
    a.link(
        tar::EntryType::Symlink,
        "etc/localtime",
        "/usr/share/zoneinfo/UTC",
    );
    for i in 0..24u64 {
        let data = common::noise((512 << 10) + 1000 * i as usize, 300 + i);
        let mode = [0o644, 0o600, 0o755, 0o4755][i as usize % 4];
        if i % 3 == 0 {
            a.xattrs(&[
                ("user.idx", i.to_string().as_bytes()),
                ("user.note", b"with = and spaces"),
            ]);
        }
        a.file(&format!("opt/app/blob{i:02}"), mode, 1000 + i, &data);
        if i % 4 == 1 {
            a.link(
                tar::EntryType::Link,
                &format!("opt/app/hard{i:02}"),
                &format!("opt/app/blob{i:02}"),
            );
        }
        if i % 5 == 2 {
            a.link(
                tar::EntryType::Symlink,
                &format!("opt/app/sym{i:02}"),
                &format!("blob{i:02}"),
            );
            a.dir(&format!("opt/app/d{i:02}"), 0o700, 1000 + i);
        }
    }
    a.fifo("opt/app/fifo");
    a.file("etc/last", 0o640, 42, b"the end\n");
    a.finish()
}

/// zstd of `data` as independent frames of `frame` content bytes (as `patchpub` does).
fn framed_zstd(data: &[u8], frame: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in data.chunks(frame) {
        out.extend(zstd::encode_all(c, 1).unwrap());
    }
    out
}

fn request(tar: &[u8], z: &[u8], version: &str) -> StageRequest {
    let mut r = zstd_request("targets/rootfs.tar.zst", version, ImageFormat::Tar, tar, z);
    r.sha512 = Some(hex::encode(sha2::Sha512::digest(z)));
    r
}

/// Serve `tar` as framed zstd, throttled so a child can be killed mid-install.
async fn publish_throttled(tar: &[u8], version: &str) -> (StageRequest, FaultServer) {
    let z = framed_zstd(tar, MIB as usize);
    let req = request(tar, &z, version);
    let server = FaultServer::start().await;
    server.add(&req.path, z);
    server.set(Faults {
        chunk_delay: Some(Duration::from_millis(8)),
        ..Faults::default()
    });
    (req, server)
}

/// Run a child and SIGKILL it once slot b's checkpoint sequence passes `seq`.
async fn kill_after_checkpoint(s: &Setup, server: &FaultServer, req: &StageRequest, seq: u64) {
    let child = spawn_child(s, server, req, &[]);
    assert!(
        kill_when(child, || checkpoint_seq(&s.root) > seq).await,
        "the child finished before it could be killed"
    );
}

async fn stage(
    s: &Setup,
    server: &FaultServer,
    req: &StageRequest,
    name: &str,
) -> Result<TarStageReport, StageError> {
    let src = HttpSource::new(&server.url(), HttpOptions::default()).unwrap();
    let name = SlotName::new(name).unwrap();
    let (st, report) = slots(&s.root, &s.state)
        .stage_tar_report(
            &name,
            StageJob {
                req,
                source: &src,
                opts: &opts(),
                progress: None,
                cancel: &CancelToken::new(),
            },
        )
        .await?;
    assert_eq!(st.state, SlotState::Verified);
    Ok(report)
}

fn assert_not_bootable(s: &Setup) {
    let st = slots(&s.root, &s.state).slot(&slot_b()).status().unwrap();
    assert!(!st.state.is_bootable(), "killed install became bootable");
}

/// SIGKILL `child` once `until` holds (or after 30 s); false when it finished first.
async fn kill_when(mut child: Child, until: impl Fn() -> bool) -> bool {
    let t0 = Instant::now();
    while !until() && t0.elapsed() < Duration::from_secs(30) {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let killed = child.try_wait().unwrap().is_none();
    if killed {
        child.kill().unwrap(); // SIGKILL
    }
    let _ = child.wait();
    killed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_tar_install_then_resume_the_download() {
    let Some(s) = setup("kill_9_during_tar_install_then_resume_the_download") else {
        return;
    };
    // ~12 MiB archive of incompressible files, one zstd frame.
    let mut a = Archive::new();
    let mut files = Vec::new();
    for i in 0..6 {
        let data = common::noise(2 * MIB as usize, 200 + i);
        let name = format!("usr/lib/blob{i}");
        a.file(&name, 0o644, 0, &data);
        files.push((name, data));
    }
    let tar = a.finish();
    let z = zstd::encode_all(&tar[..], 3).unwrap();
    let req = request(&tar, &z, "5");
    let server = FaultServer::start().await;
    server.add("targets/rootfs.tar.zst", z.clone());
    server.set(Faults {
        chunk_delay: Some(Duration::from_millis(3)),
        ..Faults::default()
    });

    let mut kills = 0;
    for _ in 0..2 {
        let before = kept_offset(&s.root);
        let child = spawn_child(&s, &server, &req, &[]);
        if kill_when(child, || kept_offset(&s.root) > before).await {
            kills += 1;
        }
        assert_not_bootable(&s);
    }
    assert!(kills > 0, "the child finished before it could be killed");
    let kept = kept_offset(&s.root);
    assert!(kept > 0, "nothing of the download was kept");

    // Resume in this process, at full speed.
    server.set(Faults::default());
    let before = server.seen().len();
    stage(&s, &server, &req, "b").await.unwrap();
    let seen = server.seen();
    let resumed: Vec<_> = seen[before..].iter().map(|r| r.range_start).collect();
    assert_eq!(
        resumed,
        vec![Some(kept)],
        "the resumed install must fetch only the rest, from the kept offset"
    );
    // Every run after the first fetched from where the previous one had kept bytes.
    assert!(
        seen.iter()
            .skip(1)
            .all(|r| r.range_start.is_some_and(|o| o > 0)),
        "a run started the download over: {:?}",
        seen.iter().map(|r| r.range_start).collect::<Vec<_>>()
    );
    let tree = slots(&s.root, &s.state).subvolume_path(&slot_b());
    for (n, data) in &files {
        assert_eq!(&std::fs::read(tree.join(n)).unwrap(), data, "{n}");
    }
    for leftover in [
        ".b.download",
        ".b.download.json",
        ".b.partial",
        ".b.extract.json",
    ] {
        assert!(!s.root.join(leftover).exists(), "{leftover} left behind");
    }
    assert_eq!(checkpoint_snapshots(&s.root), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_extraction_then_resume_from_the_checkpoint_gives_the_same_tree() {
    let Some(s) =
        setup("kill_9_during_extraction_then_resume_from_the_checkpoint_gives_the_same_tree")
    else {
        return;
    };
    let tar = rootfs();
    let (req, server) = publish_throttled(&tar, "6").await;

    // Kill right after a checkpoint, somewhere between two checkpoints (possibly inside
    // a file), and two checkpoints further on.
    kill_after_checkpoint(&s, &server, &req, 0).await;
    assert_not_bootable(&s);
    let t0 = Instant::now();
    let child = spawn_child(&s, &server, &req, &[]);
    assert!(
        kill_when(child, || t0.elapsed() > Duration::from_millis(700)).await,
        "the child finished before it could be killed"
    );
    assert_not_bootable(&s);
    kill_after_checkpoint(&s, &server, &req, checkpoint_seq(&s.root) + 1).await;
    assert_not_bootable(&s);
    let cp = json(&s.root.join(".b.extract.json")).expect("no extraction checkpoint saved");
    let boundary = cp["boundary_offset"].as_u64().unwrap();
    assert!(boundary > 0);
    // The snapshot the record names; a kill between taking the next snapshot and
    // recording it (or deleting the previous one) leaves one more, deleted on resume.
    let snaps = checkpoint_snapshots(&s.root);
    assert!(
        snaps.contains(&cp["snapshot"].as_str().unwrap().to_string()) && snaps.len() <= 2,
        "checkpoint {cp} with snapshots {snaps:?}"
    );

    // Resume here at full speed, then install the same archive fresh into slot c.
    server.set(Faults::default());
    let resumed = stage(&s, &server, &req, "b").await.unwrap();
    let fresh = stage(&s, &server, &req, "c").await.unwrap();
    println!("resumed: {resumed:?}\nfresh: {fresh:?}");
    assert_eq!(fresh.resumed_at, 0);
    assert_eq!(fresh.content_decoded, tar.len() as u64);
    assert_eq!(
        resumed.resumed_at, boundary,
        "did not resume at the checkpoint"
    );
    assert!(resumed.entries_before > 0);
    assert_eq!(
        resumed.entries_before + resumed.entries_extracted,
        fresh.entries_extracted
    );
    assert!(
        resumed.content_decoded < fresh.content_decoded - boundary + MIB,
        "the resumed run decompressed more than the rest plus one frame"
    );
    assert!(resumed.transfer_read < fresh.transfer_read);

    let sl = slots(&s.root, &s.state);
    let got = tree_listing(&sl.subvolume_path(&slot_b()));
    let want = tree_listing(&sl.subvolume_path(&SlotName::new("c").unwrap()));
    assert!(want.len() > 40, "the fresh tree is too small: {want:?}");
    for (p, w) in &want {
        assert_eq!(got.get(p), Some(w), "{p} differs after the resumed install");
    }
    assert_eq!(
        got.len(),
        want.len(),
        "extra paths after the resumed install"
    );
    assert!(want["etc"].contains("user.dir"), "{}", want["etc"]);
    assert!(
        want["opt/app/hard01"].contains("group=opt/app/blob01"),
        "{}",
        want["opt/app/hard01"]
    );
    for leftover in [".b.partial", ".b.extract.json", ".b.download.json"] {
        assert!(!s.root.join(leftover).exists(), "{leftover} left behind");
    }
    assert_eq!(checkpoint_snapshots(&s.root), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_another_archive_is_thrown_away() {
    let Some(s) = setup("a_checkpoint_of_another_archive_is_thrown_away") else {
        return;
    };
    let tar = rootfs();
    let (req, server) = publish_throttled(&tar, "6").await;
    kill_after_checkpoint(&s, &server, &req, 0).await;
    assert!(!checkpoint_snapshots(&s.root).is_empty());

    // Another release for the same slot: a different archive.
    let mut a = Archive::new();
    a.file("etc/release", 0o644, 0, b"7\n");
    let tar7 = a.finish();
    let z7 = framed_zstd(&tar7, MIB as usize);
    let mut req7 = request(&tar7, &z7, "7");
    req7.path = "targets/rootfs7.tar.zst".into();
    server.add("targets/rootfs7.tar.zst", z7);
    server.set(Faults::default());
    let r = stage(&s, &server, &req7, "b").await.unwrap();
    assert_eq!(r.resumed_at, 0, "resumed from another archive's checkpoint");
    let tree = slots(&s.root, &s.state).subvolume_path(&slot_b());
    let got = tree_listing(&tree);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["etc", "etc/release"]);
    assert_eq!(checkpoint_snapshots(&s.root), Vec::<String>::new());
    assert!(!s.root.join(".b.extract.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_extraction_refuses_what_a_fresh_one_refuses() {
    let Some(s) = setup("a_resumed_extraction_refuses_what_a_fresh_one_refuses") else {
        return;
    };
    // A symlink to outside early on, padding past several checkpoints, then an entry
    // that would be written through the symlink.
    let outside = s.root.parent().unwrap().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let mut a = Archive::new();
    a.link(tar::EntryType::Symlink, "escape", outside.to_str().unwrap());
    for i in 0..12u64 {
        a.file(
            &format!("pad{i}"),
            0o644,
            0,
            &common::noise(MIB as usize, 900 + i),
        );
    }
    a.file("escape/planted", 0o644, 0, b"owned\n");
    let tar = a.finish();
    let (req, server) = publish_throttled(&tar, "8").await;
    kill_after_checkpoint(&s, &server, &req, 1).await;
    server.set(Faults::default());
    let err = stage(&s, &server, &req, "b").await.unwrap_err();
    assert!(
        matches!(err, StageError::Extract { .. }),
        "resumed extraction: {err}"
    );
    assert!(err.to_string().contains("symlink"), "{err}");
    assert!(
        !outside.join("planted").exists(),
        "written through the symlink"
    );
    assert_not_bootable(&s);
    // The failed archive leaves nothing to resume from.
    assert_eq!(checkpoint_snapshots(&s.root), Vec::<String>::new());
    assert!(!s.root.join(".b.extract.json").exists());
    assert!(!s.root.join(".b.partial").exists());
}

/// Fail points (feature `failpoints`): the child aborts itself at exact steps — after an
/// entry, between taking a checkpoint's snapshot and recording it, between recording it
/// and deleting the previous snapshot — and every resume still ends in the same tree.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_at_each_checkpoint_step_then_resume_gives_the_same_tree() {
    use std::os::unix::process::ExitStatusExt;
    let Some(s) = setup("abort_at_each_checkpoint_step_then_resume_gives_the_same_tree") else {
        return;
    };
    let tar = rootfs();
    let (req, server) = publish_throttled(&tar, "6").await;
    server.set(Faults::default());
    let mut boundaries = Vec::new();
    for point in [
        "tar.entry#2",
        "tar.checkpoint.snapshot#1",
        "tar.checkpoint.saved#0",
        "tar.entry#5",
        "tar.checkpoint.snapshot#0",
        "tar.checkpoint.saved#1",
    ] {
        let mut child = spawn_child(&s, &server, &req, &[("PATCHD_FAILPOINT", point)]);
        let st = child.wait().unwrap();
        assert_eq!(st.signal(), Some(libc::SIGABRT), "{point}: child {st}");
        assert_not_bootable(&s);
        let cp = json(&s.root.join(".b.extract.json"));
        boundaries.push(cp.map_or(0, |v| v["boundary_offset"].as_u64().unwrap_or(0)));
    }
    println!("checkpoint boundary after each abort: {boundaries:?}");
    assert!(
        boundaries.windows(2).all(|w| w[0] <= w[1]),
        "a checkpoint went backwards: {boundaries:?}"
    );
    let resumed = stage(&s, &server, &req, "b").await.unwrap();
    let fresh = stage(&s, &server, &req, "c").await.unwrap();
    assert_eq!(resumed.resumed_at, *boundaries.last().unwrap());
    assert!(resumed.resumed_at > 0 && resumed.content_decoded < fresh.content_decoded);
    let sl = slots(&s.root, &s.state);
    assert_eq!(
        tree_listing(&sl.subvolume_path(&slot_b())),
        tree_listing(&sl.subvolume_path(&SlotName::new("c").unwrap()))
    );
    assert_eq!(checkpoint_snapshots(&s.root), Vec::<String>::new());
}

#[cfg(not(feature = "failpoints"))]
#[test]
fn abort_at_each_checkpoint_step_then_resume_gives_the_same_tree() {
    println!(
        "skipped: abort_at_each_checkpoint_step_then_resume_gives_the_same_tree needs \
         `--features failpoints` (tests/suites/tar-resume runs it)"
    );
}
