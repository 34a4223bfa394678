//! `kycshare resume RESULTS`: continue a stopped run with the settings it
//! was started with (its manifest, beside the results file). Only pacing
//! and verbosity may be given again.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::cmd::{parse_timeout, Ctx};
use crate::dispatch::concurrency::Concurrency;
use crate::dispatch::limiter::Rate;
use crate::pipeline::manifest::{manifest_path, Manifest};
use crate::pipeline::PlanError;

pub const RESUME_ABOUT: &str = "\
Continue a stopped run (Ctrl-C, SIGTERM, a kill, a 401, an outage, --limit)
with exactly the settings it was started with: input, base URL, column
mapping, delimiter, rate, retry file, ledger, mint settings. They are read
from the run's manifest, beside its results file
(export.results.csv -> export.results.manifest.json), written before the
run's first request.

Records already in the results file are skipped; the rest are sent. A last
line cut short by a kill is discarded and its record sent again; the
requests that were in flight at a kill may be sent twice.

Only pacing and verbosity may be changed: --rate, --concurrency,
--timeout, --max-attempts, -v/-q, --json. Credentials come from the
environment as for `run` (or the --api-secret-file the run was started with).

Examples:
  kycshare resume export.results.csv
  kycshare resume export.results.csv --rate 300/min";

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The results file of the run to continue.
    #[arg(value_name = "RESULTS")]
    pub results: PathBuf,
    /// Override the stored --rate.
    #[arg(long, value_name = "N/min|N/s")]
    pub rate: Option<Rate>,
    /// Override the stored --concurrency.
    #[arg(long, value_name = "N|auto")]
    pub concurrency: Option<Concurrency>,
    /// Override the stored --max-attempts.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: Option<u32>,
    /// Override the stored --timeout (seconds).
    #[arg(long, value_name = "SECONDS", value_parser = parse_timeout)]
    pub timeout: Option<f64>,
    /// Also print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ResumeArgs, ctx: Ctx) -> anyhow::Result<i32> {
    let manifest = match Manifest::load(&args.results)? {
        Some(m) => m,
        None if !args.results.exists() => {
            return Err(PlanError::Usage(format!(
                "{} does not exist: there is no run to resume there (give the results file of the run, e.g. export.results.csv beside its input)",
                args.results.display()
            ))
            .into())
        }
        None => {
            return Err(PlanError::Usage(format!(
                "{} has no run manifest ({} is missing): it was written by `validate`, by an older kycshare, or the manifest was deleted. Continue with `kycshare run INPUT --results {} --resume` and the settings the run was started with",
                args.results.display(),
                manifest_path(&args.results).display(),
                args.results.display()
            ))
            .into())
        }
    };
    let mut s = manifest.settings()?;
    // The results file as the operator named it (messages, next steps).
    s.results = Some(args.results.clone());
    if let Some(r) = args.rate {
        s.rate = Some(r);
    }
    if let Some(c) = args.concurrency {
        s.concurrency = c;
    }
    if let Some(m) = args.max_attempts {
        s.max_attempts = m;
    }
    if let Some(t) = args.timeout {
        s.timeout = Duration::from_secs_f64(t);
    }
    s.progress = !ctx.quiet;
    s.progress_interval = ctx.progress_interval;
    s.keep_manifest = true;
    crate::cmd::run::execute_settings(s, args.json)
}
