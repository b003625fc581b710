//! A real etcd cluster for tests: `n` members of Debian's `etcd-server` on 127.0.0.1
//! with free ports and data in a temp dir, stopped and removed on drop. One call:
//! `let Some(c) = EtcdCluster::start_or_skip(3)? else { return };` (prints `skipped: …`
//! when etcd is not installed), or [`EtcdCluster::shared`] for one cluster per test
//! binary that tests share (give each test its own key prefix or group).
//!
//! Keys are read and written with `etcdctl`, the operator's tool, so a test also checks
//! the documented commands.

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// How long members get to elect a leader and answer `endpoint health`.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    /// A tool is not installed: the caller skips.
    #[error("{0}")]
    Missing(String),
    #[error("{what}: {detail}")]
    Io { what: String, detail: String },
    #[error("etcd member(s) {members} not healthy after {after:?}; logs:\n{logs}")]
    NotHealthy {
        members: String,
        after: Duration,
        logs: String,
    },
    #[error("etcdctl {args}: {detail}")]
    Etcdctl { args: String, detail: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |e| ClusterError::Io {
        what,
        detail: e.to_string(),
    }
}

/// TLS for the client port: the members present `cert` (which must name 127.0.0.1) and
/// require client certificates signed by `ca`; `client_cert`/`client_key` are what
/// the fixture's own etcdctl presents. Peers keep plain http.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl ServerTls {
    /// A throw-away CA, a server certificate for 127.0.0.1 and a client certificate
    /// under `dir`, made with the `openssl` tool ([`ClusterError::Missing`] without it).
    /// The server certificate allows client authentication too: etcd's gateway dials
    /// the member's own gRPC port with it (without that, every gateway request fails
    /// with 503 "connection closed").
    pub fn generate(dir: &Path) -> Result<Self, ClusterError> {
        if !on_path("openssl") {
            return Err(ClusterError::Missing("openssl not installed".into()));
        }
        let f = |name: &str| dir.join(name);
        let run = |args: &[&str]| -> Result<(), ClusterError> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stdin(Stdio::null())
                .output()
                .map_err(io("run openssl"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(ClusterError::Io {
                    what: format!("openssl {}", args.join(" ")),
                    detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                })
            }
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec![
            "req",
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=patchd test etcd CA",
        ];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        run(&ca)?;
        for (who, subject, ext) in [
            (
                "server",
                "/CN=etcd",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
            ),
            (
                "client",
                "/O=patchd devices",
                "extendedKeyUsage=clientAuth\n",
            ),
        ] {
            std::fs::write(f(&format!("{who}.ext")), ext)
                .map_err(io("write an openssl extension file"))?;
            let (key, csr, pem) = (
                format!("{who}.key"),
                format!("{who}.csr"),
                format!("{who}.pem"),
            );
            let mut req = vec!["req", "-subj", subject];
            req.extend(ec);
            req.extend(["-keyout", &key, "-out", &csr]);
            run(&req)?;
            let ext_file = format!("{who}.ext");
            run(&[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-extfile",
                &ext_file,
                "-out",
                &pem,
            ])?;
        }
        Ok(Self {
            ca: f("ca.pem"),
            cert: f("server.pem"),
            key: f("server.key"),
            client_cert: f("client.pem"),
            client_key: f("client.key"),
        })
    }
}

#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// A running cluster; members can be stopped and started again.
#[derive(Debug)]
pub struct EtcdCluster {
    dir: PathBuf,
    /// Removes `dir` when the cluster is dropped (not for the shared one, see below).
    _guard: Option<tempfile::TempDir>,
    initial_cluster: String,
    token: String,
    tls: Option<ServerTls>,
    members: Mutex<Vec<Member>>,
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn free_port(held: &mut Vec<TcpListener>) -> Result<u16, ClusterError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("bind a free port"))?;
    let port = l.local_addr().map_err(io("read a bound port"))?.port();
    // Held until every port is picked, so no two members get the same one.
    held.push(l);
    Ok(port)
}

impl EtcdCluster {
    /// Start `n` members and wait until each answers healthy.
    pub fn start(n: usize) -> Result<Self, ClusterError> {
        Self::start_with(n, None)
    }

    /// [`EtcdCluster::start`] with TLS and client certificates on the client port.
    pub fn start_with(n: usize, tls: Option<ServerTls>) -> Result<Self, ClusterError> {
        for tool in ["etcd", "etcdctl"] {
            if !on_path(tool) {
                return Err(ClusterError::Missing(format!(
                    "{tool} not installed (Debian etcd-server, etcd-client)"
                )));
            }
        }
        // tmpfs when there is one: members fsync every write, and on a busy disk that
        // alone can stall an election past the tests' timeouts.
        let shm = Path::new("/dev/shm");
        let guard = if shm.is_dir() {
            tempfile::Builder::new()
                .prefix("etcd-test-")
                .tempdir_in(shm)
        } else {
            tempfile::Builder::new().prefix("etcd-test-").tempdir()
        }
        .map_err(io("create the data directory"))?;
        let mut held = Vec::new();
        let mut members = Vec::new();
        for i in 0..n {
            members.push(Member {
                name: format!("m{i}"),
                client_port: free_port(&mut held)?,
                peer_port: free_port(&mut held)?,
                child: None,
            });
        }
        drop(held);
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("patchd-test-{}", rand::random::<u64>());
        let c = Self {
            dir: guard.path().to_owned(),
            _guard: Some(guard),
            initial_cluster,
            token,
            tls,
            members: Mutex::new(members),
        };
        for i in 0..n {
            c.start_member(i)?;
        }
        c.wait_healthy(&(0..n).collect::<Vec<_>>())?;
        Ok(c)
    }

    /// [`EtcdCluster::start`], or `None` after printing `skipped: <reason>` when etcd is
    /// not installed. Any other failure is an error: the test must fail, not skip.
    pub fn start_or_skip(n: usize) -> Result<Option<Self>, ClusterError> {
        match Self::start(n) {
            Ok(c) => Ok(Some(c)),
            Err(ClusterError::Missing(why)) => {
                println!("skipped: {why}");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// One 3-member cluster for the whole test binary, started on first use. Its
    /// members are stopped and its directory removed when the binary exits; tests must
    /// not stop its members (start their own cluster for that).
    pub fn shared() -> Result<Option<&'static EtcdCluster>, ClusterError> {
        static SHARED: OnceLock<Result<EtcdCluster, ClusterError>> = OnceLock::new();
        let r = SHARED.get_or_init(|| {
            // Started from a thread that never ends: members are tied to the thread
            // that started them (PR_SET_PDEATHSIG), and test threads end early.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let r = EtcdCluster::start(3).map(|mut c| {
                    // The exit hook removes the directory; a TempDir in a static
                    // would never be dropped.
                    c._guard.take().map(tempfile::TempDir::keep);
                    c
                });
                let _ = tx.send(r);
                loop {
                    std::thread::park();
                }
            });
            let r = rx.recv().unwrap_or_else(|_| {
                Err(ClusterError::Io {
                    what: "start the shared etcd cluster".into(),
                    detail: "the starting thread ended".into(),
                })
            });
            if r.is_ok() {
                // SAFETY: registers a plain extern "C" function without arguments.
                unsafe { libc::atexit(stop_shared) };
            }
            r
        });
        extern "C" fn stop_shared() {
            if let Some(Ok(c)) = SHARED.get() {
                c.stop_all();
                let _ = std::fs::remove_dir_all(&c.dir);
            }
        }
        match r {
            Ok(c) => Ok(Some(c)),
            // Each test that asked says it skipped.
            Err(ClusterError::Missing(why)) => {
                println!("skipped: {why}");
                Ok(None)
            }
            Err(e) => Err(e.clone()),
        }
    }

    fn members(&self) -> std::sync::MutexGuard<'_, Vec<Member>> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn len(&self) -> usize {
        self.members().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The client URL of member `i` (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self, i: usize) -> String {
        let m = self.members();
        m.get(i)
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client_port))
            .unwrap_or_default()
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Every member's client URL, stopped ones included (clients should fail over).
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.endpoint(i)).collect()
    }

    fn running(&self) -> Vec<usize> {
        let m = self.members();
        (0..m.len()).filter(|&i| m[i].child.is_some()).collect()
    }

    /// Start member `i` (again: it rejoins with its data directory).
    pub fn start_member(&self, i: usize) -> Result<(), ClusterError> {
        let mut members = self.members();
        let m = members.get_mut(i).ok_or_else(|| ClusterError::Io {
            what: format!("start member {i}"),
            detail: "no such member".into(),
        })?;
        if m.child.is_some() {
            return Ok(());
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", m.name)))
            .map_err(io(format!("open the log of {}", m.name)))?;
        let client = format!("{}://127.0.0.1:{}", self.scheme(), m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(self.dir.join(&m.name))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"]);
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.cert)
                .arg("--key-file")
                .arg(&t.key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // A test that panics or is killed must not leave members running.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        m.child = Some(cmd.spawn().map_err(io(format!("start etcd {}", m.name)))?);
        Ok(())
    }

    /// Kill member `i` (SIGKILL: a machine that vanished) and wait for it.
    pub fn stop_member(&self, i: usize) {
        if let Some(mut c) = self.members().get_mut(i).and_then(|m| m.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop_all(&self) {
        for i in 0..self.len() {
            self.stop_member(i);
        }
    }

    /// Wait until each of `members` answers `etcdctl endpoint health`.
    pub fn wait_healthy(&self, members: &[usize]) -> Result<(), ClusterError> {
        let start = Instant::now();
        let mut waiting: Vec<usize> = members.to_vec();
        while !waiting.is_empty() {
            waiting.retain(|&i| {
                self.etcdctl(&[self.endpoint(i)], &["endpoint", "health"])
                    .is_err()
            });
            if waiting.is_empty() {
                break;
            }
            if start.elapsed() > HEALTHY_WITHIN {
                return Err(ClusterError::NotHealthy {
                    members: format!("{waiting:?}"),
                    after: HEALTHY_WITHIN,
                    logs: self.log_tails(),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    fn log_tails(&self) -> String {
        let names: Vec<String> = self.members().iter().map(|m| m.name.clone()).collect();
        names
            .iter()
            .map(|n| {
                let text =
                    std::fs::read_to_string(self.dir.join(format!("{n}.log"))).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "--- {n}\n{}",
                    lines[lines.len().saturating_sub(15)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `etcdctl put KEY VALUE` on the running members.
    pub fn put(&self, key: &str, value: &str) -> Result<(), ClusterError> {
        self.etcdctl(&self.live_endpoints(), &["put", key, value])
            .map(drop)
    }

    /// `etcdctl del KEY`.
    pub fn del(&self, key: &str) -> Result<(), ClusterError> {
        self.etcdctl(&self.live_endpoints(), &["del", key])
            .map(drop)
    }

    /// The keys under `prefix` (`etcdctl get --prefix --keys-only`), in key order.
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>, ClusterError> {
        let out = self.etcdctl(
            &self.live_endpoints(),
            &["get", "--prefix", "--keys-only", prefix],
        )?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    fn live_endpoints(&self) -> Vec<String> {
        self.running()
            .into_iter()
            .map(|i| self.endpoint(i))
            .collect()
    }

    fn etcdctl(&self, endpoints: &[String], args: &[&str]) -> Result<String, ClusterError> {
        let fail = |detail: String| ClusterError::Etcdctl {
            args: args.join(" "),
            detail,
        };
        let mut cmd = Command::new("etcdctl");
        if let Some(t) = &self.tls {
            cmd.arg("--cacert")
                .arg(&t.ca)
                .arg("--cert")
                .arg(&t.client_cert)
                .arg("--key")
                .arg(&t.client_key);
        }
        let out = cmd
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .args(["--command-timeout=5s", "--dial-timeout=2s"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            return Err(fail(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}
