//! The progress bar: drawn on stderr only when stderr is a terminal (and
//! not with `-q`), never otherwise, so logs and pipes stay clean.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Counts;
use crate::model::Outcome;

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

#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar when stderr is a terminal and `enabled`, else a no-op.
    pub fn new(enabled: bool, total: Option<u64>) -> Progress {
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr_with_hz(4));
        bar.set_style(style(total.is_some()));
        bar.enable_steady_tick(Duration::from_millis(250));
        Progress { bar: Some(bar) }
    }

    /// Sets the bar's total from how far into the file `records` are:
    /// `records * size / bytes` (no second pass over the input). Rounds
    /// up to at least `records`; ignored without a size.
    pub fn estimate_total(&self, records: u64, bytes: u64, size: Option<u64>) {
        let (Some(b), Some(size)) = (&self.bar, size) else {
            return;
        };
        if bytes == 0 || records == 0 {
            return;
        }
        let est = (records as u128 * size as u128 / bytes as u128) as u64;
        if b.length() != Some(est.max(records)) {
            self.set_total(est.max(records));
        }
    }

    pub fn set_total(&self, total: u64) {
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_style(style(true));
        }
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub fn set_position(&self, n: u64) {
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

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
