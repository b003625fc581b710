//! The per-release outcomes of a fleet, asked from a Prometheus server's HTTP query API
//! (`GET /api/v1/query`): the sum of `patchd_release_outcome` by stage and outcome.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Devices per outcome (one stage, or all of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// On trial: switched, not yet committed.
    pub switched: u64,
    pub committed: u64,
    pub rolled_back: u64,
    pub failed: u64,
}

impl Counts {
    /// Devices that entered the release (every outcome).
    pub fn entered(&self) -> u64 {
        self.switched + self.committed + self.rolled_back + self.failed
    }
    /// Rolled back or failed.
    pub fn bad(&self) -> u64 {
        self.rolled_back + self.failed
    }
    fn add(&mut self, o: &Counts) {
        self.switched += o.switched;
        self.committed += o.committed;
        self.rolled_back += o.rolled_back;
        self.failed += o.failed;
    }
}

/// A release's outcomes by the `stage` label (`"0"`, `"1"`, …, `"unknown"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcomes {
    pub by_stage: BTreeMap<String, Counts>,
}

impl Outcomes {
    pub fn total(&self) -> Counts {
        let mut t = Counts::default();
        for c in self.by_stage.values() {
            t.add(c);
        }
        t
    }
    pub fn stage(&self, i: usize) -> Counts {
        self.by_stage
            .get(&i.to_string())
            .copied()
            .unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("Prometheus URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    /// The request failed; `why` is the whole cause chain (reqwest's own message
    /// leaves out the part that says what happened, e.g. "connection refused").
    #[error("Prometheus at {url}: {why}")]
    Http { url: String, why: String },
    #[error("Prometheus at {url} answered HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("Prometheus at {url}: {why}")]
    Answer { url: String, why: String },
}

/// The PromQL the guard asks: devices per stage and outcome for one release.
pub fn outcome_query(product: &str, version: &str, channel: Option<&str>) -> String {
    let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let channel = channel
        .map(|c| format!(",channel=\"{}\"", q(c)))
        .unwrap_or_default();
    format!(
        "sum by (stage, outcome) (patchd_release_outcome{{product=\"{}\",release=\"{}\"{channel}}})",
        q(product),
        q(version)
    )
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Sample>,
}

#[derive(Deserialize)]
struct Sample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// Parse an instant-vector answer of [`outcome_query`].
pub fn parse_answer(url: &str, body: &[u8]) -> Result<Outcomes, QueryError> {
    let bad = |why: String| QueryError::Answer {
        url: url.to_string(),
        why,
    };
    let a: Answer =
        serde_json::from_slice(body).map_err(|e| bad(format!("not a query API answer: {e}")))?;
    if a.status != "success" {
        return Err(bad(format!(
            "query failed: {}",
            a.error.unwrap_or_else(|| a.status.clone())
        )));
    }
    let data = a.data.ok_or_else(|| bad("answer without data".into()))?;
    if data.result_type != "vector" {
        return Err(bad(format!("expected a vector, got {}", data.result_type)));
    }
    let mut out = Outcomes::default();
    for s in data.result {
        let stage = s
            .metric
            .get("stage")
            .cloned()
            .unwrap_or_else(|| "unknown".into());
        let v: f64 = s
            .value
            .1
            .parse()
            .map_err(|_| bad(format!("sample value {:?} is not a number", s.value.1)))?;
        if !v.is_finite() || v < 0.0 {
            return Err(bad(format!("sample value {v} is not a device count")));
        }
        let n = v.round() as u64;
        let c = out.by_stage.entry(stage).or_default();
        match s.metric.get("outcome").map(String::as_str) {
            Some("switched") => c.switched += n,
            Some("committed") => c.committed += n,
            Some("rolled_back") => c.rolled_back += n,
            Some("failed") => c.failed += n,
            other => return Err(bad(format!("unknown outcome label {other:?}"))),
        }
    }
    Ok(out)
}

/// Ask `base` (e.g. `http://prometheus:9090`) for the outcomes of one release.
pub async fn query(base: &str, promql: &str, timeout: Duration) -> Result<Outcomes, QueryError> {
    let mut url = reqwest::Url::parse(base).map_err(|e| QueryError::BadUrl {
        url: base.to_string(),
        why: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(QueryError::BadUrl {
            url: base.to_string(),
            why: "only http and https".into(),
        });
    }
    let path = format!("{}/api/v1/query", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.query_pairs_mut().clear().append_pair("query", promql);
    let shown = base.to_string();
    let http = |e: reqwest::Error| {
        // The base URL is in the message already; the query string would only bury it.
        let e = e.without_url();
        let mut why = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            why = format!("{why}: {c}");
            cause = c.source();
        }
        QueryError::Http {
            url: shown.clone(),
            why,
        }
    };
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(http)?;
    let resp = client.get(url).send().await.map_err(http)?;
    let status = resp.status();
    // A query answer for one release is small; a larger body is not one.
    let body = resp.bytes().await.map_err(http)?;
    if body.len() > 1 << 20 {
        return Err(QueryError::Answer {
            url: shown,
            why: format!("answer of {} bytes is too large", body.len()),
        });
    }
    // Prometheus answers a bad query with 400 and a JSON error: show that.
    if !status.is_success() && serde_json::from_slice::<Answer>(&body).is_err() {
        return Err(QueryError::Status {
            url: shown,
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).chars().take(200).collect(),
        });
    }
    parse_answer(&shown, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_answer_by_stage_and_outcome() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"stage":"0","outcome":"committed"},"value":[1.5,"17"]},
            {"metric":{"stage":"0","outcome":"rolled_back"},"value":[1.5,"3"]},
            {"metric":{"stage":"1","outcome":"switched"},"value":[1.5,"2"]},
            {"metric":{"outcome":"failed"},"value":[1.5,"1"]}]}}"#;
        let o = parse_answer("u", body).unwrap();
        assert_eq!(o.stage(0).committed, 17);
        assert_eq!(o.stage(0).bad(), 3);
        assert_eq!(o.stage(1).switched, 2);
        assert_eq!(o.by_stage["unknown"].failed, 1);
        assert_eq!(o.total().entered(), 23);
        assert_eq!(o.total().bad(), 4);
    }

    #[test]
    fn refuses_errors_and_odd_answers() {
        for body in [
            &br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#[..],
            br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"outcome":"odd"},"value":[1,"1"]}]}}"#,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"outcome":"failed"},"value":[1,"NaN"]}]}}"#,
            b"<html>",
        ] {
            assert!(parse_answer("u", body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn query_names_the_release_and_escapes_labels() {
        assert_eq!(
            outcome_query("gw", "2.0.0", Some("st\"able")),
            "sum by (stage, outcome) (patchd_release_outcome{product=\"gw\",release=\"2.0.0\",channel=\"st\\\"able\"})"
        );
    }
}
