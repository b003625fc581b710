//! Delta building and applying from the command line, for tests/bench/delta.
//!
//! ```text
//! delta-tool encode OLD NEW OUT [LEVEL]        static delta OLD → NEW
//! delta-tool index IMAGE STORE INDEX [LEVEL]   chunk store + index of IMAGE
//! delta-tool apply-static DELTA OLD OUT        rebuild NEW into the image file OUT
//! delta-tool apply-dynamic INDEX STORE OLD OUT rebuild from chunks of OLD + STORE;
//!                                              prints fetched=BYTES (index + ranges)
//! delta-tool levels OLD NEW L1,L2,…            per zstd level: static delta and chunk
//!                                              store bytes and encode wall times
//! ```
//! LEVEL defaults to patchd's (`delta::DEFAULT_LEVEL`); encoding uses every core.
//! The apply commands write through an image-file slot exactly as the device does
//! (pieces verified, final read-back hash); the expected image hash is taken from the
//! delta header or index here, where the device takes it from the signed manifest.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use patchd::delta::format::Header;
use patchd::delta::{self, ChunkIndex, Control, DeltaError, LocalImage, TargetImage};
use patchd::names::SlotName;
use patchd::slot::ImageFileSlot;

fn slot_for(out: &Path) -> Result<(ImageFileSlot, tempfile::TempDir)> {
    let dir = out.parent().unwrap_or(Path::new("."));
    let state = tempfile::tempdir_in(dir)?;
    Ok((
        ImageFileSlot::new(SlotName::new("b")?, out, state.path()),
        state,
    ))
}

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let level = |i: usize| -> Result<i32> {
        Ok(a.get(i)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(delta::DEFAULT_LEVEL))
    };
    match a.get(1).map(String::as_str) {
        Some("encode") if a.len() >= 5 => {
            let opts = delta::EncodeOptions {
                level: level(5)?,
                ..Default::default()
            };
            let t = Instant::now();
            let s =
                delta::encode_static(Path::new(&a[2]), Path::new(&a[3]), Path::new(&a[4]), &opts)?;
            eprintln!(
                "static delta: {} pieces ({} copies, {} with a base, {} plain), {} bytes, \
                 level {}, {} threads, encoded in {:.1} s",
                s.pieces,
                s.copies,
                s.with_base,
                s.plain,
                s.len,
                opts.level,
                delta::worker_threads(0),
                t.elapsed().as_secs_f64()
            );
        }
        Some("index") if a.len() >= 5 => {
            let t = Instant::now();
            let idx = delta::build_chunk_store(
                Path::new(&a[2]),
                Path::new(&a[3]),
                delta::DYNAMIC_CDC,
                level(5)?,
            )?;
            std::fs::write(&a[4], idx.encode())?;
            eprintln!(
                "chunk index: {} chunks, store {} bytes, built in {:.1} s",
                idx.chunks.len(),
                idx.store_size,
                t.elapsed().as_secs_f64()
            );
        }
        Some("apply-static") if a.len() == 5 => {
            let d = File::open(&a[2]).context("delta")?;
            let len = d.metadata()?.len();
            let h = Header::read(&mut std::io::BufReader::new(&d), len)?;
            let old = File::open(&a[3]).context("old image")?;
            let base = LocalImage {
                size: old.metadata()?.len(),
                file: old,
                sha256: Some(hex::encode(h.source_sha256)),
            };
            let (slot, _state) = slot_for(Path::new(&a[4]))?;
            let sha = hex::encode(h.target_sha256);
            let t = TargetImage {
                slot: &slot,
                version: "2",
                size: h.target_size,
                sha256: &sha,
            };
            let r = delta::apply_static(&d, len, &base, &t, &Control::none())?;
            eprintln!("static delta applied: {} bytes reused", r.bytes_reused);
        }
        Some("apply-dynamic") if a.len() == 6 => {
            let ib = std::fs::read(&a[2]).context("index")?;
            let idx = ChunkIndex::parse(&ib)?;
            let store = File::open(&a[3]).context("store")?;
            let old = File::open(&a[4]).context("old image")?;
            let locals = [LocalImage {
                size: old.metadata()?.len(),
                file: old,
                sha256: None,
            }];
            let (slot, _state) = slot_for(Path::new(&a[5]))?;
            let sha = hex::encode(idx.image_sha256);
            let t = TargetImage {
                slot: &slot,
                version: "2",
                size: idx.image_size,
                sha256: &sha,
            };
            let mut fetch = |off: u64, len: u64| -> Result<Vec<u8>, DeltaError> {
                let mut b = vec![0u8; len as usize];
                store
                    .read_exact_at(&mut b, off)
                    .map_err(|e| DeltaError::Io {
                        what: "store".into(),
                        source: e,
                    })?;
                Ok(b)
            };
            let r = delta::apply_dynamic(&idx, &mut fetch, &locals, &t, &Control::none())?;
            println!("fetched={}", ib.len() as u64 + r.bytes_fetched);
            eprintln!("dynamic delta applied: {} bytes reused", r.bytes_reused);
        }
        Some("levels") if a.len() == 5 => {
            let (old, new) = (Path::new(&a[2]), Path::new(&a[3]));
            let dir = tempfile::tempdir_in(new.parent().unwrap_or(Path::new(".")))?;
            println!("level static_bytes static_s store_bytes index_s");
            for l in a[4].split(',') {
                let level: i32 = l.parse().context("level")?;
                let opts = delta::EncodeOptions {
                    level,
                    ..Default::default()
                };
                let t = Instant::now();
                let s = delta::encode_static(old, new, &dir.path().join("d"), &opts)?;
                let st = t.elapsed().as_secs_f64();
                let t = Instant::now();
                let idx = delta::build_chunk_store(
                    new,
                    &dir.path().join("s"),
                    delta::DYNAMIC_CDC,
                    level,
                )?;
                let it = t.elapsed().as_secs_f64();
                println!("{level} {} {st:.1} {} {it:.1}", s.len, idx.store_size);
            }
        }
        _ => bail!("usage: see the header of examples/delta-tool.rs"),
    }
    Ok(())
}
