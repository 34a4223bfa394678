//! Progress, for people and for machines (SPEC "Outputs"):
//!
//! - on a terminal, a bar on stderr (records done, rate, ETA, tallies);
//! - off a terminal (systemd, a Kubernetes Job, `2> file`), one log line
//!   every `--progress-interval` (default 60 s): records done and the
//!   total when known, counts by outcome, the rate over the interval and
//!   the ETA, as text or, with `--log-format json`, as a JSON object;
//! - with `-q`, neither.
//!
//! The lines are logged at info under the target `kycshare::progress`,
//! which the logger lets through at the default verbosity (see
//! `crate::logging`). The total of a file read once is an estimate from
//! how far into the file the reader is (no second pass); it is marked `~`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Counts;
use crate::model::Outcome;

/// `--progress-interval` by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Records done of total, rate, ETA, and the message (outcome tallies).
fn style(with_total: bool) -> ProgressStyle {
    let template = if with_total {
        "{spinner} {elapsed_precise} [{bar:30}] {human_pos}/{human_len} {rate} ETA {eta} {msg}"
    } else {
        "{spinner} {elapsed_precise} {human_pos} records {rate} {msg}"
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", s.per_sec());
            },
        )
        .progress_chars("=> ")
}

/// Where the run is, shared by the bar, the lines and the status.
#[derive(Debug, Default)]
struct Position {
    done: AtomicU64,
    /// 0: unknown.
    total: AtomicU64,
    /// The total is an estimate (from the bytes read so far).
    estimated: AtomicBool,
}

/// The line logger's thread and how to stop it.
struct Lines {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    pos: Arc<Position>,
    lines: Option<Arc<Lines>>,
}

impl Progress {
    /// A bar when stderr is a terminal and `enabled`, else a no-op (see
    /// [`Progress::with_lines`] for the lines off a terminal).
    pub fn new(enabled: bool, total: Option<u64>) -> Progress {
        let pos = Arc::new(Position::default());
        if let Some(t) = total {
            pos.total.store(t, Ordering::Relaxed);
        }
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress {
                bar: None,
                pos,
                lines: None,
            };
        }
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr_with_hz(4));
        bar.set_style(style(total.is_some()));
        bar.enable_steady_tick(Duration::from_millis(250));
        crate::logging::set_bar(Some(bar.clone()));
        Progress {
            bar: Some(bar),
            pos,
            lines: None,
        }
    }

    /// Off a terminal (no bar) and `enabled`: a progress line every
    /// `interval` until [`Progress::finish`]. `what`: "sent" or "checked".
    pub fn with_lines(
        self,
        enabled: bool,
        interval: Duration,
        counts: Arc<Counts>,
        what: &'static str,
    ) -> Progress {
        self.lines_of(enabled, interval, Tally::Outcomes(counts), what)
    }

    /// [`with_lines`](Progress::with_lines) for `verify`: counts by
    /// `kycStatus`.
    pub fn with_status_lines(
        self,
        enabled: bool,
        interval: Duration,
        counts: Arc<super::verification::StatusCounts>,
    ) -> Progress {
        self.lines_of(enabled, interval, Tally::Statuses(counts), "checked")
    }

    fn lines_of(
        mut self,
        enabled: bool,
        interval: Duration,
        counts: Tally,
        what: &'static str,
    ) -> Progress {
        if !enabled || self.bar.is_some() || interval.is_zero() {
            return self;
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let pos = self.pos.clone();
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("progress".into())
                .spawn(move || line_loop(&pos, &counts, interval, &stop, what))
                .ok()
        };
        self.lines = Some(Arc::new(Lines {
            stop,
            thread: Mutex::new(thread),
        }));
        self
    }

    /// Sets the total from how far into the file `records` are:
    /// `records * size / bytes` (no second pass over the input). Rounds
    /// up to at least `records`; ignored without a size.
    pub fn estimate_total(&self, records: u64, bytes: u64, size: Option<u64>) {
        let Some(size) = size else {
            return;
        };
        if bytes == 0 || records == 0 {
            return;
        }
        let est = ((records as u128 * size as u128 / bytes as u128) as u64).max(records);
        let done = self.pos.done.load(Ordering::Relaxed);
        // Records already in the results file (a resume) are in `done`
        // and in `records` alike.
        let est = est.max(done);
        self.pos.estimated.store(bytes < size, Ordering::Relaxed);
        if self.pos.total.swap(est, Ordering::Relaxed) != est {
            if let Some(b) = &self.bar {
                b.set_length(est);
                b.set_style(style(true));
            }
        }
    }

    pub fn set_total(&self, total: u64) {
        self.pos.total.store(total, Ordering::Relaxed);
        self.pos.estimated.store(false, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_style(style(true));
        }
    }

    pub fn inc(&self, n: u64) {
        self.pos.done.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub fn set_position(&self, n: u64) {
        self.pos.done.store(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_position(n);
        }
    }

    /// Shows the accepted/failed tallies beside the bar.
    pub fn show_counts(&self, counts: &Arc<Counts>) {
        if let Some(b) = &self.bar {
            b.set_message(format!(
                "accepted {} failed {} rejected {} invalid {}",
                counts.get(Outcome::Accepted),
                counts.get(Outcome::Failed),
                counts.get(Outcome::Rejected),
                counts.get(Outcome::Invalid),
            ));
        }
    }

    /// Runs `f` with the bar hidden (for printing lines above it).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    /// Clears the bar and stops the lines (the summary follows).
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
            crate::logging::set_bar(None);
        }
        if let Some(l) = &self.lines {
            let (m, cv) = &*l.stop;
            *m.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cv.notify_all();
            let t = l.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(t) = t {
                let _ = t.join();
            }
        }
    }
}

/// What a progress line counts.
enum Tally {
    Outcomes(Arc<Counts>),
    Statuses(Arc<super::verification::StatusCounts>),
}

fn line_loop(
    pos: &Position,
    counts: &Tally,
    interval: Duration,
    stop: &(Mutex<bool>, Condvar),
    what: &'static str,
) {
    let (m, cv) = stop;
    let mut last = (Instant::now(), pos.done.load(Ordering::Relaxed));
    let mut stopped = m.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let deadline = Instant::now() + interval;
        while !*stopped {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            stopped = cv
                .wait_timeout(stopped, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if *stopped {
            return;
        }
        let now = Instant::now();
        let done = pos.done.load(Ordering::Relaxed);
        let total = pos.total.load(Ordering::Relaxed);
        let line = ProgressLine {
            done,
            total: (total > 0).then_some(total),
            estimated: pos.estimated.load(Ordering::Relaxed),
            per_second: done.saturating_sub(last.1) as f64
                / now.duration_since(last.0).as_secs_f64().max(1e-9),
            over: now.duration_since(last.0),
        };
        last = (now, done);
        log_line(&line, counts, what);
    }
}

/// One progress report.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressLine {
    pub done: u64,
    pub total: Option<u64>,
    pub estimated: bool,
    /// Records per second over the interval.
    pub per_second: f64,
    pub over: Duration,
}

impl ProgressLine {
    /// Time left at the interval's rate; `None` when unknown.
    pub fn eta(&self) -> Option<Duration> {
        let total = self.total?;
        if self.per_second <= 0.0 {
            return None;
        }
        let left = total.saturating_sub(self.done) as f64;
        Some(Duration::from_secs((left / self.per_second).ceil() as u64))
    }

    /// `12,345 of ~1,000,000 (1.2%)` or `12,345` when the total is unknown.
    pub fn done_text(&self) -> String {
        match self.total {
            Some(t) => format!(
                "{} of {}{} ({:.1}%)",
                thousands(self.done),
                if self.estimated { "~" } else { "" },
                thousands(t),
                self.done as f64 * 100.0 / t.max(1) as f64
            ),
            None => thousands(self.done),
        }
    }
}

fn log_line(line: &ProgressLine, tally: &Tally, what: &str) {
    let eta = line.eta();
    let eta_text = match eta {
        Some(d) => humantime::format_duration(d).to_string(),
        None => "unknown".into(),
    };
    let by: Vec<String> = match tally {
        Tally::Outcomes(counts) => Outcome::ALL
            .iter()
            .filter(|o| counts.get(**o) > 0)
            .map(|o| format!("{} {}", o.as_str(), thousands(counts.get(*o))))
            .collect(),
        Tally::Statuses(s) => s
            .snapshot()
            .iter()
            .map(|(k, n)| format!("{k} {}", thousands(*n)))
            .collect(),
    };
    let text = format!(
        "progress: {} records {what}; {}; {:.1}/s over the last {}; ETA {eta_text}",
        line.done_text(),
        if by.is_empty() {
            "nothing yet".to_string()
        } else {
            by.join(", ")
        },
        line.per_second,
        humantime::format_duration(Duration::from_millis(line.over.as_millis().max(1) as u64)),
    );
    if !crate::logging::is_json() {
        tracing::info!(target: "kycshare::progress", "{text}");
        return;
    }
    let counts = match tally {
        Tally::Outcomes(c) => c,
        Tally::Statuses(s) => {
            let statuses = serde_json::to_string(&s.snapshot()).unwrap_or_default();
            tracing::info!(
                target: "kycshare::progress",
                done = line.done,
                total = line.total,
                statuses = %statuses,
                records_per_second = (line.per_second * 100.0).round() / 100.0,
                interval_seconds = line.over.as_secs(),
                eta_seconds = eta.map(|d| d.as_secs()),
                "{text}"
            );
            return;
        }
    };
    tracing::info!(
        target: "kycshare::progress",
        done = line.done,
        total = line.total,
        total_estimated = line.estimated,
        accepted = counts.get(Outcome::Accepted),
        rejected = counts.get(Outcome::Rejected),
        failed = counts.get(Outcome::Failed),
        invalid = counts.get(Outcome::Invalid),
        duplicate = counts.get(Outcome::Duplicate),
        skipped = counts.get(Outcome::Skipped),
        validated = counts.get(Outcome::Validated),
        records_per_second = (line.per_second * 100.0).round() / 100.0,
        interval_seconds = line.over.as_secs(),
        eta_seconds = eta.map(|d| d.as_secs()),
        "{text}"
    );
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_and_text() {
        let l = ProgressLine {
            done: 1_000,
            total: Some(10_000),
            estimated: true,
            per_second: 10.0,
            over: Duration::from_secs(60),
        };
        assert_eq!(l.eta(), Some(Duration::from_secs(900)));
        assert_eq!(l.done_text(), "1,000 of ~10,000 (10.0%)");
        let none = ProgressLine {
            total: None,
            ..l.clone()
        };
        assert_eq!(none.eta(), None);
        assert_eq!(none.done_text(), "1,000");
        let stalled = ProgressLine {
            per_second: 0.0,
            ..l
        };
        assert_eq!(stalled.eta(), None);
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
