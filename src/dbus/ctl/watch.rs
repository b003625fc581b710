//! Live progress: `patchctl watch`, and the bar shown while `install` runs.

use std::future::Future;

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use super::{exit, CtlError};
use crate::dbus::proxy::ManagerProxy;
use crate::dbus::types::ProgressView;

/// States in which a job runs even before it reports progress.
const BUSY_STATES: &[&str] = &["staging", "switching"];

pub fn bar() -> ProgressBar {
    // Hidden automatically when stderr is not a terminal, so scripts see no escape codes.
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg:10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb
}

pub fn show(pb: &ProgressBar, p: &ProgressView) {
    pb.set_message(p.phase.clone());
    if p.total > 0 {
        pb.set_length(p.total);
    }
    pb.set_position(p.done);
}

/// Run `call` while drawing the daemon's progress (unless `json`).
pub async fn with_progress<T>(
    p: &ManagerProxy<'_>,
    call: impl Future<Output = zbus::Result<T>>,
    json: bool,
) -> Result<T, CtlError> {
    if json {
        return Ok(call.await?);
    }
    let pb = bar();
    let mut changes = p.receive_progress_changed().await;
    tokio::pin!(call);
    let r = loop {
        tokio::select! {
            r = &mut call => break r,
            Some(c) = changes.next() => {
                if let Ok(t) = c.get().await {
                    if let Some(pv) = ProgressView::from_tuple(t) {
                        show(&pb, &pv);
                    }
                }
            }
        }
    };
    pb.finish_and_clear();
    Ok(r?)
}

/// How a followed job ended.
pub struct Outcome {
    pub state: String,
    /// Set when `LastError` changed while following: the job failed.
    pub error: Option<String>,
}

/// Follow the running job until it ends; if none runs, wait for one when `wait_for_job`,
/// else return at once. `on_update` sees every state/progress change.
pub async fn follow(
    p: &ManagerProxy<'_>,
    wait_for_job: bool,
    mut on_update: impl FnMut(&str, Option<&ProgressView>),
) -> Result<Outcome, CtlError> {
    let mut prog_changes = p.receive_progress_changed().await;
    let mut state_changes = p.receive_state_changed().await;
    let mut state = fresh_string(p, "State").await?;
    let mut progress = ProgressView::from_tuple(p.progress().await?);
    let error_before = fresh_string(p, "LastError").await?;
    let active = |state: &str, progress: &Option<ProgressView>| {
        progress.is_some() || BUSY_STATES.contains(&state)
    };
    let mut seen_job = active(&state, &progress);
    if !seen_job && !wait_for_job {
        return Ok(Outcome { state, error: None });
    }
    loop {
        on_update(&state, progress.as_ref());
        if seen_job && !active(&state, &progress) {
            break;
        }
        tokio::select! {
            Some(c) = prog_changes.next() => {
                progress = ProgressView::from_tuple(c.get().await?);
            }
            Some(c) = state_changes.next() => {
                state = c.get().await?;
            }
            else => break,
        }
        if active(&state, &progress) {
            seen_job = true;
        }
    }
    // Read past the proxy's cache: the LastError signal may still be in flight.
    let err = fresh_string(p, "LastError").await?;
    let state = fresh_string(p, "State").await?;
    let failed = !err.is_empty() && err != error_before;
    Ok(Outcome {
        state,
        error: failed.then_some(err),
    })
}

/// `patchctl watch`: follow the running job (or wait for the next) with a progress bar or
/// JSON lines, then print the result.
pub async fn watch(p: &ManagerProxy<'_>, json: bool, exit_if_idle: bool) -> Result<u8, CtlError> {
    let pb = if json { ProgressBar::hidden() } else { bar() };
    pb.set_message("waiting");
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
            show(&pb, pv);
        }
        last_state = state.to_owned();
    })
    .await;
    pb.finish_and_clear();
    let out = out?;
    report(json, &out.state, out.error.as_deref());
    Ok(if out.error.is_some() {
        exit::JOB_FAILED
    } else {
        exit::OK
    })
}

async fn fresh_string(p: &ManagerProxy<'_>, name: &str) -> Result<String, CtlError> {
    let props = zbus::fdo::PropertiesProxy::builder(p.inner().connection())
        .destination(p.inner().destination().to_owned())?
        .path(p.inner().path().to_owned())?
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    let iface = zbus::names::InterfaceName::from_static_str_unchecked(crate::dbus::INTERFACE);
    let v = props.get(iface, name).await.map_err(zbus::Error::from)?;
    String::try_from(v).map_err(|e| CtlError::new(exit::FAILED, format!("property {name}: {e}")))
}

fn report(json: bool, state: &str, error: Option<&str>) {
    if json {
        println!(
            "{}",
            serde_json::json!({ "result": { "state": state, "error": error } })
        );
    } else {
        match error {
            Some(e) => println!("{state}: {e}"),
            None => println!("{state}"),
        }
    }
}
