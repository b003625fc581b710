//! The backend trait the D-Bus service drives: the lifecycle engine in the daemon (through
//! an adapter), an in-memory fake in tests.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;

use super::types::{Caller, DeniedCall, HistoryFilter, HoldRequest, HoldView, JobView, StatusView};

/// Boxed future so the trait stays object-safe (`Arc<dyn ManagerBackend>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a backend may refuse with; mapped to named D-Bus errors in one place
/// ([`super::error::Error`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// Another job is running; the caller may retry later.
    #[error("busy: {0}")]
    Busy(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Policy does not allow it now (maintenance window, hold, rollout stage, reboot
    /// inhibitor, security floor); the message says why.
    #[error("refused: {0}")]
    Refused(String),
    /// Unknown release, no staged release, no hold to release…
    #[error("not found: {0}")]
    NotFound(String),
    #[error("not authorized: {0}")]
    NotAuthorized(String),
    #[error("{0}")]
    Failed(String),
}

pub type BackendResult<T> = Result<T, BackendError>;

/// The answer of a backend that does not offer a method. A method added to
/// [`ManagerBackend`] gets a default body that returns this, so only the backends that
/// answer it (the engine's, and the fake where tests need it) are edited.
pub fn not_offered<T: Send + 'static>(method: &str) -> BoxFuture<'static, BackendResult<T>> {
    let msg = format!("{method} is not offered by this daemon (in its current mode)");
    Box::pin(async move { Err(BackendError::Failed(msg)) })
}

/// Operations the admin surface offers. Mutating calls carry the authorized [`Caller`];
/// the service has already checked polkit, argument sizes and that no other mutating call
/// is in flight through this service. Results that are documents (check outcome, history,
/// inventory, audit verdict) are JSON values, scrubbed of secrets by the service before
/// they leave the process.
///
/// A new method comes with a default body ([`not_offered`], or a fitting answer such as
/// [`ManagerBackend::repair`]'s), so the degraded and fake backends need no edit unless
/// they answer it.
pub trait ManagerBackend: Send + Sync + 'static {
    /// Look for new releases now. Returns the check outcome.
    fn check(&self, caller: Caller) -> BoxFuture<'_, BackendResult<serde_json::Value>>;
    /// Stage `release` (`None`: the newest allowed), and switch right away if `switch_now`.
    fn install(
        &self,
        caller: Caller,
        release: Option<String>,
        switch_now: bool,
    ) -> BoxFuture<'_, BackendResult<serde_json::Value>>;
    /// Switch to the staged release now if policy allows it; `force` overrides the
    /// maintenance window, rollout stage and reboot inhibitors (never holds, the security
    /// floor or a release that failed here). Refusals are [`BackendError::Refused`].
    fn switch(&self, caller: Caller, force: bool) -> BoxFuture<'_, BackendResult<()>>;
    fn cancel(&self, caller: Caller) -> BoxFuture<'_, BackendResult<()>>;
    fn rollback(&self, caller: Caller, reason: String) -> BoxFuture<'_, BackendResult<()>>;
    fn mark_good(&self, caller: Caller) -> BoxFuture<'_, BackendResult<()>>;
    fn mark_bad(&self, caller: Caller, reason: String) -> BoxFuture<'_, BackendResult<()>>;
    fn hold(&self, caller: Caller, hold: HoldRequest) -> BoxFuture<'_, BackendResult<()>>;
    fn release_hold(&self, caller: Caller) -> BoxFuture<'_, BackendResult<()>>;
    /// `PlaceHold`: place the hold as [`ManagerBackend::hold`] does and return the holds
    /// it replaced. The default reads them from the status just before (the service runs
    /// one mutating call at a time); the engine's backend gets them from the engine.
    fn place_hold(
        &self,
        caller: Caller,
        hold: HoldRequest,
    ) -> BoxFuture<'_, BackendResult<Vec<HoldView>>> {
        Box::pin(async move {
            let before = self.status().await?.holds;
            self.hold(caller, hold).await?;
            Ok(before)
        })
    }

    fn status(&self) -> BoxFuture<'_, BackendResult<StatusView>>;
    /// Live status; every change is turned into `PropertiesChanged` signals.
    fn subscribe(&self) -> watch::Receiver<StatusView>;
    /// Every job that finishes from now on, in order (each becomes a `JobFinished`
    /// signal). The default never yields: a backend without jobs.
    fn job_finished(&self) -> tokio::sync::mpsc::UnboundedReceiver<JobView> {
        tokio::sync::mpsc::unbounded_channel().1
    }
    fn history(&self, filter: HistoryFilter) -> BoxFuture<'_, BackendResult<serde_json::Value>>;
    fn inventory(&self) -> BoxFuture<'_, BackendResult<serde_json::Value>>;
    /// Verify the audit chain; the value has at least `{"ok": bool}`.
    fn verify_audit(&self) -> BoxFuture<'_, BackendResult<serde_json::Value>>;

    /// Repair what keeps the daemon in degraded mode (a damaged state file or trusted
    /// metadata): move it aside, rebuild, restart normally. Returns the report. A daemon
    /// that runs normally has nothing to repair.
    fn repair(&self, caller: Caller) -> BoxFuture<'_, BackendResult<serde_json::Value>> {
        let _ = caller;
        Box::pin(async {
            Err(BackendError::NotFound(
                "nothing to repair: patchd is not in degraded mode".into(),
            ))
        })
    }

    /// Approve `release` for an urgency rule that asks for approval.
    fn approve(&self, caller: Caller, release: String) -> BoxFuture<'_, BackendResult<()>> {
        let _ = (caller, release);
        not_offered("Approve")
    }

    /// Allow `release`, which failed here, to be tried again (audited with `reason`).
    fn retry(
        &self,
        caller: Caller,
        release: String,
        reason: String,
    ) -> BoxFuture<'_, BackendResult<()>> {
        let _ = (caller, release, reason);
        not_offered("Retry")
    }

    /// Give this device's fleet reboot slot back (audited with `reason`).
    fn fleet_release(&self, caller: Caller, reason: String) -> BoxFuture<'_, BackendResult<()>> {
        let _ = (caller, reason);
        not_offered("FleetRelease")
    }

    /// Install from the offline bundle read from `bundle` (a tar stream the caller
    /// opened), like [`ManagerBackend::install`] otherwise.
    fn install_bundle(
        &self,
        caller: Caller,
        bundle: std::os::fd::OwnedFd,
        release: Option<String>,
        switch_now: bool,
    ) -> BoxFuture<'_, BackendResult<serde_json::Value>> {
        let _ = (caller, bundle, release, switch_now);
        not_offered("InstallBundle")
    }

    /// What the offline bundle read from `bundle` offers, installing nothing.
    fn list_bundle(
        &self,
        caller: Caller,
        bundle: std::os::fd::OwnedFd,
    ) -> BoxFuture<'_, BackendResult<serde_json::Value>> {
        let _ = (caller, bundle);
        not_offered("ListBundle")
    }

    /// Record a refused mutating call in the audit trail.
    fn record_denial(&self, caller: Caller, denied: DeniedCall)
        -> BoxFuture<'_, BackendResult<()>>;
}
