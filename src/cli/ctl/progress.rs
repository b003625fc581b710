//! The progress bar of `install` and `watch`, and the summary line that ends them.
//!
//! What the bar promises: it fits the terminal (the layout is picked from the width of
//! standard error's terminal at every update, so a resized window is followed too); it
//! starts empty (indicatif draws a bar of unknown length as full, so without a known
//! total only a spinner is shown); and it keeps one label per phase (the daemon's phase
//! names map to a few fixed-width words, and a label once left is never shown again in
//! the same bar, so coalesced or late updates cannot make it flap). Hidden when stderr is
//! not a terminal or `--json` was given.

use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::dbus::types::{JobView, ProgressView};

/// Width of the label column: the longest label.
const LABEL: usize = 8;

/// The label shown for a phase the daemon reports.
pub fn label(phase: &str) -> &'static str {
    match phase {
        "checking" => "checking",
        // One label for the whole staging: its threads report `write` and `readback`
        // in turns, which as two labels would flap.
        "resume" | "write" | "readback" | "verify" | "done" => "staging",
        "static delta" | "dynamic delta" => "delta",
        "health checks" | "health" => "health",
        _ => "working",
    }
}

/// Which layout fits `width` columns (`known`: the total is known, so a bar can be drawn).
fn template(width: u16, known: bool) -> String {
    let l = LABEL;
    match (known, width) {
        (false, w) if w >= 40 => format!("{{spinner}} {{msg:{l}!}} {{bytes}}"),
        (false, w) if w >= 12 => format!("{{spinner}} {{msg:{l}!}}"),
        (false, _) => "{spinner}".into(),
        (true, w) if w >= 80 => format!(
            "{{spinner}} {{msg:{l}!}} [{{wide_bar}}] {{bytes:>10}}/{{total_bytes:10}} {{bytes_per_sec:>12}} eta {{eta:>3}}"
        ),
        (true, w) if w >= 50 => {
            format!("{{spinner}} {{msg:{l}!}} [{{wide_bar}}] {{bytes:>10}}/{{total_bytes:10}}")
        }
        (true, w) if w >= 24 => format!("{{msg:{l}!}} [{{wide_bar}}] {{percent:>3}}%"),
        (true, _) => "{percent:>3}%".into(),
    }
}

/// Columns of standard error's terminal, when it is one.
fn term_width() -> Option<u16> {
    console::Term::stderr().size_checked().map(|(_, cols)| cols)
}

pub struct Bar {
    pb: ProgressBar,
    /// (width, known total) of the layout in use.
    layout: Option<(u16, bool)>,
    label: Option<&'static str>,
    left: Vec<&'static str>,
    started: Option<Instant>,
    /// (total, position) drawn: the position only grows within one label and total.
    shown: (u64, u64),
}

impl Bar {
    /// A bar on stderr, or a hidden one (`--json`).
    pub fn new(hidden: bool) -> Self {
        let pb = if hidden {
            ProgressBar::hidden()
        } else {
            // Hidden by indicatif itself when stderr is not a terminal.
            ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr())
        };
        let mut bar = Self {
            pb,
            layout: None,
            label: None,
            left: Vec::new(),
            started: None,
            shown: (0, 0),
        };
        // Before anything can draw: indicatif's default style is a bar.
        bar.relayout(false);
        bar
    }

    /// How long the bar has been following a job.
    pub fn elapsed(&self) -> Option<Duration> {
        self.started.map(|s| s.elapsed())
    }

    pub fn update(&mut self, p: &ProgressView) {
        self.started.get_or_insert_with(Instant::now);
        let new = label(&p.phase);
        let keep = match self.label {
            // Never back to a label already left: that is the flapping.
            Some(cur) if cur != new && self.left.contains(&new) => cur,
            Some(cur) if cur != new => {
                self.left.push(cur);
                new
            }
            _ => new,
        };
        let known = p.total > 0;
        let done = if self.label == Some(keep) && self.shown.0 == p.total {
            p.done.max(self.shown.1)
        } else {
            p.done
        };
        let new_bar = known && (self.label != Some(keep) || self.shown.0 != p.total);
        self.shown = (p.total, done);
        // Length and position first, then the layout: no frame of a full bar.
        if known {
            self.pb.set_length(p.total);
        }
        if new_bar {
            // A bar starts empty, also when the first report already counts bytes.
            self.pb.set_position(0);
            self.relayout(known);
            if self.label != Some(keep) {
                self.pb.set_message(keep);
            }
            self.pb.tick();
        }
        self.pb.set_position(done.min(p.total.max(done)));
        self.relayout(known);
        if self.label != Some(keep) {
            self.label = Some(keep);
            self.pb.set_message(keep);
        }
        self.pb.tick();
    }

    fn relayout(&mut self, known: bool) {
        let width = term_width().unwrap_or(80);
        if self.layout == Some((width, known)) {
            return;
        }
        self.layout = Some((width, known));
        let style = ProgressStyle::with_template(&template(width, known))
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .progress_chars("=> ");
        self.pb.set_style(style);
    }

    /// Remove the bar (the summary line takes its place).
    pub fn finish(&self) {
        self.pb.finish_and_clear();
    }
}

/// `full, 123 bytes fetched, 45 bytes reused` (the status's `last_stage`) as numbers.
fn stage_bytes(last_stage: &str) -> Option<(u64, u64)> {
    let mut fetched = None;
    let mut reused = None;
    for part in last_stage.split(',') {
        let part = part.trim();
        if let Some(n) = part.strip_suffix(" bytes fetched") {
            fetched = n.parse().ok();
        } else if let Some(n) = part.strip_suffix(" bytes reused") {
            reused = n.parse().ok();
        }
    }
    Some((fetched?, reused?))
}

fn job_time(job: &JobView, fallback: Option<Duration>) -> Option<Duration> {
    match (job.started, job.finished) {
        (Some(s), Some(f)) => Duration::try_from(f.duration_since(s)).ok(),
        _ => fallback,
    }
}

fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        let s = d.as_secs();
        format!("{} min {} s", s / 60, s % 60)
    }
}

/// What the daemon will do next, from the status document: its own `next` line when it
/// has one, else said from the state.
pub fn next_step(status: &Value) -> String {
    if let Some(n) = status["next"].as_str().filter(|n| !n.is_empty()) {
        return n.to_owned();
    }
    let staged = status["staged_version"].as_str().unwrap_or("the release");
    let window = status["next_window"]
        .as_str()
        .and_then(|w| w.parse::<jiff::Timestamp>().ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string());
    match status["state"].as_str().unwrap_or("") {
        "staged" => match window {
            Some(w) => format!(
                "{staged} switches and reboots in the maintenance window from {w} (`patchctl switch --force` to do it now)"
            ),
            None => format!("{staged} waits for `patchctl switch`"),
        },
        "switching" => "rebooting into the new release".into(),
        "verifying" => "health checks decide whether the new release is kept".into(),
        "update_available" => {
            "staging starts when policy allows it (`patchctl install` to stage now)".into()
        }
        "staging" => "staging continues (`patchctl watch` follows it)".into(),
        "committed" => "nothing: the release is committed".into(),
        "idle" => "nothing to install; the next check looks again".into(),
        "rolled_back" | "failed" => {
            "nothing until an admin looks (`patchctl status`, `patchctl history`)".into()
        }
        other => format!("state {other}"),
    }
}

/// `text` broken at spaces into lines of at most `width` columns (a word longer than that
/// stays whole).
pub fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split(' ') {
        let w = word.chars().count();
        if line > 0 && line + 1 + w > width {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += w;
    }
    out
}

/// [`summary`] as printed: wrapped to the width of stdout when it is a terminal.
pub fn summary_lines(status: &Value, job: Option<&JobView>, elapsed: Option<Duration>) -> String {
    let s = summary(status, job, elapsed);
    match console::Term::stdout().size_checked() {
        Some((_, cols)) if cols > 0 => wrap(&s, usize::from(cols)),
        _ => s,
    }
}

/// The line that ends `install` and `watch`: bytes fetched and reused (after a staging),
/// how long the job took, and what happens next.
pub fn summary(status: &Value, job: Option<&JobView>, elapsed: Option<Duration>) -> String {
    let mut parts = Vec::new();
    let staged_ok = job.is_some_and(|j| j.kind == "staging" && j.outcome == "succeeded");
    if staged_ok {
        if let Some((f, r)) = status["last_stage"].as_str().and_then(stage_bytes) {
            parts.push(format!(
                "fetched {}, reused {}",
                HumanBytes(f),
                HumanBytes(r)
            ));
        }
    }
    if let Some(t) = job.and_then(|j| job_time(j, elapsed)).or(elapsed) {
        parts.push(format!("took {}", seconds(t)));
    }
    let head = if parts.is_empty() {
        String::new()
    } else {
        let mut h = parts.join(", ");
        if let Some(c) = h.get_mut(0..1) {
            c.make_ascii_uppercase();
        }
        format!("{h}. ")
    };
    format!("{head}Next: {}.", next_step(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layout_fits_its_width() {
        // The fixed parts at their widest; the bar takes what is left.
        for known in [false, true] {
            for w in [8u16, 12, 20, 24, 30, 40, 50, 60, 79, 80, 120] {
                let t = template(w, known);
                let fixed = t
                    .replace("{spinner}", "x")
                    .replace(&format!("{{msg:{LABEL}!}}"), &"m".repeat(LABEL))
                    .replace("{bytes:>10}", &"b".repeat(10))
                    .replace("{total_bytes:10}", &"t".repeat(10))
                    .replace("{bytes}", &"b".repeat(10))
                    .replace("{bytes_per_sec:>12}", &"r".repeat(12))
                    .replace("{eta:>3}", "eta")
                    .replace("{percent:>3}", "100")
                    .replace("{wide_bar}", "");
                assert!(
                    fixed.len() <= w as usize || w < 12,
                    "{w} {known}: {t} -> {}",
                    fixed.len()
                );
            }
        }
    }

    #[test]
    fn labels_do_not_flap() {
        let mut b = Bar::new(true);
        let pv = |phase: &str| ProgressView {
            phase: phase.into(),
            done: 1,
            total: 10,
            rate: 0.0,
        };
        b.update(&pv("checking"));
        b.update(&pv("write"));
        assert_eq!(b.label, Some("staging"));
        b.update(&pv("readback"));
        assert_eq!(b.label, Some("staging"), "one label for the staging");
        b.update(&pv("checking"));
        assert_eq!(b.label, Some("staging"), "not back to checking");
        b.update(&pv("health checks"));
        assert_eq!(b.label, Some("health"));
    }

    #[test]
    fn wrapping_keeps_words_whole() {
        assert_eq!(wrap("aa bb cc dd", 5), "aa bb\ncc dd");
        assert_eq!(wrap("aaaaaaa b", 3), "aaaaaaa\nb");
        for l in wrap(&"word ".repeat(40), 60).lines() {
            assert!(l.len() <= 60);
        }
    }

    #[test]
    fn the_summary_says_bytes_time_and_next() {
        let status = serde_json::json!({
            "state": "staged", "staged_version": "2.0.0",
            "next_window": "2026-12-12T02:00:00Z",
            "last_stage": "dynamic_delta, 1048576 bytes fetched, 3145728 bytes reused",
        });
        let job = JobView {
            id: 3,
            kind: "staging".into(),
            outcome: "succeeded".into(),
            started: Some("2026-12-06T10:00:00Z".parse().unwrap()),
            finished: Some("2026-12-06T10:00:04.5Z".parse().unwrap()),
            ..JobView::default()
        };
        let s = summary(&status, Some(&job), None);
        assert_eq!(
            s,
            "Fetched 1.00 MiB, reused 3.00 MiB, took 4.5 s. Next: 2.0.0 switches and reboots in the maintenance window from 2026-12-12 02:00 UTC (`patchctl switch --force` to do it now)."
        );
    }
}
