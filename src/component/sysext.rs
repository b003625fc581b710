//! `sysext`: a systemd-sysext image for `/usr` or `/opt`, kept in two copies and merged
//! by `systemd-sysext refresh` (docs/components.md).
//!
//! The payload is a raw filesystem image (squashfs, erofs or ext4) or a directory tree
//! as tar. Both copies live in `/var/lib/extensions`, where systemd-sysext discovers
//! images: the one in use as `NAME.raw` (or `NAME/` for a tree), so the image name is
//! NAME and its `extension-release.NAME` matches; the other as `.#NAME.raw.patchd` (or
//! `.#NAME.patchd`) — systemd ignores `.#` names. The copies are real files and
//! directories, not symlinks: systemd-sysext 252 follows no symlinks under `--root`.
//! Which copy (`a` or `b`) an entry holds is told by its inode, kept in patchd's record
//! of the copy (`/var/lib/patchd/sysext/NAME/COPY.json`, with version, sha256, origin);
//! an entry no record claims is not patchd's and is never replaced.
//!
//! Staging first checks the payload's extension-release against this OS (the rules of
//! [`super::sysext_release`]): a mismatch fails the stage before anything changes. Then
//! it rebuilds only the spare entry (its record removed first, so a torn copy never
//! claims a version) and checks the staged copy again.
//! Switching checks again, exchanges the spare and the entry in use with one
//! `renameat2(RENAME_EXCHANGE)` (at every instant exactly one copy is `NAME`, also across
//! a kill or power cut), runs `systemd-sysext refresh` and reads back that NAME is merged
//! (systemd-sysext 252 exits 0 even when its merge failed, so the exit status alone
//! proves nothing). Rolling back exchanges them again and refreshes; without a previous
//! copy the entry in use becomes the spare and the refresh unmerges the extension.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::sysext_release::{self, ReleaseFields};
use super::{io_err, ComponentError, Installed, Installer, Job};
use crate::fsutil;
use crate::manifest::Component;
use crate::paths::Paths;
use crate::slot::extract::{extract, ExtractPolicy};

/// Where systemd-sysext looks for extensions (both copies), below the root.
pub const EXTENSIONS_DIR: &str = "/var/lib/extensions";
/// Where patchd keeps the copies' records, below the root.
pub const SYSEXT_DIR: &str = "/var/lib/patchd/sysext";
/// The hierarchies systemd-sysext 252 merges by default.
const HIERARCHIES: [&str; 2] = ["usr", "opt"];

/// How patchd runs systemd-sysext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysextSettings {
    /// Program and leading arguments; `--root=ROOT` (when the root is not `/`) and the
    /// verb are appended. The default runs the tool through `systemd-run --wait --pipe`:
    /// patchd.service's sandbox (ProtectSystem, RestrictNamespaces) would keep a merge
    /// made inside it from the rest of the system.
    pub tool: Vec<String>,
}

impl Default for SysextSettings {
    fn default() -> Self {
        Self {
            tool: [
                "systemd-run",
                "--wait",
                "--pipe",
                "--quiet",
                "--collect",
                "--",
                "systemd-sysext",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// The payload's form: a raw filesystem image or a directory tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    Raw,
    Tree,
}

#[derive(Debug, Clone)]
pub struct Sysexts {
    root: PathBuf,
    store: PathBuf,
    links: PathBuf,
    settings: SysextSettings,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CopyRecord {
    version: String,
    sha256: String,
    origin: String,
    form: Form,
    /// Inode of the copy's entry in the extensions directory (kept across renames).
    ino: u64,
}

fn other(copy: &str) -> &'static str {
    if copy == "a" {
        "b"
    } else {
        "a"
    }
}

/// The entry systemd-sysext merges.
fn active_name(name: &str, form: Form) -> String {
    match form {
        Form::Raw => format!("{name}.raw"),
        Form::Tree => name.to_string(),
    }
}

/// The other copy's entry (ignored by systemd: `.#` names are temporary files to it).
fn spare_name(name: &str, form: Form) -> String {
    format!(".#{}.patchd", active_name(name, form))
}

/// What a payload is, from its first bytes: a tar tree, or a filesystem image the kernel
/// mounts as systemd-sysext will (its type for the check's read-only mount).
pub fn detect(path: &Path) -> std::io::Result<Result<(Form, &'static str), String>> {
    use std::io::Read;
    let mut head = vec![0u8; 4096];
    let mut f = fs::File::open(path)?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    head.truncate(n);
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    Ok(if at(257, b"ustar") {
        Ok((Form::Tree, "tar"))
    } else if at(0, b"hsqs") {
        Ok((Form::Raw, "squashfs"))
    } else if at(1024, &0xE0F5_E1E2u32.to_le_bytes()) {
        Ok((Form::Raw, "erofs"))
    } else if at(1080, &0xEF53u16.to_le_bytes()) {
        Ok((Form::Raw, "ext4"))
    } else if at(512, b"EFI PART") {
        Err(
            "a GPT disk image (DDI) is not supported; publish a squashfs, erofs or ext4 \
             image or a tar tree"
                .into(),
        )
    } else {
        Err("neither a tar tree nor a squashfs, erofs or ext4 image".into())
    })
}

impl Sysexts {
    pub fn new(paths: &Paths, settings: SysextSettings) -> Self {
        Self {
            root: paths.root().to_path_buf(),
            store: paths.resolve(SYSEXT_DIR),
            links: paths.resolve(EXTENSIONS_DIR),
            settings,
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.store.join(name)
    }

    /// The inode of `entry` in the extensions directory; `None` when it is missing. A
    /// symlink is refused: patchd makes none, and systemd-sysext under `--root` would
    /// not follow it.
    fn inode(&self, name: &str, entry: &str) -> Result<Option<u64>, ComponentError> {
        let p = self.links.join(entry);
        match fs::symlink_metadata(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ComponentError::io(
                name,
                format!("reading {}", p.display()),
                e,
            )),
            Ok(m) if m.file_type().is_symlink() => Err(not_ours(name, &p)),
            Ok(m) => Ok(Some(m.ino())),
        }
    }

    /// The copy whose record claims inode `ino` of `form`.
    fn claimed(
        &self,
        name: &str,
        form: Form,
        ino: u64,
    ) -> Result<Option<&'static str>, ComponentError> {
        for copy in ["a", "b"] {
            if self
                .record(name, copy)?
                .is_some_and(|r| r.form == form && r.ino == ino)
            {
                return Ok(Some(copy));
            }
        }
        Ok(None)
    }

    /// The copy in use and its form; `None` when no entry of that name is there. An
    /// entry of that name no record claims is an error (never replaced).
    fn current(&self, name: &str) -> Result<Option<(&'static str, Form)>, ComponentError> {
        let mut found = None;
        for form in [Form::Raw, Form::Tree] {
            let entry = active_name(name, form);
            let Some(ino) = self.inode(name, &entry)? else {
                continue;
            };
            let Some(copy) = self.claimed(name, form, ino)? else {
                return Err(not_ours(name, &self.links.join(entry)));
            };
            if found.is_some() {
                return Err(ComponentError::failed(
                    name,
                    format!("both {name}.raw and {name} are in {}", self.links.display()),
                ));
            }
            found = Some((copy, form));
        }
        Ok(found)
    }

    /// The copy the spare entry of `form` holds, by its record.
    fn spare(&self, name: &str, form: Form) -> Result<Option<&'static str>, ComponentError> {
        match self.inode(name, &spare_name(name, form))? {
            Some(ino) => self.claimed(name, form, ino),
            None => Ok(None),
        }
    }

    fn record(&self, name: &str, copy: &str) -> Result<Option<CopyRecord>, ComponentError> {
        let p = self.dir(name).join(format!("{copy}.json"));
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| ComponentError::failed(name, format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ComponentError::io(
                name,
                format!("reading {}", p.display()),
                e,
            )),
        }
    }

    /// Make the spare entry the one in use (and the one in use the spare), atomically.
    fn exchange(&self, name: &str, form: Form) -> Result<(), ComponentError> {
        let spare = self.links.join(spare_name(name, form));
        let active = self.links.join(active_name(name, form));
        let r = if fs::symlink_metadata(&active).is_ok() {
            nix::fcntl::renameat2(
                None,
                &spare,
                None,
                &active,
                nix::fcntl::RenameFlags::RENAME_EXCHANGE,
            )
            .map_err(std::io::Error::from)
        } else {
            fs::rename(&spare, &active)
        };
        r.map_err(io_err(name, "exchanging the extension copies"))?;
        fsutil::fsync_dir(&self.links).map_err(io_err(name, "syncing the extensions directory"))
    }

    /// Check the entry `entry` of `name` against this OS's os-release.
    fn check_entry(&self, name: &str, entry: &str, form: Form) -> Result<(), ComponentError> {
        let image = self.links.join(entry);
        let text = match form {
            Form::Tree => read_inside(&image, &sysext_release::release_path(name))
                .map_err(|why| ComponentError::failed(name, why))?,
            Form::Raw => self.read_raw(name, &image)?,
        };
        check_release(&self.root, name, &text)
    }

    /// The extension-release file of raw image `image`, read through a read-only,
    /// nodev/nosuid/noexec loop mount of it (unmounted again before returning).
    fn read_raw(&self, name: &str, image: &Path) -> Result<String, ComponentError> {
        let mnt = self.dir(name).join(".check");
        fsutil::ensure_dir(&mnt, 0o700).map_err(io_err(name, "creating the check mount point"))?;
        read_raw_at(name, image, &mnt)
    }

    /// Check `image` (a raw image, a tar tree or a directory tree) as extension `name`
    /// against this OS, without installing anything (`patchd sysext check`).
    pub fn check_image(&self, name: &str, image: &Path) -> Result<(), ComponentError> {
        let rel = sysext_release::release_path(name);
        let text = if image.is_dir() {
            read_inside(image, &rel).map_err(|why| ComponentError::failed(name, why))?
        } else {
            match detect(image).map_err(io_err(name, "reading the image"))? {
                Ok((Form::Tree, _)) => read_from_tar(name, image, &rel)?,
                Ok((Form::Raw, _)) => {
                    let mnt = tempfile::tempdir()
                        .map_err(io_err(name, "creating the check mount point"))?;
                    read_raw_at(name, image, mnt.path())?
                }
                Err(why) => return Err(ComponentError::failed(name, why)),
            }
        };
        check_release(&self.root, name, &text)
    }

    /// The spare copy (what a rollback would put in use), when it is whole.
    pub fn previous(&self, name: &str) -> Result<Option<Installed>, ComponentError> {
        let Some((_, form)) = self.current(name)? else {
            return Ok(None);
        };
        let Some(copy) = self.spare(name, form)? else {
            return Ok(None);
        };
        Ok(self.record(name, copy)?.map(|r| Installed {
            version: r.version,
            sha256: r.sha256,
            copy: Some(copy.to_string()),
            origin: r.origin,
        }))
    }

    fn tool(&self, name: &str, verb: &str) -> Result<String, ComponentError> {
        let Some((prog, args)) = self.settings.tool.split_first() else {
            return Err(ComponentError::failed(
                name,
                "no systemd-sysext command configured",
            ));
        };
        let mut cmd = Command::new(prog);
        cmd.args(args);
        if self.root != Path::new("/") {
            cmd.arg(format!("--root={}", self.root.display()));
        }
        cmd.arg(verb);
        run(name, &format!("systemd-sysext {verb}"), &mut cmd)
    }

    /// The extensions merged into any hierarchy below the root, as systemd-sysext
    /// records them in `HIERARCHY/.systemd-sysext/extensions`.
    pub fn merged(&self) -> Vec<String> {
        let mut v = Vec::new();
        for h in HIERARCHIES {
            let p = self.root.join(h).join(".systemd-sysext/extensions");
            if let Ok(t) = fs::read_to_string(p) {
                v.extend(t.split_whitespace().map(String::from));
            }
        }
        v.sort();
        v.dedup();
        v
    }

    /// `systemd-sysext refresh`, then read back that `name` is merged (or not).
    fn refresh(&self, name: &str, want_merged: bool) -> Result<(), ComponentError> {
        let out = self.tool(name, "refresh")?;
        let merged = self.merged().iter().any(|m| m == name);
        if merged != want_merged {
            let mut out = out.trim().to_string();
            out.truncate(500);
            return Err(ComponentError::failed(
                name,
                format!(
                    "systemd-sysext refresh left the extension {}merged (its output: {out})",
                    if merged { "" } else { "un" }
                ),
            ));
        }
        tracing::info!(component = name, merged, "systemd-sysext refreshed");
        Ok(())
    }

    /// Put `copy` in use (checked against this OS first) and refresh: what a switch and
    /// a rollback do; a copy already in use is only refreshed.
    fn activate(&self, name: &str, copy: &str) -> Result<(), ComponentError> {
        let rec = self.record(name, copy)?.ok_or_else(|| {
            ComponentError::failed(name, format!("copy {copy} has no record (not staged)"))
        })?;
        let form = rec.form;
        match self.current(name)? {
            Some((c, f)) if c == copy && f == form => {
                self.check_entry(name, &active_name(name, form), form)?;
            }
            _ => {
                if self.spare(name, form)? != Some(copy) {
                    return Err(ComponentError::failed(
                        name,
                        format!(
                            "copy {copy} ({}) is not in {}",
                            rec.version,
                            self.links.display()
                        ),
                    ));
                }
                self.check_entry(name, &spare_name(name, form), form)?;
                self.exchange(name, form)?;
            }
        }
        self.refresh(name, true)
    }
}

/// The extension-release of raw image `image`, read through a read-only,
/// nodev/nosuid/noexec loop mount on `mnt` (unmounted again before returning).
fn read_raw_at(name: &str, image: &Path, mnt: &Path) -> Result<String, ComponentError> {
    let fstype = detect_raw(image, name)?;
    let mut cmd = Command::new("mount");
    cmd.args(["-t", fstype, "-o", "ro,loop,nodev,nosuid,noexec", "--"])
        .arg(image)
        .arg(mnt);
    run(name, "mount", &mut cmd)?;
    let text = read_inside(mnt, &sysext_release::release_path(name));
    let mut um = Command::new("umount");
    um.arg("--").arg(mnt);
    let unmounted = run(name, "umount", &mut um);
    let text = text.map_err(|why| ComponentError::failed(name, why))?;
    unmounted.map(|_| text)
}

/// `rel` out of tar tree `file` (at most 64 KiB; a link there is not followed).
fn read_from_tar(name: &str, file: &Path, rel: &str) -> Result<String, ComponentError> {
    use std::io::Read;
    let f = fs::File::open(file).map_err(io_err(name, "opening the image"))?;
    let mut ar = tar::Archive::new(std::io::BufReader::new(f));
    let entries = ar.entries().map_err(io_err(name, "reading the tar tree"))?;
    for e in entries {
        let e = e.map_err(io_err(name, "reading the tar tree"))?;
        let path = e.path().map_err(io_err(name, "reading the tar tree"))?;
        let p = path.to_string_lossy();
        if p.trim_start_matches("./") == rel && e.header().entry_type().is_file() {
            let mut s = String::new();
            e.take(64 * 1024)
                .read_to_string(&mut s)
                .map_err(io_err(name, "reading the extension-release"))?;
            return Ok(s);
        }
    }
    Err(ComponentError::failed(
        name,
        format!("the image has no /{rel}; its extension-release must be named after the component"),
    ))
}

fn not_ours(name: &str, p: &Path) -> ComponentError {
    ComponentError::failed(
        name,
        format!(
            "{} is not an extension patchd installed; remove it or give the component \
             another name",
            p.display()
        ),
    )
}

fn detect_raw(image: &Path, name: &str) -> Result<&'static str, ComponentError> {
    match detect(image).map_err(io_err(name, "reading the image"))? {
        Ok((Form::Raw, t)) => Ok(t),
        Ok((Form::Tree, _)) => Err(ComponentError::failed(
            name,
            "the raw copy is a tar archive",
        )),
        Err(why) => Err(ComponentError::failed(name, why)),
    }
}

/// Run `cmd`; its stdout, or an error with the tool's exit status and stderr.
fn run(name: &str, what: &str, cmd: &mut Command) -> Result<String, ComponentError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ComponentError::io(name, format!("running {what}"), e))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let mut text = stderr.trim().to_string();
        text.truncate(500);
        return Err(ComponentError::failed(
            name,
            format!("{what} failed ({}): {text}", out.status),
        ));
    }
    Ok(format!("{}{stderr}", String::from_utf8_lossy(&out.stdout)))
}

/// Read `rel` below `base` without leaving it through a symlink (an image's links are
/// not followed out of it) and at most 64 KiB of it.
fn read_inside(base: &Path, rel: &str) -> Result<String, String> {
    use std::io::Read;
    let p = base.join(rel);
    let real = fs::canonicalize(&p).map_err(|e| {
        format!("the image has no /{rel} ({e}); its extension-release must be named after the component")
    })?;
    let real_base = fs::canonicalize(base).map_err(|e| format!("{}: {e}", base.display()))?;
    if !real.starts_with(&real_base) {
        return Err(format!("/{rel} in the image points outside it"));
    }
    let f = fs::File::open(&real).map_err(|e| format!("/{rel} in the image: {e}"))?;
    let mut s = String::new();
    f.take(64 * 1024)
        .read_to_string(&mut s)
        .map_err(|e| format!("/{rel} in the image: {e}"))?;
    Ok(s)
}

/// Check extension-release text `text` of extension `name` against the OS below `root`.
pub fn check_release(root: &Path, name: &str, text: &str) -> Result<(), ComponentError> {
    let (os_path, host) = sysext_release::read_os_release(root)
        .map_err(io_err(name, "reading the OS's os-release"))?;
    sysext_release::check(
        &ReleaseFields::parse(text),
        &host,
        sysext_release::host_architecture(),
    )
    .map_err(|m| {
        ComponentError::failed(
            name,
            format!(
                "extension-release.{name} does not match this OS ({}): {m}; not activated",
                os_path.display()
            ),
        )
    })
}

impl Installer for Sysexts {
    fn installed(&self, name: &str) -> Result<Option<Installed>, ComponentError> {
        let Some((copy, _)) = self.current(name)? else {
            return Ok(None);
        };
        // current() found the record that claims the entry.
        let r = self
            .record(name, copy)?
            .ok_or_else(|| ComponentError::failed(name, format!("copy {copy} lost its record")))?;
        Ok(Some(Installed {
            version: r.version,
            sha256: r.sha256,
            copy: Some(copy.to_string()),
            origin: r.origin,
        }))
    }

    /// In use and merged: systemd-sysext merges again at every boot against the booted
    /// OS and leaves out an extension that does not match it, so after a reboot the
    /// A/B entry alone does not tell.
    fn in_effect(&self, c: &Component) -> Result<Result<(), String>, ComponentError> {
        match self.installed(&c.name)? {
            Some(i) if i.sha256 == c.sha256 => {}
            Some(i) => return Ok(Err(format!("copy in use holds version {}", i.version))),
            None => return Ok(Err("no copy of it is in use".into())),
        }
        if self.merged().iter().any(|m| m == &c.name) {
            Ok(Ok(()))
        } else {
            Ok(Err(
                "in use but not merged (systemd-sysext left it out at boot: an \
                 extension-release that does not match this OS, or systemd-sysext.service \
                 not enabled)"
                    .into(),
            ))
        }
    }

    fn stage(&self, job: &Job<'_>) -> Result<(), ComponentError> {
        let c = job.component;
        let name = c.name.as_str();
        let (form, fstype) = match detect(job.file).map_err(io_err(name, "reading the payload"))? {
            Ok(f) => f,
            Err(why) => return Err(ComponentError::failed(name, format!("payload: {why}"))),
        };
        let dir = self.dir(name);
        fsutil::ensure_dir(&dir, 0o755).map_err(io_err(name, "creating the sysext directory"))?;
        fsutil::ensure_dir(&self.links, 0o755)
            .map_err(io_err(name, "creating the extensions directory"))?;
        let cur = self.current(name)?;
        if let Some((_, f)) = cur.filter(|(_, f)| *f != form) {
            return Err(ComponentError::failed(
                name,
                format!(
                    "installed as {f:?}, the new payload is {form:?}: an extension keeps its form"
                ),
            ));
        }
        // The payload itself first: a refused extension changes nothing, not even the
        // spare copy a rollback would go back to.
        self.check_image(name, job.file)?;
        let copy = cur.map_or("a", |(c, _)| other(c));
        let rec = dir.join(format!("{copy}.json"));
        match fs::remove_file(&rec) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ComponentError::io(name, "removing the old copy record", e))
            }
            _ => fsutil::fsync_dir(&dir).map_err(io_err(name, "syncing the sysext directory"))?,
        }
        let spare = self.links.join(spare_name(name, form));
        let fresh = self
            .links
            .join(format!(".#{}.new", active_name(name, form)));
        for p in [&spare, &fresh] {
            remove_any(p).map_err(io_err(name, "removing the old copy"))?;
        }
        match form {
            Form::Tree => {
                fs::create_dir(&fresh).map_err(io_err(name, "creating the new copy"))?;
                let file = fs::File::open(job.file).map_err(io_err(name, "opening the payload"))?;
                extract(
                    std::io::BufReader::new(file),
                    &fresh,
                    &ExtractPolicy::default(),
                )
                .map_err(|source| ComponentError::Extract {
                    name: name.to_string(),
                    source,
                })?;
                fsutil::syncfs_dir(&fresh).map_err(io_err(name, "syncing the new copy"))?;
            }
            Form::Raw => {
                fs::copy(job.file, &fresh).map_err(io_err(name, "copying the image"))?;
                fs::File::open(&fresh)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err(name, "syncing the new copy"))?;
            }
        }
        fs::rename(&fresh, &spare).map_err(io_err(name, "renaming the new copy"))?;
        fsutil::fsync_dir(&self.links).map_err(io_err(name, "syncing the extensions directory"))?;
        // Before anything is activated: an extension for another OS is never put in use
        // (and its copy not kept).
        if let Err(e) = self.check_entry(name, &spare_name(name, form), form) {
            remove_any(&spare).map_err(io_err(name, "removing the refused copy"))?;
            return Err(e);
        }
        let ino = fs::symlink_metadata(&spare)
            .map_err(io_err(name, "reading the new copy"))?
            .ino();
        let body = serde_json::to_vec(&CopyRecord {
            version: c.version.clone(),
            sha256: c.sha256.clone(),
            origin: job.release.to_string(),
            form,
            ino,
        })
        .map_err(|e| ComponentError::failed(name, e.to_string()))?;
        fsutil::atomic_write(&rec, &body).map_err(io_err(name, "writing the copy record"))?;
        tracing::info!(component = name, copy, fstype, version = %c.version, "sysext staged");
        Ok(())
    }

    fn switch(&self, job: &Job<'_>) -> Result<(), ComponentError> {
        let c = job.component;
        let name = c.name.as_str();
        let cur = self.current(name)?.map(|(copy, _)| copy);
        let want = match cur {
            // Switched already (a repeated step after a restart): refresh again.
            Some(cur)
                if self
                    .record(name, cur)?
                    .is_some_and(|r| r.sha256 == c.sha256) =>
            {
                cur
            }
            cur => {
                let want = cur.map_or("a", other);
                match self.record(name, want)? {
                    Some(r) if r.sha256 == c.sha256 => want,
                    _ => {
                        return Err(ComponentError::failed(
                            name,
                            format!(
                                "copy {want} does not hold version {} (not staged)",
                                c.version
                            ),
                        ))
                    }
                }
            }
        };
        self.activate(name, want)?;
        tracing::info!(component = name, copy = want, version = %c.version, "sysext switched");
        Ok(())
    }

    fn roll_back(&self, c: &Component, before: Option<&Installed>) -> Result<(), ComponentError> {
        let name = c.name.as_str();
        if let Some(copy) = before.and_then(|b| b.copy.as_deref()) {
            return self.activate(name, copy);
        }
        // Not installed before: the copy in use becomes the spare (kept for inspection)
        // and the refresh unmerges the extension.
        if let Some((_, form)) = self.current(name)? {
            let spare = self.links.join(spare_name(name, form));
            remove_any(&spare).map_err(io_err(name, "removing the spare copy"))?;
            fs::rename(self.links.join(active_name(name, form)), &spare)
                .map_err(io_err(name, "taking the extension out of use"))?;
            fsutil::fsync_dir(&self.links)
                .map_err(io_err(name, "syncing the extensions directory"))?;
        }
        self.refresh(name, false)
    }
}

fn remove_any(p: &Path) -> std::io::Result<()> {
    let r = match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Names of the sysext components patchd keeps (for the inventory).
pub(super) fn store_dir(paths: &Paths) -> PathBuf {
    paths.resolve(SYSEXT_DIR)
}
