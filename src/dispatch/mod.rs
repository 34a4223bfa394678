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

pub mod breaker;
pub mod client;
pub mod concurrency;
pub mod limiter;
pub mod outbox;
pub mod policy;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
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
    /// email, mobile number and token), `\n`-separated (none can hold a
    /// line break: validation refuses whitespace), scrubbed from Banxa's
    /// messages. One allocation a row, and no work on a 202 (it has no
    /// message).
    pub private: String,
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
    /// A verification (`kycshare verify`): Banxa's identity retrieval,
    /// `GET /eapi/v0/identities/{identityReference}`, through the same
    /// limiter, breaker, retry policy and 401 stop as a share.
    Verify,
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
    /// The outage breaker (`None`: every failure is charged, no pause).
    pub breaker: Option<Arc<breaker::Breaker>>,
}

/// Counters the summary reports.
#[derive(Debug, Default)]
pub struct DispatchStats {
    pub requests_sent: AtomicU64,
    pub retries: AtomicU64,
    /// For the metrics: requests by status, latency, in flight, pauses,
    /// tokens minted.
    pub live: Arc<crate::model::Live>,
}

struct Ctx {
    client: Arc<BanxaClient>,
    cfg: DispatchConfig,
    /// Final outcomes to the journal, in blocks ([`outbox`]).
    out: Arc<outbox::Outbox>,
    abort: Abort,
    stats: Arc<DispatchStats>,
}

impl Drop for Ctx {
    /// The last holder gone (workers, held rows): no outcome can come any
    /// more, the outbox delivers what is left and ends.
    fn drop(&mut self) {
        self.out.close();
    }
}

/// Sends every job that arrives on `jobs` (in batches) until the channel
/// closes or the run is aborted; returns when every job taken has its
/// final outcome (or, on abort, when every request in flight has ended).
///
/// The shape is oha's: a fixed pool of long-lived workers (as many as the
/// most requests `--concurrency` may ever have in flight) takes jobs from
/// one queue; the in-flight slots and the rate limiter gate each attempt.
/// A job to retry leaves its worker (and its slot) while it waits out its
/// backoff, so one slow row never holds up the others.
pub async fn dispatch(
    jobs: mpsc::Receiver<Vec<Job>>,
    out: mpsc::Sender<OutMsg>,
    client: Arc<BanxaClient>,
    cfg: DispatchConfig,
    abort: Abort,
    stats: Arc<DispatchStats>,
) {
    let slots = cfg.slots.clone();
    let workers = slots.max();
    // Jobs taken from the feed and not final yet (queued, in flight or
    // waiting to retry): bounds memory whatever the feed holds.
    let queue = Arc::new(Queue::new((workers * 4).max(1024), abort.clone()));
    let outbox = Arc::new(outbox::Outbox::default());
    let delivery = tokio::spawn({
        let outbox = outbox.clone();
        async move { outbox.deliver(out).await }
    });
    let ctx = Arc::new(Ctx {
        client,
        cfg,
        out: outbox,
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
    let prober = ctx.cfg.breaker.clone().map(|b| {
        tokio::spawn(probe_while_open(
            b,
            ctx.client.clone(),
            abort.clone(),
            ctx.stats.live.clone(),
        ))
    });
    let mut pool = JoinSet::new();
    for _ in 0..workers {
        let (queue, ctx) = (queue.clone(), ctx.clone());
        pool.spawn(async move {
            while let Some(task) = queue.next().await {
                match process(task, &ctx).await {
                    Next::Done => queue.done(),
                    Next::Hold(task, f, mark) => {
                        tokio::spawn(hold(task, f, mark, queue.clone(), ctx.clone()));
                    }
                    Next::Retry(task, delay) => {
                        let queue = queue.clone();
                        tokio::spawn(async move {
                            tokio::select! {
                                biased;
                                _ = queue.abort.triggered() => queue.done(),
                                _ = tokio::time::sleep(delay) => queue.retry(task),
                            }
                        });
                    }
                }
            }
        });
    }
    queue.feed(jobs).await;
    while pool.join_next().await.is_some() {}
    adjuster.abort();
    if let Some(p) = prober {
        p.abort();
    }
    // Every outcome delivered before the dispatcher returns: the outbox
    // closes when the last holder of the context (a row still held by
    // the breaker, on an abort) is gone.
    drop(ctx);
    let _ = delivery.await;
}

/// While the breaker is open: one probe at a time, backing off, until
/// Banxa answers one (the breaker closes) or nothing has succeeded for
/// `--max-outage` (the run stops, exit 3).
async fn probe_while_open(
    b: Arc<breaker::Breaker>,
    client: Arc<BanxaClient>,
    abort: Abort,
    live: Arc<crate::model::Live>,
) {
    loop {
        tokio::select! {
            _ = abort.triggered() => return,
            _ = b.opened() => {}
        }
        let since = SystemTime::now() - b.down_for();
        let since_text = crate::model::rfc3339_millis(since);
        let mut n = 0u32;
        loop {
            let delay = breaker::probe_delay(n);
            if n == 0 {
                live.pauses.fetch_add(1, Ordering::Relaxed);
                live.paused.store(true, Ordering::Relaxed);
                tracing::warn!(
                    "Banxa unreachable since {since_text} (nothing succeeded since; the last attempts failed): pausing; probing every {}s at most, stopping after {} without an answer",
                    breaker::PROBE_CAP.as_secs(),
                    humantime::format_duration(b.max_outage)
                );
            }
            let left = b.max_outage.saturating_sub(b.down_for());
            tokio::select! {
                _ = abort.triggered() => return,
                _ = tokio::time::sleep(delay.min(left)) => {}
            }
            if b.down_for() >= b.max_outage {
                abort.trigger(AbortReason::Outage(format!(
                    "Banxa has not answered since {since_text} ({} without a success, --max-outage {}): stopped; the rows not sent yet are left out of the results",
                    humantime::format_duration(Duration::from_secs(b.down_for().as_secs())),
                    humantime::format_duration(b.max_outage)
                )));
                return;
            }
            match client.probe().await.probe {
                client::Probe::Up(status) => {
                    let open_for = b.probe_answered().unwrap_or_default();
                    live.paused.store(false, Ordering::Relaxed);
                    tracing::warn!(
                        "Banxa answering again after {} (probe answered {status}): sending resumes; rows that keep failing now are charged their attempts",
                        humantime::format_duration(Duration::from_secs(open_for.as_secs()))
                    );
                    break;
                }
                client::Probe::Down(why) => {
                    b.probe_failed();
                    tracing::info!(probe = n + 1, reason = %why, "Banxa still not answering");
                    n += 1;
                }
            }
        }
    }
}

/// A row that used up its attempts while nothing showed Banxa up waits
/// for news (SPEC: rows become `failed` only by exhausting their attempts
/// while the API is up): a success of another row or an answered probe,
/// and it ends `failed`; a failed probe (the API is down: the breaker is
/// open), and its last attempt is given back and it waits for the pause
/// to end. With no news for [`breaker::HOLD_PROBE_AFTER`] it sends a probe
/// itself (one at a time, within the rate).
///
/// The dispatcher waits for held rows before it returns (the outbox
/// closes when the last of them is gone), so a held row's outcome is still
/// written when the run is stopped while it waits.
async fn hold(
    mut task: Task,
    mut f: Box<Final>,
    mark: breaker::Mark,
    queue: Arc<Queue>,
    ctx: Arc<Ctx>,
) {
    let Some(b) = ctx.cfg.breaker.clone() else {
        ctx.out.push(*f).await;
        queue.done();
        return;
    };
    let held = tokio::time::Instant::now();
    loop {
        if ctx.abort.is_triggered() {
            // Stopped (a signal, a 401) before the news came: the row keeps
            // the outcome its attempts earned, so that every request sent
            // has its row. (An outage gives news first: a failed probe.)
            ctx.out.push(*f).await;
            queue.done();
            return;
        }
        match b.verdict(mark) {
            Some(breaker::Verdict::Up) => {
                f.completed_at = SystemTime::now();
                ctx.out.push(*f).await;
                queue.done();
                return;
            }
            Some(breaker::Verdict::Down) => {
                tracing::debug!(
                    record = task.job.record,
                    "Banxa was down when this row used its last attempt: it is given back"
                );
                task.attempts = task.attempts.saturating_sub(1);
                queue.retry(task);
                return;
            }
            None => {}
        }
        if held.elapsed() >= breaker::HOLD_PROBE_AFTER && !b.is_open() {
            let _turn = b.hold_probe_turn().await;
            if b.verdict(mark).is_none() && !b.is_open() {
                let mut seq = None;
                if let Some(limiter) = &ctx.cfg.limiter {
                    tokio::select! {
                        biased;
                        _ = ctx.abort.triggered() => continue,
                        s = limiter.until_ready() => seq = Some(s),
                    }
                }
                let answer = ctx.client.probe().await;
                if let (Some(limiter), Some(seq)) = (&ctx.cfg.limiter, seq) {
                    limiter.answered(seq);
                }
                match answer.probe {
                    client::Probe::Up(status) => {
                        tracing::debug!(
                            record = task.job.record,
                            status,
                            "probe for a row at its last attempt: Banxa is up"
                        );
                        b.probe_answered();
                    }
                    client::Probe::Down(why) => {
                        tracing::debug!(record = task.job.record, reason = %why, "probe for a row at its last attempt: Banxa is not answering");
                        b.probe_failed();
                    }
                }
            }
            continue;
        }
        tokio::select! {
            biased;
            _ = ctx.abort.triggered() => {}
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// What a worker does with a task after one attempt.
enum Next {
    /// Final (sent to the output), or dropped by an abort.
    Done,
    /// Try again after the backoff.
    Retry(Task, Duration),
    /// Used up its attempts while nothing showed Banxa up: see [`hold`].
    Hold(Task, Box<Final>, breaker::Mark),
}

/// A job and its attempts so far.
struct Task {
    job: Job,
    attempts: u32,
    /// Attempts that reached Banxa (a failed mint does not).
    sent: u32,
}

/// The work queue of the pool: jobs from the feed, retries first.
struct Queue {
    state: std::sync::Mutex<QueueState>,
    /// Wakes an idle worker: a job arrived, or the work ended.
    ready: Notify,
    /// Wakes the feed: a job became final, so there is room again.
    room: Notify,
    limit: usize,
    abort: Abort,
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<Task>,
    /// Taken from the feed and not final yet.
    outstanding: usize,
    fed: bool,
}

impl Queue {
    fn new(limit: usize, abort: Abort) -> Queue {
        Queue {
            state: std::sync::Mutex::new(QueueState::default()),
            ready: Notify::new(),
            room: Notify::new(),
            limit,
            abort,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves batches from the feed into the queue while there is room.
    async fn feed(&self, mut jobs: mpsc::Receiver<Vec<Job>>) {
        loop {
            loop {
                let room = self.room.notified();
                if self.lock().outstanding < self.limit {
                    break;
                }
                tokio::select! {
                    biased;
                    _ = self.abort.triggered() => break,
                    _ = room => {}
                }
            }
            let batch = tokio::select! {
                biased;
                _ = self.abort.triggered() => None,
                b = jobs.recv() => b,
            };
            let Some(batch) = batch else { break };
            let n = batch.len();
            {
                let mut st = self.lock();
                st.outstanding += n;
                st.ready.extend(batch.into_iter().map(|job| Task {
                    job,
                    attempts: 0,
                    sent: 0,
                }));
            }
            for _ in 0..n {
                self.ready.notify_one();
            }
        }
        // Jobs left in the channel get no outcome: --resume sends them.
        jobs.close();
        self.lock().fed = true;
        self.ready.notify_waiters();
    }

    /// The next task, or `None` when the work is over (fed and nothing
    /// outstanding) or the run is aborted.
    async fn next(&self) -> Option<Task> {
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if self.abort.is_triggered() {
                return None;
            }
            {
                let mut st = self.lock();
                if let Some(t) = st.ready.pop_front() {
                    return Some(t);
                }
                if st.fed && st.outstanding == 0 {
                    return None;
                }
            }
            tokio::select! {
                biased;
                _ = self.abort.triggered() => return None,
                _ = ready => {}
            }
        }
    }

    /// A task reached its final outcome (or was dropped by an abort).
    fn done(&self) {
        let over = {
            let mut st = self.lock();
            st.outstanding -= 1;
            st.fed && st.outstanding == 0
        };
        self.room.notify_one();
        if over {
            self.ready.notify_waiters();
        }
    }

    /// A task back from its backoff: it goes before the new jobs.
    fn retry(&self, task: Task) {
        self.lock().ready.push_front(task);
        self.ready.notify_one();
    }
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
        Payload::Verify => Attempt::Banxa(ctx.client.identity(&job.identity_reference).await, None),
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
            ctx.stats.live.tokens_minted.fetch_add(1, Ordering::Relaxed);
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

/// One attempt of a task: `Some` with the task and its backoff when it is
/// to be tried again, `None` once it has its final outcome (or the run
/// was aborted: then it has none, and `--resume` sends it).
async fn process(mut task: Task, ctx: &Ctx) -> Next {
    {
        if let Some(b) = &ctx.cfg.breaker {
            if b.is_open() {
                tokio::select! {
                    biased;
                    _ = ctx.abort.triggered() => return Next::Done,
                    _ = b.closed() => {}
                }
            }
        }
        let slot = tokio::select! {
            biased;
            _ = ctx.abort.triggered() => return Next::Done,
            s = ctx.cfg.slots.acquire() => s,
        };
        let mut slot_seq = None;
        if let Some(limiter) = &ctx.cfg.limiter {
            tokio::select! {
                biased;
                _ = ctx.abort.triggered() => return Next::Done,
                seq = limiter.until_ready() => slot_seq = Some(seq),
            }
        }
        if ctx.abort.is_triggered() {
            return Next::Done;
        }
        // The breaker may have opened while this attempt waited for its
        // slot: it goes back unsent (and uncharged) to wait for the pause
        // to end.
        if ctx.cfg.breaker.as_ref().is_some_and(|b| b.is_open()) {
            return Next::Retry(task, Duration::ZERO);
        }
        task.attempts += 1;
        // Service time: from the rate limiter's grant to the answer (a mint
        // round trip included), for `--concurrency auto`.
        let started = std::time::Instant::now();
        ctx.stats.live.in_flight.fetch_add(1, Ordering::Relaxed);
        let result = attempt(&task.job, ctx).await;
        ctx.stats.live.in_flight.fetch_sub(1, Ordering::Relaxed);
        drop(slot);
        ctx.cfg.slots.observe(started.elapsed());
        // Set when this attempt failed while nothing showed Banxa up: the
        // row may not end `failed` until something does (see `hold`).
        let mut suspect = None;
        let (decision, reply, token) = match result {
            Attempt::Banxa(reply, token) => {
                task.sent += 1;
                if let Some(limiter) = &ctx.cfg.limiter {
                    limiter.observe_latency(reply.latency);
                    if let Some(seq) = slot_seq {
                        limiter.answered(seq);
                    }
                }
                ctx.stats.requests_sent.fetch_add(1, Ordering::Relaxed);
                ctx.stats.live.observe(reply.status(), reply.latency);
                if let Some(b) = &ctx.cfg.breaker {
                    if policy::retryable(&reply.answer) {
                        // An HTTP answer, or a connection that broke after it
                        // was made: the server was reached.
                        let reached = matches!(reply.answer, Answer::Http { .. })
                            || !client::connect_failed(&reply);
                        let (charge, _) = b.failed(task.job.record, reached);
                        if b.never_connected() {
                            ctx.abort.trigger(AbortReason::Unreachable(unreachable(
                                &ctx.client.address(),
                                &reply.message,
                            )));
                            return Next::Done;
                        }
                        if charge == breaker::Charge::Refunded {
                            // The API looks down: this attempt is not the
                            // row's; it waits for the breaker to close.
                            task.attempts -= 1;
                            return Next::Retry(task, Duration::ZERO);
                        }
                        if !b.is_exempt(task.job.record) {
                            suspect = Some(b.mark());
                        }
                    } else {
                        b.answered();
                    }
                }
                let d = policy::decide(
                    &reply.answer,
                    task.attempts,
                    ctx.cfg.max_attempts,
                    rand::random::<f64>(),
                );
                (d, reply, token)
            }
            Attempt::MintFailed(MintFailure::Unauthorized(message)) => {
                ctx.abort.trigger(AbortReason::Unauthorized(format!(
                    "Sumsub answered 401 (record {}): {message}; check SUMSUB_APP_TOKEN and SUMSUB_SECRET_KEY",
                    task.job.record
                )));
                return Next::Done;
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
                    kyc_status: None,
                };
                let mut f = final_of(
                    &task.job,
                    Outcome::Rejected,
                    task.sent,
                    task.attempts,
                    reply,
                    None,
                );
                f.http_status = None;
                ctx.out.push(f).await;
                return Next::Done;
            }
            Attempt::MintFailed(MintFailure::Retry(answer, message)) => {
                let d = policy::decide(
                    &answer,
                    task.attempts,
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
                    kyc_status: None,
                };
                (d, reply, None)
            }
        };
        tracing::debug!(
            record = task.job.record,
            identity_reference = %task.job.identity_reference,
            attempt = task.attempts,
            status = ?reply.status(),
            latency_ms = reply.latency.as_millis() as u64,
            decision = ?decision,
            "answer"
        );
        match decision {
            Decision::Final(outcome) => {
                let f = final_of(
                    &task.job,
                    outcome,
                    task.sent,
                    task.attempts,
                    reply,
                    token.as_ref(),
                );
                if let (Outcome::Failed, Some(mark)) = (outcome, suspect) {
                    return Next::Hold(task, Box::new(f), mark);
                }
                // If the output stage is gone (the run is being torn down),
                // the outbox drops it rather than make the worker wait.
                ctx.out.push(f).await;
                Next::Done
            }
            Decision::Unauthorized => {
                let mut said = if reply.message.is_empty() {
                    "Unauthenticated".to_string()
                } else {
                    reply.message.clone()
                };
                said = scrub(said, &task.job.private, None);
                ctx.abort.trigger(AbortReason::Unauthorized(format!(
                    "Banxa answered 401 {said} (record {}): {}",
                    task.job.record,
                    policy::explain_auth_code(reply.code.as_deref())
                )));
                Next::Done
            }
            Decision::Untrusted => {
                ctx.abort.trigger(AbortReason::Untrusted(format!(
                    "{} (record {}): nothing was sent over this connection",
                    reply.message, task.job.record
                )));
                Next::Done
            }
            Decision::Retry(delay) => {
                ctx.stats.retries.fetch_add(1, Ordering::Relaxed);
                if tracing::enabled!(tracing::Level::INFO) {
                    let why = if reply.message.is_empty() {
                        reply
                            .status()
                            .map(|s| format!("HTTP {s}"))
                            .unwrap_or_default()
                    } else {
                        scrub(
                            reply.message.clone(),
                            &task.job.private,
                            token.as_ref().map(|t| t.expose()),
                        )
                    };
                    tracing::info!(
                        record = task.job.record,
                        attempt = task.attempts,
                        status = reply.status(),
                        retry_in_ms = delay.as_millis() as u64,
                        "record {} attempt {} of {}: {why}; retrying in {:.1}s",
                        task.job.record,
                        task.attempts,
                        ctx.cfg.max_attempts,
                        delay.as_secs_f64()
                    );
                }
                Next::Retry(task, delay)
            }
        }
    }
}

/// Why the first attempts could not reach `address`, in words.
pub fn unreachable(address: &str, message: &str) -> String {
    let m = message.to_ascii_lowercase();
    let hint = if m.contains("refused") {
        "nothing accepts connections there: a wrong port, a firewall, or the service is down"
    } else if m.contains("dns")
        || m.contains("resolve")
        || m.contains("lookup")
        || m.contains("name or service")
    {
        "the host name does not resolve (DNS): a typo in --base-url, or no DNS from this host"
    } else if m.contains("corrupt message") || m.contains("invalidcontenttype") {
        "the server there speaks plain http, not TLS: a wrong port, or (for a loopback emulator only) the URL should start with http://"
    } else if m.contains("tls") || m.contains("handshake") || m.contains("certificate") {
        "the TLS handshake failed: is it plain http on that port (use http:// only for a loopback emulator), or https where the URL says http?"
    } else if m.contains("timed out") || m.contains("timeout") || m.contains("no answer") {
        "no answer at all: a firewall dropping packets, or a wrong address"
    } else if m.contains("closed") || m.contains("reset") || m.contains("http") {
        "the server closed the connection without an HTTP answer: an https port reached with http:// (use https://), or not an HTTP server"
    } else {
        "see the cause"
    };
    format!(
        "Banxa is unreachable at {address}: the first {} attempts all failed without an answer ({message}); {hint}",
        breaker::FIRST_CONNECT_ATTEMPTS
    )
}

/// Why `address` cannot be reached, in words (`message`: the transport
/// error), for `check`.
pub fn unreachable_hint(message: &str) -> String {
    let full = unreachable("", message);
    full.rsplit_once("); ")
        .map(|(_, h)| h.to_string())
        .unwrap_or(full)
}

/// `text` with every private value (and the minted token) replaced by
/// `***`; nothing to do, and nothing allocated, when `text` is empty.
fn scrub(mut text: String, private: &str, minted: Option<&str>) -> String {
    if text.is_empty() {
        return text;
    }
    for p in private.split('\n').chain(minted) {
        if !p.is_empty() && text.contains(p) {
            text = text.replace(p, "***");
        }
    }
    text
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
    let minted = token.map(|t| t.expose());
    let message = scrub(message, &job.private, minted);
    let http_status = reply.status();
    let kyc_status = reply.kyc_status;
    let errors = scrub(reply.errors, &job.private, minted);
    Final {
        record: job.record,
        line: job.line,
        identity_reference: job.identity_reference.clone(),
        outcome,
        http_status,
        attempts,
        trace_id: reply.trace_id,
        message,
        errors,
        latency_ms: (attempts > 0).then_some(reply.latency.as_millis() as u64),
        completed_at: SystemTime::now(),
        raw: (outcome == Outcome::Failed).then(|| job.raw.clone()),
        fingerprint: job.fingerprint,
        problems: Vec::new(),
        kyc_status,
    }
}
