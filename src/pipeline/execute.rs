//! Executing a plan: the stages connected by bounded channels,
//!
//! ```text
//! feed thread (input) --jobs--> dispatcher (async) --outcomes--> journal thread (output)
//!        \______________ invalid / duplicate / skipped outcomes ______/
//! ```
//!
//! so memory stays flat whatever the file size.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::feed::{read_jobs, ReadReport};
use super::manifest::manifest_path;
use super::plan::{check_existing_results, Plan};
use super::report::{summarise, Finished};
use super::RunError;
use crate::dispatch::client::BanxaClient;
use crate::dispatch::concurrency::Slots;
use crate::dispatch::limiter::RateLimiter;
use crate::dispatch::{self, DispatchConfig, DispatchStats, Job};
use crate::http::http_client;
use crate::input::Input;
use crate::model::{Abort, AbortReason, OutMsg, Outcome};
use crate::output::events::{EventLog, OpenError};
use crate::output::journal::{self, Journal};
use crate::output::metrics::RunMetrics;
use crate::output::metrics_server::MetricsServer;
use crate::output::progress::Progress;
use crate::output::results::{read_prior, Prior};
use crate::output::retry::RetryWriter;
use crate::output::{check_writable, Counts, ResultsWriter, Summary};
use crate::request::{NonceSource, Signer};

/// Runs the import described by `plan`. Fatal configuration and input
/// errors come back as `Err` (exit 2) before anything is sent; a second
/// signal returns [`RunError::Interrupted`] at once.
pub async fn execute(plan: Plan, handle_signals: bool) -> Result<Summary, RunError> {
    let hard = CancellationToken::new();
    tokio::select! {
        r = run_plan(plan, handle_signals, hard.clone()) => r,
        _ = hard.cancelled() => Err(RunError::Interrupted),
    }
}

async fn run_plan(
    mut plan: Plan,
    handle_signals: bool,
    hard: CancellationToken,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    let mut input = Input::open(&plan.source, &plan.opts)?;
    check_writable(&plan.results)?;
    check_writable(&plan.retry)?;
    if let Some(m) = &plan.metrics {
        check_writable(m)?;
    }
    // One run per results file: a second one would send the same rows.
    let mut events = EventLog::open(&plan.results).map_err(|e| match e {
        OpenError::Busy { .. } => RunError::Busy(e.to_string()),
        OpenError::Io { path, error } => {
            RunError::Output(crate::output::OutputError::io(&path, error))
        }
    })?;
    // The ledger: one run at a time (a second run refuses here, exit 2).
    let mut ledger = match &plan.ledger {
        Some(at) => Some(crate::ledger::Ledger::open_at(at, plan.reshare_age)?),
        None => None,
    };
    if let (Some(age), Some(_)) = (plan.reshare_age, &ledger) {
        tracing::info!(
            "--reshare-unverified {}: identities whose last verification, {} or more after they were accepted, was not VERIFIED are sent again",
            humantime::format_duration(age),
            humantime::format_duration(age)
        );
    }
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
        let replace = check_existing_results(&plan.results, plan.force || plan.resume, false)?;
        ResultsWriter::create(&plan.results, replace)?
    };
    let retry = RetryWriter::new(&plan.retry, input.header(), plan.opts.delimiter)?;
    // How the run was started, on disk before its first request: `resume`
    // continues with exactly this.
    let manifest_file = manifest_path(&plan.results);
    if !plan.manifest_stored || !manifest_file.exists() {
        plan.manifest
            .store(&plan.results)
            .map_err(|e| crate::output::OutputError::io(&manifest_file, e))?;
    } else {
        // A store cut short by a kill of an earlier session left its
        // temporary file (this run holds the lock: nobody else writes it).
        let _ = std::fs::remove_file(crate::output::retry::temp_path(&manifest_file));
    }
    if prior.is_none() {
        events.start_afresh();
    }
    events.write(
        "started",
        serde_json::json!({
            "pid": std::process::id(),
            "host": crate::output::events::host_name(),
            "kycshare": env!("CARGO_PKG_VERSION"),
            "rate": plan.rate.to_string(),
            "ratePerSecond": plan.rate.per_second(),
            "resumed": prior.as_ref().map(|p| p.rows).unwrap_or(0),
        }),
    );
    // The run enters the ledger only once every check has passed.
    let run_id = match &mut ledger {
        Some(l) => Some(l.begin_run(&plan.source.display(), std::time::SystemTime::now())?),
        None => None,
    };

    let http = http_client(&plan.http).map_err(RunError::Http)?;
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
    let stats = Arc::new(DispatchStats::default());
    let metrics = RunMetrics::new(
        counts.clone(),
        stats.live.clone(),
        Some(plan.rate.per_second()),
    );
    let metrics_server = match plan.metrics_listen {
        Some(addr) => Some(
            MetricsServer::start(addr, metrics.clone())
                .await
                .map_err(|e| {
                    RunError::Listen(format!(
                        "cannot serve the metrics at {addr} (--metrics-listen): {e}"
                    ))
                })?,
        ),
        None => None,
    };
    let events = Arc::new(std::sync::Mutex::new(events));
    // Once a second: the achieved rate's sample, and the breaker's pauses
    // into the events file.
    let sampler = {
        let live = stats.live.clone();
        let events = events.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            let mut paused_at: Option<Instant> = None;
            loop {
                tick.tick().await;
                let now = Instant::now();
                live.sample(now);
                let paused = live.paused.load(Ordering::Relaxed);
                let mut log = events.lock().unwrap_or_else(|e| e.into_inner());
                match (paused, paused_at) {
                    (true, None) => {
                        paused_at = Some(now);
                        log.write(
                            "paused",
                            serde_json::json!({"message": "Banxa not answering: sending paused, probing"}),
                        );
                    }
                    (false, Some(t)) => {
                        paused_at = None;
                        log.write(
                            "resumed",
                            serde_json::json!({"pausedSeconds": now.duration_since(t).as_secs_f64()}),
                        );
                    }
                    _ => {}
                }
            }
        })
    };
    if let Some(p) = &prior {
        for o in Outcome::ALL {
            counts.add(o, p.count(o));
        }
    }
    let progress = Progress::new(plan.progress, None).with_lines(
        plan.progress,
        plan.progress_interval,
        counts.clone(),
        "done",
    );
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
    let (jobs_tx, jobs_rx) = mpsc::channel::<Vec<Job>>(8);
    let (out_tx, out_rx) = mpsc::channel::<OutMsg>(crate::model::OUT_DEPTH);

    let journal = Journal {
        writer,
        retry,
        counts: counts.clone(),
        progress: progress.clone(),
        abort: abort.clone(),
        ledger,
        ledger_broken: false,
    };
    let journal_thread = std::thread::Builder::new()
        .name("journal".into())
        .spawn(move || journal.run(out_rx))
        .map_err(|e| RunError::Thread(format!("cannot start the journal thread: {e}")))?;

    let ticker_stop = CancellationToken::new();
    tokio::spawn(journal::ticker(out_tx.clone(), ticker_stop.clone()));

    let signals = if handle_signals {
        Some(tokio::spawn(super::signals::watch(
            abort.clone(),
            hard,
            super::manifest::resume_command(&plan.results),
        )))
    } else {
        None
    };

    // Reader thread: records -> jobs, and the outcomes that need no request.
    let feed_progress = progress.clone();
    let limit = plan.limit;
    let reader = {
        let out = out_tx.clone();
        let abort = abort.clone();
        std::thread::Builder::new()
            .name("reader".into())
            .spawn(move || {
                read_jobs(
                    &mut input,
                    super::feed::Rules {
                        limit,
                        prior: prior.as_ref(),
                        ledger: ledger_reader.as_ref(),
                    },
                    &jobs_tx,
                    &out,
                    &abort,
                    &feed_progress,
                )
            })
            .map_err(|e| RunError::Thread(format!("cannot start the reader thread: {e}")))?
    };

    dispatch::dispatch(
        jobs_rx,
        out_tx.clone(),
        client,
        DispatchConfig {
            max_attempts: plan.max_attempts,
            limiter: Some(limiter),
            slots,
            mint,
            breaker: Some(Arc::new(crate::dispatch::breaker::Breaker::new(
                plan.max_outage,
            ))),
        },
        abort.clone(),
        stats.clone(),
    )
    .await;

    let read = tokio::task::spawn_blocking(move || reader.join())
        .await
        .map_err(|e| RunError::Thread(format!("reader thread: {e}")))?
        .map_err(|_| RunError::Thread("the reader thread panicked".into()))?;
    ticker_stop.cancel();
    drop(out_tx);
    let journal = tokio::task::spawn_blocking(move || journal_thread.join())
        .await
        .map_err(|e| RunError::Thread(format!("journal thread: {e}")))?
        .map_err(|_| RunError::Thread("the journal thread panicked".into()))?;
    if let Some(s) = signals {
        s.abort();
    }
    sampler.abort();
    progress.finish();

    let read = match read {
        Ok(r) => r,
        Err(e) => {
            abort.trigger(AbortReason::Input(e.to_string()));
            ReadReport::default()
        }
    };
    let finished = Finished {
        counts: &counts,
        read,
        journal,
        requests_sent: stats.requests_sent.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        aborted: abort.reason(),
        run_id,
        metrics: metrics.clone(),
    };
    let summary = summarise(&plan, finished);
    events.lock().unwrap_or_else(|e| e.into_inner()).write(
        "ended",
        serde_json::json!({
            "exitCode": summary.exit_code,
            "reason": summary.aborted,
            "limitReached": summary.limit_reached,
        }),
    );
    if let Some(s) = metrics_server {
        s.stop().await;
    }
    Ok(summary)
}
