//! Live progress: `patchctl watch`, and the bar shown while `install` runs.

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::progress::{summary_lines, Bar};
use super::{exit, CtlError};
use crate::dbus::proxy::{JobFinishedStream, ManagerProxy};
use crate::dbus::types::{JobView, ProgressView};

/// States in which a job runs even before it reports progress.
const BUSY_STATES: &[&str] = &["staging", "switching"];

/// `follow`'s end state when the daemon went away for the reboot it asked for.
const REBOOTING: &str = "rebooting";

/// How long `follow` waits for `LastJob` to catch up with a `JobFinished` it cannot place
/// (see [`follow`]); a successor job shows within milliseconds.
const SETTLE: Duration = Duration::from_secs(2);

/// Run `call` while drawing the daemon's progress on `bar`.
pub async fn with_progress<T>(
    p: &ManagerProxy<'_>,
    call: impl Future<Output = zbus::Result<T>>,
    bar: &mut Bar,
) -> Result<T, CtlError> {
    let mut changes = p.receive_progress_changed().await;
    tokio::pin!(call);
    let r = loop {
        tokio::select! {
            r = &mut call => break r,
            Some(c) = changes.next() => {
                if let Ok(t) = c.get().await {
                    if let Some(pv) = ProgressView::from_tuple(t) {
                        bar.update(&pv);
                    }
                }
            }
        }
    };
    Ok(r?)
}

/// How following ended.
pub struct Outcome {
    pub state: String,
    /// The job that decides the result: the first followed job that failed, else the
    /// last one followed (or, when none ran, the last job the daemon finished).
    pub job: Option<JobView>,
}

impl Outcome {
    /// The job failed or was cancelled: either way the work did not get done.
    pub fn failed(&self) -> bool {
        self.job.as_ref().is_some_and(JobView::unsuccessful)
    }

    pub fn exit_code(&self) -> u8 {
        if self.failed() {
            exit::JOB_FAILED
        } else {
            exit::OK
        }
    }
}

/// A proxy that reads past the property cache (a signal may still be in flight).
pub async fn fresh(p: &ManagerProxy<'_>) -> Result<ManagerProxy<'static>, CtlError> {
    Ok(ManagerProxy::builder(p.inner().connection())
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?)
}

/// The daemon's `LastJob`, read fresh.
pub async fn last_job(p: &ManagerProxy<'_>) -> Result<Option<JobView>, CtlError> {
    Ok(JobView::from_tuple(fresh(p).await?.last_job().await?))
}

/// `LastJob` once the daemon's published status has caught up with the end of job `id`
/// (`JobFinished` can arrive before the snapshot that records it): the full record, and a
/// status whose `last_stage` and state are this job's. Gives up after two seconds and
/// returns what it has.
pub async fn settled(p: &ManagerProxy<'_>, id: u64) -> Result<Option<JobView>, CtlError> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let last = last_job(p).await?;
        let caught_up = last
            .as_ref()
            .is_some_and(|j| j.id > id || (j.id == id && j.is_finished()));
        if caught_up || id == 0 || Instant::now() >= deadline {
            return Ok(last.filter(|j| j.id == id));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long the daemon may sit in `switching` (the reboot asked for) before `wait_job`
/// stops waiting for a job end that only comes after the reboot, if ever.
const REBOOT_GRACE: Duration = Duration::from_secs(5);

/// How waiting for a job ended.
pub enum Waited {
    Ended(JobView),
    /// The daemon left the bus, or sat in `switching` past [`REBOOT_GRACE`], before the
    /// job ended: it is rebooting (or stopping as a simulated device does).
    Gone,
}

/// A lost daemon: the name has no owner, or the connection to it broke.
fn daemon_gone(e: &zbus::Error) -> bool {
    exit::name_missing(e)
        || matches!(e, zbus::Error::InputOutput(_))
        || matches!(e, zbus::Error::MethodError(n, _, _)
            if n.as_str() == "org.freedesktop.DBus.Error.NoReply")
}

/// Wait for job `id` (from `Install`) to end; `jobs` was subscribed before the call, so
/// the outcome is known even when the job ended before the reply arrived. Ends with
/// [`Waited::Gone`] when the daemon leaves the bus (or, with `reboot_expected`, sits in
/// `switching`): nothing it would still send can come then.
pub async fn wait_job(
    p: &ManagerProxy<'_>,
    id: u64,
    mut jobs: JobFinishedStream,
    reboot_expected: bool,
    mut on_progress: impl FnMut(&ProgressView),
) -> Result<Waited, CtlError> {
    // Subscribed before anything is read: an owner lost after this is seen.
    let mut owners = p.inner().receive_owner_changed().await?;
    let mut state_changes = p.receive_state_changed().await;
    match last_job(p).await {
        Ok(Some(j)) if j.id == id && j.is_finished() => return Ok(Waited::Ended(j)),
        Ok(_) => {}
        Err(e) if reboot_expected && e.code == exit::UNAVAILABLE => return Ok(Waited::Gone),
        Err(e) => return Err(e),
    }
    if id == 0 {
        // A backend without job ids (a simulation) answers `Install` when the work is
        // done and failures as method errors: nothing is left to wait for.
        return Ok(Waited::Ended(JobView {
            outcome: "succeeded".into(),
            ..JobView::default()
        }));
    }
    let mut prog_changes = p.receive_progress_changed().await;
    let mut switching_since: Option<Instant> = None;
    loop {
        let grace = switching_since.map(|t| REBOOT_GRACE.saturating_sub(t.elapsed()));
        tokio::select! {
            Some(sig) = jobs.next() => {
                let a = sig.args()?;
                if a.id == id {
                    // The full record (kind, release, times) from LastJob when it still
                    // is this job; the signal's fields otherwise.
                    let last = match last_job(p).await {
                        Ok(l) => l.filter(|j| j.id == id && j.is_finished()),
                        Err(_) => None,
                    };
                    return Ok(Waited::Ended(last.unwrap_or_else(|| JobView {
                        id,
                        outcome: a.outcome.clone(),
                        error: (!a.error.is_empty()).then(|| a.error.clone()),
                        ..JobView::default()
                    })));
                }
            }
            Some(owner) = owners.next() => {
                if owner.is_none() {
                    return gone(reboot_expected, id);
                }
            }
            Some(c) = state_changes.next() => {
                match c.get().await {
                    Ok(s) if s == "switching" => {
                        switching_since.get_or_insert_with(Instant::now);
                    }
                    Ok(_) => switching_since = None,
                    Err(e) if daemon_gone(&e) => return gone(reboot_expected, id),
                    Err(e) => return Err(e.into()),
                }
            }
            _ = tokio::time::sleep(grace.unwrap_or_default()), if reboot_expected && grace.is_some() => {
                return Ok(Waited::Gone);
            }
            Some(c) = prog_changes.next() => {
                match c.get().await {
                    Ok(t) => {
                        if let Some(pv) = ProgressView::from_tuple(t) {
                            on_progress(&pv);
                        }
                    }
                    Err(e) if daemon_gone(&e) => return gone(reboot_expected, id),
                    Err(e) => return Err(e.into()),
                }
            }
            else => return gone(reboot_expected, id),
        }
    }
}

/// The daemon went away while job `id` ran: expected after a reboot request.
fn gone(reboot_expected: bool, id: u64) -> Result<Waited, CtlError> {
    if reboot_expected {
        Ok(Waited::Gone)
    } else {
        Err(CtlError::new(
            exit::FAILED,
            format!("lost the daemon while job {id} was running"),
        ))
    }
}

/// Follow the running job (and any it leads to) until none runs; if none runs, wait for
/// one when `wait_for_job`, else report the last finished job at once. `on_update` sees
/// every state/progress change.
///
/// Jobs the daemon starts by itself are followed like any other: a periodic check, and
/// the staging the engine starts the moment that check ends. The engine starts such a
/// successor before it publishes the snapshot that shows the check finished, so once
/// `LastJob` shows the last announced job (`JobFinished`) finished, nothing follows it;
/// while it still shows an older job, `LastJob` lags behind the signal and is waited for
/// (at most [`SETTLE`]).
pub async fn follow(
    p: &ManagerProxy<'_>,
    wait_for_job: bool,
    mut on_update: impl FnMut(&str, Option<&ProgressView>),
) -> Result<Outcome, CtlError> {
    // Subscribed before anything is read: no job can end unseen.
    let mut jobs = p.receive_job_finished().await?;
    let mut prog_changes = p.receive_progress_changed().await;
    let mut state_changes = p.receive_state_changed().await;
    let mut job_changes = p.receive_last_job_changed().await;
    let mut owners = p.inner().receive_owner_changed().await?;
    let f = fresh(p).await?;
    let mut state = f.state().await?;
    let mut progress = ProgressView::from_tuple(f.progress().await?);
    let mut last = JobView::from_tuple(f.last_job().await?);
    // Only for a backend without job records (a simulation): the old inference.
    let error_before = f.last_error().await?;
    let running = |j: &Option<JobView>| j.as_ref().is_some_and(|j| !j.is_finished());
    let active = |state: &str, progress: &Option<ProgressView>| {
        progress.is_some() || BUSY_STATES.contains(&state)
    };
    let mut seen_job = active(&state, &progress) || running(&last);
    if !seen_job && !wait_for_job {
        return Ok(Outcome { state, job: last });
    }
    // Jobs from this id on are the ones followed.
    let first = match &last {
        Some(j) if !j.is_finished() => j.id,
        Some(j) => j.id + 1,
        None => 1,
    };
    let mut failed: Option<JobView> = None;
    // The newest main job whose end was announced.
    let mut ended: Option<u64> = None;
    let mut unsure_since: Option<Instant> = None;
    loop {
        on_update(&state, progress.as_ref());
        if seen_job && !active(&state, &progress) && !running(&last) {
            let caught_up = match ended {
                None => true,
                Some(id) => last.as_ref().is_some_and(|j| j.id >= id),
            };
            let since = *unsure_since.get_or_insert_with(Instant::now);
            if caught_up || since.elapsed() >= SETTLE {
                break;
            }
        } else {
            unsure_since = None;
        }
        tokio::select! {
            // In order: what the daemon sent before it left is read before its leaving.
            biased;
            Some(sig) = jobs.next() => {
                let a = sig.args()?;
                if a.id >= first {
                    seen_job = true;
                    // A job ending while a lower-numbered one still runs ran beside it (a
                    // check during a staging): LastJob keeps naming the main one.
                    let beside = last.as_ref().is_some_and(|j| !j.is_finished() && j.id < a.id);
                    if !beside {
                        ended = Some(ended.map_or(a.id, |e| e.max(a.id)));
                    }
                    if a.outcome != "succeeded" && failed.is_none() {
                        failed = Some(JobView {
                            id: a.id,
                            outcome: a.outcome.clone(),
                            error: (!a.error.is_empty()).then(|| a.error.clone()),
                            ..JobView::default()
                        });
                    }
                }
            }
            Some(c) = prog_changes.next() => {
                progress = ProgressView::from_tuple(c.get().await?);
            }
            Some(c) = state_changes.next() => {
                state = c.get().await?;
            }
            Some(c) = job_changes.next() => {
                last = JobView::from_tuple(c.get().await?);
            }
            Some(owner) = owners.next() => {
                if owner.is_none() {
                    return left_the_bus(state, failed.or(last));
                }
            }
            _ = tokio::time::sleep(SETTLE / 4), if unsure_since.is_some() => {
                // LastJob may have changed without a signal reaching us yet.
                last = JobView::from_tuple(fresh(p).await?.last_job().await?);
            }
            else => break,
        }
        if active(&state, &progress) || running(&last) {
            seen_job = true;
        }
    }
    let f = fresh(p).await?;
    let state = f.state().await?;
    let last = JobView::from_tuple(f.last_job().await?).filter(|j| j.id >= first);
    let job = match (failed, last) {
        // The full record when LastJob is the failed job itself.
        (Some(fj), Some(l)) if l.id == fj.id => Some(l),
        (Some(fj), _) => Some(fj),
        (None, Some(l)) => Some(l),
        (None, None) => {
            // No job records at all (id 0 throughout): a backend without them.
            let err = f.last_error().await?;
            (!err.is_empty() && err != error_before).then(|| JobView {
                outcome: "failed".into(),
                error: Some(err),
                ..JobView::default()
            })
        }
    };
    Ok(Outcome { state, job })
}

/// The daemon left the bus while `follow` followed a job: expected right after it asked
/// for a reboot (`switching`), which is what `follow` reports then. Otherwise nothing here
/// tells a reboot (its snapshot may not have been published) from a stop: said as such,
/// with the code for an unreachable daemon, instead of waiting for signals that never come.
fn left_the_bus(state: String, job: Option<JobView>) -> Result<Outcome, CtlError> {
    if state == "switching" {
        return Ok(Outcome {
            state: REBOOTING.into(),
            job,
        });
    }
    Err(CtlError::new(
        exit::UNAVAILABLE,
        format!(
            "patchd left the bus while a job ran (last state {state}): it is rebooting or \
             stopped; `patchctl status` says more once it is back"
        ),
    ))
}

/// `patchctl watch`: follow the running job (or wait for the next) with a progress bar or
/// JSON lines, then print the result and the summary line.
pub async fn watch(p: &ManagerProxy<'_>, json: bool, exit_if_idle: bool) -> Result<u8, CtlError> {
    let mut bar = Bar::new(json);
    let mut last_state = String::new();
    let out = follow(p, !exit_if_idle, |state, progress| {
        if json {
            if state != last_state {
                println!("{}", serde_json::json!({ "state": state }));
            }
            if let Some(pv) = progress {
                println!("{}", serde_json::json!({ "state": state, "progress": pv }));
            }
        } else if let Some(pv) = progress {
            bar.update(pv);
        }
        last_state = state.to_owned();
    })
    .await;
    bar.finish();
    let out = out?;
    report(json, &out);
    // The summary is about a job: none when nothing ran (a daemon without job records).
    if !json && out.job.is_some() && out.state != REBOOTING {
        let status = status_json(p).await?;
        println!(
            "{}",
            summary_lines(&status, out.job.as_ref(), bar.elapsed())
        );
    }
    Ok(out.exit_code())
}

/// `GetStatus` as JSON (for the summary line).
pub async fn status_json(p: &ManagerProxy<'_>) -> Result<serde_json::Value, CtlError> {
    serde_json::from_str(&p.get_status().await?)
        .map_err(|e| CtlError::new(exit::FAILED, format!("daemon sent malformed JSON: {e}")))
}

fn report(json: bool, out: &Outcome) {
    let error = out.job.as_ref().and_then(|j| j.error.as_deref());
    let error = if out.failed() { error } else { None };
    if json {
        let j = out.job.as_ref();
        println!(
            "{}",
            serde_json::json!({ "result": {
                "state": out.state,
                "job": j.map(|j| j.id),
                "kind": j.map(|j| j.kind.as_str()),
                "release": j.and_then(|j| j.release.as_deref()),
                "outcome": j.map(|j| j.outcome.as_str()),
                "error": error,
            } })
        );
    } else {
        match (&out.job, error) {
            (Some(j), Some(e)) if j.id == 0 => println!("{}: {e}", out.state),
            (Some(j), Some(e)) => println!(
                "{}: job {} ({}) {}: {e}",
                out.state, j.id, j.kind, j.outcome
            ),
            (Some(j), None) if out.failed() => {
                println!("{}: job {} ({}) {}", out.state, j.id, j.kind, j.outcome)
            }
            _ => println!("{}", out.state),
        }
    }
}
