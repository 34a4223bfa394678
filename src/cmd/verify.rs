//! `kycshare verify RESULTS | --ledger FILE`: the closed loop. Asks Banxa
//! about each identity a run got accepted and writes what it says (the
//! pipeline is `crate::pipeline::verify`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::cmd::{Ctx, PacingArgs};
use crate::pipeline::verify::{verify, VerifySettings};
use crate::pipeline::RunError;

pub const VERIFY_ABOUT: &str = "\
The closed loop: did Banxa verify the customers it accepted? A 202 from the
share endpoint only means Banxa took the token for processing; Banxa then
fetches the KYC from Sumsub, and the identity's kyc.status says whether it
worked. For every record `accepted` in the run, verify sends one signed
GET /eapi/v0/identities/{identityReference} and writes the answer to the
verification file (beside the input: export.csv -> export.verify.csv, mode
0600):

  record,identityReference,kycStatus,httpStatus,checkedAt,message

kycStatus is Banxa's kyc.status as it comes (VERIFIED is the one Banxa
documents; PENDING, REJECTED, … are written as they come), `not_found` when
Banxa does not know the identity (404), `unknown` when the answer had no
status or no answer came (the message says which).

The checks share the run's budget: the base URL, rate, secret file and CA of
the run come from its manifest (beside the results file) unless given; Banxa
counts every endpoint in its 500/min, so N identities take N requests of it.
They retry like shares, pause in an outage, and stop on a 401 (exit 3;
continue with --resume).

With --ledger FILE and no RESULTS: check the ledger's accepted identities
whose last known status is not VERIFIED, and record each answer there (also
with RESULTS). `kycshare ledger FILE` then shows counts by status, and
`kycshare run … --ledger FILE --reshare-unverified AGE` shares again the
ones not VERIFIED.

Exit codes: 0 every identity checked is VERIFIED, 1 some are not, 2 usage or
configuration error (nothing sent), 3 stopped (resumable).

Examples:
  kycshare verify export.results.csv
  kycshare verify export.results.csv --resume
  kycshare verify --ledger /var/lib/kycshare/ledger.db --base-url https://api.banxa.com
  kycshare run export.csv --ledger ledger.db --force && kycshare verify --ledger ledger.db --base-url https://api.banxa.com

See docs/verification.md.";

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The results file of the run whose accepted identities to check.
    #[arg(value_name = "RESULTS", required_unless_present = "ledger")]
    pub results: Option<PathBuf>,
    /// A nightly ledger: record each status there; without RESULTS, check
    /// its accepted identities not known to be VERIFIED.
    /// A SQLite FILE or postgres://USER@HOST:PORT/DB.
    #[arg(long, value_name = "FILE|URL", value_parser = crate::ledger::LedgerLocation::parse)]
    pub ledger: Option<crate::ledger::LedgerLocation>,
    /// Where to write the verification file (default: beside the run's
    /// input, export.csv -> export.verify.csv; beside the ledger with
    /// --ledger alone).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Banxa's base URL (default: the run's, from its manifest).
    #[arg(long, env = "KYCSHARE_BASE_URL", value_name = "URL")]
    pub base_url: Option<String>,
    #[command(flatten)]
    pub pacing: PacingArgs,
    /// Continue a stopped check: identities already in the verification
    /// file are not asked again.
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    /// Replace an existing verification file (every identity is checked again).
    #[arg(long)]
    pub force: bool,
    /// Read the API secret from this file (default: the run's, else BANXA_API_SECRET).
    #[arg(long, value_name = "FILE")]
    pub api_secret_file: Option<PathBuf>,
    /// Trust this CA certificate (PEM) too (default: the run's).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Also print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: VerifyArgs, ctx: Ctx) -> anyhow::Result<i32> {
    let json = args.json;
    let s = VerifySettings {
        results: args.results,
        ledger: args.ledger,
        output: args.output,
        base_url: args.base_url,
        rate: args.pacing.rate,
        concurrency: args.pacing.concurrency,
        max_attempts: args.pacing.max_attempts,
        timeout: Duration::from_secs_f64(args.pacing.timeout),
        max_outage: args.pacing.max_outage,
        resume: args.resume,
        force: args.force,
        credentials: None,
        api_secret_file: args.api_secret_file,
        ca_cert: args.ca_cert,
        progress: !ctx.quiet,
        progress_interval: ctx.progress_interval,
    };
    let rt = crate::cmd::pipeline_runtime()?;
    match rt.block_on(verify(s, true)) {
        Ok(summary) => {
            eprint!("{}", summary.render());
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            }
            Ok(summary.exit_code)
        }
        Err(RunError::Interrupted) => {
            rt.shutdown_background();
            Ok(RunError::Interrupted.exit_code())
        }
        Err(e) => Err(e.into()),
    }
}
