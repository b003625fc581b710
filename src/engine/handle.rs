//! The public face of the engine: a cheap, cloneable handle that sends commands to the
//! one task owning the state and reads its `watch` snapshot. The D-Bus service and the
//! demo use only this.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::ports::{Actor, Progress, StageReport, WhyNot};
use super::state::{IllegalTransition, Lifecycle, StateKind};
use super::statefile::{BlockedRelease, StateFileError};
use crate::audit::{AuditError, Entry, Filter, Record, VerifyReport};
use crate::boot::BootError;
use crate::names::SlotName;
use crate::policy::{Hold, Kind, Opportunity, Severity, Standing};
use crate::slot::{SlotError, SlotState};

/// One release as status shows it: categorization plus why it is or is not installed now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AvailableRelease {
    pub version: String,
    pub security_version: u64,
    pub kind: Kind,
    pub severity: Severity,
    pub cves: Vec<String>,
    pub size: u64,
    pub published: Option<Timestamp>,
    /// Policy would switch to it now (nothing in `why_not`).
    pub install_now: bool,
    /// Policy would stage it now (it may still wait for a window to switch).
    pub may_stage: bool,
    pub why_not: Vec<WhyNot>,
    /// How `list` groups it (installable, waiting, not applicable).
    #[serde(default)]
    pub standing: Standing,
    /// The publisher's one-line summary (from the verified manifest).
    #[serde(default)]
    pub description: Option<String>,
    /// When the switch decision lets it go (`None` when it does not fit the device).
    #[serde(default)]
    pub next: Option<Opportunity>,
    /// `next` in plain words, as of the categorization ("waiting for the canary stage,
    /// in 3 h").
    #[serde(default)]
    pub when: Option<String>,
    /// What the release does to each of its components, in install order
    /// (`app: web 1.2 → 1.3, no reboot, rollback by switching back`).
    #[serde(default)]
    pub components: Vec<String>,
    /// When this device starts staging it, while it waits for its staging spread after
    /// its rollout stage opened (`[policy] stage_spread`).
    #[serde(default)]
    pub stage_at: Option<Timestamp>,
    /// A package patch set's packages (empty for an image release).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<crate::manifest::PackageChange>,
    /// Why policy does not stage it now (`staging only inside maintenance windows; …`),
    /// so status can say what staging waits for; `None` when it may stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_wait: Option<String>,
}

/// What the device does next and when, in plain words: the `Next:` line of status, the
/// same sentence for every client (patchctl, a web page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextStep {
    /// `up_to_date`, `available`, `staging`, `switch_now`, `window`, `rollout`, `held`,
    /// `approval`, `paused`, `blocked`, `reboot_pending`, `trial`, `rollback_pending`,
    /// `probation`, `failed`, `busy`.
    pub kind: String,
    /// The sentence, relative times counted from the snapshot's `as_of`.
    pub text: String,
    /// When it happens, if known.
    pub at: Option<Timestamp>,
}

/// The last check and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOutcome {
    pub at: Timestamp,
    /// The last check that got through (`at` itself unless this one failed).
    pub last_good: Option<Timestamp>,
    /// `None`: it succeeded.
    pub error: Option<String>,
    /// Releases it found (when it succeeded).
    pub found: usize,
}

/// One slot as status shows it: content (slot backend) and boot flags (bootloader).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotView {
    pub name: SlotName,
    pub backend: String,
    pub state: Option<SlotState>,
    pub version: Option<String>,
    pub size: Option<u64>,
    pub booted: bool,
    pub primary: bool,
    pub tries_left: Option<u32>,
    pub good: bool,
    pub bad: bool,
}

/// Everything `status` shows, republished after every change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    pub state: StateKind,
    pub lifecycle: Lifecycle,
    pub booted_slot: Option<SlotName>,
    pub slots: Vec<SlotView>,
    pub current_version: Option<String>,
    pub staged_version: Option<String>,
    pub security_floor: u64,
    pub available: Vec<AvailableRelease>,
    pub next_window: Option<Timestamp>,
    pub last_check: Option<Timestamp>,
    pub last_error: Option<String>,
    pub holds: Vec<Hold>,
    pub blocked: Vec<BlockedRelease>,
    pub progress: Option<Progress>,
    /// Method and bytes of the last successful staging since the daemon started.
    #[serde(default)]
    pub last_stage: Option<StageReport>,
    /// Why a due reboot is waiting (active inhibitors).
    pub reboot_waiting: Vec<String>,
    /// The long step running now (`check`, `stage`, `health`), if any.
    pub busy: Option<String>,
    /// The job started most recently (running or finished), so a client that looks
    /// after a job ended still learns how it ended. Kept in memory only: after a restart
    /// it is `None` until the next job starts.
    #[serde(default)]
    pub last_job: Option<JobRecord>,
    /// Conditions an admin should look at, found at start-up (an audit log longer than
    /// its head file).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The engine clock's time when this snapshot was made (relative times count from it).
    #[serde(default)]
    pub as_of: Option<Timestamp>,
    /// The maintenance windows' time zone (times are shown in it and in UTC).
    #[serde(default)]
    pub time_zone: String,
    /// What happens next and when.
    #[serde(default)]
    pub next: Option<NextStep>,
    /// The last check (also a failed one) with its time and error.
    #[serde(default)]
    pub last_check_outcome: Option<CheckOutcome>,
    /// The last outcome of an update, with its reason ("2.0.0 rolled back: …").
    #[serde(default)]
    pub last_outcome: Option<String>,
    /// During a rollback whose reboot is still pending: the release the device goes
    /// back to (`current_version` is what truly runs until then).
    #[serde(default)]
    pub rolling_back_to: Option<String>,
    /// The fleet reboot slot; `None` without a reboot lock.
    #[serde(default)]
    pub fleet: Option<FleetStatus>,
}

/// The fleet reboot slot as status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStatus {
    pub group: String,
    /// `fleetlock`, …
    pub backend: String,
    /// `held`, `kept` (after a failed update), `waiting`, `unreachable` or `free`.
    pub state: String,
    /// Why the lock holds the switch back, in words.
    pub text: Option<String>,
    /// Who holds the group's slots, when the service says.
    pub holders: Vec<String>,
    /// Since when this device holds its slot.
    pub since: Option<Timestamp>,
    /// When the lock is asked again.
    pub retry_at: Option<Timestamp>,
}

/// How a job ended (or that it still runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Running => "running",
            JobOutcome::Succeeded => "succeeded",
            JobOutcome::Failed => "failed",
            JobOutcome::Cancelled => "cancelled",
        }
    }
}

/// One job of the engine (`check`, `staging`, `health checks`) and its recorded outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Unique within one run of the daemon, increasing from 1.
    pub id: u64,
    pub kind: String,
    /// The release a staging job writes.
    pub release: Option<String>,
    pub outcome: JobOutcome,
    /// Why it failed (for `failed`).
    pub error: Option<String>,
    pub started: Timestamp,
    pub finished: Option<Timestamp>,
}

impl StatusSnapshot {
    pub fn initial() -> Self {
        Self {
            state: StateKind::Idle,
            lifecycle: Lifecycle::Idle {},
            booted_slot: None,
            slots: Vec::new(),
            current_version: None,
            staged_version: None,
            security_floor: 0,
            available: Vec::new(),
            next_window: None,
            last_check: None,
            last_error: None,
            holds: Vec::new(),
            blocked: Vec::new(),
            progress: None,
            last_stage: None,
            reboot_waiting: Vec::new(),
            busy: None,
            last_job: None,
            warnings: Vec::new(),
            as_of: None,
            time_zone: "UTC".into(),
            next: None,
            last_check_outcome: None,
            last_outcome: None,
            rolling_back_to: None,
            fleet: None,
        }
    }
}

/// What an offline bundle offers (`list_bundle`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BundleListing {
    /// The releases it carries, categorized as `check` lists them.
    pub available: Vec<AvailableRelease>,
    /// Releases its metadata lists but whose files it does not carry, with the reason.
    pub not_carried: Vec<super::ports::NotCarried>,
    /// Roles accepted although expired (`[offline] allow_expired`).
    pub expired: Vec<String>,
}

/// What `install` started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallStarted {
    /// Id of the staging job; its outcome arrives as `JobFinished` / `LastJob`.
    pub job: u64,
    pub version: String,
    pub slot: SlotName,
    pub switch_after: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("busy: {running} is running; try again when it finished")]
    Busy { running: String },
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error("{what} is not available yet in this build: {why}")]
    NotAvailable {
        what: &'static str,
        why: &'static str,
    },
    #[error("release {version} is not among the available releases (run check first)")]
    NoSuchRelease { version: String },
    #[error("no release to install: {why}")]
    NothingToInstall { why: String },
    /// The bundle lists the release but does not carry what installing it needs.
    #[error("release {version} is not carried by the bundle: {why}")]
    NotInBundle { version: String, why: String },
    #[error("release {version} is refused: {why}")]
    Refused { version: String, why: WhyNot },
    #[error("switch refused: {}", join_reasons(.why))]
    SwitchRefused { why: Vec<WhyNot> },
    #[error("the inactive slot could not be chosen: {0}")]
    NoInactiveSlot(String),
    #[error(transparent)]
    State(#[from] StateFileError),
    #[error("bootloader: {0}")]
    Boot(#[from] BootError),
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error(transparent)]
    Port(#[from] super::ports::PortError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("invalid version {version:?} for a hold pin: {why}")]
    BadVersion { version: String, why: String },
    #[error("the engine task has stopped")]
    Stopped,
    /// `cancel` when no job runs and nothing waits to be switched.
    #[error("nothing to cancel: no job is running and no release is staged ({state})")]
    NothingToCancel { state: &'static str },
    /// `approve` for a release whose urgency rule does not ask for approval.
    #[error("release {version} needs no approval: its urgency rule says {urgency}")]
    NoApprovalNeeded { version: String, urgency: String },
    /// `retry` for a release that did not fail here.
    #[error("release {version} did not fail on this device: nothing to retry")]
    NotFailedHere { version: String },
    /// `rollback` on a committed release whose previous slot is no longer kept.
    #[error("no previous root to go back to: {why}")]
    NoPrevious { why: String },
    /// `release-hold` when no hold is set.
    #[error("no hold to release")]
    NoHold,
    #[error("no reboot slot to release: reboots are not coordinated ([fleet] lock = \"none\")")]
    NoRebootLock,
    /// The staging target could not be made unbootable first: staging does not start.
    #[error(
        "slot {slot} could not be marked unbootable in the {kind} bootloader before writing it, \
         so staging did not start: {source} (commit the running slot first, or see \
         `patchd boot status`)"
    )]
    Unfenced {
        slot: SlotName,
        kind: &'static str,
        #[source]
        source: BootError,
    },
}

fn join_reasons(w: &[WhyNot]) -> String {
    w.iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Audit event of a refused D-Bus request.
pub const DENIAL_EVENT: &str = "dbus.denied";

pub type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// [`Command`] and the [`EngineHandle`] methods that send one and wait for its reply, from
/// one table: each line names the method, its arguments (the variant's fields but `reply`),
/// the reply and the variant. The variants after `;` have methods written by hand.
macro_rules! commands {
    ($(
        $(#[doc = $doc:literal])*
        fn $method:ident($($arg:ident: $ty:ty),* $(,)?) -> $out:ty = $variant:ident;
    )*
    ; $(
        $(#[doc = $xdoc:literal])*
        $xvariant:ident { $($field:ident: $fty:ty),* $(,)? }
    )*) => {
        /// Commands the engine task accepts.
        #[derive(Debug)]
        pub(crate) enum Command {
            $( $variant { $($arg: $ty,)* reply: Reply<$out> }, )*
            $( $(#[doc = $xdoc])* $xvariant { $($field: $fty),* }, )*
        }

        impl EngineHandle {
            $(
                $(#[doc = $doc])*
                pub async fn $method(&self, $($arg: $ty),*) -> Result<$out, EngineError> {
                    self.call(|reply| Command::$variant { $($arg,)* reply }).await
                }
            )*
        }
    };
}

commands! {
    /// Refresh the repository and categorize what is available.
    fn check(actor: Actor) -> Vec<AvailableRelease> = Check;
    /// Stage `release` (default: the best eligible one) into the inactive slot; with
    /// `switch_now`, switch and reboot as soon as it is staged, outside the window too.
    fn install(actor: Actor, release: Option<String>, switch_now: bool) -> InstallStarted
        = Install;
    /// Switch to the staged release now; `force` overrides window and rollout stage and
    /// reboot inhibitors (never holds, the floor or a failed release).
    fn switch(actor: Actor, force: bool) -> () = Switch;
    /// Abandon what has not switched yet (also stops a running staging).
    fn cancel(actor: Actor) -> () = Cancel;
    /// Go back to the previous slot (while verifying or during probation).
    fn rollback(actor: Actor, reason: String) -> () = Rollback;
    /// Commit the slot under verification without waiting for the health checks.
    fn mark_good(actor: Actor) -> () = MarkGood;
    /// Declare the slot under verification (or on probation) bad: roll back.
    fn mark_bad(actor: Actor, reason: String) -> () = MarkBad;
    /// Place a hold: no switching while it lasts (or above `max_version` when given). It
    /// replaces the hold in place (one hold at a time); returns what it replaced.
    fn hold(
        actor: Actor,
        reason: String,
        until: Option<Timestamp>,
        max_version: Option<String>
    ) -> Vec<Hold> = Hold;
    /// Remove every hold.
    fn release_hold(actor: Actor) -> () = ReleaseHold;
    /// Approve `version`, which an urgency rule sends to approval (audited).
    fn approve(actor: Actor, version: String) -> () = Approve;
    /// Allow `version`, which failed on this device, to be installed again (audited
    /// with `reason` and the failure it lifts).
    fn retry(actor: Actor, version: String, reason: String) -> () = Retry;
    /// Give this device's fleet reboot slot back now, also one kept after a failed
    /// update (audited with `reason`).
    fn fleet_release(actor: Actor, reason: String) -> () = FleetRelease;
    /// Let an admin install `version` although it is below the security floor (audited).
    fn allow_below_floor(actor: Actor, version: String) -> () = AllowBelowFloor;
    /// Show `text` as a status warning under `key` until it is cleared with `None`: for a
    /// part of the daemon outside the engine (the metrics writer); each change is audited
    /// once.
    fn set_warning(key: &'static str, text: Option<String>) -> () = SetWarning;
    /// Audit records matching `filter` (most recent `filter.limit`).
    fn history(filter: Filter) -> Vec<Record> = History;
    /// The inventory document (machine facts, slots, floor, holds, patches).
    fn inventory() -> serde_json::Value = Inventory;
    /// Verify the whole audit chain (including rotated files).
    fn verify_audit() -> VerifyReport = VerifyAudit;
    /// Install from the offline bundle read from `bundle` (a tar stream the caller
    /// opened): verified like the repository, then `release` (default: the best one it
    /// carries) staged from the bundle's bytes; `switch_now` as for `install`.
    fn install_bundle(
        actor: Actor,
        bundle: std::os::fd::OwnedFd,
        release: Option<String>,
        switch_now: bool
    ) -> InstallStarted = InstallBundle;
    /// What the offline bundle read from `bundle` offers this device, verified as for
    /// `install_bundle`; nothing is installed and the list of releases stays as it is.
    fn list_bundle(actor: Actor, bundle: std::os::fd::OwnedFd) -> BundleListing = ListBundle;
    ;
    /// Append a record about something the engine did not do itself (a refused D-Bus
    /// call); the engine task stays the audit log's only writer.
    RecordDenial {
        entry: Box<Entry>,
        reply: Reply<()>,
    }
}

/// Cloneable handle to the running engine.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    status: watch::Receiver<StatusSnapshot>,
    /// Every finished job, in order; unlike the status snapshot it never coalesces, so
    /// no `JobFinished` is lost when one job follows another at once.
    finished: broadcast::Sender<JobRecord>,
}

impl EngineHandle {
    pub(crate) fn new(
        tx: mpsc::Sender<Command>,
        status: watch::Receiver<StatusSnapshot>,
        finished: broadcast::Sender<JobRecord>,
    ) -> Self {
        Self {
            tx,
            status,
            finished,
        }
    }

    /// A receiver of every job that finishes from now on.
    pub fn job_finished(&self) -> broadcast::Receiver<JobRecord> {
        self.finished.subscribe()
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }

    /// The current snapshot.
    pub fn status(&self) -> StatusSnapshot {
        self.status.borrow().clone()
    }

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<StatusSnapshot> {
        self.status.clone()
    }

    /// Audit a request that was refused before it reached the engine (polkit said no):
    /// event `dbus.denied` with the caller's uid as actor and `action` (polkit action
    /// id), `method` (D-Bus member) and `bus_name` (unique name) as fields. Answered
    /// even while a job runs.
    pub async fn record_denial(
        &self,
        actor: Actor,
        action: &str,
        method: &str,
        bus_name: &str,
        reason: &str,
    ) -> Result<(), EngineError> {
        let entry = Entry::new(DENIAL_EVENT, actor, reason)
            .field("action", action)
            .field("method", method)
            .field("bus_name", bus_name);
        self.call(|reply| Command::RecordDenial {
            entry: Box::new(entry),
            reply,
        })
        .await
    }

    /// Wait until a snapshot satisfies `pred` (or the engine stops).
    pub async fn wait_for(
        &self,
        mut pred: impl FnMut(&StatusSnapshot) -> bool,
    ) -> Result<StatusSnapshot, EngineError> {
        let mut rx = self.status.clone();
        let snap = rx
            .wait_for(|s| pred(s))
            .await
            .map_err(|_| EngineError::Stopped)?;
        Ok(snap.clone())
    }
}
