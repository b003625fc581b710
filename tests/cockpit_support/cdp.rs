//! A minimal Chrome DevTools Protocol client for the browser test: headless Chromium
//! started with `--remote-debugging-port=0` (the port read back from
//! `DevToolsActivePort`), one WebSocket per page, commands answered by id, and every
//! event kept so the test can look for console errors afterwards.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// Chromium as the test runs it; killed when dropped.
pub struct Browser {
    child: Child,
    pub port: u16,
    /// The browser target's WebSocket path (`/devtools/browser/…`).
    path: String,
    browser: Option<Page>,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// SIGTERM, so the process ends its own children (Chromium's renderers, cockpit-ws'
/// bridge) and none is left behind; SIGKILL after 3 s.
pub fn stop(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The Chromium binary, if installed.
pub fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Browser {
    /// Start headless Chromium with a fresh profile; `log` gets its stderr.
    pub fn start(exe: &Path, log: &Path) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new(exe)
            .args([
                "--headless=new",
                // Root has no user namespace sandbox here; the page is our own.
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                "--window-size=1100,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            // Chromium's own D-Bus use must reach neither the test's buses nor start a
            // session bus of its own (which would outlive the test).
            .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/dev/null")
            .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("chromium log"))
            .spawn()
            .expect("spawn chromium");
        let file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let (port, path) = loop {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let mut lines = text.lines();
            if let (Some(Ok(p)), Some(path)) =
                (lines.next().map(|l| l.trim().parse::<u16>()), lines.next())
            {
                break (p, path.trim().to_owned());
            }
            assert!(
                Instant::now() < deadline,
                "chromium wrote no DevToolsActivePort: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        Browser {
            child,
            port,
            path,
            browser: None,
            _profile: profile,
        }
    }

    /// A new tab on `about:blank`, with runtime, log and page events on.
    pub fn new_page(&mut self) -> Page {
        // The browser connection stays open: the tabs it made live as long as it does.
        let (port, path) = (self.port, self.path.clone());
        let browser = self
            .browser
            .get_or_insert_with(|| Page::connect(port, &path));
        let r = browser.call("Target.createTarget", json!({ "url": "about:blank" }));
        let id = r["targetId"]
            .as_str()
            .unwrap_or_else(|| panic!("no targetId in {r}"));
        let mut page = Page::connect(self.port, &format!("/devtools/page/{id}"));
        for m in ["Runtime.enable", "Log.enable", "Page.enable"] {
            page.call(m, json!({}));
        }
        page
    }
}

/// One tab.
pub struct Page {
    socket: WebSocket<TcpStream>,
    next_id: u64,
    /// Every event received so far (`{"method", "params"}`).
    pub events: Vec<Value>,
}

impl Page {
    fn connect(port: u16, path: &str) -> Page {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect devtools");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("read timeout");
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (socket, _) = tungstenite::client(url.as_str(), stream).expect("devtools websocket");
        Page {
            socket,
            next_id: 1,
            events: Vec::new(),
        }
    }

    /// Send a command and wait for its answer; events meanwhile are kept.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(Message::text(msg.to_string()))
            .unwrap_or_else(|e| panic!("send {method}: {e}"));
        loop {
            let m = self
                .socket
                .read()
                .unwrap_or_else(|e| panic!("waiting for {method}: {e}"));
            let text = match m {
                Message::Text(t) => t.to_string(),
                Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                _ => continue,
            };
            let v: Value = serde_json::from_str(&text).expect("devtools JSON");
            if v["id"].as_u64() == Some(id) {
                if let Some(e) = v.get("error") {
                    panic!("{method} failed: {e}");
                }
                return v["result"].clone();
            }
            if v.get("method").is_some() {
                self.events.push(v);
            }
        }
    }

    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
    }

    /// Evaluate `expr` in the page (promises awaited) and return its value.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Wait until `expr` is true in the page; panics with `what` and `show` (evaluated
    /// then) after `limit`.
    pub fn wait_for(&mut self, what: &str, expr: &str, limit: Duration, show: &str) {
        let deadline = Instant::now() + limit;
        loop {
            if self.eval(&format!("!!({expr})")) == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let seen = self.eval(show);
                panic!("timed out waiting for {what}; page shows: {seen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the viewport.
    pub fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine as _;
        // A tab in the background is not painted: a capture there waits for a frame.
        self.call("Page.bringToFront", json!({}));
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64")
    }

    /// Lay the page out as a window `width` × `height` CSS pixels.
    pub fn set_size(&mut self, width: u32, height: u32) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
    }

    /// Console errors, uncaught exceptions and log entries of level error seen so far.
    pub fn errors(&mut self) -> Vec<String> {
        // Collect events still in flight.
        self.eval("1");
        self.events
            .iter()
            .filter_map(|e| {
                let p = &e["params"];
                match e["method"].as_str()? {
                    "Runtime.consoleAPICalled" if p["type"] == "error" => Some(format!(
                        "console.error: {}",
                        p["args"]
                            .as_array()
                            .map(|a| a
                                .iter()
                                .map(|x| x["value"].to_string())
                                .collect::<Vec<_>>()
                                .join(" "))
                            .unwrap_or_default()
                    )),
                    "Runtime.exceptionThrown" => {
                        Some(format!("exception: {}", p["exceptionDetails"]))
                    }
                    "Log.entryAdded" if p["entry"]["level"] == "error" => {
                        Some(format!("log: {} {}", p["entry"]["text"], p["entry"]["url"]))
                    }
                    _ => None,
                }
            })
            .collect()
    }
}
