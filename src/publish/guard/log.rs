//! The guard's decision log: one JSON object per line and run, appended and fsynced, so
//! what the guard did and the numbers it did it on survive the machine that ran it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use semver::Version;
use serde::{Deserialize, Serialize};

use super::prometheus::Counts;
use super::{GuardSettings, Thresholds};
use crate::manifest::RolloutGate;

/// One run of the guard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub time: Timestamp,
    /// `PRODUCT/VERSION`.
    pub release: String,
    /// `renewed`, `opened_stage_N`, `paused`, `already_paused`, `could_not_query`,
    /// `withdrawn`, `healthy_unguarded`.
    pub decision: String,
    pub reason: String,
    pub prometheus: String,
    pub query: String,
    /// Devices by outcome over every stage, and by stage (absent when not queried).
    pub counts: Option<Counts>,
    pub by_stage: Option<BTreeMap<String, Counts>>,
    pub thresholds: ThresholdsLogged,
    pub min_committed: u64,
    pub gate_ttl_secs: i64,
    pub paused_before: bool,
    pub gate_before: Option<RolloutGate>,
    pub gate_after: Option<RolloutGate>,
    /// What went wrong (the query, or publishing the decision).
    pub error: Option<String>,
}

/// [`Thresholds`] as logged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdsLogged {
    pub min_reported: u64,
    pub max_bad_ratio: Option<f64>,
    pub max_bad: Option<u64>,
}

impl From<Thresholds> for ThresholdsLogged {
    fn from(t: Thresholds) -> Self {
        Self {
            min_reported: t.min_reported,
            max_bad_ratio: t.max_bad_ratio,
            max_bad: t.max_bad,
        }
    }
}

impl DecisionRecord {
    pub(super) fn new(
        now: Timestamp,
        product: &str,
        version: &Version,
        prometheus: &str,
        query: &str,
        s: &GuardSettings,
    ) -> Self {
        Self {
            time: now,
            release: format!("{product}/{version}"),
            decision: String::new(),
            reason: String::new(),
            prometheus: prometheus.to_string(),
            query: query.to_string(),
            counts: None,
            by_stage: None,
            thresholds: s.thresholds.into(),
            min_committed: s.min_committed,
            gate_ttl_secs: s.gate_ttl.as_secs(),
            paused_before: false,
            gate_before: None,
            gate_after: None,
            error: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("decision log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("decision log {path}: cannot encode the record: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Append `rec` as one line and fsync (the directory too when the file is new).
pub fn append(path: &Path, rec: &DecisionRecord) -> Result<(), LogError> {
    let mut line = serde_json::to_vec(rec).map_err(|source| LogError::Encode {
        path: path.to_owned(),
        source,
    })?;
    line.push(b'\n');
    crate::fsutil::append_sync(path, &line).map_err(|source| LogError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Every record of the log at `path`, oldest first (for `rollout status` and tests).
pub fn read(path: &Path) -> Result<Vec<DecisionRecord>, LogError> {
    let text = std::fs::read_to_string(path).map_err(|source| LogError::Io {
        path: path.to_owned(),
        source,
    })?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|source| LogError::Encode {
                path: path.to_owned(),
                source,
            })
        })
        .collect()
}
