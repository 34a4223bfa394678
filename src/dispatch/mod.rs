//! The dispatch stage: valid rows in, final outcomes out.
//!
//! ```text
//! job -> in-flight slot -> rate limiter -> sign + send -> policy::decide
//!          ^                                                |
//!          +---- retry: backoff (slot released) <-----------+
//! ```
//!
//! - [`limiter`]: the rate (never above it over any window, no burst).
//! - [`concurrency`]: how many requests may be in flight (`auto`: Little's law).
//! - [`policy`]: the pure retry policy (answer -> retry after D, final outcome, or stop).
//! - [`client`]: one signed request and its answer.
//!
//! A job whose run is aborted (401, signal, storage failure) before its
//! final outcome produces no outcome at all: it is not in the results file,
//! so `--resume` sends it later. Requests already in flight finish (bounded
//! by `--timeout`) and their outcomes are kept.

pub mod client;
pub mod concurrency;
pub mod limiter;
pub mod policy;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::output::Outcome;
use client::{BanxaClient, Reply};
use concurrency::Slots;
use limiter::RateLimiter;
use policy::Decision;

/// One valid row, ready to send.
pub struct Job {
    pub record: u64,
    pub line: u64,
    pub identity_reference: String,
    /// The exact body to send (compact JSON).
    pub body: Bytes,
    /// Values that must never appear in a message we write (the row's own
    /// email and mobile number), scrubbed from Banxa's messages.
    pub private: Vec<String>,
    /// The input record as read, for the retry file.
    pub raw: csv::ByteRecord,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("record", &self.record)
            .field("identity_reference", &self.identity_reference)
            .finish_non_exhaustive()
    }
}

/// A record's final outcome, for the output stage.
#[derive(Debug, Clone)]
pub struct Final {
    pub record: u64,
    pub line: u64,
    pub identity_reference: String,
    pub outcome: Outcome,
    pub http_status: Option<u16>,
    pub attempts: u32,
    pub trace_id: String,
    pub message: String,
    pub errors: String,
    pub latency_ms: Option<u64>,
    pub completed_at: SystemTime,
    /// The input record, kept only for `failed` (the retry file).
    pub raw: Option<csv::ByteRecord>,
}

/// Messages to the output stage.
#[derive(Debug)]
pub enum OutMsg {
    Final(Final),
    /// A record that failed in an earlier run (`--resume`): retry file only.
    EarlierFailed(csv::ByteRecord),
    /// Once a second: sync the results file if rows were written.
    Tick,
}

/// Why a run stopped before the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortReason {
    Unauthorized(String),
    Signal(String),
    Storage(String),
    Input(String),
    /// The server's TLS certificate is not trusted.
    Untrusted(String),
}

impl std::fmt::Display for AbortReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AbortReason::Unauthorized(m) => write!(f, "{m}"),
            AbortReason::Signal(s) => write!(
                f,
                "{s} received: stopped taking new rows, let requests in flight finish"
            ),
            AbortReason::Storage(m) => write!(f, "cannot write the results: {m}"),
            AbortReason::Input(m) => write!(f, "input error: {m}"),
            AbortReason::Untrusted(m) => write!(f, "{m}"),
        }
    }
}

/// Stop signal shared by every stage; the first reason wins.
#[derive(Clone, Default)]
pub struct Abort {
    token: CancellationToken,
    reason: Arc<Mutex<Option<AbortReason>>>,
}

impl Abort {
    pub fn new() -> Abort {
        Abort::default()
    }

    pub fn trigger(&self, reason: AbortReason) {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            tracing::warn!(reason = %reason, "stopping the run");
            *r = Some(reason);
        }
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    pub fn reason(&self) -> Option<AbortReason> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub async fn triggered(&self) {
        self.token.cancelled().await
    }
}

/// Settings of the dispatcher.
pub struct DispatchConfig {
    pub max_attempts: u32,
    pub limiter: Option<Arc<RateLimiter>>,
    pub slots: Arc<Slots>,
}

/// Counters the summary reports.
#[derive(Debug, Default)]
pub struct DispatchStats {
    pub requests_sent: AtomicU64,
    pub retries: AtomicU64,
}

struct Ctx {
    client: Arc<BanxaClient>,
    cfg: DispatchConfig,
    out: mpsc::Sender<OutMsg>,
    abort: Abort,
    stats: Arc<DispatchStats>,
}

/// Sends every job that arrives on `jobs` until the channel closes or the
/// run is aborted; returns when every started job has finished.
pub async fn dispatch(
    mut jobs: mpsc::Receiver<Job>,
    out: mpsc::Sender<OutMsg>,
    client: Arc<BanxaClient>,
    cfg: DispatchConfig,
    abort: Abort,
    stats: Arc<DispatchStats>,
) {
    // Jobs in progress, in flight or waiting to retry: bounds memory.
    let outstanding = Arc::new(Semaphore::new((cfg.slots.limit() * 4).max(1024)));
    let slots = cfg.slots.clone();
    let ctx = Arc::new(Ctx {
        client,
        cfg,
        out,
        abort: abort.clone(),
        stats,
    });
    let adjuster = {
        let abort = abort.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = tick.tick() => slots.adjust(),
                    _ = abort.triggered() => break,
                }
            }
        })
    };
    let mut tasks = JoinSet::new();
    loop {
        let job = tokio::select! {
            biased;
            _ = abort.triggered() => None,
            j = jobs.recv() => j,
        };
        let Some(job) = job else { break };
        let permit = tokio::select! {
            biased;
            _ = abort.triggered() => break,
            p = outstanding.clone().acquire_owned() => p.expect("never closed"),
        };
        let ctx = ctx.clone();
        tasks.spawn(async move {
            process(job, &ctx).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    // Unsent jobs left in the channel get no outcome: --resume sends them.
    jobs.close();
    while tasks.join_next().await.is_some() {}
    adjuster.abort();
}

async fn process(job: Job, ctx: &Ctx) {
    let mut attempts: u32 = 0;
    loop {
        let slot = tokio::select! {
            biased;
            _ = ctx.abort.triggered() => return,
            s = ctx.cfg.slots.acquire() => s,
        };
        if let Some(limiter) = &ctx.cfg.limiter {
            tokio::select! {
                biased;
                _ = ctx.abort.triggered() => return,
                _ = limiter.until_ready() => {}
            }
        }
        if ctx.abort.is_triggered() {
            return;
        }
        attempts += 1;
        let reply = ctx.client.send(job.body.clone()).await;
        drop(slot);
        ctx.cfg.slots.observe(reply.latency);
        ctx.stats.requests_sent.fetch_add(1, Ordering::Relaxed);
        let decision = policy::decide(
            &reply.answer,
            attempts,
            ctx.cfg.max_attempts,
            rand::random::<f64>(),
        );
        tracing::debug!(
            record = job.record,
            identity_reference = %job.identity_reference,
            attempt = attempts,
            status = ?reply.status(),
            latency_ms = reply.latency.as_millis() as u64,
            decision = ?decision,
            "answer"
        );
        match decision {
            Decision::Final(outcome) => {
                let f = final_of(&job, outcome, attempts, reply);
                // The output stage outlives the dispatcher; a closed channel
                // means the run is already being torn down.
                let _ = ctx.out.send(OutMsg::Final(f)).await;
                return;
            }
            Decision::Unauthorized => {
                ctx.abort.trigger(AbortReason::Unauthorized(format!(
                    "Banxa answered 401 Unauthenticated (record {}): the API key or secret is wrong or revoked",
                    job.record
                )));
                return;
            }
            Decision::Untrusted => {
                ctx.abort.trigger(AbortReason::Untrusted(format!(
                    "{} (record {}): nothing was sent over this connection",
                    reply.message, job.record
                )));
                return;
            }
            Decision::Retry(delay) => {
                ctx.stats.retries.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    biased;
                    _ = ctx.abort.triggered() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

fn final_of(job: &Job, outcome: Outcome, attempts: u32, reply: Reply) -> Final {
    let mut message = if reply.message.is_empty() {
        match (outcome, reply.status()) {
            (Outcome::Failed, None) => reply.message.clone(),
            (Outcome::Failed, Some(s)) => format!("HTTP {s}"),
            _ => String::new(),
        }
    } else {
        reply.message.clone()
    };
    if outcome == Outcome::Failed {
        message = format!("gave up after {attempts} attempts: {message}");
    }
    let mut errors = reply.errors.clone();
    for p in &job.private {
        if !p.is_empty() {
            message = message.replace(p.as_str(), "***");
            errors = errors.replace(p.as_str(), "***");
        }
    }
    Final {
        record: job.record,
        line: job.line,
        identity_reference: job.identity_reference.clone(),
        outcome,
        http_status: reply.status(),
        attempts,
        trace_id: reply.trace_id,
        message,
        errors,
        latency_ms: Some(reply.latency.as_millis() as u64),
        completed_at: SystemTime::now(),
        raw: (outcome == Outcome::Failed).then(|| job.raw.clone()),
    }
}
