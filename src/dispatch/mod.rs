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
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::model::{Abort, AbortReason, Answer, Final, OutMsg, Outcome};
use client::{BanxaClient, Reply};
use concurrency::Slots;
use limiter::RateLimiter;
use policy::Decision;

/// One valid row, ready to send.
pub struct Job {
    pub record: u64,
    pub line: u64,
    pub identity_reference: String,
    /// What to send: the exact body, or the fields to build it from once a
    /// token is minted (`--mint`).
    pub payload: Payload,
    /// Values that must never appear in a message we write (the row's own
    /// email and mobile number), scrubbed from Banxa's messages.
    pub private: Vec<String>,
    /// The input record as read, for the retry file.
    pub raw: csv::ByteRecord,
    /// What the ledger records for this row (with `--ledger`).
    pub fingerprint: Option<[u8; 32]>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("record", &self.record)
            .field("identity_reference", &self.identity_reference)
            .finish_non_exhaustive()
    }
}

/// The request of a job.
pub enum Payload {
    /// The exact body to send (compact JSON), token included.
    Body(Bytes),
    /// Just-in-time minting: a fresh share token is minted from Sumsub for
    /// every attempt, then the body is built with it.
    Mint {
        applicant_id: String,
        email: String,
        mobile_number: String,
        vendor: &'static str,
    },
}

/// Minting settings (`run --mint`).
pub struct MintConfig {
    pub client: crate::request::mint::SumsubClient,
    /// Sumsub's own rate limit (`--mint-rate`).
    pub limiter: Arc<RateLimiter>,
    pub timeout: Duration,
}

/// Settings of the dispatcher.
pub struct DispatchConfig {
    pub max_attempts: u32,
    pub limiter: Option<Arc<RateLimiter>>,
    pub slots: Arc<Slots>,
    pub mint: Option<MintConfig>,
}

/// Counters the summary reports.
#[derive(Debug, Default)]
pub struct DispatchStats {
    pub requests_sent: AtomicU64,
    pub retries: AtomicU64,
    pub tokens_minted: AtomicU64,
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

/// What one attempt produced: Banxa's answer, or a minting failure that
/// never reached Banxa.
enum Attempt {
    Banxa(Reply, Option<crate::secret::Secret>),
    MintFailed(MintFailure),
}

enum MintFailure {
    /// Sumsub refused for good (4xx): the row is rejected, Banxa never sees it.
    Rejected(u16, String),
    /// Worth retrying (Sumsub 429/5xx/timeout/transport).
    Retry(Answer, String),
    /// Sumsub 401: stop the run.
    Unauthorized(String),
}

async fn attempt(job: &Job, ctx: &Ctx) -> Attempt {
    match &job.payload {
        Payload::Body(body) => Attempt::Banxa(
            ctx.client.send(body.clone(), &job.identity_reference).await,
            None,
        ),
        Payload::Mint {
            applicant_id,
            email,
            mobile_number,
            vendor,
        } => {
            let Some(mint) = &ctx.cfg.mint else {
                return Attempt::MintFailed(MintFailure::Rejected(
                    0,
                    "minting is not configured".into(),
                ));
            };
            mint.limiter.until_ready().await;
            let token = match mint.client.mint(applicant_id, mint.timeout).await {
                crate::request::mint::MintResult::Token(t) => t,
                crate::request::mint::MintResult::Rejected { status, message } => {
                    return Attempt::MintFailed(MintFailure::Rejected(status, message))
                }
                crate::request::mint::MintResult::Retryable { answer, message } => {
                    return Attempt::MintFailed(MintFailure::Retry(answer, message))
                }
                crate::request::mint::MintResult::Unauthorized { message } => {
                    return Attempt::MintFailed(MintFailure::Unauthorized(message))
                }
            };
            ctx.stats.tokens_minted.fetch_add(1, Ordering::Relaxed);
            let req = crate::request::ShareRequest {
                identity_reference: &job.identity_reference,
                email,
                mobile_number,
                provider: crate::request::Provider {
                    vendor,
                    token: token.expose(),
                },
            };
            let mut body = Vec::with_capacity(512);
            req.write_body(&mut body);
            let reply = ctx
                .client
                .send(Bytes::from(body), &job.identity_reference)
                .await;
            Attempt::Banxa(reply, Some(token))
        }
    }
}

async fn process(job: Job, ctx: &Ctx) {
    let mut attempts: u32 = 0;
    let mut sent: u32 = 0;
    loop {
        let slot = tokio::select! {
            biased;
            _ = ctx.abort.triggered() => return,
            s = ctx.cfg.slots.acquire() => s,
        };
        let mut slot_seq = None;
        if let Some(limiter) = &ctx.cfg.limiter {
            tokio::select! {
                biased;
                _ = ctx.abort.triggered() => return,
                seq = limiter.until_ready() => slot_seq = Some(seq),
            }
        }
        if ctx.abort.is_triggered() {
            return;
        }
        attempts += 1;
        // Service time: from the rate limiter's grant to the answer (a mint
        // round trip included), for `--concurrency auto`.
        let started = std::time::Instant::now();
        let result = attempt(&job, ctx).await;
        drop(slot);
        ctx.cfg.slots.observe(started.elapsed());
        let (decision, reply, token) = match result {
            Attempt::Banxa(reply, token) => {
                sent += 1;
                if let Some(limiter) = &ctx.cfg.limiter {
                    limiter.observe_jitter(ctx.cfg.slots.observe_latency(reply.latency));
                    if let Some(seq) = slot_seq {
                        limiter.answered(seq);
                    }
                }
                ctx.stats.requests_sent.fetch_add(1, Ordering::Relaxed);
                let d = policy::decide(
                    &reply.answer,
                    attempts,
                    ctx.cfg.max_attempts,
                    rand::random::<f64>(),
                );
                (d, reply, token)
            }
            Attempt::MintFailed(MintFailure::Unauthorized(message)) => {
                ctx.abort.trigger(AbortReason::Unauthorized(format!(
                    "Sumsub answered 401 (record {}): {message}; check SUMSUB_APP_TOKEN and SUMSUB_SECRET_KEY",
                    job.record
                )));
                return;
            }
            Attempt::MintFailed(MintFailure::Rejected(status, message)) => {
                let reply = Reply {
                    answer: Answer::Http {
                        status,
                        retry_after: None,
                    },
                    trace_id: String::new(),
                    message,
                    errors: String::new(),
                    code: None,
                    latency: started.elapsed(),
                };
                let mut f = final_of(&job, Outcome::Rejected, sent, attempts, reply, None);
                f.http_status = None;
                let _ = ctx.out.send(OutMsg::Final(f)).await;
                return;
            }
            Attempt::MintFailed(MintFailure::Retry(answer, message)) => {
                let d = policy::decide(
                    &answer,
                    attempts,
                    ctx.cfg.max_attempts,
                    rand::random::<f64>(),
                );
                let reply = Reply {
                    answer: Answer::Transport,
                    trace_id: String::new(),
                    message,
                    errors: String::new(),
                    code: None,
                    latency: started.elapsed(),
                };
                (d, reply, None)
            }
        };
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
                let f = final_of(&job, outcome, sent, attempts, reply, token.as_ref());
                // The output stage outlives the dispatcher; a closed channel
                // means the run is already being torn down.
                let _ = ctx.out.send(OutMsg::Final(f)).await;
                return;
            }
            Decision::Unauthorized => {
                let mut said = if reply.message.is_empty() {
                    "Unauthenticated".to_string()
                } else {
                    reply.message.clone()
                };
                for p in job.private.iter().filter(|p| !p.is_empty()) {
                    said = said.replace(p.as_str(), "***");
                }
                ctx.abort.trigger(AbortReason::Unauthorized(format!(
                    "Banxa answered 401 {said} (record {}): {}",
                    job.record,
                    policy::explain_auth_code(reply.code.as_deref())
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

fn final_of(
    job: &Job,
    outcome: Outcome,
    attempts: u32,
    tries: u32,
    reply: Reply,
    token: Option<&crate::secret::Secret>,
) -> Final {
    let mut message = if reply.message.is_empty() {
        match (outcome, reply.status()) {
            (Outcome::Failed, None) => reply.message.clone(),
            (Outcome::Failed, Some(s)) => format!("HTTP {s}"),
            _ => String::new(),
        }
    } else {
        reply.message.clone()
    };
    if outcome == Outcome::Failed && !matches!(reply.answer, Answer::WrongIdentity { .. }) {
        let plural = if tries == 1 { "" } else { "s" };
        message = format!("gave up after {tries} attempt{plural}: {message}");
    }
    let mut errors = reply.errors.clone();
    let minted = token.map(|t| t.expose().to_string());
    for p in job.private.iter().chain(minted.iter()) {
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
        latency_ms: (attempts > 0).then_some(reply.latency.as_millis() as u64),
        completed_at: SystemTime::now(),
        raw: (outcome == Outcome::Failed).then(|| job.raw.clone()),
        fingerprint: job.fingerprint,
        problems: Vec::new(),
    }
}
