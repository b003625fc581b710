//! Stage one image into a slot from the command line (benchmark and manual testing
//! driver; the daemon uses the same library call).
//!
//! ```text
//! stage-image --url http://127.0.0.1:8000/ --path img.zst --length N --sha256 H \
//!             --zstd --size N --content-sha256 H --device /dev/loop0 --state-dir DIR
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use patchd::fetch::{ByteSource, FileSource, HttpOptions, HttpSource};
use patchd::names::SlotName;
use patchd::paths::Paths;
use patchd::slot::{
    stage_image, BlockSlot, CancelToken, Compression, ImageFileSlot, ImageFormat, RawSlot,
    StageOptions, StageRequest,
};

#[derive(Parser)]
struct Args {
    /// Repository base URL (http/https) …
    #[arg(long, conflicts_with = "dir")]
    url: Option<String>,
    /// … or a local repository directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Path of the image inside the repository.
    #[arg(long)]
    path: String,
    /// Signed transfer length and sha256.
    #[arg(long)]
    length: u64,
    #[arg(long)]
    sha256: String,
    #[arg(long)]
    sha512: Option<String>,
    /// The transfer is zstd-compressed; then --size and --content-sha256 are required.
    #[arg(long)]
    zstd: bool,
    #[arg(long)]
    size: Option<u64>,
    #[arg(long)]
    content_sha256: Option<String>,
    /// Target: a block device …
    #[arg(long, conflicts_with = "image")]
    device: Option<PathBuf>,
    /// … or an image file.
    #[arg(long)]
    image: Option<PathBuf>,
    #[arg(long, default_value = "b")]
    slot: String,
    #[arg(long)]
    state_dir: PathBuf,
    #[arg(long, default_value = "x")]
    version: String,
    #[arg(long, default_value_t = 64)]
    checkpoint_mib: u64,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(4)
        .enable_all()
        .build()?;
    rt.block_on(run(a))
}

async fn run(a: Args) -> anyhow::Result<()> {
    let source: Box<dyn ByteSource> = match (&a.url, &a.dir) {
        (Some(u), None) => Box::new(HttpSource::new(u, HttpOptions::default())?),
        (None, Some(d)) => Box::new(FileSource::new(d)),
        _ => bail!("give --url or --dir"),
    };
    let mut req = StageRequest::raw(&a.path, &a.version, a.length, &a.sha256);
    req.sha512 = a.sha512.clone();
    if a.zstd {
        req.compression = Compression::Zstd;
        req.size = a.size.context("--zstd needs --size")?;
        req.content_sha256 = a
            .content_sha256
            .clone()
            .context("--zstd needs --content-sha256")?;
    }
    req.format = ImageFormat::Raw;
    let name = SlotName::new(a.slot.clone())?;
    let slot: Arc<dyn RawSlot> = match (&a.device, &a.image) {
        (Some(d), None) => Arc::new(BlockSlot::new(name, d, &a.state_dir, Paths::default())),
        (None, Some(i)) => Arc::new(ImageFileSlot::new(name, i, &a.state_dir)),
        _ => bail!("give --device or --image"),
    };
    let opts = StageOptions {
        checkpoint_every: a.checkpoint_mib << 20,
        ..StageOptions::default()
    };
    let t = Instant::now();
    let st = stage_image(
        &req,
        source.as_ref(),
        slot,
        &opts,
        None,
        &CancelToken::new(),
    )
    .await?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "staged slot={} state={:?} size={} sha256={} seconds={secs:.3}",
        st.slot,
        st.state,
        st.size.unwrap_or(0),
        st.sha256.as_deref().unwrap_or("-")
    );
    println!("peak_rss_kib={}", peak_rss_kib().unwrap_or(0));
    Ok(())
}

/// VmHWM: the process's peak resident set size.
fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
