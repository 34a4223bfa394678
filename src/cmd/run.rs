//! `kycshare run INPUT`: the import. This module is wiring only: it checks
//! the configuration, then connects
//!
//! ```text
//! reader thread (input) --jobs--> dispatcher (async) --outcomes--> journal thread (output)
//!        \______________ invalid / duplicate outcomes ______________/
//! ```
//!
//! with bounded channels, so memory stays flat whatever the file size.

use clap::Args;

use crate::cmd::{parse_timeout, InputArgs};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::cmd::{check_existing_results, print_summary, results_path, Ctx};
use crate::credentials::BanxaCredentials;
use crate::dispatch::client::BanxaClient;
use crate::dispatch::concurrency::{Concurrency, Slots};
use crate::dispatch::limiter::{Rate, RateLimiter};
use crate::dispatch::{self, DispatchConfig, DispatchStats, Job, Payload};
use crate::http::{http_client, HttpOptions};
use crate::input::{Input, InputOptions, Source, TokenMode, Verdict};
use crate::model::{Abort, AbortReason, OutMsg, Outcome};
use crate::output::journal::{self, Journal};
use crate::output::progress::Progress;
use crate::output::results::{read_prior, Prior};
use crate::output::retry::RetryWriter;
use crate::output::{check_writable, Counts, ResultsWriter, Summary};
use crate::request::{NonceSource, Signer};

/// Everything a run needs, checked. `run` builds it from the command line,
/// `demo` builds it directly.
pub struct RunPlan {
    pub source: Source,
    pub opts: InputOptions,
    pub results: PathBuf,
    pub retry: PathBuf,
    pub resume: bool,
    pub force: bool,
    pub base_url: String,
    pub creds: BanxaCredentials,
    pub rate: Rate,
    pub concurrency: Concurrency,
    pub max_attempts: u32,
    pub timeout: Duration,
    pub http: HttpOptions,
    pub progress: bool,
    pub ledger: Option<PathBuf>,
    pub metrics: Option<PathBuf>,
    pub mint: Option<MintPlan>,
}

/// `--mint`: where and how tokens are minted.
pub struct MintPlan {
    pub creds: crate::request::mint::SumsubCredentials,
    pub base_url: String,
    pub for_client_id: String,
    pub ttl_secs: u64,
    pub rate: Rate,
}

pub fn run(args: RunArgs, ctx: Ctx) -> anyhow::Result<i32> {
    if args.api_secret.is_some() {
        bail!("the API secret is never accepted on the command line (it would land in shell history and `ps`): set BANXA_API_SECRET or use --api-secret-file FILE");
    }
    let base_url = check_base_url(&args.base_url)?;
    let rate = args.rate.unwrap_or_else(|| default_rate(&base_url));
    if let Some(warning) = rate_warning(rate, &base_url) {
        tracing::warn!("{warning}");
    }
    let creds = crate::credentials::banxa(args.api_secret_file.as_deref())?.ok_or_else(|| {
        anyhow!("no credentials: set BANXA_API_KEY and BANXA_API_SECRET (or BANXA_API_KEY and --api-secret-file FILE)")
    })?;
    let source = Source::from_arg(&args.input.input);
    if args.resume && source == Source::Stdin {
        bail!("standard input cannot be resumed (it cannot be read again): save the export to a file and run on that");
    }
    let results = results_path(&args.input, &source)?;
    let retry = match (&args.retry_file, &source) {
        (Some(p), _) => p.clone(),
        (None, Source::File(p)) => crate::input::source::beside(p, "retry"),
        (None, Source::Stdin) => crate::input::source::beside(&results, "retry"),
    };
    let mint = if args.mint {
        let creds = crate::request::mint::credentials(args.sumsub_secret_file.as_deref())?.ok_or_else(|| {
            anyhow!("--mint needs Sumsub credentials: set SUMSUB_APP_TOKEN and SUMSUB_SECRET_KEY (or --sumsub-secret-file FILE)")
        })?;
        let for_client_id = args
            .for_client_id
            .clone()
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| {
                anyhow!("--mint needs --for-client-id ID (Banxa's client id in Sumsub)")
            })?;
        let sumsub_base = match &args.sumsub_base_url {
            Some(u) => u.clone(),
            None if is_loopback_url(&base_url) => bail!(
                "--mint with a loopback --base-url ({base_url}) needs --sumsub-base-url: a rehearsal must not mint production tokens from {}; point it at the emulator too (e.g. --sumsub-base-url {base_url})",
                crate::request::mint::DEFAULT_BASE_URL
            ),
            None => crate::request::mint::DEFAULT_BASE_URL.to_string(),
        };
        let base = check_base_url(&sumsub_base).context("--sumsub-base-url")?;
        Some(MintPlan {
            creds,
            base_url: base,
            for_client_id,
            ttl_secs: args.token_ttl,
            rate: args.mint_rate.unwrap_or_else(|| default_mint_rate(rate)),
        })
    } else {
        if args.for_client_id.is_some() {
            bail!("--for-client-id is only used with --mint");
        }
        None
    };
    let ca = match &args.ca_cert {
        Some(p) => Some(
            std::fs::read(p)
                .with_context(|| format!("cannot read the CA certificate {}", p.display()))?,
        ),
        None => None,
    };
    let plan = RunPlan {
        source,
        opts: InputOptions {
            delimiter: args.input.delimiter,
            maps: args.input.maps.clone(),
            mode: if mint.is_some() {
                TokenMode::Mint
            } else {
                TokenMode::Token
            },
        },
        results,
        retry,
        resume: args.resume,
        force: args.input.force,
        base_url,
        creds,
        rate,
        concurrency: args.concurrency,
        max_attempts: args.max_attempts,
        timeout: Duration::from_secs_f64(args.timeout),
        http: HttpOptions {
            ca_cert_pem: ca,
            max_idle_per_host: 64,
        },
        progress: !ctx.quiet,
        ledger: args.ledger.clone(),
        metrics: args.metrics_file.clone(),
        mint,
    };
    let rt = crate::cmd::runtime()?;
    let summary = rt.block_on(execute(plan, true))?;
    print_summary(&summary, args.input.json);
    Ok(summary.exit_code)
}

/// Banxa's sandbox host: 120 requests/min per merchant account there.
pub const SANDBOX_HOST: &str = "api.banxa-sandbox.com";
/// The default `--rate` in production: under Banxa's 500/min per IP, with
/// room for the other endpoints and clock drift.
pub const DEFAULT_RATE: Rate = Rate {
    n: 450,
    per: Duration::from_secs(60),
};
/// The default `--rate` on the sandbox: under its 120/min.
pub const DEFAULT_SANDBOX_RATE: Rate = Rate {
    n: 100,
    per: Duration::from_secs(60),
};
/// Sumsub's limit, 50 POST per 5 s, less a margin: the most `--mint-rate`
/// defaults to.
pub const MAX_DEFAULT_MINT_RATE: Rate = Rate {
    n: 540,
    per: Duration::from_secs(60),
};

fn is_sandbox(base_url: &str) -> bool {
    reqwest::Url::parse(base_url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.eq_ignore_ascii_case(SANDBOX_HOST)))
        .unwrap_or(false)
}

/// `--rate` when none is given: 100/min on Banxa's sandbox, else 450/min.
pub fn default_rate(base_url: &str) -> Rate {
    if is_sandbox(base_url) {
        DEFAULT_SANDBOX_RATE
    } else {
        DEFAULT_RATE
    }
}

/// `--mint-rate` when none is given: twice the Banxa rate, at most 540/min.
pub fn default_mint_rate(rate: Rate) -> Rate {
    let doubled = Rate {
        n: rate.n.saturating_mul(2),
        per: rate.per,
    };
    if doubled.per_second() > MAX_DEFAULT_MINT_RATE.per_second() {
        MAX_DEFAULT_MINT_RATE
    } else {
        doubled
    }
}

/// A warning, in words, when `rate` is above Banxa's published limit for
/// `base_url` (loopback emulators have no published limit).
pub fn rate_warning(rate: Rate, base_url: &str) -> Option<String> {
    if is_loopback_url(base_url) {
        return None;
    }
    let (limit, what) = if is_sandbox(base_url) {
        (
            120.0,
            "120 requests per minute per merchant account on the sandbox",
        )
    } else {
        (
            500.0,
            "500 requests per minute per IP, all endpoints together",
        )
    };
    let per_min = f64::from(rate.n) * 60.0 / rate.per.as_secs_f64();
    (per_min > limit).then(|| {
        format!(
            "--rate {rate} ({per_min:.0}/min) is above Banxa's published limit of {what}: expect 429s (each one retried and slowing the run) unless Banxa raised your limit"
        )
    })
}

/// True when the URL's host is a loopback address (or `localhost`).
pub fn is_loopback_url(s: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(s.trim()) else {
        return false;
    };
    let h = url.host_str().unwrap_or("");
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// `https://…`, or `http://` to a loopback host only. Returns it without a
/// trailing slash.
pub fn check_base_url(s: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(s.trim()).map_err(|e| {
        anyhow!("--base-url `{s}` is not a URL ({e}); expected e.g. https://api.banxa.com")
    })?;
    let host = url.host_str().unwrap_or("");
    match url.scheme() {
        "https" => {}
        "http" => {
            if !is_loopback_url(s) {
                bail!("refusing to send customer data over plain http to {host}: use https (http is allowed only to a loopback address, for the emulator)");
            }
        }
        other => bail!("--base-url scheme `{other}` is not supported: use https://"),
    }
    if url.path() != "/" && !url.path().is_empty() {
        bail!("--base-url must be the base only (e.g. https://api.banxa.com), without a path: got {s}");
    }
    Ok(s.trim().trim_end_matches('/').to_string())
}

/// Runs the import described by `plan`. Fatal configuration and input
/// errors come back as `Err` (exit 2) before anything is sent.
pub async fn execute(mut plan: RunPlan, handle_signals: bool) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let mut input = Input::open(&plan.source, &plan.opts)?;
    check_writable(&plan.results)?;
    check_writable(&plan.retry)?;
    if let Some(m) = &plan.metrics {
        check_writable(m)?;
    }
    // The ledger: one run at a time (a second run refuses here, exit 2).
    let mut ledger = match &plan.ledger {
        Some(path) => Some(crate::ledger::Ledger::open(path)?),
        None => None,
    };
    let ledger_reader = match &ledger {
        Some(l) => Some(l.reader()?),
        None => None,
    };

    // The journal: a new file, or the one being resumed.
    let prior: Option<Prior> = if plan.resume && plan.results.exists() {
        let p = read_prior(&plan.results, true)?;
        if p.truncated_bytes > 0 {
            tracing::warn!(
                bytes = p.truncated_bytes,
                "discarded a last line cut short in the results file; its record is sent again"
            );
        }
        // A dry run's results (validate) are not a journal: nothing was
        // sent, so there is nothing to resume; the run starts afresh.
        if p.rows > 0 && p.only_dry_run() && p.count(Outcome::Validated) > 0 {
            tracing::info!("the results file holds a dry run's rows: starting afresh");
            None
        } else {
            Some(p)
        }
    } else {
        None
    };
    let writer = if prior.is_some() {
        ResultsWriter::append(&plan.results)?
    } else {
        // A dry run's results may be replaced: nothing was sent.
        let replace = check_existing_results(&plan.results, plan.force || plan.resume, true)?;
        ResultsWriter::create(&plan.results, replace)?
    };
    let retry = RetryWriter::new(&plan.retry, input.header(), plan.opts.delimiter)?;
    // The run enters the ledger only once every check has passed.
    let run_id = match &mut ledger {
        Some(l) => Some(l.begin_run(&plan.source.display(), std::time::SystemTime::now())?),
        None => None,
    };

    let http = http_client(&plan.http).map_err(|e| anyhow!(e))?;
    let mint = plan.mint.take().map(|m| crate::dispatch::MintConfig {
        client: crate::request::mint::SumsubClient::new(
            &m.base_url,
            m.creds,
            m.for_client_id,
            m.ttl_secs,
            http.clone(),
        ),
        limiter: Arc::new(RateLimiter::new(m.rate)),
        timeout: plan.timeout,
    });
    let nonces = Arc::new(NonceSource::new());
    let signer = Signer::new(plan.creds.api_key.clone(), &plan.creds.api_secret);
    let client = Arc::new(BanxaClient::new(
        http,
        &plan.base_url,
        signer,
        nonces,
        plan.timeout,
    ));
    let limiter = Arc::new(RateLimiter::new(plan.rate));
    let slots = Slots::new(plan.concurrency, Some(plan.rate.per_second()));

    let abort = Abort::new();
    let counts = Arc::new(Counts::default());
    if let Some(p) = &prior {
        for o in Outcome::ALL {
            counts.add(o, p.count(o));
        }
    }
    let progress = Progress::new(plan.progress, None);
    progress.count_in_background(&plan.source, plan.opts.delimiter);
    if let Some(pr) = &prior {
        progress.inc(pr.rows);
    }

    tracing::info!(
        input = %plan.source.display(),
        results = %plan.results.display(),
        base_url = %plan.base_url,
        rate = %plan.rate,
        concurrency = ?plan.concurrency,
        max_attempts = plan.max_attempts,
        timeout_s = plan.timeout.as_secs_f64(),
        earlier_outcomes = prior.as_ref().map(|p| p.rows).unwrap_or(0),
        ledger = plan.ledger.is_some(),
        "run starting"
    );
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>(1024);
    let (out_tx, out_rx) = mpsc::channel::<OutMsg>(4096);

    let journal = Journal {
        writer,
        retry,
        counts: counts.clone(),
        progress: progress.clone(),
        abort: abort.clone(),
        ledger,
    };
    let journal_thread = std::thread::Builder::new()
        .name("journal".into())
        .spawn(move || journal.run(out_rx))
        .context("cannot start the journal thread")?;

    let ticker_stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(journal::ticker(out_tx.clone(), ticker_stop.clone()));

    let signals = if handle_signals {
        Some(tokio::spawn(watch_signals(abort.clone())))
    } else {
        None
    };

    // Reader thread: records -> jobs, and the outcomes that need no request.
    let reader = {
        let out = out_tx.clone();
        let abort = abort.clone();
        std::thread::Builder::new()
            .name("reader".into())
            .spawn(move || {
                read_jobs(
                    &mut input,
                    prior.as_ref(),
                    ledger_reader.as_ref(),
                    &jobs_tx,
                    &out,
                    &abort,
                )
            })
            .context("cannot start the reader thread")?
    };

    let stats = Arc::new(DispatchStats::default());
    dispatch::dispatch(
        jobs_rx,
        out_tx.clone(),
        client,
        DispatchConfig {
            max_attempts: plan.max_attempts,
            limiter: Some(limiter),
            slots,
            mint,
        },
        abort.clone(),
        stats.clone(),
    )
    .await;

    let read = tokio::task::spawn_blocking(move || reader.join())
        .await
        .map_err(|e| anyhow!("reader thread: {e}"))?
        .map_err(|_| anyhow!("the reader thread panicked"))?;
    ticker_stop.cancel();
    drop(out_tx);
    let report = tokio::task::spawn_blocking(move || journal_thread.join())
        .await
        .map_err(|e| anyhow!("journal thread: {e}"))?
        .map_err(|_| anyhow!("the journal thread panicked"))?;
    if let Some(s) = signals {
        s.abort();
    }
    progress.finish();

    let read = match read {
        Ok(r) => r,
        Err(e) => {
            abort.trigger(AbortReason::Input(e.to_string()));
            ReadReport::default()
        }
    };

    let mut summary = Summary::new(
        "run",
        &plan.source.display(),
        &plan.results.display().to_string(),
    );
    summary.set_counts(&counts);
    summary.from_earlier_runs = read.earlier_done;
    summary.requests_sent = stats
        .requests_sent
        .load(std::sync::atomic::Ordering::Relaxed);
    summary.elapsed_seconds = started.elapsed().as_secs_f64();
    let this_run = summary.total.saturating_sub(read.earlier_done);
    summary.records_per_second = this_run as f64 / summary.elapsed_seconds.max(1e-9);
    summary.top_reasons = report.reasons.top(5);
    if report.retry_written {
        summary.retry_file = Some(plan.retry.display().to_string());
    }
    let aborted = abort.reason();
    if let Some(r) = &aborted {
        // Records read but without an outcome: --resume sends them.
        summary.pending = read.records.saturating_sub(summary.total);
        summary.total = summary.total.max(read.records);
        summary.aborted = Some(r.to_string());
        summary.exit_code = 3;
    } else {
        summary.exit_code = summary.completed_exit_code();
    }
    if !report.in_doubt.is_empty() {
        let list: Vec<String> = report
            .in_doubt
            .iter()
            .map(|(r, id, o)| format!("record {r} ({id}): {o}"))
            .collect();
        summary.next_steps.push(format!(
            "{} record(s) reached an outcome that could NOT be written to the results file; check them in Banxa before resuming: {}",
            list.len(),
            list.join(", ")
        ));
    }
    next_steps(&mut summary, &plan, aborted.as_ref());

    let ended = std::time::SystemTime::now();
    let mut last_success = None;
    if let (Some(mut l), Some(id)) = (report.ledger, run_id) {
        let counts = crate::ledger::RunCounts::from(&summary);
        if let Err(e) = l.end_run(id, ended, &counts, summary.exit_code) {
            summary
                .next_steps
                .push(format!("could not close the run in the ledger: {e}"));
        }
        last_success = l.last_success().ok().flatten();
    }
    if let Some(path) = &plan.metrics {
        let mut m = crate::output::metrics::RunMetrics::from_summary(&summary);
        m.ended_at = Some(ended);
        m.last_success = if summary.exit_code == 0 {
            Some(ended)
        } else {
            last_success
        };
        if let Err(e) = crate::output::metrics::write_metrics(path, &m) {
            summary.next_steps.push(format!(
                "could not write the metrics file {}: {e}",
                path.display()
            ));
        }
    }
    Ok(summary)
}

fn next_steps(s: &mut Summary, plan: &RunPlan, aborted: Option<&AbortReason>) {
    let input = plan.source.display();
    match aborted {
        Some(AbortReason::Unauthorized(_)) => s.next_steps.push(format!(
            "fix the credentials (BANXA_API_KEY / BANXA_API_SECRET: wrong, or revoked?), then continue with: kycshare run {input} --base-url {} --resume",
            plan.base_url
        )),
        Some(AbortReason::Untrusted(_)) => s.next_steps.push(format!(
            "check --base-url {} is really Banxa; if it is reached through a private CA (a TLS-inspecting proxy, a test server), pass that CA with --ca-cert FILE (PEM); then continue with: kycshare run {input} --base-url {} --resume",
            plan.base_url, plan.base_url
        )),
        Some(AbortReason::Storage(_)) => s.next_steps.push(format!(
            "free space or fix {} (see the error above), then continue with: kycshare run {input} --base-url {} --resume",
            plan.results.display(),
            plan.base_url
        )),
        Some(AbortReason::Input(_)) => s.next_steps.push(format!(
            "the input could not be read to the end (see above): re-export or repair it; the records already in {} are kept, and kycshare run {input} --base-url {} --resume sends the rest",
            plan.results.display(),
            plan.base_url
        )),
        Some(_) => s.next_steps.push(format!(
            "{} record(s) not sent yet; continue with: kycshare run {input} --base-url {} --resume",
            s.pending, plan.base_url
        )),
        None => {}
    }
    if s.failed > 0 {
        s.next_steps.push(format!(
            "{} row{} failed after retries (429/5xx/timeouts): retry them with kycshare run {} --base-url {}",
            s.failed,
            if s.failed == 1 { "" } else { "s" },
            plan.retry.display(),
            plan.base_url
        ));
    }
    if s.rejected > 0 {
        s.next_steps.push(format!(
            "{} row{} rejected by Banxa: see columns message and errors in {}; fix the data and send those rows again",
            s.rejected,
            if s.rejected == 1 { " was" } else { "s were" },
            plan.results.display()
        ));
    }
    if s.invalid + s.duplicate > 0 {
        s.next_steps.push(format!(
            "{} row{} not sent (invalid or duplicate): see {}",
            s.invalid + s.duplicate,
            if s.invalid + s.duplicate == 1 {
                " was"
            } else {
                "s were"
            },
            plan.results.display()
        ));
    }
    if aborted.is_none() && s.exit_code == 0 {
        s.next_steps
            .push("nothing left to do: every record is accepted".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Rate {
        s.parse().unwrap()
    }

    #[test]
    fn rate_defaults_follow_the_published_limits() {
        assert_eq!(default_rate("https://api.banxa.com"), r("450/min"));
        assert_eq!(default_rate("https://api.banxa-sandbox.com"), r("100/min"));
        assert_eq!(default_rate("https://API.Banxa-Sandbox.com"), r("100/min"));
        assert_eq!(default_rate("http://127.0.0.1:8080"), r("450/min"));
        assert_eq!(default_mint_rate(r("100/min")), r("200/min"));
        assert_eq!(default_mint_rate(r("270/min")), r("540/min"));
        assert_eq!(default_mint_rate(r("450/min")), r("540/min"));
        assert_eq!(default_mint_rate(r("100/s")), r("540/min"));
        assert_eq!(default_mint_rate(r("2/s")), r("4/s"));
    }

    #[test]
    fn a_rate_above_the_limit_is_warned_about() {
        assert!(rate_warning(r("450/min"), "https://api.banxa.com").is_none());
        assert!(rate_warning(r("500/min"), "https://api.banxa.com").is_none());
        let w = rate_warning(r("10/s"), "https://api.banxa.com").unwrap();
        assert!(
            w.contains("600/min") && w.contains("500 requests per minute"),
            "{w}"
        );
        assert!(rate_warning(r("100/min"), "https://api.banxa-sandbox.com").is_none());
        assert!(rate_warning(r("450/min"), "https://api.banxa-sandbox.com")
            .unwrap()
            .contains("120 requests per minute"));
        assert!(rate_warning(r("100/s"), "http://127.0.0.1:1").is_none());
    }
}

#[derive(Debug, Default)]
struct ReadReport {
    records: u64,
    earlier_done: u64,
}

fn read_jobs(
    input: &mut Input,
    prior: Option<&Prior>,
    ledger: Option<&crate::ledger::LedgerReader>,
    jobs: &mpsc::Sender<Job>,
    out: &mpsc::Sender<OutMsg>,
    abort: &Abort,
) -> Result<ReadReport, crate::input::InputError> {
    let mut report = ReadReport::default();
    let mut body = Vec::with_capacity(512);
    let mut dup = String::new();
    loop {
        if abort.is_triggered() {
            break;
        }
        let Some(item) = input.next_item()? else {
            break;
        };
        report.records = item.record;
        if let Some(p) = prior {
            if let Some(o) = p.outcome(item.record) {
                if !p.matches(item.record, item.identity_reference) {
                    abort.trigger(AbortReason::Input(format!(
                        "the results file does not belong to this input: record {} (line {}) is `{}` in the input but something else in the results file; use the same input, or --results for a new file",
                        item.record, item.line, item.identity_reference
                    )));
                    break;
                }
                report.earlier_done += 1;
                if o == Outcome::Failed
                    && out
                        .blocking_send(OutMsg::EarlierFailed(item.raw.to_byte_record()))
                        .is_err()
                {
                    break;
                }
                continue;
            }
        }
        let sent = match &item.verdict {
            Verdict::Invalid(why) => send_unsent(out, &item, Outcome::Invalid, why.clone()),
            Verdict::Duplicate { of } => {
                crate::input::duplicate_message(*of, &mut dup);
                send_unsent(out, &item, Outcome::Duplicate, dup.clone())
            }
            Verdict::Valid(row) => {
                let fingerprint = ledger
                    .map(|_| crate::model::fingerprint(row.email, row.mobile_number, row.vendor));
                let skip = matches!((ledger, &fingerprint), (Some(l), Some(fp)) if l.should_skip(row.identity_reference, fp));
                if skip {
                    send_unsent(
                        out,
                        &item,
                        Outcome::Skipped,
                        "already accepted with the same details (ledger)".into(),
                    )
                } else {
                    let payload = if row.applicant_id.is_empty() {
                        row.share_request().write_body(&mut body);
                        Payload::Body(Bytes::copy_from_slice(&body))
                    } else {
                        Payload::Mint {
                            applicant_id: row.applicant_id.to_string(),
                            email: row.email.to_string(),
                            mobile_number: row.mobile_number.to_string(),
                            vendor: row.vendor,
                        }
                    };
                    let job = Job {
                        record: item.record,
                        line: item.line,
                        identity_reference: row.identity_reference.to_string(),
                        payload,
                        private: vec![
                            row.email.to_string(),
                            row.mobile_number.to_string(),
                            row.token.to_string(),
                        ],
                        raw: item.raw.to_byte_record(),
                        fingerprint,
                    };
                    jobs.blocking_send(job).map_err(|_| ())
                }
            }
        };
        if sent.is_err() {
            // The dispatcher stopped (abort): this record stays unsent.
            break;
        }
    }
    Ok(report)
}

/// Sends the outcome of a record that needs no request (invalid,
/// duplicate, skipped) straight to the journal.
fn send_unsent(
    out: &mpsc::Sender<OutMsg>,
    item: &crate::input::Item<'_>,
    outcome: Outcome,
    message: String,
) -> Result<(), ()> {
    out.blocking_send(OutMsg::Final(journal::unsent(
        item.record,
        item.line,
        item.identity_reference,
        outcome,
        message,
    )))
    .map_err(|_| ())
}

/// First SIGINT/SIGTERM: stop taking rows, drain (exit 3). Second: exit at
/// once; every row already journaled is safe (flushed per row).
async fn watch_signals(abort: Abort) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    let mut seen = 0;
    loop {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        seen += 1;
        if seen == 1 {
            eprintln!("\nkycshare: {name}: finishing requests in flight, then stopping (again to stop at once)");
            abort.trigger(AbortReason::Signal(name.to_string()));
        } else {
            eprintln!("kycshare: {name} again: exiting now; rows in the results file are safe, continue with --resume");
            std::process::exit(3);
        }
    }
}

pub const RUN_ABOUT: &str = "\
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
