//! `kycshare run INPUT`: the import. This module is the command line of
//! `run` and its wiring: arguments to [`Settings`], the pipeline
//! (`crate::pipeline`) does the rest.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use crate::cmd::{print_summary, Ctx, InputArgs, PacingArgs};
use crate::dispatch::limiter::Rate;
use crate::output::metrics::{Ending, RunMetrics};
use crate::pipeline::plan::DEFAULT_TOKEN_TTL_SECS;
use crate::pipeline::{MintSettings, Plan, RunError, Settings};

pub const RUN_ABOUT: &str = "\
The import. Streams the export through a rate-limited, concurrent sender that
signs and posts one share request per valid row, and writes every record's
final outcome to the results file as it happens.

Credentials: BANXA_API_KEY and BANXA_API_SECRET in the environment, or the
secret in a file with --api-secret-file (never on the command line).

Outcomes: accepted (202), rejected (4xx: fix the row), failed (429/5xx/
timeouts after --max-attempts: copied to the retry file), invalid and
duplicate (never sent).

Outages: when attempts keep failing and nothing succeeds (20 in a row over 10
rows), the run pauses, charges no row, and probes Banxa one request at a time
(up to every 60 s); it goes on when Banxa answers, and stops with exit 3 after
--max-outage (default 15m). A run whose first 10 attempts all fail to connect
stops at once, naming the address and the cause. Preflight: kycshare check.

Stopping and continuing: Ctrl-C (or SIGTERM) stops taking rows, lets requests
in flight finish and exits 3. A 401 from Banxa stops the run the same way.
Before its first request the run stores its settings beside the results file
(export.results.manifest.json); continue with `kycshare resume
export.results.csv`: the same settings, records already in the results file
skipped. After a kill, the requests that were in flight may be sent again.
`run … --resume` also works, and is refused when a setting that changes what
is sent or where differs from the stored one.

Examples:
  kycshare run export.csv --base-url https://api.banxa-sandbox.com
  kycshare run export.csv --base-url https://api.banxa.com --limit 20       (a canary)
  kycshare resume export.results.csv                                        (continue, same settings)
  kycshare run export.retry.csv --base-url https://api.banxa.com
  kycshare run export.csv --base-url http://127.0.0.1:8080 --rate 50/s     (against kycshare mock)
  kycshare run export.csv --base-url https://api.banxa.com --mint --for-client-id ID   (tokens minted just in time)
  kycshare run export.csv --base-url https://api.banxa.com --ledger ledger.db --force  (nightly)
  PGPASSWORD=… kycshare run export.csv --base-url https://api.banxa.com --force \\
      --ledger 'postgres://kycshare@db.internal:5432/kycshare?sslmode=verify-full'  (nightly, no local disk)
  (nightly, sharing again what `kycshare verify --ledger ledger.db` found not VERIFIED:)
  kycshare run export.csv --base-url https://api.banxa.com --ledger ledger.db --force \\
      --reshare-unverified 24h

Files: export.results.csv (one row per record, the journal), export.retry.csv
(failed rows, input columns). After the run, `kycshare verify
export.results.csv` asks Banxa whether it verified each accepted customer.
See docs/running-a-migration.md.";

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Banxa's base URL: https://api.banxa-sandbox.com (sandbox) or
    /// https://api.banxa.com (production). http:// only to loopback (the emulator).
    #[arg(long, env = "KYCSHARE_BASE_URL", value_name = "URL")]
    pub base_url: String,
    #[command(flatten)]
    pub pacing: PacingArgs,
    /// Where to copy the failed rows (default: beside the input,
    /// export.csv -> export.retry.csv).
    #[arg(long, value_name = "FILE")]
    pub retry_file: Option<PathBuf>,
    /// Continue a stopped run: skip every record already in the results file.
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    /// A canary: stop after N records have been sent (the summary says how
    /// to continue: `kycshare resume RESULTS`). Not stored: `resume` sends
    /// the rest.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Read the API secret from this file (first line) instead of BANXA_API_SECRET.
    #[arg(long, value_name = "FILE")]
    pub api_secret_file: Option<PathBuf>,
    /// Trust this CA certificate (PEM) in addition to the built-in public
    /// roots, e.g. a private CA in front of a proxy. An untrusted server
    /// certificate stops the run at once (exit 3, resumable).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Nightly reconciliation: a ledger of what Banxa accepted, a SQLite
    /// FILE or postgres://USER@HOST:PORT/DB (password in the URL or
    /// PGPASSWORD, never shown). Rows accepted before with the same email,
    /// mobile number and vendor are `skipped`; new, changed and
    /// earlier-failed rows are sent.
    #[arg(long, value_name = "FILE|URL", value_parser = crate::ledger::LedgerLocation::parse)]
    pub ledger: Option<crate::ledger::LedgerLocation>,
    /// With --ledger: send again the identities whose last `kycshare verify
    /// --ledger`, made at least AGE (e.g. 24h, 2d) after they were
    /// accepted, found a status other than VERIFIED (REJECTED, not_found, a
    /// PENDING that lasted AGE); a status seen sooner, VERIFIED, or never
    /// verified: skipped (verify first). With --mint each gets a fresh
    /// token; without it, the input's token.
    #[arg(long, value_name = "AGE", requires = "ledger", value_parser = parse_age)]
    pub reshare_unverified: Option<Duration>,
    /// Write Prometheus metrics (rows by outcome, requests by status,
    /// latency, pauses, exit code and error class, last success) to FILE at
    /// every exit, exit 2 included, atomically (node_exporter textfile).
    /// See docs/nightly.md for the alert rules.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Serve the same metrics live at http://ADDR/metrics (OpenMetrics)
    /// while the run lasts, for Prometheus to scrape, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
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
    #[arg(long, default_value_t = DEFAULT_TOKEN_TTL_SECS, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
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
    /// Refused, with what to do (a spelling operators try).
    #[arg(long, hide = true, value_name = "SECRET")]
    pub secret: Option<String>,
    /// Refused, with what to do: the key comes from BANXA_API_KEY.
    #[arg(long, hide = true, value_name = "KEY")]
    pub api_key: Option<String>,
}

pub fn run(args: RunArgs, ctx: Ctx) -> anyhow::Result<i32> {
    if let Err(e) = refuse(&args) {
        if let Some(path) = &args.metrics_file {
            metrics_for_exit_2(path, &e);
        }
        return Err(e);
    }
    let json = args.input.json;
    execute_settings(settings(args, ctx), json)
}

/// Flags that are refused with what to do instead.
fn refuse(args: &RunArgs) -> anyhow::Result<()> {
    if args.api_secret.is_some() || args.secret.is_some() {
        bail!("the API secret is never accepted on the command line (it would land in shell history and `ps`): export BANXA_API_SECRET=… in the environment, or put it in a file (mode 0600) and pass --api-secret-file FILE");
    }
    if args.api_key.is_some() {
        bail!("the API key is read from the environment, not the command line: export BANXA_API_KEY=… (and BANXA_API_SECRET, or --api-secret-file FILE)");
    }
    if !args.mint && args.for_client_id.is_some() {
        bail!("--for-client-id is only used with --mint");
    }
    Ok(())
}

/// The class of an error that ends a run before it starts (exit 2), for
/// the metrics.
pub fn error_class(e: &anyhow::Error) -> &'static str {
    if let Some(r) = e.downcast_ref::<RunError>() {
        return r.class();
    }
    if let Some(p) = e.downcast_ref::<crate::pipeline::PlanError>() {
        return p.class();
    }
    "usage"
}

/// Writes the metrics of a run that could not start (exit 2), so that
/// the alert on exit 2 fires; keeps the last success known.
pub fn metrics_for_exit_2(path: &std::path::Path, e: &anyhow::Error) {
    let m = RunMetrics::failed_before_start(Ending {
        exit_code: 2,
        error_class: Some(error_class(e).to_string()),
        ended_at: Some(std::time::SystemTime::now()),
        last_success: crate::output::metrics::previous_last_success(path),
    });
    if let Err(w) = m.write(path) {
        tracing::warn!("could not write the metrics file {}: {w}", path.display());
    }
}

/// Resolves and runs `s` (`run` and `resume`), printing the summary.
pub fn execute_settings(s: Settings, json: bool) -> anyhow::Result<i32> {
    let metrics_file = s.metrics_file.clone();
    let result = execute_inner(s, json);
    if let (Err(e), Some(path)) = (&result, &metrics_file) {
        metrics_for_exit_2(path, e);
    }
    result
}

fn execute_inner(s: Settings, json: bool) -> anyhow::Result<i32> {
    let plan = Plan::resolve(s)?;
    let rt = crate::cmd::pipeline_runtime()?;
    let result = rt.block_on(crate::pipeline::execute(plan, true));
    match result {
        Ok(summary) => {
            print_summary(&summary, json);
            Ok(summary.exit_code)
        }
        Err(RunError::Interrupted) => {
            // The threads still writing are left behind: every row already
            // journaled is flushed, and --resume repairs a cut last line.
            rt.shutdown_background();
            Ok(RunError::Interrupted.exit_code())
        }
        Err(e) => Err(e.into()),
    }
}

pub fn parse_age(s: &str) -> Result<Duration, String> {
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("`{s}`: {e} (expected e.g. 24h, 2d, 0s)"))?,
    };
    if d > Duration::from_secs(10 * 366 * 86_400) {
        return Err(format!("`{s}`: at most 10 years"));
    }
    Ok(d)
}

/// The settings `run` was given.
pub fn settings(args: RunArgs, ctx: Ctx) -> Settings {
    let mut s = Settings::new(args.input.input, args.base_url);
    s.maps = args.input.maps;
    s.delimiter = args.input.delimiter;
    s.results = args.input.results;
    s.force = args.input.force;
    s.retry_file = args.retry_file;
    s.rate = args.pacing.rate;
    s.concurrency = args.pacing.concurrency;
    s.max_attempts = args.pacing.max_attempts;
    s.timeout = Duration::from_secs_f64(args.pacing.timeout);
    s.resume = args.resume;
    s.api_secret_file = args.api_secret_file;
    s.ca_cert = args.ca_cert;
    s.ledger = args.ledger;
    s.reshare_unverified = args.reshare_unverified;
    s.metrics_file = args.metrics_file;
    s.metrics_listen = args.metrics_listen;
    s.progress = !ctx.quiet;
    s.progress_interval = ctx.progress_interval;
    s.limit = args.limit;
    s.max_outage = args.pacing.max_outage;
    s.mint = args.mint.then_some(MintSettings {
        for_client_id: args.for_client_id,
        token_ttl: Some(args.token_ttl),
        sumsub_base_url: args.sumsub_base_url,
        mint_rate: args.mint_rate,
        credentials: None,
        sumsub_secret_file: args.sumsub_secret_file,
    });
    s
}
