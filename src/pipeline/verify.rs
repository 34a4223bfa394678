//! The closed loop (SPEC "Closed loop: verification"): after a run, ask
//! Banxa about each identity it accepted, `GET
//! /eapi/v0/identities/{identityReference}`, and write what it says to
//! the verification file (and, with `--ledger`, into the ledger).
//!
//! ```text
//! feed thread (accepted rows of RESULTS | ledger's unverified) --jobs-->
//!     dispatcher (the run's: limiter, breaker, retry policy, 401 stop) --finals-->
//!         writer thread (verification file, ledger statuses, progress)
//! ```
//!
//! The checks go through the same dispatcher as the shares
//! ([`crate::dispatch::Payload::Verify`]): one rate budget (Banxa counts
//! every endpoint), the same retries, pauses in an outage and the same
//! stop on a 401. A stopped check leaves the identities not checked out of
//! the file; `--resume` checks them.
//!
//! Not for: what a status means (written as it comes) or re-sharing (that
//! is `run --ledger … --reshare-unverified AGE`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::manifest::{shell_line, shell_word, Manifest};
use super::plan::{check_base_url, default_rate, rate_warning, PlanError};
use super::RunError;
use crate::credentials::BanxaCredentials;
use crate::dispatch::breaker::Breaker;
use crate::dispatch::client::BanxaClient;
use crate::dispatch::concurrency::{Concurrency, Slots};
use crate::dispatch::limiter::{Rate, RateLimiter};
use crate::dispatch::{self, DispatchConfig, DispatchStats, Job, Payload};
use crate::http::{http_client, HttpOptions};
use crate::ledger::{Ledger, LedgerLocation, LedgerView};
use crate::model::{Abort, AbortReason, OutMsg, Outcome};
use crate::output::progress::{thousands, Progress};
use crate::output::results::{looks_like_results, HEADER as RESULTS_HEADER};
use crate::output::verification::{
    id_hash, looks_like_verification, read_prior_checks, StatusCounts, Verification,
    VerificationWriter, VERIFIED,
};
use crate::output::OutputError;
use crate::request::{NonceSource, Signer};

/// What the operator asked `verify` for.
#[derive(Debug, Clone)]
pub struct VerifySettings {
    /// The results file of the run to verify.
    pub results: Option<PathBuf>,
    /// `--ledger`: record the statuses there; without `results`, check the
    /// ledger's accepted identities not known to be `VERIFIED`.
    pub ledger: Option<LedgerLocation>,
    /// `--output` (default: beside the input, export.verify.csv).
    pub output: Option<PathBuf>,
    /// `None`: the run's, from its manifest.
    pub base_url: Option<String>,
    /// `None`: the run's, else the default for the base URL.
    pub rate: Option<Rate>,
    pub concurrency: Concurrency,
    pub max_attempts: u32,
    pub timeout: Duration,
    pub max_outage: Duration,
    pub resume: bool,
    pub force: bool,
    /// Given directly (the demo); `None` reads the environment.
    pub credentials: Option<BanxaCredentials>,
    pub api_secret_file: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    pub progress: bool,
    pub progress_interval: Duration,
}

impl VerifySettings {
    /// The defaults (`kycshare verify`'s), nothing to check yet.
    pub fn new() -> VerifySettings {
        VerifySettings {
            results: None,
            ledger: None,
            output: None,
            base_url: None,
            rate: None,
            concurrency: Concurrency::Auto,
            max_attempts: super::plan::DEFAULT_MAX_ATTEMPTS,
            timeout: Duration::from_secs_f64(super::plan::DEFAULT_TIMEOUT_SECS),
            max_outage: crate::dispatch::breaker::DEFAULT_MAX_OUTAGE,
            resume: false,
            force: false,
            credentials: None,
            api_secret_file: None,
            ca_cert: None,
            progress: true,
            progress_interval: crate::output::progress::DEFAULT_INTERVAL,
        }
    }
}

impl Default for VerifySettings {
    fn default() -> Self {
        VerifySettings::new()
    }
}

/// Where the identities to check come from.
#[derive(Debug, Clone)]
enum Source {
    /// The `accepted` rows of a run's results file.
    Results(PathBuf),
    /// The ledger's accepted identities whose last status is not VERIFIED.
    Ledger(LedgerLocation),
}

/// `verify`'s settings resolved: defaults, the run's manifest, credentials.
struct VerifyPlan {
    source: Source,
    ledger: Option<LedgerLocation>,
    output: PathBuf,
    base_url: String,
    rate: Rate,
    creds: BanxaCredentials,
    http: HttpOptions,
    settings: VerifySettings,
    warnings: Vec<String>,
    /// Replace an existing verification file.
    replace: bool,
    /// When the run was started (its manifest): a check older than that
    /// belongs to an earlier run of the same files.
    run_started: Option<String>,
}

fn usage(s: impl Into<String>) -> RunError {
    RunError::Plan(PlanError::Usage(s.into()))
}

/// `export.results.csv` -> `export.verify.csv` (beside the run's input when
/// its manifest names one).
fn default_output(results: &Path, manifest: Option<&Manifest>) -> PathBuf {
    if let Some(m) = manifest {
        if m.input.as_os_str() != "-" {
            return crate::input::source::beside(&m.input, "verify");
        }
    }
    let name = results
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name
        .strip_suffix(".results.csv")
        .or_else(|| name.strip_suffix(".csv"))
        .unwrap_or(&name);
    results.with_file_name(format!("{stem}.verify.csv"))
}

fn resolve(s: VerifySettings) -> Result<VerifyPlan, RunError> {
    let manifest = match &s.results {
        Some(r) => {
            if !r.exists() {
                return Err(usage(format!(
                    "{}: no such results file (give the results file of a run: export.results.csv)",
                    r.display()
                )));
            }
            if !looks_like_results(r) {
                return Err(RunError::Output(OutputError::NotResults {
                    path: r.display().to_string(),
                    reason: format!("its header is not `{RESULTS_HEADER}`"),
                }));
            }
            Manifest::load(r).ok().flatten()
        }
        None => None,
    };
    let source = match (&s.results, &s.ledger) {
        (Some(r), _) => Source::Results(r.clone()),
        (None, Some(l)) => Source::Ledger(l.clone()),
        (None, None) => {
            return Err(usage(
                "give the results file of a run (kycshare verify export.results.csv) or a ledger (kycshare verify --ledger ledger.db)",
            ))
        }
    };
    // A file must exist (verify never creates one); a PostgreSQL ledger
    // is checked when it is opened (no kycshare tables: created empty).
    if let Some(l) = s.ledger.as_ref().and_then(|l| l.as_path()) {
        if !l.exists() {
            return Err(RunError::Ledger(crate::ledger::LedgerError::Missing {
                path: l.display().to_string(),
            }));
        }
    }
    if matches!(source, Source::Ledger(_)) && s.resume {
        return Err(usage(
            "--resume is for a results file's check; with --ledger alone, run the same command again: identities already VERIFIED are not checked again",
        ));
    }
    let base_url = match s
        .base_url
        .clone()
        .or_else(|| manifest.as_ref().map(|m| m.base_url.clone()))
    {
        Some(u) => check_base_url(&u)?,
        None => {
            return Err(usage(
                "no base URL: give --base-url (or KYCSHARE_BASE_URL); a run's results file with its manifest beside it gives the run's own",
            ))
        }
    };
    let rate = match s.rate {
        Some(r) => r,
        None => manifest
            .as_ref()
            .and_then(|m| m.rate.as_deref())
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| default_rate(&base_url)),
    };
    let warnings = rate_warning(rate, &base_url).into_iter().collect();
    let secret_file = s
        .api_secret_file
        .clone()
        .or_else(|| manifest.as_ref().and_then(|m| m.api_secret_file.clone()));
    let creds = match s.credentials.clone() {
        Some(c) => c,
        None => crate::credentials::banxa(secret_file.as_deref())
            .map_err(PlanError::from)?
            .ok_or_else(|| {
                PlanError::NoCredentials("no credentials: set BANXA_API_KEY and BANXA_API_SECRET (or BANXA_API_KEY and --api-secret-file FILE)".into())
            })?,
    };
    let ca_cert = s
        .ca_cert
        .clone()
        .or_else(|| manifest.as_ref().and_then(|m| m.ca_cert.clone()));
    let ca_cert_pem = match &ca_cert {
        Some(p) => Some(std::fs::read(p).map_err(|e| PlanError::CaCert {
            path: p.display().to_string(),
            reason: crate::model::describe_io(&e),
        })?),
        None => None,
    };
    let output = match (&s.output, &source) {
        (Some(o), _) => o.clone(),
        (None, Source::Results(r)) => default_output(r, manifest.as_ref()),
        (None, Source::Ledger(l)) => l.beside("verify"),
    };
    if s.resume && !output.exists() {
        return Err(usage(format!(
            "--resume: {} does not exist, so there is no check to continue; run without --resume",
            output.display()
        )));
    }
    // A ledger's check is a report of that night (the ledger keeps the
    // statuses): it replaces the last one. A run's check is the journal
    // that --resume reads: it is protected.
    let replace = s.force
        || (matches!(source, Source::Ledger(_))
            && (!output.exists() || looks_like_verification(&output)));
    if output.exists() && !s.resume && !replace && matches!(source, Source::Ledger(_)) {
        return Err(RunError::Output(OutputError::NotVerification {
            path: output.display().to_string(),
            reason: "it exists and is not a verification file: it is not replaced".into(),
        }));
    }
    if output.exists() && !s.resume && !replace {
        return Err(RunError::Output(OutputError::Exists {
            path: output.display().to_string(),
            what: "the verification of an earlier check".into(),
            advice: "Continue it with --resume, replace it with --force (every identity is checked again), or write elsewhere with --output FILE.".into(),
        }));
    }
    Ok(VerifyPlan {
        source,
        ledger: s.ledger.clone(),
        output,
        base_url,
        rate,
        creds,
        http: HttpOptions {
            ca_cert_pem,
            max_idle_per_host: 64,
        },
        warnings,
        replace,
        run_started: manifest.as_ref().map(|m| m.started_at.clone()),
        settings: s,
    })
}

/// What `verify` reports (stderr as text, stdout with `--json`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifySummary {
    pub command: &'static str,
    /// The results file checked, or the ledger.
    pub source: String,
    pub output: String,
    pub base_url: String,
    /// Identities with a row in the verification file (earlier checks of
    /// a resumed one included).
    pub checked: u64,
    /// Of those, checked by an earlier, resumed check.
    pub from_earlier: u64,
    pub verified: u64,
    pub not_verified: u64,
    /// Rows by `kycStatus`.
    pub statuses: BTreeMap<String, u64>,
    /// Identities not checked because the check stopped.
    pub pending: u64,
    pub requests_sent: u64,
    pub elapsed_seconds: f64,
    pub checks_per_second: f64,
    pub aborted: Option<String>,
    pub exit_code: i32,
    pub next_steps: Vec<String>,
}

impl VerifySummary {
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "verify: {} identities checked against {} in {:.1}s ({} requests){}",
            thousands(self.checked),
            self.base_url,
            self.elapsed_seconds,
            thousands(self.requests_sent),
            if self.from_earlier > 0 {
                format!(
                    ", {} of them by the earlier check",
                    thousands(self.from_earlier)
                )
            } else {
                String::new()
            }
        );
        for (status, n) in &self.statuses {
            let _ = writeln!(s, "  {status:<12} {:>10}", thousands(*n));
        }
        if self.pending > 0 {
            let _ = writeln!(s, "  {:<12} {:>10}", "not checked", thousands(self.pending));
        }
        let _ = writeln!(s, "verification file: {}", self.output);
        if let Some(a) = &self.aborted {
            let _ = writeln!(s, "stopped: {a}");
        }
        for step in &self.next_steps {
            let _ = writeln!(s, "next: {step}");
        }
        s
    }
}

/// Runs a verification; the summary, or an error before anything was
/// sent (exit 2). A second signal returns [`RunError::Interrupted`].
pub async fn verify(s: VerifySettings, handle_signals: bool) -> Result<VerifySummary, RunError> {
    let plan = resolve(s)?;
    let hard = CancellationToken::new();
    tokio::select! {
        r = run_plan(plan, handle_signals, hard.clone()) => r,
        _ = hard.cancelled() => Err(RunError::Interrupted),
    }
}

/// What the writer thread hands back.
struct Written {
    error: Option<String>,
}

async fn run_plan(
    plan: VerifyPlan,
    handle_signals: bool,
    hard: CancellationToken,
) -> Result<VerifySummary, RunError> {
    let started = Instant::now();
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    let counts = Arc::new(StatusCounts::default());
    // One pass over the results file before anything is written: how many
    // records are to be checked (the progress bar's total), and, resuming,
    // that the earlier check is this run's.
    let accepted_in = |done: &std::collections::HashMap<u64, u64>| match &plan.source {
        Source::Results(r) => accepted_rows(r, done, &plan.output).map(Some),
        Source::Ledger(_) => Ok(None),
    };
    let (writer, done, accepted) = if plan.settings.resume {
        let prior = read_prior_checks(&plan.output, true)?;
        if prior.truncated_bytes > 0 {
            tracing::warn!(
                bytes = prior.truncated_bytes,
                "discarded a last line cut short in the verification file; its identity is checked again"
            );
        }
        if let (Some(started), Some(first)) = (&plan.run_started, &prior.earliest) {
            if first.as_str() < started.as_str() {
                return Err(usage(format!(
                    "{}: its first check ({first}) is older than the run it would continue (started {started}): it belongs to an earlier run of the same files; check this run afresh with --force",
                    plan.output.display()
                )));
            }
        }
        let accepted = accepted_in(&prior.records)?;
        if prior.unanswered > 0 {
            tracing::info!(
                rows = prior.unanswered,
                "the identities the earlier check got no answer for are asked again"
            );
        }
        for (k, n) in &prior.counts {
            counts.add(k, *n);
        }
        (
            VerificationWriter::append(&plan.output)?,
            prior.records,
            accepted,
        )
    } else {
        let accepted = accepted_in(&Default::default())?;
        crate::output::check_writable(&plan.output)?;
        (
            VerificationWriter::create(&plan.output, plan.replace)?,
            Default::default(),
            accepted,
        )
    };
    let from_earlier = done.len() as u64;
    // The ledger: taken for the statuses (its run lock: one writer at a time).
    let ledger = match &plan.ledger {
        Some(p) => Some(Ledger::open_for_statuses(p)?),
        None => None,
    };
    // With the ledger as the source, the identities are read through a
    // second, read-only connection, streaming.
    let view = match &plan.source {
        Source::Ledger(p) => Some(LedgerView::open_at(p)?),
        Source::Results(_) => None,
    };
    // The total, for the progress bar's ETA: one quick pass over the
    // results file (or a count in the ledger).
    let total = match &view {
        Some(v) => Some(v.unverified()?),
        None => accepted,
    };

    let http = http_client(&plan.http).map_err(RunError::Http)?;
    let signer = Signer::new(plan.creds.api_key.clone(), &plan.creds.api_secret);
    let client = Arc::new(BanxaClient::new(
        http,
        &plan.base_url,
        signer,
        Arc::new(NonceSource::new()),
        plan.settings.timeout,
    ));
    let abort = Abort::new();
    let stats = Arc::new(DispatchStats::default());
    let progress = Progress::new(plan.settings.progress, total).with_status_lines(
        plan.settings.progress,
        plan.settings.progress_interval,
        counts.clone(),
    );
    progress.inc(from_earlier);
    tracing::info!(
        output = %plan.output.display(),
        base_url = %plan.base_url,
        rate = %plan.rate,
        earlier = from_earlier,
        "verification starting"
    );

    let (jobs_tx, jobs_rx) = mpsc::channel::<Vec<Job>>(8);
    let (out_tx, out_rx) = mpsc::channel::<OutMsg>(crate::model::OUT_DEPTH);
    let writer_thread = {
        let counts = counts.clone();
        let progress = progress.clone();
        let abort = abort.clone();
        std::thread::Builder::new()
            .name("verify-writer".into())
            .spawn(move || write_checks(writer, ledger, out_rx, &counts, &progress, &abort))
            .map_err(|e| RunError::Thread(format!("cannot start the writer thread: {e}")))?
    };
    let ticker_stop = CancellationToken::new();
    tokio::spawn(crate::output::journal::ticker(
        out_tx.clone(),
        ticker_stop.clone(),
    ));
    let resume_cmd = resume_command(&plan);
    let signals = handle_signals.then(|| {
        tokio::spawn(super::signals::watch(
            abort.clone(),
            hard,
            resume_cmd.clone().unwrap_or_default(),
        ))
    });
    let feed = {
        let source = plan.source.clone();
        let abort = abort.clone();
        let out = out_tx.clone();
        std::thread::Builder::new()
            .name("verify-feed".into())
            .spawn(move || feed(&source, view, &done, &jobs_tx, &out, &abort))
            .map_err(|e| RunError::Thread(format!("cannot start the feed thread: {e}")))?
    };
    let slots = Slots::new(plan.settings.concurrency, Some(plan.rate.per_second()));
    dispatch::dispatch(
        jobs_rx,
        out_tx.clone(),
        client,
        DispatchConfig {
            max_attempts: plan.settings.max_attempts,
            limiter: Some(Arc::new(RateLimiter::new(plan.rate))),
            slots,
            mint: None,
            breaker: Some(Arc::new(Breaker::new(plan.settings.max_outage))),
        },
        abort.clone(),
        stats.clone(),
    )
    .await;
    let fed = tokio::task::spawn_blocking(move || feed.join())
        .await
        .map_err(|e| RunError::Thread(format!("feed thread: {e}")))?
        .map_err(|_| RunError::Thread("the feed thread panicked".into()))?;
    ticker_stop.cancel();
    drop(out_tx);
    let written = tokio::task::spawn_blocking(move || writer_thread.join())
        .await
        .map_err(|e| RunError::Thread(format!("writer thread: {e}")))?
        .map_err(|_| RunError::Thread("the writer thread panicked".into()))?;
    if let Some(s) = signals {
        s.abort();
    }
    progress.finish();
    let to_check = match fed {
        Ok(n) => n,
        Err(e) => {
            abort.trigger(AbortReason::Input(e));
            0
        }
    };
    if let Some(e) = written.error {
        abort.trigger(AbortReason::Storage(e));
    }

    let statuses = counts.snapshot();
    let checked: u64 = statuses.values().sum();
    let verified = statuses.get(VERIFIED).copied().unwrap_or(0);
    let aborted = abort.reason().map(|r| r.to_string());
    let pending = match total {
        Some(t) if aborted.is_some() => t.saturating_sub(checked),
        _ => (from_earlier + to_check).saturating_sub(checked),
    };
    let exit_code = if aborted.is_some() {
        3
    } else if verified == checked {
        0
    } else {
        1
    };
    let elapsed = started.elapsed().as_secs_f64();
    let mut summary = VerifySummary {
        command: "verify",
        source: match &plan.source {
            Source::Results(r) => r.display().to_string(),
            Source::Ledger(l) => l.display().to_string(),
        },
        output: plan.output.display().to_string(),
        base_url: plan.base_url.clone(),
        checked,
        from_earlier,
        verified,
        not_verified: checked - verified,
        statuses,
        pending,
        requests_sent: stats.requests_sent.load(Ordering::Relaxed),
        elapsed_seconds: elapsed,
        checks_per_second: checked.saturating_sub(from_earlier) as f64 / elapsed.max(1e-9),
        aborted,
        exit_code,
        next_steps: Vec::new(),
    };
    next_steps(&mut summary, &plan, resume_cmd);
    Ok(summary)
}

/// The command line of this check with `extra` flags, complete (what the
/// operator gave that the run's manifest does not supply).
fn command(plan: &VerifyPlan, extra: &[&str]) -> String {
    let s = &plan.settings;
    let mut w = vec!["kycshare".to_string(), "verify".to_string()];
    if let Source::Results(r) = &plan.source {
        w.push(r.display().to_string());
    }
    if let Some(l) = &plan.ledger {
        w.push("--ledger".into());
        w.push(l.display().to_string());
    }
    if let Some(u) = &s.base_url {
        w.push("--base-url".into());
        w.push(u.clone());
    }
    if let Some(o) = &s.output {
        w.push("--output".into());
        w.push(o.display().to_string());
    }
    if let Some(r) = &s.rate {
        w.push("--rate".into());
        w.push(r.to_string());
    }
    if let Some(f) = &s.api_secret_file {
        w.push("--api-secret-file".into());
        w.push(f.display().to_string());
    }
    if let Some(f) = &s.ca_cert {
        w.push("--ca-cert".into());
        w.push(f.display().to_string());
    }
    w.extend(extra.iter().map(|e| e.to_string()));
    shell_line(&w)
}

/// The command that continues a stopped check (`None` for a ledger's:
/// running it again continues).
fn resume_command(plan: &VerifyPlan) -> Option<String> {
    match plan.source {
        Source::Results(_) => Some(command(plan, &["--resume"])),
        Source::Ledger(_) => Some(command(plan, &[])),
    }
}

/// How [`resume_command`] continues, in words.
fn resume_words(plan: &VerifyPlan) -> &'static str {
    match plan.source {
        Source::Results(_) => "identities already answered are not asked again",
        Source::Ledger(_) => {
            "it asks again every accepted identity the ledger does not know as VERIFIED"
        }
    }
}

fn next_steps(summary: &mut VerifySummary, plan: &VerifyPlan, resume: Option<String>) {
    // Checking again: a run's check is replaced (every accepted identity
    // asked again); a ledger's asks what is not VERIFIED yet.
    let recheck = match plan.source {
        Source::Results(_) => command(plan, &["--force"]),
        Source::Ledger(_) => command(plan, &[]),
    };
    let steps = &mut summary.next_steps;
    if summary.aborted.is_some() {
        if let Some(r) = resume {
            steps.push(format!(
                "fix the cause above, then continue the check ({}): {r}",
                resume_words(plan)
            ));
        }
        return;
    }
    if summary.checked == 0 {
        steps.push("nothing to verify: no identity was accepted in this run".into());
        return;
    }
    let pending = summary
        .statuses
        .iter()
        .filter(|(k, _)| k.as_str() == "PENDING")
        .map(|(_, n)| *n)
        .sum::<u64>();
    let unknown = summary.statuses.get("unknown").copied().unwrap_or(0);
    if summary.not_verified == 0 {
        steps.push(format!(
            "every identity is VERIFIED by Banxa; the file {} lists them",
            summary.output
        ));
        return;
    }
    if pending > 0 {
        steps.push(format!(
            "{pending} still PENDING (Banxa is still processing their KYC): check again later with {}",
            recheck
        ));
    }
    if unknown > 0 {
        steps.push(format!(
            "{unknown} could not be checked or had no status (see `message` in {}); check again with {}",
            summary.output,
            recheck
        ));
    }
    let others = summary.not_verified - pending - unknown;
    if others > 0 {
        let share = match &plan.ledger {
            Some(l) => format!(
                "a `kycshare run` with `--ledger {} --reshare-unverified 24h` shares again those still not VERIFIED when checked a day or more after their share (with --mint, with fresh tokens)",
                shell_word(&l.display().to_string())
            ),
            None => "to share them again, run nightly with a ledger (docs/verification.md)".to_string(),
        };
        steps.push(format!(
            "{others} neither VERIFIED nor PENDING (REJECTED, not_found, …: see {}); {share}",
            summary.output
        ));
    }
}

/// The identities to check, as jobs: from the results file (its
/// `accepted` rows not already checked) or the ledger (streaming). Returns
/// how many are to be checked in this session.
fn feed(
    source: &Source,
    view: Option<LedgerView>,
    done: &std::collections::HashMap<u64, u64>,
    jobs: &mpsc::Sender<Vec<Job>>,
    out: &mpsc::Sender<OutMsg>,
    abort: &Abort,
) -> Result<u64, String> {
    const BATCH: usize = 64;
    let mut batch = Vec::with_capacity(BATCH);
    let mut n = 0u64;
    let send = |batch: &mut Vec<Job>| -> bool {
        if batch.is_empty() {
            return true;
        }
        let b = std::mem::replace(batch, Vec::with_capacity(BATCH));
        !abort.is_triggered() && jobs.blocking_send(b).is_ok()
    };
    let mut push = |record: u64, id: &str, batch: &mut Vec<Job>| -> bool {
        n += 1;
        if !is_reference(id) {
            // Not sendable as a path: said in the file, never requested.
            let mut f = crate::output::journal::unsent(
                record,
                0,
                id,
                Outcome::Invalid,
                "not a valid identityReference (letters, digits and hyphens): not checked".into(),
            );
            f.completed_at = SystemTime::now();
            return out.blocking_send(OutMsg::Final(f)).is_ok();
        }
        batch.push(Job {
            record,
            line: 0,
            identity_reference: id.to_string(),
            payload: Payload::Verify,
            private: String::new(),
            raw: csv::ByteRecord::new(),
            fingerprint: None,
        });
        batch.len() < BATCH || send(batch)
    };
    match source {
        Source::Results(path) => {
            let mut rdr = complete_rows(path)?;
            let mut rec = csv::StringRecord::new();
            loop {
                match rdr.read_record(&mut rec) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => return Err(format!("{}: {e}", path.display())),
                }
                if rec.len() != 11 || &rec[3] != Outcome::Accepted.as_str() {
                    continue;
                }
                let Ok(record) = rec[0].parse::<u64>() else {
                    continue;
                };
                if done.contains_key(&record) {
                    continue;
                }
                if !push(record, &rec[2], &mut batch) {
                    return Ok(n);
                }
            }
        }
        Source::Ledger(_) => {
            let view = view.expect("a ledger source has its view");
            let mut record = 0u64;
            let mut ok = true;
            view.for_each_unverified(|id| {
                record += 1;
                ok = push(record, id, &mut batch);
                ok
            })
            .map_err(|e| e.to_string())?;
            if !ok {
                return Ok(n);
            }
        }
    }
    send(&mut batch);
    Ok(n)
}

/// The complete lines of a results file (a last line cut short by a kill
/// of its run is not a row), as CSV records after the header.
fn complete_rows(path: &Path) -> Result<csv::Reader<impl std::io::Read>, String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (_, complete) =
        crate::output::results::complete_len(&mut file, path).map_err(|e| e.to_string())?;
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(0))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(std::io::BufReader::with_capacity(
            256 * 1024,
            std::io::Read::take(file, complete),
        )))
}

/// The number of `accepted` records in the results file; refuses (exit 2)
/// to continue a check whose rows (`done`) name other identities than the
/// run's accepted records (the file of another run, or of this input
/// before the run was made again).
fn accepted_rows(
    results: &Path,
    done: &std::collections::HashMap<u64, u64>,
    output: &Path,
) -> Result<u64, RunError> {
    let mut rdr = complete_rows(results).map_err(usage)?;
    let mut rec = csv::StringRecord::new();
    let mut matched = 0usize;
    let mut accepted = 0u64;
    while rdr
        .read_record(&mut rec)
        .map_err(|e| usage(format!("{}: {e}", results.display())))?
    {
        if rec.len() != 11 {
            continue;
        }
        let Ok(record) = rec[0].parse::<u64>() else {
            continue;
        };
        if &rec[3] == Outcome::Accepted.as_str() {
            accepted += 1;
        }
        if let Some(h) = done.get(&record) {
            if &rec[3] != Outcome::Accepted.as_str() || *h != id_hash(&rec[2]) {
                return Err(usage(format!(
                    "{}: record {record} there is not record {record} of {} (another identity, or not accepted): the file belongs to another run; check this run afresh with --force, or give another --output",
                    output.display(),
                    results.display()
                )));
            }
            matched += 1;
        }
    }
    if matched != done.len() {
        return Err(usage(format!(
            "{}: it holds records that {} does not have: the file belongs to another run; check this run afresh with --force, or give another --output",
            output.display(),
            results.display()
        )));
    }
    Ok(accepted)
}

/// Banxa's identityReference syntax (ASCII letters, digits, hyphen).
fn is_reference(id: &str) -> bool {
    !id.is_empty() && id.len() <= 256 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The writer thread: every check's answer into the file (blocks of what
/// arrived together, synced once a second), the counts, the ledger.
fn write_checks(
    mut writer: VerificationWriter,
    mut ledger: Option<Ledger>,
    mut rx: mpsc::Receiver<OutMsg>,
    counts: &StatusCounts,
    progress: &Progress,
    abort: &Abort,
) -> Written {
    let mut error = None;
    let fail = |e: String, error: &mut Option<String>| {
        if error.is_none() {
            tracing::error!("{e}");
            abort.trigger(AbortReason::Storage(e.clone()));
            *error = Some(e);
        }
    };
    loop {
        let msg = match rx.try_recv() {
            Ok(m) => m,
            Err(mpsc::error::TryRecvError::Empty) => {
                if error.is_none() {
                    if let Err(e) = writer.flush() {
                        fail(e.to_string(), &mut error);
                    }
                }
                match rx.blocking_recv() {
                    Some(m) => m,
                    None => break,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        let finals = match msg {
            OutMsg::Final(f) => vec![f],
            OutMsg::Finals(v) => v,
            OutMsg::Tick => {
                if error.is_none() {
                    if let Err(e) = writer.sync() {
                        fail(e.to_string(), &mut error);
                    }
                    if let Some(l) = &mut ledger {
                        if let Err(e) = l.flush_if_due() {
                            fail(e.to_string(), &mut error);
                        }
                    }
                }
                continue;
            }
            OutMsg::EarlierFailed(_) => continue,
        };
        for f in finals {
            if error.is_some() {
                continue;
            }
            let v = Verification::of(f);
            if let (Some(l), true) = (&mut ledger, v.answered) {
                if let Err(e) = l.record_kyc(&v.identity_reference, &v.kyc_status, v.checked_at) {
                    fail(e.to_string(), &mut error);
                    continue;
                }
            }
            if let Err(e) = writer.push(&v) {
                fail(e.to_string(), &mut error);
                continue;
            }
            counts.add(&v.kyc_status, 1);
            progress.inc(1);
            tracing::debug!(
                record = v.record,
                identity_reference = %v.identity_reference,
                kyc_status = %v.kyc_status,
                http_status = v.http_status,
                "checked"
            );
            if !v.is_verified() && tracing::enabled!(tracing::Level::INFO) {
                tracing::info!(
                    record = v.record,
                    kyc_status = %v.kyc_status,
                    "record {} ({}): {}{}",
                    v.record,
                    v.identity_reference,
                    v.kyc_status,
                    if v.message.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", v.message)
                    }
                );
            }
        }
    }
    if error.is_none() {
        if let Err(e) = writer.sync() {
            fail(e.to_string(), &mut error);
        }
    }
    if let Some(mut l) = ledger {
        if let Err(e) = l.flush() {
            fail(e.to_string(), &mut error);
        }
    }
    Written { error }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_goes_beside_the_input() {
        let m = |input: &str| {
            let mut m: Manifest = serde_json::from_value(serde_json::json!({
                "version": 1, "kycshare": "x", "startedAt": "t", "input": input, "maps": [],
                "delimiter": ",", "results": "r", "retryFile": "r", "baseUrl": "b", "rate": null,
                "concurrency": "auto", "maxAttempts": 5, "timeoutSeconds": 30.0,
                "apiSecretFile": null, "caCert": null, "ledger": null, "metricsFile": null,
                "mint": null, "parent": null
            }))
            .unwrap();
            m.input = PathBuf::from(input);
            m
        };
        let r = Path::new("/w/out/export.results.csv");
        assert_eq!(
            default_output(r, Some(&m("/w/in/export.csv.gz"))),
            PathBuf::from("/w/in/export.verify.csv")
        );
        assert_eq!(
            default_output(r, None),
            PathBuf::from("/w/out/export.verify.csv")
        );
        assert_eq!(
            default_output(r, Some(&m("-"))),
            PathBuf::from("/w/out/export.verify.csv")
        );
        assert!(is_reference("c-13344") && !is_reference("c/1") && !is_reference(""));
    }
}
