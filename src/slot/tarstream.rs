//! The content stream of an archive install, with the positions it can restart from.
//!
//! Transfer bytes (zstd or plain) come in, archive bytes go out to the tar reader. On the
//! way the stream hashes the transfer and the content with the resumable hashers of
//! [`super::sha`], keeps the transfer in the kept download ([`super::tee`]), bounds the
//! content by its declared size, and remembers *restart marks*: places where a new run
//! can pick the stream up with nothing but a byte offset and the hash states — every byte
//! of an uncompressed archive, and every zstd frame boundary of a compressed one
//! (`patchpub` publishes independent frames). A checkpoint of the extraction takes the
//! last mark at or before the entry boundary it saves.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read};
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use super::sha::{Sha256State, Sha512State};
use super::stage::{Compression, StageRequest};
use super::tee::DownloadTee;

/// A place the stream can restart from, with the hash states at exactly that place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Mark {
    /// Transfer offset (start of a zstd frame, or any byte when uncompressed).
    pub(super) transfer_offset: u64,
    /// Content offset the transfer offset decodes to.
    pub(super) content_offset: u64,
    pub(super) transfer_sha256: Sha256State,
    pub(super) transfer_sha512: Option<Sha512State>,
    /// Compressed archives only (an uncompressed one's content hash is the transfer's).
    pub(super) content_sha256: Option<Sha256State>,
}

impl Mark {
    /// The mark at byte 0 of a fresh install.
    pub(super) fn start(req: &StageRequest) -> Self {
        Self {
            transfer_offset: 0,
            content_offset: 0,
            transfer_sha256: Sha256State::new(),
            transfer_sha512: req.sha512.as_ref().map(|_| Sha512State::new()),
            content_sha256: (req.compression != Compression::None).then(Sha256State::new),
        }
    }

    /// A mark read from a checkpoint must be one this stream can produce for `req`.
    pub(super) fn fits(&self, req: &StageRequest) -> bool {
        let compressed = req.compression != Compression::None;
        self.transfer_offset <= req.length
            && self.content_offset <= req.size
            && (compressed || self.transfer_offset == self.content_offset)
            && self.transfer_sha256.is_valid()
            && self.transfer_sha256.len() == self.transfer_offset
            && self.transfer_sha512.is_some() == req.sha512.is_some()
            && self
                .transfer_sha512
                .as_ref()
                .is_none_or(|h| h.is_valid() && h.len() == self.transfer_offset)
            && self.content_sha256.is_some() == compressed
            && self
                .content_sha256
                .as_ref()
                .is_none_or(|h| h.is_valid() && h.len() == self.content_offset)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("decompressed archive exceeds its declared size")]
pub(super) struct ContentTooLarge;

/// What the stream did in this run (for the stage report and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct StreamCounts {
    /// Transfer bytes read in this run.
    pub(super) transfer: u64,
    /// Content bytes produced in this run (decompressed, or passed through).
    pub(super) content: u64,
}

struct State<R> {
    input: R,
    tee: DownloadTee,
    zstd: Option<zstd::stream::raw::Decoder<'static>>,
    /// Transfer bytes read from `input` and not yet given to the decoder.
    inbuf: Vec<u8>,
    in_pos: usize,
    in_len: usize,
    /// Decoded bytes not yet handed out.
    outbuf: Vec<u8>,
    out_pos: usize,
    out_len: usize,
    in_frame: bool,
    transfer_off: u64,
    /// Content bytes produced (hashed); `handed` of them went to the reader.
    produced: u64,
    handed: u64,
    limit: u64,
    transfer_sha256: Sha256State,
    transfer_sha512: Option<Sha512State>,
    content_sha256: Option<Sha256State>,
    /// Frame-end marks not yet superseded (compressed archives).
    marks: VecDeque<Mark>,
    counts: StreamCounts,
    input_done: bool,
}

/// The archive byte stream; cloneable handle so a checkpoint can ask it for marks between
/// two tar entries (the tar reader owns the other handle).
pub(super) struct ArchiveStream<R> {
    st: Rc<RefCell<State<R>>>,
}

impl<R> Clone for ArchiveStream<R> {
    fn clone(&self) -> Self {
        Self {
            st: Rc::clone(&self.st),
        }
    }
}

const IN_BUF: usize = 128 << 10;
const OUT_BUF: usize = 128 << 10;

impl<R: Read> ArchiveStream<R> {
    /// A stream whose `input` starts at `from.transfer_offset` of the transfer.
    pub(super) fn new(
        input: R,
        tee: DownloadTee,
        req: &StageRequest,
        window_log_max: u32,
        from: Mark,
    ) -> io::Result<Self> {
        let zstd = match req.compression {
            Compression::None => None,
            Compression::Zstd => {
                let mut d = zstd::stream::raw::Decoder::new()?;
                d.set_parameter(zstd::stream::raw::DParameter::WindowLogMax(window_log_max))?;
                Some(d)
            }
        };
        let compressed = zstd.is_some();
        let st = State {
            input,
            tee,
            zstd,
            inbuf: if compressed {
                vec![0; IN_BUF]
            } else {
                Vec::new()
            },
            in_pos: 0,
            in_len: 0,
            outbuf: if compressed {
                vec![0; OUT_BUF]
            } else {
                Vec::new()
            },
            out_pos: 0,
            out_len: 0,
            in_frame: false,
            transfer_off: from.transfer_offset,
            produced: from.content_offset,
            handed: from.content_offset,
            limit: req.size,
            transfer_sha256: from.transfer_sha256.clone(),
            transfer_sha512: from.transfer_sha512.clone(),
            content_sha256: from.content_sha256.clone(),
            marks: VecDeque::from([from]),
            counts: StreamCounts::default(),
            input_done: false,
        };
        Ok(Self {
            st: Rc::new(RefCell::new(st)),
        })
    }

    /// Read and drop `n` content bytes (hashed like all others): from a restart mark to
    /// the entry boundary a checkpoint saved.
    pub(super) fn skip(&mut self, mut n: u64) -> io::Result<()> {
        let mut buf = vec![0u8; 64 << 10];
        while n > 0 {
            let want = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            let got = self.read(&mut buf[..want])?;
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "archive ends before the checkpointed entry",
                ));
            }
            n -= got as u64;
        }
        Ok(())
    }

    /// The latest restart mark at or before content offset `at`.
    pub(super) fn mark_at_or_before(&self, at: u64) -> Option<Mark> {
        let st = self.st.borrow();
        if st.zstd.is_none() {
            // Uncompressed: the current position is a mark; the tar reader never reads
            // ahead of the boundary it reports.
            return (st.handed <= at).then(|| Mark {
                transfer_offset: st.transfer_off,
                content_offset: st.handed,
                transfer_sha256: st.transfer_sha256.clone(),
                transfer_sha512: st.transfer_sha512.clone(),
                content_sha256: None,
            });
        }
        st.marks
            .iter()
            .rev()
            .find(|m| m.content_offset <= at)
            .cloned()
    }

    /// Make the kept download durable up to everything read so far.
    pub(super) fn sync_download(&self) -> io::Result<()> {
        self.st.borrow_mut().tee.sync()
    }

    pub(super) fn counts(&self) -> StreamCounts {
        self.st.borrow().counts
    }

    /// Transfer and content offsets reached.
    pub(super) fn offsets(&self) -> (u64, u64) {
        let st = self.st.borrow();
        (st.transfer_off, st.produced)
    }

    /// Whether the transfer ended inside a zstd frame.
    pub(super) fn in_frame(&self) -> bool {
        self.st.borrow().in_frame
    }

    /// The finished digests: transfer sha256, transfer sha512, content sha256.
    pub(super) fn digests(&self) -> (String, Option<String>, Option<String>) {
        let st = self.st.borrow();
        (
            hex::encode(st.transfer_sha256.clone().finalize()),
            st.transfer_sha512
                .clone()
                .map(|h| hex::encode(h.finalize())),
            st.content_sha256.clone().map(|h| hex::encode(h.finalize())),
        )
    }
}

impl<R: Read> State<R> {
    fn transfer_in(&mut self, b: &[u8]) -> io::Result<()> {
        self.tee.observe(self.transfer_off, b)?;
        self.transfer_sha256.update(b);
        if let Some(h) = &mut self.transfer_sha512 {
            h.update(b);
        }
        self.transfer_off += b.len() as u64;
        self.counts.transfer += b.len() as u64;
        Ok(())
    }

    fn content_out(&mut self, n: u64) -> io::Result<()> {
        self.produced += n;
        self.counts.content += n;
        if self.produced > self.limit {
            return Err(io::Error::other(ContentTooLarge));
        }
        Ok(())
    }

    fn read_plain(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.input.read(out)?;
        self.transfer_in(&out[..n])?;
        self.content_out(n as u64)?;
        self.handed += n as u64;
        Ok(n)
    }

    /// Decode until some output is ready, or the input ended.
    fn fill(&mut self) -> io::Result<()> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        self.out_pos = 0;
        self.out_len = 0;
        loop {
            if self.in_pos == self.in_len && !self.input_done {
                let n = self.input.read(&mut self.inbuf)?;
                self.in_pos = 0;
                self.in_len = n;
                if n == 0 {
                    self.input_done = true;
                }
            }
            if self.in_pos == self.in_len && self.input_done && !self.in_frame {
                return Ok(()); // end of the transfer at a frame boundary
            }
            let Some(dec) = self.zstd.as_mut() else {
                return Ok(());
            };
            let mut input = InBuffer::around(&self.inbuf[self.in_pos..self.in_len]);
            let mut o = OutBuffer::around(&mut self.outbuf[..]);
            let hint = dec.run(&mut input, &mut o)?;
            let (used, produced) = (input.pos, o.pos());
            if used == 0 && produced == 0 && self.input_done {
                return Ok(()); // truncated inside a frame: the caller sees in_frame
            }
            let inbuf = std::mem::take(&mut self.inbuf);
            let hashed = self.transfer_in(&inbuf[self.in_pos..self.in_pos + used]);
            self.inbuf = inbuf;
            hashed?;
            self.in_pos += used;
            if let Some(h) = &mut self.content_sha256 {
                h.update(&self.outbuf[..produced]);
            }
            self.content_out(produced as u64)?;
            self.out_len = produced;
            if used > 0 || produced > 0 {
                // A call without progress says nothing about frames (see stage.rs).
                self.in_frame = hint != 0;
                if !self.in_frame {
                    self.marks.push_back(Mark {
                        transfer_offset: self.transfer_off,
                        content_offset: self.produced,
                        transfer_sha256: self.transfer_sha256.clone(),
                        transfer_sha512: self.transfer_sha512.clone(),
                        content_sha256: self.content_sha256.clone(),
                    });
                }
            }
            if produced > 0 {
                return Ok(());
            }
        }
    }
}

impl<R: Read> Read for ArchiveStream<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut st = self.st.borrow_mut();
        if st.zstd.is_none() {
            return st.read_plain(out);
        }
        if st.out_pos == st.out_len {
            st.fill()?;
            if st.out_len == 0 {
                return Ok(0);
            }
        }
        let n = (st.out_len - st.out_pos).min(out.len());
        out[..n].copy_from_slice(&st.outbuf[st.out_pos..st.out_pos + n]);
        st.out_pos += n;
        st.handed += n as u64;
        // Marks before the last one at or below the handed-out position can never be
        // asked for again (a boundary is never behind what the reader has consumed).
        let handed = st.handed;
        while st.marks.len() >= 2 && st.marks[1].content_offset <= handed {
            st.marks.pop_front();
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::io::Cursor;

    fn data() -> Vec<u8> {
        let mut x = 7u64;
        (0..300_000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 3 == 0 {
                    b'a'
                } else {
                    x as u8
                }
            })
            .collect()
    }

    fn req(data: &[u8], z: &[u8], compression: Compression) -> StageRequest {
        StageRequest {
            path: "targets/a.tar".into(),
            version: "1".into(),
            length: z.len() as u64,
            sha256: hex::encode(Sha256::digest(z)),
            sha512: Some(hex::encode(sha2::Sha512::digest(z))),
            compression,
            format: super::super::stage::ImageFormat::Tar,
            size: data.len() as u64,
            content_sha256: hex::encode(Sha256::digest(data)),
        }
    }

    fn stream(
        dir: &std::path::Path,
        req: &StageRequest,
        input: &[u8],
        from: Mark,
    ) -> ArchiveStream<Cursor<Vec<u8>>> {
        let (tee, _) = DownloadTee::open(dir, "t", req, 1 << 20).unwrap();
        ArchiveStream::new(Cursor::new(input.to_vec()), tee, req, 23, from).unwrap()
    }

    /// Read everything in odd-sized pieces, taking the mark at or before each position.
    fn drain(s: &mut ArchiveStream<Cursor<Vec<u8>>>) -> (Vec<u8>, Vec<Mark>) {
        let (mut out, mut marks) = (Vec::new(), Vec::new());
        let mut buf = [0u8; 7777];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                return (out, marks);
            }
            out.extend_from_slice(&buf[..n]);
            let at = s.offsets().1.min(out.len() as u64);
            if let Some(m) = s.mark_at_or_before(at) {
                marks.push(m);
            }
        }
    }

    #[test]
    fn restarting_at_any_mark_gives_the_same_bytes_and_digests() {
        let data = data();
        let frame = 64 << 10;
        let mut z = Vec::new();
        for c in data.chunks(frame) {
            z.extend(zstd::encode_all(c, 1).unwrap());
        }
        for (compression, input) in [(Compression::Zstd, &z), (Compression::None, &data)] {
            let dir = tempfile::tempdir().unwrap();
            let r = req(&data, input, compression);
            let mut whole = stream(dir.path(), &r, input, Mark::start(&r));
            let (out, marks) = drain(&mut whole);
            assert_eq!(out, data);
            let digests = whole.digests();
            assert_eq!(digests.0, r.sha256);
            assert_eq!(digests.1.as_deref(), r.sha512.as_deref());
            let mids: Vec<&Mark> = marks.iter().filter(|m| m.content_offset > 0).collect();
            assert!(mids.len() >= 3, "{compression:?}: too few marks");
            for m in mids.iter().step_by(mids.len() / 3) {
                assert!(m.fits(&r), "{m:?}");
                if compression == Compression::Zstd {
                    assert_eq!(m.content_offset % frame as u64, 0, "not a frame start");
                }
                // Through JSON, as a checkpoint would carry it.
                let m: Mark = serde_json::from_str(&serde_json::to_string(m).unwrap()).unwrap();
                let d = tempfile::tempdir().unwrap();
                let mut again = stream(
                    d.path(),
                    &r,
                    &input[m.transfer_offset as usize..],
                    m.clone(),
                );
                let (rest, _) = drain(&mut again);
                assert_eq!(rest, data[m.content_offset as usize..], "{compression:?}");
                assert_eq!(again.digests(), digests);
                assert!(again.counts().content < data.len() as u64);
            }
        }
    }

    #[test]
    fn marks_with_wrong_lengths_do_not_fit() {
        let data = data();
        let r = req(&data, &data, Compression::None);
        let mut m = Mark::start(&r);
        assert!(m.fits(&r));
        m.transfer_offset = 64;
        m.content_offset = 64;
        assert!(!m.fits(&r), "hash state covers 0 bytes, offset says 64");
        let mut m = Mark::start(&r);
        m.transfer_sha512 = None;
        assert!(!m.fits(&r), "sha512 state missing");
    }

    #[test]
    fn content_beyond_the_declared_size_is_refused() {
        let data = data();
        let z = zstd::encode_all(&data[..], 1).unwrap();
        let mut r = req(&data, &z, Compression::Zstd);
        r.size = 1000;
        let dir = tempfile::tempdir().unwrap();
        let mut s = stream(dir.path(), &r, &z, Mark::start(&r));
        let err = std::io::copy(&mut s, &mut std::io::sink()).unwrap_err();
        assert!(
            err.get_ref().is_some_and(|e| e.is::<ContentTooLarge>()),
            "{err}"
        );
    }
}
