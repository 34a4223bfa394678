//! The command line: every subcommand, flag and help text.
//!
//! Only parsing lives here; each command's wiring is in `cmd/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::dispatch::concurrency::Concurrency;
use crate::dispatch::limiter::Rate;
use crate::input::Mapping;
use crate::logging::LogFormat;

const ABOUT: &str =
    "Move Sumsub-verified customers into Banxa (identity token sharing API) from a CSV export";

const LONG_ABOUT: &str = "\
Move Sumsub-verified customers into Banxa through the identity token sharing
API (POST /eapi/v0/identities/token/share), one signed request per row of a
CSV export.

A typical migration:
  1. kycshare validate export.csv         dry run: every row checked and signed, nothing sent
  2. kycshare demo                        see the whole job on a local emulator
  3. kycshare run export.csv --base-url https://api.banxa.com
  4. kycshare run export.csv --base-url … --resume     after a stop, continue where it left off
  5. kycshare run export.retry.csv --base-url …         retry the rows that failed

Every record gets exactly one row in the results file (export.results.csv).
Exit codes: 0 all accepted/validated, 1 some rows not accepted, 2 usage or
input error (nothing sent), 3 aborted (resumable with --resume).";

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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Dry run: check and sign every row offline, send nothing, write a per-row report.
    #[command(long_about = VALIDATE_ABOUT)]
    Validate(ValidateArgs),
    /// The import: send every valid row to Banxa, record each outcome, queue failures for retry.
    #[command(long_about = RUN_ABOUT)]
    Run(RunArgs),
    /// The whole job on the embedded emulator: no credentials, no network, no set-up.
    #[command(long_about = DEMO_ABOUT)]
    Demo(DemoArgs),
    /// A local Banxa emulator: rehearse a migration, run the tests, no credentials needed.
    #[command(long_about = MOCK_ABOUT)]
    Mock(crate::cmd::mock::MockArgs),
    /// Show what a nightly ledger holds: identities by last outcome, the last runs, the oldest failure.
    #[command(long_about = LEDGER_ABOUT)]
    Ledger(LedgerArgs),
}

const LEDGER_ABOUT: &str = "\
Show what a ledger (`kycshare run --ledger FILE`) holds: how many identities
Banxa has accepted, how many were last rejected or failed (those are sent
again by the next run), the oldest failure still pending, and the last runs
with their counts and exit codes.

The ledger is read, never changed, and without taking the run lock, so this
works while a nightly run is going. A run with no end time either is still
going or was killed (the next run picks up where it stopped). See
docs/nightly.md for scheduling, alerting and sqlite3 queries.

Exit codes: 0 shown, 2 the file is missing or is not a ledger.

Example:
  kycshare ledger /var/lib/kycshare/ledger.db
  kycshare ledger /var/lib/kycshare/ledger.db --json | jq .oldestPendingFailure";

#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// The ledger file (an SQLite database written by `kycshare run --ledger FILE`).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print one JSON object on stdout instead of the text report.
    #[arg(long)]
    pub json: bool,
}

const MOCK_ABOUT: &str = "\
A local Banxa: serves POST /eapi/v0/identities/token/share exactly as the API
is documented (HMAC check, nonces, validation with 422, rate limit with 429)
and injects faults on request, so that a migration can be rehearsed with no
network and no real credentials. Prints `listening on http://ADDR` once ready.

Example:
  BANXA_API_KEY=test BANXA_API_SECRET=test kycshare mock --listen 127.0.0.1:8080 --fail-rate 0.05 --seed 1
  curl http://127.0.0.1:8080/stats";

const RUN_ABOUT: &str = "\
The import. Streams the export through a rate-limited, concurrent sender that
signs and posts one share request per valid row, and writes every record's
final outcome to the results file as it happens.

Credentials: BANXA_API_KEY and BANXA_API_SECRET in the environment, or the
secret in a file with --api-secret-file (never on the command line).

Outcomes: accepted (202), rejected (4xx: fix the row), failed (429/5xx/
timeouts after --max-attempts: copied to the retry file), invalid and
duplicate (never sent).

Stopping and continuing: Ctrl-C (or SIGTERM) stops taking rows, lets requests
in flight finish and exits 3; a kill loses nothing either. Continue with the
same command plus --resume: records already in the results file are skipped.
A 401 from Banxa stops the run the same way (exit 3).

Examples:
  kycshare run export.csv --base-url https://api.banxa-sandbox.com
  kycshare run export.csv --base-url https://api.banxa.com --resume
  kycshare run export.retry.csv --base-url https://api.banxa.com
  kycshare run export.csv --base-url http://127.0.0.1:8080 --rate 50/s     (against kycshare mock)
  kycshare run export.csv --base-url https://api.banxa.com --mint --for-client-id ID   (tokens minted just in time)
  kycshare run export.csv --base-url https://api.banxa.com --ledger ledger.db --force  (nightly)

Files: export.results.csv (one row per record, the journal), export.retry.csv
(failed rows, input columns). See docs/running-a-migration.md.";

const DEMO_ABOUT: &str = "\
Runs the real import end to end on the embedded emulator: starts a local Banxa
on a loopback port with throwaway credentials and a few injected 500s, sends
the bundled sample export (200 customers, some invalid and duplicate rows)
through the same pipeline as `run`, with the progress bar, and prints the
summary and where the results are. Needs no network and no set-up.";

const VALIDATE_ABOUT: &str = "\
Dry run: read the whole export, check every row as `run` would, build and sign
each valid row's request (with BANXA_API_KEY/BANXA_API_SECRET if set, else a
throwaway key), and send nothing.

Every record gets one row in the results file with outcome `validated`,
`invalid` (with the reason, e.g. `email: missing domain`) or `duplicate`
(`duplicate of record 12`). Exit 0 when every row is valid, 1 when some are
not, 2 when the file itself cannot be used (missing column, not a CSV, …).

Example:
  kycshare validate export.csv
  kycshare validate export.csv.gz --map identityReference=customer_id --json";

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

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// The input carries Sumsub's applicantId instead of a token (as for
    /// `run --mint`): check applicantId; nothing is minted, no network.
    #[arg(long)]
    pub mint: bool,
    /// Read the API secret from this file (first line) instead of BANXA_API_SECRET.
    #[arg(long, value_name = "FILE")]
    pub api_secret_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Banxa's base URL: https://api.banxa-sandbox.com (sandbox) or
    /// https://api.banxa.com (production). http:// only to loopback (the emulator).
    #[arg(long, env = "KYCSHARE_BASE_URL", value_name = "URL")]
    pub base_url: String,
    /// Most requests per second or minute, never exceeded over any window.
    /// Default 450/min (Banxa allows 500/min per IP, all endpoints
    /// together), 100/min on Banxa's sandbox (120/min per merchant there).
    /// A rate above the published limit is allowed (limits can be
    /// negotiated) but warned about.
    #[arg(long, value_name = "N/min|N/s")]
    pub rate: Option<Rate>,
    /// Requests in flight at once: `auto` holds enough to keep the rate at
    /// the latency observed, or a fixed number.
    #[arg(long, default_value = "auto", value_name = "N|auto")]
    pub concurrency: Concurrency,
    /// Attempts per row for retryable answers (429, 5xx, 408, timeouts,
    /// connection errors) before the row is `failed`.
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS", value_parser = parse_timeout)]
    pub timeout: f64,
    /// Where to copy the failed rows (default: beside the input,
    /// export.csv -> export.retry.csv).
    #[arg(long, value_name = "FILE")]
    pub retry_file: Option<PathBuf>,
    /// Continue a stopped run: skip every record already in the results file.
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    /// Read the API secret from this file (first line) instead of BANXA_API_SECRET.
    #[arg(long, value_name = "FILE")]
    pub api_secret_file: Option<PathBuf>,
    /// Trust this CA certificate (PEM) in addition to the built-in public
    /// roots, e.g. a private CA in front of a proxy. An untrusted server
    /// certificate stops the run at once (exit 3, resumable).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Nightly reconciliation: a SQLite ledger of what Banxa accepted. Rows
    /// accepted before with the same email, mobile number and vendor are
    /// `skipped`; new, changed and earlier-failed rows are sent.
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<PathBuf>,
    /// Write Prometheus metrics (rows by outcome, duration, exit code, last
    /// success) to FILE at the end, atomically (node_exporter textfile).
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Just-in-time share tokens: the input carries Sumsub's applicantId
    /// (column `applicantId`, or --map applicantId=COL) instead of a token;
    /// a fresh token is minted from Sumsub right before each request (and
    /// each retry). Needs SUMSUB_APP_TOKEN and SUMSUB_SECRET_KEY.
    #[arg(long, requires = "for_client_id")]
    pub mint: bool,
    /// With --mint: Banxa's client id in Sumsub (the recipient of the share).
    #[arg(long, value_name = "ID")]
    pub for_client_id: Option<String>,
    /// With --mint: lifetime of each minted token.
    #[arg(long, default_value_t = 600, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub token_ttl: u64,
    /// With --mint: Sumsub's API base URL (default https://api.sumsub.com).
    /// Required when --base-url is a loopback emulator: a rehearsal must not
    /// mint production tokens.
    #[arg(long, value_name = "URL")]
    pub sumsub_base_url: Option<String>,
    /// With --mint: most Sumsub requests per second or minute (default:
    /// twice --rate, at most 540/min: Sumsub allows 50 POST per 5 s, so
    /// minting keeps up with the run but a retry storm cannot flood Sumsub).
    #[arg(long, value_name = "N/min|N/s")]
    pub mint_rate: Option<Rate>,
    /// With --mint: read the Sumsub secret key from this file instead of SUMSUB_SECRET_KEY.
    #[arg(long, value_name = "FILE")]
    pub sumsub_secret_file: Option<PathBuf>,
    /// Refused: a secret on the command line lands in shell history and `ps`.
    #[arg(long, hide = true, value_name = "SECRET")]
    pub api_secret: Option<String>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder for the demo's export copy, results and retry file.
    #[arg(long, default_value = "kycshare-demo", value_name = "DIR")]
    pub dir: PathBuf,
    /// The rate of the demo run.
    #[arg(long, default_value = "100/s", value_name = "N/min|N/s")]
    pub rate: Rate,
    /// Also print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Show the just-in-time minting path: the export carries Sumsub
    /// applicant ids and each token is minted from the emulated Sumsub
    /// right before its request.
    #[arg(long)]
    pub mint: bool,
}

fn parse_timeout(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(t) if t > 0.0 && t <= 3600.0 => Ok(t),
        _ => Err(format!("`{s}`: expected seconds, above 0 and at most 3600")),
    }
}

pub fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s {
        "tab" | "\\t" | "\t" => return Ok(b'\t'),
        _ => {}
    }
    let b = s.as_bytes();
    if b.len() == 1 && b[0].is_ascii() && b[0] != b'"' && b[0] != b'\n' && b[0] != b'\r' {
        Ok(b[0])
    } else {
        Err(format!(
            "`{s}`: the delimiter must be one ASCII character other than a quote or a line break (or `tab`)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn delimiters() {
        assert_eq!(parse_delimiter(";").unwrap(), b';');
        assert_eq!(parse_delimiter("tab").unwrap(), b'\t');
        assert!(parse_delimiter("ab").is_err());
        assert!(parse_delimiter("\"").is_err());
    }
}
