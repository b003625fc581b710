//! A small HTTP/1.1 server on 127.0.0.1 that serves files from memory and injects faults:
//! truncated bodies, stalls, ignored `Range`, lying `Content-Length`, corrupted bytes,
//! redirects and transient 5xx answers. One request per connection (`Connection: close`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Faults applied to every request (counters decrement per request where noted).
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Close the connection once this absolute offset was sent (`truncate_times` requests).
    pub truncate_at: Option<u64>,
    pub truncate_times: u32,
    /// Stop sending (but keep the connection open) at this absolute offset.
    pub stall_at: Option<u64>,
    pub stall_times: u32,
    /// Answer every range request with `200` and the whole file.
    pub ignore_range: bool,
    /// Announce this `Content-Length` instead of the real one (body unchanged).
    pub content_length: Option<u64>,
    /// Send no `Content-Length` at all (body delimited by closing the connection).
    pub omit_content_length: bool,
    /// XOR these absolute offsets with 0xff on the wire.
    pub corrupt: Vec<u64>,
    /// Answer 503 to this many requests first.
    pub fail_first: u32,
    /// Redirect requests for a path to a Location.
    pub redirects: HashMap<String, String>,
    /// Throttle: sleep this long after every 64 KiB.
    pub chunk_delay: Option<Duration>,
    /// Trickle: send this many bytes, then sleep this long, over and over (a mirror
    /// that is slow but never silent long enough to look stalled).
    pub trickle: Option<(u64, Duration)>,
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub path: String,
    pub range_start: Option<u64>,
}

pub struct FaultServer {
    pub addr: SocketAddr,
    pub faults: Arc<Mutex<Faults>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    files: Arc<Mutex<HashMap<String, Arc<Vec<u8>>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultServer {
    /// Start on an ephemeral port; files are keyed by URL path without the leading `/`.
    pub async fn start() -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let faults = Arc::new(Mutex::new(Faults::default()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let files: Arc<Mutex<HashMap<String, Arc<Vec<u8>>>>> = Arc::default();
        let (f2, s2, fl2) = (faults.clone(), seen.clone(), files.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let (f, s, fl) = (f2.clone(), s2.clone(), fl2.clone());
                tokio::spawn(async move {
                    let _ = serve(conn, f, s, fl).await;
                });
            }
        });
        FaultServer {
            addr,
            faults,
            seen,
            files,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn add(&self, path: &str, bytes: Vec<u8>) {
        self.files
            .lock()
            .unwrap()
            .insert(path.to_string(), Arc::new(bytes));
    }

    pub fn set(&self, f: Faults) {
        *self.faults.lock().unwrap() = f;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut conn: TcpStream,
    faults: Arc<Mutex<Faults>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    files: Arc<Mutex<HashMap<String, Arc<Vec<u8>>>>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).await? == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        // Not HTTP (e.g. a TLS ClientHello): answer like a plain web server would.
        if head.is_empty() && !byte[0].is_ascii_uppercase() {
            conn.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await?;
            return conn.shutdown().await;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let req = lines.next().unwrap_or_default();
    let path = req
        .split(' ')
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_string();
    let mut range_start = None;
    // `bytes=a-b`: the last byte asked for (bounded range reads).
    let mut range_last = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                let spec = v.trim().strip_prefix("bytes=").unwrap_or_default();
                let mut parts = spec.split('-');
                range_start = parts.next().and_then(|s| s.parse::<u64>().ok());
                range_last = parts.next().and_then(|s| s.parse::<u64>().ok());
            }
        }
    }
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        range_start,
    });

    // Decide under the lock, act without it.
    let (plan, file) = {
        let mut f = faults.lock().unwrap();
        let file = files.lock().unwrap().get(&path).cloned();
        let redirect = f.redirects.get(&path).cloned();
        let fail = if f.fail_first > 0 {
            f.fail_first -= 1;
            true
        } else {
            false
        };
        let truncate = if f.truncate_times > 0 {
            f.truncate_times -= 1;
            f.truncate_at
        } else {
            None
        };
        let stall = if f.stall_times > 0 {
            f.stall_times -= 1;
            f.stall_at
        } else {
            None
        };
        ((redirect, fail, truncate, stall, f.clone()), file)
    };
    let (redirect, fail, truncate, stall, f) = plan;
    if let Some(loc) = redirect {
        let resp = format!(
            "HTTP/1.1 302 Found\r\nLocation: {loc}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return conn.write_all(resp.as_bytes()).await;
    }
    if fail {
        return conn
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
    }
    let Some(file) = file else {
        return conn
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
    };
    let len = file.len() as u64;
    let start = match range_start {
        Some(s) if !f.ignore_range => s,
        _ => 0,
    };
    if start > len || (start == len && len > 0 && range_start.is_some() && !f.ignore_range) {
        let resp = format!(
            "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return conn.write_all(resp.as_bytes()).await;
    }
    let stop = match range_last {
        Some(l) if !f.ignore_range => (l + 1).min(len),
        _ => len,
    };
    let mut resp = if start > 0 || (range_last.is_some() && !f.ignore_range) {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{len}\r\n",
            stop - 1
        )
    } else {
        "HTTP/1.1 200 OK\r\n".to_string()
    };
    if !f.omit_content_length {
        let cl = f.content_length.unwrap_or(stop - start);
        resp.push_str(&format!("Content-Length: {cl}\r\n"));
    }
    resp.push_str("Accept-Ranges: bytes\r\nConnection: close\r\n\r\n");
    conn.write_all(resp.as_bytes()).await?;

    let mut pos = start;
    const CHUNK: u64 = 64 * 1024;
    while pos < stop {
        let mut end = (pos + CHUNK).min(stop);
        for cut in [truncate, stall].into_iter().flatten() {
            if cut > pos && cut < end {
                end = cut;
            }
        }
        if truncate == Some(pos) {
            return conn.shutdown().await;
        }
        if stall == Some(pos) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(());
        }
        if let Some((n, _)) = f.trickle {
            end = end.min(pos + n.max(1));
        }
        let mut buf = file[pos as usize..end as usize].to_vec();
        for &c in &f.corrupt {
            if c >= pos && c < end {
                buf[(c - pos) as usize] ^= 0xff;
            }
        }
        conn.write_all(&buf).await?;
        pos = end;
        if let Some(d) = f.chunk_delay {
            tokio::time::sleep(d).await;
        }
        if let Some((_, d)) = f.trickle {
            conn.flush().await?;
            tokio::time::sleep(d).await;
        }
    }
    conn.shutdown().await
}
