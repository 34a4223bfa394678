//! The command line: every subcommand, flag and help text.
//!
//! Only parsing lives here; each command's wiring is in `cmd/`.

use clap::{Args, Parser, Subcommand};

use crate::logging::{ColorChoice, LogFormat};

const ABOUT: &str =
    "Move Sumsub-verified customers into Banxa (identity token sharing API) from a CSV export";

const LONG_ABOUT: &str = "\
Move Sumsub-verified customers into Banxa through the identity token sharing
API (POST /eapi/v0/identities/token/share), one signed request per row of a
CSV export.

A typical migration:
  1. kycshare validate export.csv         dry run: every row checked and signed, nothing sent
  2. kycshare demo                        see the whole job on a local emulator
     kycshare check --base-url https://api.banxa.com   credentials, network, TLS, clock
  3. kycshare run export.csv --base-url https://api.banxa.com
  4. kycshare resume export.results.csv                after a stop, continue where it left off
  5. kycshare run export.retry.csv --base-url …         retry the rows that failed (the summary prints the command)
  6. kycshare verify export.results.csv                did Banxa verify the customers it accepted?

Every record gets exactly one row in the results file (export.results.csv).
Exit codes: 0 all accepted/validated, 1 some rows not accepted, 2 usage or
input error (nothing sent), 3 aborted (continue with kycshare resume).";

#[derive(Debug, Parser)]
#[command(name = "kycshare", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// More detail in the logs on stderr: -v info, -vv debug, -vvv trace.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Errors only, and no progress bar. The summary is still printed.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Log lines as human text or as JSON objects (one per line).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Colour in the logs: auto (only when stderr is a terminal and
    /// NO_COLOR is not set), always, never.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true, value_name = "WHEN")]
    pub color: ColorChoice,
    /// Off a terminal (a service, a job, `2> file`), log a progress line
    /// this often: records done and total, counts by outcome, rate, ETA.
    /// E.g. 60s (the default), 10 (seconds), 5m; 0 for none.
    #[arg(long, default_value = "60s", global = true, value_name = "DURATION", value_parser = parse_interval)]
    pub progress_interval: std::time::Duration,
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    // A bare number is seconds.
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(std::time::Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (expected e.g. 60s, 10s, 5m)"))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Dry run: check and sign every row offline, send nothing, write a per-row report.
    #[command(long_about = crate::cmd::validate::VALIDATE_ABOUT)]
    Validate(crate::cmd::validate::ValidateArgs),
    /// Preflight: settings, credentials, reachability, TLS, clock; sends nothing that changes data.
    #[command(long_about = crate::cmd::check::CHECK_ABOUT)]
    Check(crate::cmd::check::CheckArgs),
    /// The import: send every valid row to Banxa, record each outcome, queue failures for retry.
    #[command(long_about = crate::cmd::run::RUN_ABOUT)]
    Run(crate::cmd::run::RunArgs),
    /// Continue a stopped run with the settings it was started with (stored beside its results).
    #[command(long_about = crate::cmd::resume::RESUME_ABOUT)]
    Resume(crate::cmd::resume::ResumeArgs),
    /// What a run is doing or did: running, stopped or finished, counts, what is left, rate, ETA.
    #[command(long_about = crate::cmd::status::STATUS_ABOUT)]
    Status(crate::cmd::status::StatusArgs),
    /// One self-contained HTML page of a run and its retry runs: charts, reasons, records not accepted.
    #[command(long_about = crate::cmd::report::REPORT_ABOUT)]
    Report(crate::cmd::report::ReportArgs),
    /// The closed loop: ask Banxa whether each accepted identity got verified (kyc.status).
    #[command(long_about = crate::cmd::verify::VERIFY_ABOUT)]
    Verify(crate::cmd::verify::VerifyArgs),
    /// The whole job on the embedded emulator: no credentials, no network, no set-up.
    #[command(long_about = crate::cmd::demo::DEMO_ABOUT)]
    Demo(crate::cmd::demo::DemoArgs),
    /// A local Banxa emulator: rehearse a migration, run the tests, no credentials needed.
    #[command(long_about = crate::cmd::mock::MOCK_ABOUT)]
    Mock(crate::cmd::mock::MockArgs),
    /// Show what a nightly ledger holds: identities by last outcome, the last runs, the oldest failure.
    #[command(long_about = crate::cmd::ledger::LEDGER_ABOUT)]
    Ledger(crate::cmd::ledger::LedgerArgs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
