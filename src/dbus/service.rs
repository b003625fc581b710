//! The `org.patchd.Patchd1.Manager` object: argument checks, polkit, one mutating call at
//! a time, secrets scrubbed from answers, and `PropertiesChanged` for every status change.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{watch, Mutex, OwnedMutexGuard};
use tokio::task::JoinHandle;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::OwnedValue;
use zbus::Connection;

use super::authz::{self, Action, AuthMode, Decision, DenialBudget};
use super::backend::ManagerBackend;
use super::checked::Checked;
use super::error::Error;
use super::limits::{self, ArgError, ArgLimits, Options};
use super::methods::{self, Access};
use super::redact::{redact_json, redact_text};
use super::types::{
    ts_str, AvailableTuple, Caller, DeniedCall, HoldRequest, HoldTuple, JobTuple, JobView,
    ProgressTuple, ProgressView, SlotTuple, StatusView,
};
use super::{BUS_NAME, OBJECT_PATH};

/// Which bus to serve on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bus {
    System,
    /// A private bus (tests, the demo): a D-Bus address such as `unix:path=/tmp/x/bus`.
    Address(String),
}

impl std::fmt::Display for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bus::System => f.write_str("the system bus"),
            Bus::Address(a) => write!(f, "bus {a}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub bus: Bus,
    pub auth: AuthMode,
    pub limits: ArgLimits,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            bus: Bus::System,
            auth: AuthMode::Polkit,
            limits: ArgLimits::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot serve {BUS_NAME} on {bus}: {source}")]
    Bus {
        bus: Bus,
        #[source]
        source: zbus::Error,
    },
    #[error(
        "authorization mode {0:?} is for private test buses only; use polkit on the system bus"
    )]
    TestAuthOnSystemBus(AuthMode),
}

/// A running service. Dropping it stops forwarding property changes; the bus connection
/// (and with it the name) goes when the last clone of [`Service::connection`] is dropped.
pub struct Service {
    conn: Connection,
    forwarder: JoinHandle<()>,
    jobs: JoinHandle<()>,
}

impl Service {
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Give up the bus name at once (before a restart of the engine, say) and stop
    /// forwarding signals.
    pub async fn shutdown(self) {
        if let Err(e) = self.conn.release_name(BUS_NAME).await {
            tracing::warn!(error = %e, "cannot release bus name");
        }
        self.forwarder.abort();
        self.jobs.abort();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.forwarder.abort();
        self.jobs.abort();
    }
}

/// Export the manager object on the chosen bus, own [`BUS_NAME`], and forward every status
/// change of `backend` as `PropertiesChanged`.
pub async fn serve(
    backend: Arc<dyn ManagerBackend>,
    opts: ServiceOptions,
) -> Result<Service, ServiceError> {
    let bus_err = |source| ServiceError::Bus {
        bus: opts.bus.clone(),
        source,
    };
    let builder = match &opts.bus {
        Bus::System => {
            if opts.auth != AuthMode::Polkit {
                return Err(ServiceError::TestAuthOnSystemBus(opts.auth.clone()));
            }
            zbus::connection::Builder::system().map_err(bus_err)?
        }
        Bus::Address(a) => zbus::connection::Builder::address(a.as_str()).map_err(bus_err)?,
    };
    let snapshot = backend.subscribe();
    // Subscribed before the name is owned: no job can finish unseen by the bus.
    let finished = backend.job_finished();
    let iface = ManagerIface {
        backend,
        auth: opts.auth.clone(),
        limits: opts.limits,
        snapshot: snapshot.clone(),
        mutating: Arc::new(Mutex::new(())),
        denials: std::sync::Mutex::new(DenialBudget::default()),
    };
    let conn = builder
        .serve_at(
            OBJECT_PATH,
            Checked {
                inner: iface,
                limits: opts.limits,
            },
        )
        .map_err(bus_err)?
        .name(BUS_NAME)
        .map_err(bus_err)?
        .build()
        .await
        .map_err(bus_err)?;
    tracing::info!(bus = %opts.bus, name = BUS_NAME, "D-Bus service ready");
    let forwarder = tokio::spawn(forward_changes(conn.clone(), snapshot));
    let jobs = tokio::spawn(forward_jobs(conn.clone(), finished));
    Ok(Service {
        conn,
        forwarder,
        jobs,
    })
}

/// Emit `PropertiesChanged` for each property whose value changed.
async fn forward_changes(conn: Connection, mut rx: watch::Receiver<StatusView>) {
    let iface_ref = match conn
        .object_server()
        .interface::<_, Checked<ManagerIface>>(OBJECT_PATH)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "manager object missing; no property signals");
            return;
        }
    };
    let mut last = rx.borrow_and_update().clone();
    while rx.changed().await.is_ok() {
        let new = rx.borrow_and_update().clone();
        let iface = iface_ref.get().await;
        let em = iface_ref.signal_emitter();
        if let Err(e) = emit_diff(&iface.inner, em, &last, &new).await {
            tracing::warn!(error = %e, "cannot emit PropertiesChanged");
        }
        last = new;
    }
}

/// Emit `JobFinished` for every finished job, in order.
async fn forward_jobs(conn: Connection, mut rx: tokio::sync::mpsc::UnboundedReceiver<JobView>) {
    let em = match SignalEmitter::new(&conn, OBJECT_PATH) {
        Ok(em) => em,
        Err(e) => {
            tracing::error!(error = %e, "no JobFinished signals");
            return;
        }
    };
    while let Some(j) = rx.recv().await {
        let error = j.error.as_deref().map(redact_text).unwrap_or_default();
        if let Err(e) = ManagerIface::job_finished(&em, j.id, &j.outcome, &error).await {
            tracing::warn!(error = %e, job = j.id, "cannot emit JobFinished");
        }
    }
}

async fn emit_diff(
    iface: &ManagerIface,
    em: &SignalEmitter<'_>,
    a: &StatusView,
    b: &StatusView,
) -> zbus::Result<()> {
    if a.state != b.state {
        iface.state_changed(em).await?;
    }
    if a.progress != b.progress {
        iface.progress_changed(em).await?;
    }
    if a.booted_slot != b.booted_slot {
        iface.booted_slot_changed(em).await?;
    }
    if a.slots != b.slots {
        iface.slots_changed(em).await?;
    }
    if a.current_version != b.current_version {
        iface.current_version_changed(em).await?;
    }
    if a.staged_version != b.staged_version {
        iface.staged_version_changed(em).await?;
    }
    if a.available != b.available {
        iface.available_changed(em).await?;
    }
    if a.next_window != b.next_window {
        iface.next_window_changed(em).await?;
    }
    if a.last_check != b.last_check {
        iface.last_check_changed(em).await?;
    }
    if a.last_error != b.last_error {
        iface.last_error_changed(em).await?;
    }
    if a.holds != b.holds {
        iface.holds_changed(em).await?;
    }
    if a.last_job != b.last_job {
        iface.last_job_changed(em).await?;
    }
    if a.next != b.next {
        iface.next_changed(em).await?;
    }
    Ok(())
}

impl From<ArgError> for Error {
    fn from(e: ArgError) -> Self {
        Error::InvalidArgument(e.to_string())
    }
}

/// A release argument that must name one (the table's rule allows empty for "none").
fn required_release(release: String) -> Result<String, Error> {
    limits::non_empty(release)
        .ok_or_else(|| Error::InvalidArgument("release: a version is required".into()))
}

fn json_out(mut v: serde_json::Value) -> String {
    redact_json(&mut v);
    v.to_string()
}

fn opt_str(s: &Option<String>) -> String {
    s.as_deref().map(redact_text).unwrap_or_default()
}

/// The exported object. Holds no lifecycle state of its own: everything is asked from the
/// backend or read from its status channel.
pub struct ManagerIface {
    backend: Arc<dyn ManagerBackend>,
    auth: AuthMode,
    limits: ArgLimits,
    snapshot: watch::Receiver<StatusView>,
    /// Held for the whole of a mutating call: a second one gets `Busy` instead of waiting
    /// or interleaving.
    mutating: Arc<Mutex<()>>,
    /// How many denials may reach the audit log (the journal gets them all).
    denials: std::sync::Mutex<DenialBudget>,
}

impl ManagerIface {
    /// Identify and authorize the caller of a call, audit a refusal, and take the
    /// mutating-call slot — with the polkit action and the slot rule of the method's row
    /// in [`methods::METHODS`] (found by the call's member), so no method body names its
    /// own action. A method without an action in the table is refused (fail closed).
    async fn admit(
        &self,
        conn: &Connection,
        hdr: &Header<'_>,
        detail: String,
    ) -> Result<(Caller, Option<OwnedMutexGuard<()>>), Error> {
        let member = hdr.member().map(|m| m.as_str()).unwrap_or_default();
        let Some(Access::Admin { action, exclusive }) = methods::method(member).map(|m| m.access)
        else {
            tracing::error!(method = member, "no polkit action declared; refusing");
            return Err(Error::Failed(format!(
                "{member} has no authorization declared"
            )));
        };
        let caller = self.authorize(conn, hdr, action, detail).await?;
        if !exclusive {
            return Ok((caller, None));
        }
        let guard = self
            .mutating
            .clone()
            .try_lock_owned()
            .map_err(|_| Error::Busy("another request is in progress; retry later".into()))?;
        Ok((caller, Some(guard)))
    }

    /// Identify and authorize the caller for `action` (auditing a refusal).
    async fn authorize(
        &self,
        conn: &Connection,
        hdr: &Header<'_>,
        action: Action,
        detail: String,
    ) -> Result<Caller, Error> {
        let caller = authz::caller_of(conn, hdr)
            .await
            .map_err(|e| Error::Failed(format!("cannot identify caller: {e}")))?;
        if let Decision::Denied(why) =
            authz::authorize(&self.auth, conn, hdr, &caller, action).await
        {
            self.deny(hdr, &caller, action, &why, &detail).await;
            return Err(Error::NotAuthorized(why));
        }
        tracing::info!(uid = caller.uid, action = action.id(), "request authorized");
        Ok(caller)
    }

    /// Log a refusal to the journal, and to the audit log within the denial budget.
    async fn deny(
        &self,
        hdr: &Header<'_>,
        caller: &Caller,
        action: Action,
        why: &str,
        detail: &str,
    ) {
        let method = hdr.member().map(|m| m.to_string()).unwrap_or_default();
        tracing::warn!(
            uid = caller.uid,
            bus_name = %caller.bus_name,
            action = action.id(),
            method = %method,
            reason = %why,
            "request denied"
        );
        let admitted = self
            .denials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(std::time::Instant::now());
        let Some(left_out) = admitted else {
            tracing::warn!(uid = caller.uid, "denial not audited: too many denials");
            return;
        };
        let mut reason = why.to_owned();
        if !detail.is_empty() {
            reason.push_str(&format!(" (asked: {detail})"));
        }
        if left_out > 0 {
            reason.push_str(&format!(
                "; {left_out} earlier denial(s) not audited (rate limit, see the journal)"
            ));
        }
        if let Err(e) = self
            .backend
            .record_denial(
                caller.clone(),
                DeniedCall {
                    action: action.id().to_owned(),
                    method,
                    detail: reason,
                },
            )
            .await
        {
            tracing::error!(error = %e, action = action.id(), "cannot audit denial");
        }
    }

    fn snap(&self) -> StatusView {
        self.snapshot.borrow().clone()
    }
}

#[zbus::interface(name = "org.patchd.Patchd1.Manager")]
impl ManagerIface {
    /// Look for new releases now. Returns the outcome as JSON.
    async fn check(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Error> {
        // Not exclusive: the engine answers a check even while a job runs (joining a
        // check already running).
        let (caller, _) = self.admit(conn, &hdr, String::new()).await?;
        Ok(json_out(self.backend.check(caller).await?))
    }

    /// Stage `release` ("" = newest allowed); option `switch_now` (b) switches right after.
    /// Returns JSON `{job, version, slot, switch_after}`; how job `job` ends is announced
    /// by `JobFinished` and recorded in `LastJob`.
    async fn install(
        &self,
        release: String,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Error> {
        let release = limits::non_empty(release);
        let switch_now = Options::checked(&options)
            .bool("switch_now")?
            .unwrap_or(false);
        let detail = release.clone().unwrap_or_default();
        let (caller, _busy) = self.admit(conn, &hdr, detail).await?;
        Ok(json_out(
            self.backend.install(caller, release, switch_now).await?,
        ))
    }

    /// Switch to the staged release now, overriding the maintenance window, rollout stage
    /// and reboot inhibitors (the API's contract: an admin's explicit request). Option
    /// `force` = false asks policy first and fails with `Refused` naming why (what
    /// `patchctl switch` sends unless given its force flag). Holds, the security floor and failed
    /// releases always apply.
    async fn switch(
        &self,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let force = Options::checked(&options).bool("force")?.unwrap_or(true);
        let detail = if force { "force" } else { "" };
        let (caller, _busy) = self.admit(conn, &hdr, detail.into()).await?;
        Ok(self.backend.switch(caller, force).await?)
    }

    /// Stop the running job (staging); the partial slot is left invalid.
    async fn cancel(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        // Whoever may install may cancel (the table's row); not exclusive, because the
        // call it cancels may be holding the mutating-call slot.
        let (caller, _) = self.admit(conn, &hdr, String::new()).await?;
        Ok(self.backend.cancel(caller).await?)
    }

    /// Go back to the previous release now.
    async fn rollback(
        &self,
        reason: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let (caller, _busy) = self.admit(conn, &hdr, reason.clone()).await?;
        Ok(self.backend.rollback(caller, reason).await?)
    }

    /// Declare the booted release good (commit it) without waiting for health checks.
    async fn mark_good(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let (caller, _busy) = self.admit(conn, &hdr, String::new()).await?;
        Ok(self.backend.mark_good(caller).await?)
    }

    /// Declare the booted release bad: it is rolled back and never retried automatically.
    async fn mark_bad(
        &self,
        reason: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let (caller, _busy) = self.admit(conn, &hdr, reason.clone()).await?;
        Ok(self.backend.mark_bad(caller, reason).await?)
    }

    /// Place a hold: no switching until `until` (RFC 3339, "" = until released), only up
    /// to `max_version` ("" = nothing at all).
    async fn hold(
        &self,
        reason: String,
        until: String,
        max_version: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let until = limits::timestamp_arg("until", &until)?;
        let max_version = limits::non_empty(max_version);
        let (caller, _busy) = self.admit(conn, &hdr, reason.clone()).await?;
        let hold = HoldRequest {
            reason,
            until,
            max_version,
        };
        Ok(self.backend.hold(caller, hold).await?)
    }

    async fn release_hold(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let (caller, _busy) = self.admit(conn, &hdr, String::new()).await?;
        Ok(self.backend.release_hold(caller).await?)
    }

    /// Leave degraded mode: move the damaged state file or trusted metadata aside (kept),
    /// rebuild it, start normally. Returns the report as JSON (`damage`, `moved_to`,
    /// `rebuilt`, `lost`). NotFound when the daemon is not in degraded mode.
    async fn repair(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Error> {
        let (caller, _busy) = self.admit(conn, &hdr, String::new()).await?;
        Ok(json_out(self.backend.repair(caller).await?))
    }

    /// Full status as JSON (same fields as the properties, plus nothing secret).
    async fn get_status(&self) -> Result<String, Error> {
        let status = self.backend.status().await?;
        let v = serde_json::to_value(&status)
            .map_err(|e| Error::Failed(format!("cannot encode status: {e}")))?;
        Ok(json_out(v))
    }

    /// Audit records as a JSON array; filter keys: `limit` (u), `since` (s, RFC 3339),
    /// `event` (s), `release` (s).
    async fn get_history(&self, filter: HashMap<String, OwnedValue>) -> Result<String, Error> {
        let filter = limits::history_filter(&filter, &self.limits)?;
        Ok(json_out(self.backend.history(filter).await?))
    }

    /// Inventory document as JSON.
    async fn get_inventory(&self) -> Result<String, Error> {
        Ok(json_out(self.backend.inventory().await?))
    }

    /// Verify the audit hash chain; JSON with at least `{"ok": bool}`.
    async fn verify_audit(&self) -> Result<String, Error> {
        Ok(json_out(self.backend.verify_audit().await?))
    }

    /// Approve `release`, which an urgency rule sends to approval. InvalidArgument when
    /// its rule asks for none, NotFound when no check offered it.
    async fn approve(
        &self,
        release: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let release = required_release(release)?;
        let (caller, _busy) = self.admit(conn, &hdr, release.clone()).await?;
        Ok(self.backend.approve(caller, release).await?)
    }

    /// Allow `release`, which failed on this device, to be tried again; `reason` says
    /// what was fixed (audited). NotFound when it did not fail here.
    async fn retry(
        &self,
        release: String,
        reason: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let release = required_release(release)?;
        let detail = format!("{release}: {reason}");
        let (caller, _busy) = self.admit(conn, &hdr, detail).await?;
        Ok(self.backend.retry(caller, release, reason).await?)
    }

    /// Place a hold as `Hold` does (replacing the one in place) and return JSON
    /// `{"replaced": [hold]}`: the holds it replaced, so the caller can say so.
    async fn place_hold(
        &self,
        reason: String,
        until: String,
        max_version: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Error> {
        let until = limits::timestamp_arg("until", &until)?;
        let max_version = limits::non_empty(max_version);
        let (caller, _busy) = self.admit(conn, &hdr, reason.clone()).await?;
        let hold = HoldRequest {
            reason,
            until,
            max_version,
        };
        let replaced = self.backend.place_hold(caller, hold).await?;
        Ok(json_out(serde_json::json!({ "replaced": replaced })))
    }

    /// Install from an offline bundle read from the descriptor `bundle`, which the caller
    /// opened with its own rights: the daemon never opens a caller's path. `release` and
    /// option `switch_now` as for `Install`.
    async fn install_bundle(
        &self,
        bundle: zbus::zvariant::OwnedFd,
        release: String,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Error> {
        let release = limits::non_empty(release);
        let switch_now = Options::checked(&options)
            .bool("switch_now")?
            .unwrap_or(false);
        let detail = format!("bundle {}", release.as_deref().unwrap_or_default());
        let (caller, _busy) = self.admit(conn, &hdr, detail).await?;
        Ok(json_out(
            self.backend
                .install_bundle(caller, bundle.into(), release, switch_now)
                .await?,
        ))
    }

    /// What the offline bundle read from the descriptor `bundle` offers this device,
    /// verified as for `InstallBundle`; installs nothing.
    async fn list_bundle(
        &self,
        bundle: zbus::zvariant::OwnedFd,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Error> {
        let (caller, _busy) = self.admit(conn, &hdr, "bundle".into()).await?;
        Ok(json_out(
            self.backend.list_bundle(caller, bundle.into()).await?,
        ))
    }

    /// What the caller may do: JSON `{ACTION: {"result": "yes"|"auth"|"no", "text"}}`
    /// for every polkit action, as polkit answers now without a prompt (`auth`: only
    /// after authentication). For pages that disable what their user may not do.
    async fn get_authorizations(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Error> {
        let caller = authz::caller_of(conn, &hdr)
            .await
            .map_err(|e| Error::Failed(format!("cannot identify caller: {e}")))?;
        let mut out = serde_json::Map::new();
        for action in methods::actions() {
            let r = authz::right(&self.auth, conn, &hdr, &caller, action).await;
            out.insert(action.id().to_owned(), r.to_json());
        }
        Ok(json_out(serde_json::Value::Object(out)))
    }

    /// Give this device's fleet reboot slot back now (also one kept after a failed
    /// update); `reason` goes to the audit trail.
    async fn fleet_release(
        &self,
        reason: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let (caller, _busy) = self.admit(conn, &hdr, reason.clone()).await?;
        Ok(self.backend.fleet_release(caller, reason).await?)
    }

    #[zbus(property)]
    fn state(&self) -> String {
        redact_text(&self.snapshot.borrow().state)
    }

    /// (phase, done, total, rate); phase "" when no job runs.
    #[zbus(property)]
    fn progress(&self) -> ProgressTuple {
        ProgressView::to_tuple(self.snapshot.borrow().progress.as_ref())
    }

    #[zbus(property)]
    fn booted_slot(&self) -> String {
        opt_str(&self.snapshot.borrow().booted_slot)
    }

    /// (name, state, version, booted) per slot.
    #[zbus(property)]
    fn slots(&self) -> Vec<SlotTuple> {
        self.snap().slots.iter().map(|s| s.to_tuple()).collect()
    }

    #[zbus(property)]
    fn current_version(&self) -> String {
        opt_str(&self.snapshot.borrow().current_version)
    }

    #[zbus(property)]
    fn staged_version(&self) -> String {
        opt_str(&self.snapshot.borrow().staged_version)
    }

    /// (version, kind, severity, cves, summary) per release.
    #[zbus(property)]
    fn available(&self) -> Vec<AvailableTuple> {
        self.snap()
            .available
            .iter()
            .map(|a| {
                let mut t = a.to_tuple();
                t.4 = redact_text(&t.4);
                t
            })
            .collect()
    }

    /// Start of the next maintenance window, RFC 3339 ("" = none scheduled).
    #[zbus(property)]
    fn next_window(&self) -> String {
        ts_str(self.snapshot.borrow().next_window)
    }

    /// Time of the last successful check, RFC 3339 ("" = never).
    #[zbus(property)]
    fn last_check(&self) -> String {
        ts_str(self.snapshot.borrow().last_check)
    }

    #[zbus(property)]
    fn last_error(&self) -> String {
        opt_str(&self.snapshot.borrow().last_error)
    }

    /// (id, kind, release, outcome, error, started, finished) of the job started most
    /// recently; outcome `running`, `succeeded`, `failed` or `cancelled`; id 0 = no job
    /// since the daemon started (kept in memory only).
    #[zbus(property)]
    fn last_job(&self) -> JobTuple {
        let mut t = JobView::to_tuple(self.snapshot.borrow().last_job.as_ref());
        t.4 = redact_text(&t.4);
        t
    }

    /// A job ended: its id (as `Install` returned it), outcome (`succeeded`, `failed`,
    /// `cancelled`) and error ("" unless failed).
    #[zbus(signal)]
    async fn job_finished(
        em: &SignalEmitter<'_>,
        id: u64,
        outcome: &str,
        error: &str,
    ) -> zbus::Result<()>;

    /// What happens next and when, the sentence `patchctl status` shows as `Next:`:
    /// (kind, text, at) — kind as `GetStatus`' `next.kind`, at RFC 3339 ("" = not known).
    #[zbus(property)]
    fn next(&self) -> (String, String, String) {
        match &self.snapshot.borrow().next {
            Some(n) => (n.kind.clone(), redact_text(&n.text), ts_str(n.at)),
            None => Default::default(),
        }
    }

    /// (reason, by, since, until, max_version) per hold.
    #[zbus(property)]
    fn holds(&self) -> Vec<HoldTuple> {
        self.snap()
            .holds
            .iter()
            .map(|h| {
                let mut t = h.to_tuple();
                t.0 = redact_text(&t.0);
                t
            })
            .collect()
    }
}
