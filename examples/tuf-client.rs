//! Standalone TUF client for integration and interop tests (issue 3):
//!
//! ```text
//! tuf-client --metadata-dir DIR init ROOT_FILE
//! tuf-client --metadata-dir DIR --metadata-url URL refresh
//! tuf-client --metadata-dir DIR --metadata-url URL --target-name PATH [--target-name PATH…]
//!            --target-base-url URL --target-dir DIR download
//! ```
//!
//! Exit status 0 on success, exactly 1 on any failure (argument errors and panics
//! included), with the reason on stderr. URLs may be `http://`, `https://` or `file://`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use patchd::clock::SystemClock;
use patchd::fetch::{ByteSource, FileSource, HttpOptions, HttpSource};
use patchd::trust::{Limits, TufClient};

#[derive(Parser, Debug)]
#[command(name = "tuf-client", about = "TUF client (patchd trust module)")]
struct Cli {
    /// Directory of trusted metadata (root.json, timestamp.json, …).
    #[arg(long, value_name = "DIR")]
    metadata_dir: PathBuf,
    /// Base URL of the repository's metadata directory.
    #[arg(long, value_name = "URL")]
    metadata_url: Option<String>,
    /// Target path to download (repeatable; fetched in order).
    #[arg(long = "target-name", value_name = "PATH")]
    target_names: Vec<String>,
    /// Base URL of the repository's targets directory.
    #[arg(long, value_name = "URL")]
    target_base_url: Option<String>,
    /// Where downloaded targets are stored.
    #[arg(long, value_name = "DIR")]
    target_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Store the initial trusted root (no network).
    Init {
        #[arg(value_name = "ROOT_FILE")]
        root_file: PathBuf,
    },
    /// Update top-level metadata.
    Refresh,
    /// Refresh, then download and verify each --target-name.
    Download,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let ok = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
            let _ = e.print();
            return if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            };
        }
    };
    patchd::logging::init_command("TUF_CLIENT_LOG", "warn");
    // A panic is a failure like any other: exit status 1, message on stderr (printed by
    // the default hook).
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("tuf-client: error: {e:#}");
            ExitCode::from(1)
        }
        Err(_) => {
            eprintln!("tuf-client: error: internal panic");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    // Lets tests/tuf_cli.rs prove that a panic anywhere in a run still exits 1.
    if std::env::var_os("TUF_CLIENT_PANIC_FOR_TEST").is_some() {
        panic!("panic asked for by TUF_CLIENT_PANIC_FOR_TEST");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(cli))
}

async fn run_async(cli: Cli) -> Result<()> {
    // The conformance CLI judges expiry by the system clock exactly as the TUF
    // specification does (expiry tests run it under a faked clock, some in the past);
    // the daemon's clock-sanity safeguard is off, so no `last-refresh.time` either.
    let limits = Limits {
        clock_sanity: false,
        ..Limits::default()
    };
    match &cli.command {
        Command::Init { root_file } => {
            let bytes = read_bounded(root_file, limits.root_max_len)?;
            TufClient::init(&cli.metadata_dir, &bytes, &limits)?;
            Ok(())
        }
        Command::Refresh => {
            let meta = source_for(required(&cli.metadata_url, "--metadata-url")?)?;
            let mut client = TufClient::load(&cli.metadata_dir, Arc::new(SystemClock), limits)?;
            client.refresh(meta.as_ref()).await?;
            Ok(())
        }
        Command::Download => {
            let meta = source_for(required(&cli.metadata_url, "--metadata-url")?)?;
            let targets = source_for(required(&cli.target_base_url, "--target-base-url")?)?;
            let Some(target_dir) = &cli.target_dir else {
                bail!("download needs --target-dir");
            };
            if cli.target_names.is_empty() {
                bail!("download needs at least one --target-name");
            }
            let mut client = TufClient::load(&cli.metadata_dir, Arc::new(SystemClock), limits)?;
            client.refresh(meta.as_ref()).await?;
            patchd::fsutil::ensure_dir(target_dir, 0o755)
                .with_context(|| format!("creating {}", target_dir.display()))?;
            for name in &cli.target_names {
                let target = client.target(meta.as_ref(), name).await?;
                let dest = target_dir.join(target.local_file_name());
                let fetched = client
                    .download_target_file(targets.as_ref(), &target, &dest)
                    .await?;
                tracing::info!(target = name, fetched, dest = %dest.display(), "target verified");
            }
            Ok(())
        }
    }
}

fn required<'a>(v: &'a Option<String>, flag: &str) -> Result<&'a str> {
    v.as_deref()
        .with_context(|| format!("this command needs {flag}"))
}

fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?;
    if buf.len() as u64 > limit {
        bail!("{} is larger than {limit} bytes", path.display());
    }
    Ok(buf)
}

fn source_for(url: &str) -> Result<Box<dyn ByteSource>> {
    if let Some(path) = url.strip_prefix("file://") {
        return Ok(Box::new(FileSource::new(path)));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return http_source(url);
    }
    bail!("unsupported URL {url:?} (http://, https:// or file://)")
}

fn http_source(url: &str) -> Result<Box<dyn ByteSource>> {
    let src = HttpSource::new(url, HttpOptions::default())
        .with_context(|| format!("repository URL {url}"))?;
    Ok(Box::new(src))
}
