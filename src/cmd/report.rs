//! `kycshare report RESULTS... [-o FILE] [--json]`: one self-contained
//! HTML page of a finished (or stopped) run and its retry runs, from their
//! results and events files; `--json` prints the same figures.
//!
//! Not for: a run still going (use `status`; a report of one shows the rows
//! so far) or the figures themselves (`crate::report`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::output::progress::thousands;
use crate::report::{default_output, figures, html, write_private};

pub const REPORT_ABOUT: &str = "\
One self-contained HTML page of a run and its retry runs, from their
results files (and the events files beside them): counts per file and the
final state, outcomes over time, the achieved rate against the configured
one, latency percentiles over time and their distribution, attempts, the top
reasons with the fields Banxa refused (422), the breaker's pauses, and the
records not accepted (the first 1000). Inline CSS and SVG: no script,
nothing from the network, opens offline. It holds identityReferences and no
email, mobile number, token or secret; it is written mode 0600.

Give the run's results file first, then those of its retry runs, in the
order they ran: each record's final state is its last outcome.

With --json, the same figures as one JSON object on stdout (the page is
still written).

Examples:
  kycshare report export.results.csv
  kycshare report export.results.csv export.retry.results.csv -o migration.html
  kycshare report export.results.csv --json | jq .latencyMs";

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Results files: the run's first, then its retry runs', in order.
    #[arg(value_name = "RESULTS", required = true)]
    pub results: Vec<PathBuf>,
    /// Where to write the page (default: beside the first results file,
    /// export.results.csv -> export.results.report.html).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also print the figures as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ReportArgs) -> anyhow::Result<i32> {
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(&args.results[0]));
    let figures = figures(&args.results)?;
    let page = html::page(&figures)
        .map_err(|e| anyhow::anyhow!("cannot draw the report's charts: {e}"))?;
    write_private(&out, &page)?;
    if args.json {
        let mut v = serde_json::to_value(&figures).context("cannot serialise the figures")?;
        v["report"] = out.display().to_string().into();
        println!("{v}");
    }
    eprintln!(
        "report written to {} ({} records, {} not accepted, {} KiB)",
        out.display(),
        thousands(figures.counts.total()),
        thousands(figures.not_accepted.total),
        thousands(page.len() as u64 / 1024)
    );
    Ok(0)
}
