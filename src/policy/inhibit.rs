//! Reboot inhibitors: reasons the reboot into a new release has to wait even inside a
//! window — logged-in users (logind sessions), systemd inhibitor locks that block
//! shutdown, and an admin command that exits non-zero.
//!
//! ```no_run
//! # async fn f(cfg: &patchd::config::Config, paths: &patchd::paths::Paths) {
//! use patchd::policy::inhibit::{may_reboot, Logind};
//! let logind = Logind::system().await.ok();
//! let d = may_reboot(&cfg.policy.inhibitors, logind.as_ref().map(|l| l as _), paths, jiff::Timestamp::now()).await;
//! // Decision::Wait { reason: "2 user session(s) logged in: alice (uid 1000) …", until: now + recheck }
//! # let _ = d; }
//! ```
//!
//! When logind cannot be asked (no logind on a minimal image), the session and lock
//! checks are skipped with a warning in the log: they exist to spare interactive users,
//! and a machine without logind has none. The command check fails closed: a command that
//! cannot run, times out or exits non-zero makes the reboot wait.

use std::time::Duration;

use futures_util::future::BoxFuture;
use jiff::Timestamp;
use zbus::zvariant::OwnedObjectPath;

use super::Decision;
use super::InhibitorConfig;
use crate::paths::Paths;

/// A logind session (only what the reason needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: String,
    pub uid: u32,
    pub user: String,
    /// `user`, `greeter`, `manager`, `background`, … Only `user*` classes count.
    pub class: String,
}

/// A systemd inhibitor lock as `ListInhibitors` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InhibitorLock {
    /// Colon-separated: `shutdown:sleep:idle:…`
    pub what: String,
    pub who: String,
    pub why: String,
    /// `block` or `delay`.
    pub mode: String,
    pub uid: u32,
    pub pid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum InhibitError {
    #[error("logind over D-Bus: {0}")]
    Bus(#[from] zbus::Error),
}

/// Where sessions and locks come from: logind on devices, fixed values in simulation.
pub trait LoginQuery: Send + Sync {
    fn sessions(&self) -> BoxFuture<'_, Result<Vec<SessionInfo>, InhibitError>>;
    fn inhibitors(&self) -> BoxFuture<'_, Result<Vec<InhibitorLock>, InhibitError>>;
}

/// `org.freedesktop.login1` on a D-Bus connection.
#[derive(Debug, Clone)]
pub struct Logind {
    conn: zbus::Connection,
}

const DEST: &str = "org.freedesktop.login1";

impl Logind {
    pub fn new(conn: zbus::Connection) -> Self {
        Self { conn }
    }

    pub async fn system() -> Result<Self, InhibitError> {
        Ok(Self::new(zbus::Connection::system().await?))
    }

    async fn manager(&self) -> Result<zbus::Proxy<'_>, InhibitError> {
        Ok(zbus::Proxy::new(
            &self.conn,
            DEST,
            "/org/freedesktop/login1",
            "org.freedesktop.login1.Manager",
        )
        .await?)
    }

    async fn list_sessions(&self) -> Result<Vec<SessionInfo>, InhibitError> {
        let raw: Vec<(String, u32, String, String, OwnedObjectPath)> =
            self.manager().await?.call("ListSessions", &()).await?;
        let mut out = Vec::new();
        for (id, uid, user, _seat, path) in raw {
            let session = zbus::proxy::Builder::<zbus::Proxy<'_>>::new(&self.conn)
                .destination(DEST)?
                .path(path)?
                .interface("org.freedesktop.login1.Session")?
                .cache_properties(zbus::proxy::CacheProperties::No)
                .build()
                .await?;
            // A session that vanished between the two calls is simply not counted.
            let class: String = match session.get_property("Class").await {
                Ok(c) => c,
                Err(_) => continue,
            };
            out.push(SessionInfo {
                id,
                uid,
                user,
                class,
            });
        }
        Ok(out)
    }

    async fn list_inhibitors(&self) -> Result<Vec<InhibitorLock>, InhibitError> {
        let raw: Vec<(String, String, String, String, u32, u32)> =
            self.manager().await?.call("ListInhibitors", &()).await?;
        Ok(raw
            .into_iter()
            .map(|(what, who, why, mode, uid, pid)| InhibitorLock {
                what,
                who,
                why,
                mode,
                uid,
                pid,
            })
            .collect())
    }
}

impl LoginQuery for Logind {
    fn sessions(&self) -> BoxFuture<'_, Result<Vec<SessionInfo>, InhibitError>> {
        Box::pin(self.list_sessions())
    }
    fn inhibitors(&self) -> BoxFuture<'_, Result<Vec<InhibitorLock>, InhibitError>> {
        Box::pin(self.list_inhibitors())
    }
}

/// Fixed sessions and locks (simulated device, tests).
#[derive(Debug, Clone, Default)]
pub struct FixedLogin {
    pub sessions: Vec<SessionInfo>,
    pub inhibitors: Vec<InhibitorLock>,
}

impl LoginQuery for FixedLogin {
    fn sessions(&self) -> BoxFuture<'_, Result<Vec<SessionInfo>, InhibitError>> {
        let s = self.sessions.clone();
        Box::pin(async move { Ok(s) })
    }
    fn inhibitors(&self) -> BoxFuture<'_, Result<Vec<InhibitorLock>, InhibitError>> {
        let i = self.inhibitors.clone();
        Box::pin(async move { Ok(i) })
    }
}

/// Why the reboot must wait now (empty: it may go ahead).
pub async fn reboot_blockers(
    cfg: &InhibitorConfig,
    login: Option<&dyn LoginQuery>,
    paths: &Paths,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(login) = login {
        if cfg.sessions {
            match login.sessions().await {
                Ok(s) => {
                    let users: Vec<String> = s
                        .iter()
                        .filter(|s| s.class.starts_with("user"))
                        .map(|s| format!("{} (uid {}, session {})", s.user, s.uid, s.id))
                        .collect();
                    if !users.is_empty() {
                        reasons.push(format!(
                            "{} user session(s) logged in: {}",
                            users.len(),
                            users.join(", ")
                        ));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list logind sessions; not waiting for them")
                }
            }
        }
        if cfg.inhibitor_locks {
            match login.inhibitors().await {
                Ok(locks) => {
                    for l in locks
                        .iter()
                        .filter(|l| l.mode == "block" && l.what.split(':').any(|w| w == "shutdown"))
                    {
                        reasons.push(format!(
                            "inhibitor lock by {} (uid {}, pid {}): {}",
                            l.who, l.uid, l.pid, l.why
                        ));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list inhibitor locks; not waiting for them")
                }
            }
        }
    }
    if let Some(argv) = &cfg.command {
        let path = argv.first().map(|p| paths.resolve(p)).unwrap_or_default();
        let (ok, output) = crate::health::exec::run_exec(
            &path,
            argv.get(1..).unwrap_or(&[]),
            cfg.command_timeout,
            0,
            &crate::health::ExecSettings::default(),
            "inhibitor",
        )
        .await;
        if !ok {
            let first = output.lines().next().unwrap_or("").trim().to_string();
            let rest: Vec<&str> = output.lines().skip(1).take(3).collect();
            let mut why = format!("inhibitor command {}: {first}", argv.join(" "));
            if !rest.is_empty() {
                why.push_str(&format!(" ({})", rest.join(" / ")));
            }
            reasons.push(why);
        }
    }
    reasons
}

/// [`reboot_blockers`] as a decision: `Wait` until `now + recheck` with every reason, or
/// `Allowed`.
pub async fn may_reboot(
    cfg: &InhibitorConfig,
    login: Option<&dyn LoginQuery>,
    paths: &Paths,
    now: Timestamp,
) -> Decision {
    let reasons = reboot_blockers(cfg, login, paths).await;
    if reasons.is_empty() {
        return Decision::allowed("no reboot inhibitor active");
    }
    let recheck = jiff::SignedDuration::try_from(cfg.recheck.max(Duration::from_secs(1)))
        .ok()
        .and_then(|d| now.checked_add(d).ok());
    Decision::wait(format!("reboot waits: {}", reasons.join("; ")), recheck)
}
