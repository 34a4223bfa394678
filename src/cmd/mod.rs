//! One module per command, each holding its arguments, its help text and
//! its wiring (xsv's shape); the stages and the run pipeline
//! (`crate::pipeline`) hold the logic.

pub mod check;
pub mod demo;
pub mod ledger;
pub mod mock;
pub mod report;
pub mod resume;
pub mod run;
pub mod status;
pub mod validate;
pub mod verify;

use std::path::PathBuf;

use clap::Args;

pub use crate::input::parse_delimiter;
use crate::input::Mapping;

/// Settings every command gets from the global flags.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub quiet: bool,
    /// `--progress-interval`: a progress line this often off a terminal.
    pub progress_interval: std::time::Duration,
}

/// The async runtime of the emulator: one worker per core, as a server
/// wants.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
}

/// The async runtime of a run (and the demo): one thread for every
/// request, beside the feed and journal threads. Measured against a
/// multi-threaded runtime on 2 cores, it halves the CPU per row (no
/// wake-ups between runtime workers; docs/performance.md), and one thread
/// drives far more requests than Banxa's limit allows.
pub fn pipeline_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
}

/// The human summary on stderr; with `--json` also the JSON object on stdout.
pub fn print_summary(summary: &crate::output::Summary, json: bool) {
    eprint!("{}", summary.render());
    if json {
        match serde_json::to_string(summary) {
            Ok(s) => println!("{s}"),
            Err(e) => tracing::error!("cannot serialise the summary: {e}"),
        }
    }
}

/// Flags shared by the commands that read an export.
#[derive(Debug, Args)]
pub struct InputArgs {
    /// The export: a CSV file, a .gz of one (read decompressed), or - for standard input.
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,
    /// Read FIELD from COLUMN (repeatable). FIELD is one of identityReference,
    /// email, mobileNumber, vendor, token (and applicantId with --mint).
    /// Example: --map identityReference=customer_id --map "email=E-mail".
    #[arg(long = "map", value_name = "FIELD=COLUMN")]
    pub maps: Vec<Mapping>,
    /// The field separator: one character, or `tab`.
    #[arg(long, value_name = "C", default_value = ",", value_parser = parse_delimiter)]
    pub delimiter: u8,
    /// Where to write the per-record results (default: beside the input,
    /// export.csv -> export.results.csv; required when INPUT is -).
    #[arg(long, value_name = "FILE")]
    pub results: Option<PathBuf>,
    /// Also print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Replace an existing results file instead of refusing.
    #[arg(long)]
    pub force: bool,
}

/// How fast and how hard to send: the flags `run` and `verify` share
/// (`resume` overrides the same ones).
#[derive(Debug, Args)]
pub struct PacingArgs {
    /// Most requests per second or minute, never exceeded over any window.
    /// Default 450/min (Banxa allows 500/min per IP, all endpoints
    /// together), 100/min on Banxa's sandbox (120/min per merchant there);
    /// `verify`: the run's. A rate above the published limit is allowed
    /// (limits can be negotiated) but warned about.
    #[arg(long, value_name = "N/min|N/s")]
    pub rate: Option<crate::dispatch::limiter::Rate>,
    /// Requests in flight at once: `auto` holds enough to keep the rate at
    /// the latency observed, or a fixed number.
    #[arg(long, default_value = "auto", value_name = "N|auto")]
    pub concurrency: crate::dispatch::concurrency::Concurrency,
    /// Attempts per row for retryable answers (429, 5xx, 408, timeouts,
    /// connection errors) before the row is `failed`.
    #[arg(long, default_value_t = crate::pipeline::plan::DEFAULT_MAX_ATTEMPTS, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = crate::pipeline::plan::DEFAULT_TIMEOUT_SECS, value_name = "SECONDS", value_parser = parse_timeout)]
    pub timeout: f64,
    /// How long to wait for Banxa when nothing succeeds (an outage:
    /// sending pauses and one probe at a time asks whether Banxa is back)
    /// before stopping with exit 3 (resumable). E.g. 15m, 2h.
    #[arg(long, default_value = "15m", value_name = "DURATION", value_parser = parse_duration)]
    pub max_outage: std::time::Duration,
}

/// `--max-outage`: a duration of at least a second.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("`{s}`: {e} (expected e.g. 15m, 90s, 2h)"))?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("`{s}`: at least 1s"));
    }
    Ok(d)
}

pub fn parse_timeout(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(t) if t > 0.0 && t <= 3600.0 => Ok(t),
        _ => Err(format!("`{s}`: expected seconds, above 0 and at most 3600")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters() {
        assert_eq!(parse_delimiter(";").unwrap(), b';');
        assert_eq!(parse_delimiter("tab").unwrap(), b'\t');
        assert!(parse_delimiter("ab").is_err());
        assert!(parse_delimiter("\"").is_err());
    }
}
