//! `kycshare mock`: a local Banxa that behaves as the documented API does,
//! so operators can rehearse a migration and every pipeline test runs over
//! real HTTP on loopback.
//!
//! What it checks, per request, in this order (the first failure answers):
//!
//! 1. route: `GET /stats` is answered at once (never rate limited, no
//!    latency, not counted); an unknown path is 404, a wrong method 405
//!    (decided by the router, before the rate limit, as Laravel does);
//! 2. body size (413 above [`MockConfig::body_limit`]);
//! 3. rate limit (429 + `Retry-After`; a sliding 60 s window over the
//!    requests it admitted, shared by all Banxa endpoints);
//! 4. authentication (401, reason counted; see [`auth`]), including
//!    `--unauth-after` (reason `revoked`);
//! 5. request format (400 with a traceId; see [`validate`]);
//! 6. fields (422 with Laravel-style `errors`);
//! 7. with `--check-tokens`, `provider.token` (422 unless this emulator
//!    minted it, it is unused and unexpired; see [`sumsub::TokenBook`]);
//! 8. injected faults (see [`faults`]): fail-first, reset, hang, fail-rate
//!    (with `--consume-token-on-fault` a fault uses the token up);
//! 9. accepted: 202 `{"identityReference": …}` (the token is used up).
//!
//! It also serves Sumsub's `POST /resources/accessTokens/shareToken` (see
//! [`sumsub`]): a different service, so it has no rate limit, its own
//! latency (`--sumsub-latency`) and faults (`--sumsub-fail-rate`), its own
//! counters in `/stats`, and is not written to the record file.
//!
//! `--latency` is added to every Banxa answer (reset included). Each share
//! request is written to the record file before its answer is sent.
//!
//! Not for: production use, or anything but loopback rehearsals. It does not
//! share code with the client's signer (`crate::request`) on purpose.
//! Room to grow: an endpoint is a [`Route`] variant plus a handler.

pub mod auth;
pub mod faults;
pub mod ratelimit;
pub mod record;
pub mod stats;
pub mod sumsub;
pub mod validate;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::secret::Secret;
use auth::{AuthFailure, NonceBook, Verifier};
use faults::{Fault, FaultRates, Faults};
use ratelimit::SlidingWindow;
use record::Recorder;
use stats::Counters;
pub use stats::Stats;
use sumsub::{SignedHeaders, SumsubAuthFailure, SumsubVerifier, TokenBook, TokenRejection};
use validate::FieldErrors;

/// Banxa's identity token sharing endpoint.
pub const SHARE_PATH: &str = "/eapi/v0/identities/token/share";
/// The emulator's counters.
pub const STATS_PATH: &str = "/stats";
/// Banxa's published limit.
pub const DEFAULT_RATE_LIMIT_PER_MIN: u32 = 500;
/// Largest request body accepted (413 above).
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
/// How long shutdown waits for answers in progress before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const UNAUTHENTICATED: &str = r#"{"message":"Unauthenticated.","status":401}"#;

/// How the emulator behaves. [`MockConfig::new`] gives Banxa's behaviour
/// (500 requests/min, no faults).
#[derive(Debug, Clone)]
pub struct MockConfig {
    pub api_key: String,
    pub api_secret: Secret,
    /// Requests admitted per sliding 60 s; `None` turns the limit off.
    pub rate_limit_per_min: Option<u32>,
    /// The rate limit's window: 60 s as Banxa's; tests shorten it so that a
    /// `Retry-After` can be honoured in seconds (library only, no flag).
    pub rate_window: Duration,
    /// Probability of a 500 for a valid request.
    pub fail_rate: f64,
    /// Added to every Banxa answer (Sumsub's get `sumsub_latency`).
    pub latency: Duration,
    /// A random extra delay, uniform in `[0, latency_jitter)`, added to
    /// every Banxa answer on top of `latency` (from the seeded RNG).
    pub latency_jitter: Duration,
    /// Probability of dropping the connection without an answer.
    pub reset_rate: f64,
    /// Probability of never answering.
    pub hang_rate: f64,
    /// The first N valid requests of each identityReference get 500.
    pub fail_first: u32,
    /// Every share request after the Nth gets 401 (a revoked key).
    pub unauth_after: Option<u64>,
    /// Seed of the fault RNG; `None` picks one (see [`MockServer::seed`]).
    pub seed: Option<u64>,
    /// Append one JSON line per share request to this file.
    pub record: Option<PathBuf>,
    /// Largest request body accepted.
    pub body_limit: usize,
    /// Tests: a fixed server clock (unix microseconds) for nonce freshness,
    /// so that signatures computed ahead of time with a fixed nonce stay
    /// fresh. It is also the clock of Sumsub's `X-App-Access-Ts` check and
    /// of token expiry; [`MockServer::set_now_micros`] moves it. `None`: the
    /// system clock.
    pub fixed_now_micros: Option<u64>,
    /// Sumsub's app token (`X-App-Token`). The Sumsub endpoint answers 401
    /// unless both it and [`MockConfig::sumsub_secret`] are set.
    pub sumsub_app_token: Option<String>,
    /// Sumsub's secret key, the HMAC key of `X-App-Access-Sig`.
    pub sumsub_secret: Option<Secret>,
    /// The Banxa endpoint accepts only tokens minted here, once, unexpired
    /// (422 on `provider.token` otherwise).
    pub check_tokens: bool,
    /// With `check_tokens`: an injected fault (500, reset, hang) uses the
    /// token up, as a real failure after Banxa redeemed it would.
    pub consume_token_on_fault: bool,
    /// Probability of a 500 from the Sumsub endpoint for a valid request.
    pub sumsub_fail_rate: f64,
    /// Added to every Sumsub answer (instead of [`MockConfig::latency`]).
    pub sumsub_latency: Duration,
    /// Share requests with this `forClientId` get 403 from Sumsub (the
    /// client is not allowed to receive this applicant's data).
    pub sumsub_forbidden_client: Option<String>,
    /// Serve HTTPS with this certificate chain and private key (both PEM);
    /// `None`: plain HTTP.
    pub tls: Option<TlsPem>,
    /// 401 bodies carry Banxa's `code` (40001…40103) and a `request_id`.
    pub error_codes: bool,
}

/// A server certificate chain and its private key, both PEM.
#[derive(Clone)]
pub struct TlsPem {
    pub cert_chain: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsPem { key: *** }")
    }
}

impl TlsPem {
    /// A TLS acceptor (rustls, ring) for this certificate and key.
    fn acceptor(&self) -> io::Result<tokio_rustls::TlsAcceptor> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        use tokio_rustls::rustls;
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("TLS {what}: {e}"))
        };
        let certs = CertificateDer::pem_slice_iter(&self.cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("certificate is not PEM", &e))?;
        if certs.is_empty() {
            return Err(bad("certificate", &"no CERTIFICATE block in the PEM"));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key)
            .map_err(|e| bad("private key is not PEM", &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("configuration", &e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| bad("certificate and key", &e))?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

impl MockConfig {
    pub fn new(api_key: impl Into<String>, api_secret: Secret) -> Self {
        MockConfig {
            api_key: api_key.into(),
            api_secret,
            rate_limit_per_min: Some(DEFAULT_RATE_LIMIT_PER_MIN),
            rate_window: Duration::from_secs(60),
            fail_rate: 0.0,
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            reset_rate: 0.0,
            hang_rate: 0.0,
            fail_first: 0,
            unauth_after: None,
            seed: None,
            record: None,
            body_limit: DEFAULT_BODY_LIMIT,
            fixed_now_micros: None,
            sumsub_app_token: None,
            sumsub_secret: None,
            check_tokens: false,
            consume_token_on_fault: false,
            sumsub_fail_rate: 0.0,
            sumsub_latency: Duration::ZERO,
            sumsub_forbidden_client: None,
            tls: None,
            error_codes: false,
        }
    }

    fn check(&self) -> io::Result<()> {
        let invalid = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        if self.api_key.is_empty() || self.api_key.contains(':') {
            return invalid("the API key must be non-empty and must not contain ':'".into());
        }
        if self.api_secret.is_empty() {
            return invalid("the API secret is empty".into());
        }
        for (name, p) in [
            ("fail rate", self.fail_rate),
            ("reset rate", self.reset_rate),
            ("hang rate", self.hang_rate),
            ("Sumsub fail rate", self.sumsub_fail_rate),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return invalid(format!("the {name} must be between 0 and 1, not {p}"));
            }
        }
        if self.rate_limit_per_min == Some(0) {
            return invalid("a rate limit of 0/min admits nothing; use None (off)".into());
        }
        Ok(())
    }
}

/// The endpoints. A new endpoint is a variant here and an arm in `respond`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Share,
    Stats,
    SumsubShareToken,
    NotFound,
}

impl Route {
    fn of(path: &str) -> Route {
        match path {
            SHARE_PATH => Route::Share,
            STATS_PATH => Route::Stats,
            sumsub::SHARE_TOKEN_PATH => Route::SumsubShareToken,
            _ => Route::NotFound,
        }
    }
}

/// State behind one lock: cheap operations only.
#[derive(Debug)]
struct State {
    counters: Counters,
    limiter: Option<SlidingWindow>,
    nonces: NonceBook,
    faults: Faults,
    /// Tokens minted by the Sumsub endpoint.
    tokens: TokenBook,
    /// `--sumsub-fail-rate`'s own RNG, so Sumsub faults do not shift the
    /// sequence of Banxa's.
    sumsub_rng: StdRng,
    /// The latency jitter's own RNG, likewise.
    jitter_rng: StdRng,
}

#[derive(Debug)]
struct Shared {
    config: MockConfig,
    verifier: Verifier,
    sumsub_verifier: Option<SumsubVerifier>,
    /// The fixed clock in unix micros; 0: the system clock.
    clock: AtomicU64,
    state: Mutex<State>,
    recorder: Option<Recorder>,
    started: Instant,
    /// Share requests that reached authentication (for `--unauth-after`).
    authenticating: AtomicU64,
    traces: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_micros(&self) -> u64 {
        match self.clock.load(Ordering::Relaxed) {
            0 => unix_micros(SystemTime::now()),
            fixed => fixed,
        }
    }

    fn trace_id(&self) -> String {
        format!(
            "mock-{:08x}",
            self.traces.fetch_add(1, Ordering::Relaxed) + 1
        )
    }

    fn stats(&self) -> Stats {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let peak = self.peak_in_flight.load(Ordering::Relaxed);
        self.lock().counters.snapshot(in_flight, peak)
    }

    /// Resolves when shutdown starts (or the server was dropped).
    async fn shutting_down(&self) {
        let mut rx = self.shutdown.clone();
        let _ = rx.wait_for(|down| *down).await;
    }
}

struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> InFlight<'a> {
        let now = shared.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        shared.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running emulator. Dropping it stops it too, but [`MockServer::shutdown`]
/// waits until it has stopped and the record file is flushed.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    seed: u64,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Binds `listen` (port 0 picks one) and serves in the background.
    pub async fn start(listen: SocketAddr, config: MockConfig) -> io::Result<MockServer> {
        config.check()?;
        let tls = config.tls.as_ref().map(TlsPem::acceptor).transpose()?;
        let recorder = config.record.as_deref().map(Recorder::open).transpose()?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))?;
        let addr = listener.local_addr()?;
        let seed = config.seed.unwrap_or_else(rand::random);
        let rates = FaultRates {
            fail_rate: config.fail_rate,
            reset_rate: config.reset_rate,
            hang_rate: config.hang_rate,
            fail_first: config.fail_first,
        };
        let state = State {
            counters: Counters::default(),
            limiter: config
                .rate_limit_per_min
                .map(|n| SlidingWindow::new(n, config.rate_window)),
            nonces: NonceBook::default(),
            faults: Faults::new(rates, seed),
            tokens: TokenBook::default(),
            sumsub_rng: StdRng::seed_from_u64(seed ^ 0x5375_6d73_7562),
            jitter_rng: StdRng::seed_from_u64(seed ^ 0x6a69_7474_6572),
        };
        let sumsub_verifier = match (&config.sumsub_app_token, &config.sumsub_secret) {
            (Some(token), Some(secret)) if !token.is_empty() && !secret.is_empty() => {
                Some(SumsubVerifier::new(token, secret))
            }
            _ => None,
        };
        let (tx, rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            verifier: Verifier::new(&config.api_key, &config.api_secret),
            sumsub_verifier,
            clock: AtomicU64::new(config.fixed_now_micros.unwrap_or(0)),
            config,
            state: Mutex::new(state),
            recorder,
            started: Instant::now(),
            authenticating: AtomicU64::new(0),
            traces: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
            shutdown: rx,
        });
        let task = tokio::spawn(accept_loop(listener, tls, Arc::clone(&shared)));
        Ok(MockServer {
            addr,
            seed,
            shared,
            shutdown: tx,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT` (`https://` when serving TLS); an unspecified bind
    /// address (0.0.0.0) gives the loopback one.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        let scheme = if self.shared.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// The seed of the fault RNG (given or picked).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Tests: sets the fixed server clock (unix microseconds) used for nonce
    /// and timestamp freshness and token expiry, e.g. to move past a
    /// token's TTL without sleeping. 0 goes back to the system clock.
    pub fn set_now_micros(&self, micros: u64) {
        self.shared.clock.store(micros, Ordering::Relaxed);
    }

    /// The counters, as `GET /stats` answers them.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Stops accepting, lets answers in progress finish (hung ones are
    /// dropped), and flushes the record file.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(recorder) = &self.shared.recorder {
            let _ = recorder.close();
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = Arc::clone(&shared);
                    match &tls {
                        None => {
                            connections.spawn(serve_connection(stream, shared));
                        }
                        Some(acceptor) => {
                            let acceptor = acceptor.clone();
                            connections.spawn(async move {
                                // A client that refuses our certificate (or
                                // never finishes the handshake) is dropped.
                                let handshake = tokio::time::timeout(
                                    Duration::from_secs(10),
                                    acceptor.accept(stream),
                                );
                                if let Ok(Ok(tls_stream)) = handshake.await {
                                    serve_connection(tls_stream, shared).await;
                                }
                            });
                        }
                    }
                }
                // Out of descriptors and the like: back off, do not spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shared.shutting_down() => break,
        }
    }
    drop(listener);
    let drained = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, drained).await;
    connections.shutdown().await;
}

async fn serve_connection<S>(stream: S, shared: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let handler = Arc::clone(&shared);
    let service = service_fn(move |req| {
        let shared = Arc::clone(&handler);
        async move { handle(&shared, req).await }
    });
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shared.shutting_down() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Returned by the service to drop the connection without an answer.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the emulator")
    }
}

impl std::error::Error for Dropped {}

type Body = Full<Bytes>;

/// What to do with a request, and what to count and record about it.
struct Decision {
    action: Action,
    reason: Option<AuthFailure>,
    fault: Option<Fault>,
    /// The identityReference, when the body was valid.
    id: Option<String>,
    payload: Option<Value>,
    /// `--check-tokens` refused the token (422).
    token_rejection: Option<TokenRejection>,
}

enum Action {
    Answer(Response<Body>),
    Reset,
    Hang,
}

impl Decision {
    fn answer(response: Response<Body>) -> Decision {
        Decision {
            action: Action::Answer(response),
            reason: None,
            fault: None,
            id: None,
            payload: None,
            token_rejection: None,
        }
    }

    fn status(&self) -> u16 {
        match &self.action {
            Action::Answer(r) => r.status().as_u16(),
            Action::Reset | Action::Hang => 0,
        }
    }
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Result<Response<Body>, Dropped> {
    let route = Route::of(req.uri().path());
    if route == Route::Stats {
        return Ok(match *req.method() {
            Method::GET => {
                let body = serde_json::to_string(&shared.stats()).unwrap_or_default();
                json(StatusCode::OK, body)
            }
            _ => method_not_allowed(req.method(), STATS_PATH, "GET"),
        });
    }
    let _in_flight = InFlight::enter(shared);
    let arrived = SystemTime::now();

    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, shared.config.body_limit).collect().await {
        Ok(collected) => Some(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => None,
        // The client went away mid-body: nobody to answer.
        Err(_) => return Err(Dropped),
    };
    if route == Route::SumsubShareToken {
        let response = sumsub_share_token(shared, &parts, body.as_ref());
        if !shared.config.sumsub_latency.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(shared.config.sumsub_latency) => {}
                _ = shared.shutting_down() => {}
            }
        }
        return Ok(response);
    }
    // Only a routed request of the right method and size meets the limiter
    // (as in Laravel, 404/405 are decided by the router, before throttling).
    let limited = route == Route::Share && parts.method == Method::POST && body.is_some();

    // Count the arrival and apply the rate limit, under one lock.
    let (seq, admitted) = {
        let mut state = shared.lock();
        let now = shared.started.elapsed().as_micros() as u64;
        let state = &mut *state;
        state.counters.total += 1;
        let seq = if route == Route::Share {
            state.counters.share_requests += 1;
            state.counters.in_60s.record(now);
            state.counters.in_1s.record(now);
            Some(state.counters.share_requests)
        } else {
            None
        };
        let admitted = match &mut state.limiter {
            Some(limiter) if limited => limiter.admit(now),
            _ => Ok(()),
        };
        (seq, admitted)
    };

    let decision = match (route, &body) {
        (Route::NotFound, _) => Decision::answer(json(
            StatusCode::NOT_FOUND,
            to_json(&Message {
                message: &format!("The route {} could not be found.", parts.uri.path()),
                errors: None,
                status: 404,
                trace_id: None,
            }),
        )),
        (Route::Share, _) if parts.method != Method::POST => {
            Decision::answer(method_not_allowed(&parts.method, SHARE_PATH, "POST"))
        }
        (_, None) => {
            let mut response = json(
                StatusCode::PAYLOAD_TOO_LARGE,
                to_json(&Message {
                    message: &format!(
                        "The request body is larger than {} bytes.",
                        shared.config.body_limit
                    ),
                    errors: None,
                    status: 413,
                    trace_id: None,
                }),
            );
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            Decision::answer(response)
        }
        (_, Some(_)) if admitted.is_err() => {
            let retry_after = admitted.err().unwrap_or(1);
            let mut response = json(
                StatusCode::TOO_MANY_REQUESTS,
                to_json(&Message {
                    message: "Too Many Attempts.",
                    errors: None,
                    status: 429,
                    trace_id: None,
                }),
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after));
            Decision::answer(response)
        }
        (Route::Share, Some(body)) => share(shared, &parts, body),
        (Route::Stats | Route::SumsubShareToken, Some(_)) => unreachable!("answered above"),
    };

    let status = decision.status();
    {
        let mut state = shared.lock();
        let counters = &mut state.counters;
        match decision.action {
            Action::Answer(_) => *counters.by_status.entry(status).or_insert(0) += 1,
            Action::Reset => counters.resets += 1,
            Action::Hang => counters.hangs += 1,
        }
        if let Some(reason) = decision.reason {
            counters.auth_failures[reason.index()] += 1;
        }
    }
    if let (Some(recorder), Some(seq)) = (&shared.recorder, seq) {
        // Requests refused before parsing (401, 429) are still attributed to
        // a customer when their body and header allow it.
        let id = decision.id.clone().or_else(|| {
            let value = serde_json::from_slice::<Value>(body.as_deref()?).ok()?;
            Some(value.get("identityReference")?.as_str()?.to_string())
        });
        let header = parts.headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
        let nonce = auth::parse_header(header).ok().map(|c| c.nonce);
        let (time, unix_micros) = record::timestamp(arrived);
        let entry = record::Entry {
            seq,
            time,
            unix_micros,
            identity_reference: id.as_deref(),
            status,
            nonce,
            reason: decision
                .reason
                .map(AuthFailure::as_str)
                .or(decision.token_rejection.map(|r| match r {
                    TokenRejection::Unknown => "unknown_token",
                    TokenRejection::Used => "used_token",
                    TokenRejection::Expired => "expired_token",
                })),
            fault: decision.fault.map(Fault::as_str),
            payload: decision.payload.as_ref(),
        };
        // A rehearsal tool: a full disk must not take the emulator down.
        let _ = recorder.write(&entry);
    }

    match decision.action {
        Action::Hang => {
            shared.shutting_down().await;
            Err(Dropped)
        }
        action => {
            let mut delay = shared.config.latency;
            let jitter = shared.config.latency_jitter;
            if !jitter.is_zero() {
                let f: f64 = shared.lock().jitter_rng.random();
                delay += jitter.mul_f64(f);
            }
            if !delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shared.shutting_down() => {}
                }
            }
            match action {
                Action::Answer(response) => Ok(response),
                _ => Err(Dropped),
            }
        }
    }
}

/// The share endpoint, after routing, size and rate checks.
fn share(shared: &Shared, parts: &hyper::http::request::Parts, body: &Bytes) -> Decision {
    let header = parts.headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
    let creds = auth::parse_header(header);
    // A body that is not compact JSON cannot match a signature over the
    // compact form: the contract answers it 401 like any other auth failure.
    let checked = authenticate(shared, creds, parts.method.as_str(), body).and_then(|()| {
        if validate::is_compact(body) {
            Ok(())
        } else {
            Err(AuthFailure::NotCompact)
        }
    });
    if let Err(reason) = checked {
        let body = if shared.config.error_codes {
            // Banxa's documented codes, and a request_id as Banxa asks
            // integrators to log.
            serde_json::json!({
                "message": "Unauthenticated.",
                "status": 401,
                "code": reason.code(),
                "request_id": shared.trace_id(),
            })
            .to_string()
        } else {
            UNAUTHENTICATED.to_string()
        };
        let mut decision = Decision::answer(json(StatusCode::UNAUTHORIZED, body));
        decision.reason = Some(reason);
        return decision;
    }

    let content_type = parts.headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes);
    let parsed =
        validate::check_content_type(content_type).and_then(|()| validate::parse_body(body));
    let object = match parsed {
        Ok(object) => object,
        Err(e) => {
            return Decision::answer(json(
                StatusCode::BAD_REQUEST,
                to_json(&Message {
                    message: &e.message(),
                    errors: None,
                    status: 400,
                    trace_id: Some(shared.trace_id()),
                }),
            ))
        }
    };

    let id = match validate::validate(&object) {
        Ok(id) => id,
        Err(errors) => {
            return Decision::answer(json(
                StatusCode::UNPROCESSABLE_ENTITY,
                to_json(&Message {
                    message: "The given data was invalid.",
                    errors: Some(&errors),
                    status: 422,
                    trace_id: None,
                }),
            ))
        }
    };

    let token = object
        .get("provider")
        .and_then(|p| p.get("token"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let fault = {
        let mut state = shared.lock();
        let state = &mut *state;
        if shared.config.check_tokens {
            let now = shared.now_micros();
            if let Err(rejection) = state.tokens.check(token, now) {
                state.counters.token_rejections[rejection.index()] += 1;
                let mut errors = FieldErrors::default();
                errors.add("provider.token", sumsub::TOKEN_INVALID.to_string());
                let mut decision = Decision::answer(json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    to_json(&Message {
                        message: "The given data was invalid.",
                        errors: Some(&errors),
                        status: 422,
                        trace_id: None,
                    }),
                ));
                decision.id = Some(id);
                decision.token_rejection = Some(rejection);
                return decision;
            }
        }
        // Decided and used up under the same lock as the check, so two
        // concurrent requests cannot both spend one token.
        let fault = state.faults.decide(&id);
        if shared.config.check_tokens && (fault.is_none() || shared.config.consume_token_on_fault) {
            state.tokens.consume(token);
        }
        fault
    };
    let mut decision = Decision::answer(match fault {
        Some(Fault::FailFirst | Fault::FailRate) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            to_json(&Message {
                message: "Server Error",
                errors: None,
                status: 500,
                trace_id: Some(shared.trace_id()),
            }),
        ),
        _ => json(
            StatusCode::ACCEPTED,
            serde_json::json!({ "identityReference": id }).to_string(),
        ),
    });
    match fault {
        Some(Fault::Reset) => decision.action = Action::Reset,
        Some(Fault::Hang) => decision.action = Action::Hang,
        Some(_) => {}
        None => decision.payload = Some(Value::Object(object)),
    }
    decision.fault = fault;
    decision.id = Some(id);
    decision
}

/// Sumsub's share-token endpoint (see [`sumsub`] for the checks). Counted
/// apart from Banxa's requests; never rate limited.
fn sumsub_share_token(
    shared: &Shared,
    parts: &hyper::http::request::Parts,
    body: Option<&Bytes>,
) -> Response<Body> {
    let mut reason = None;
    let mut minted = false;
    let (status, response) = 'answer: {
        let error = |status: StatusCode, description: &str| {
            let correlation_id = shared.trace_id();
            let body = to_json(&sumsub::ErrorBody {
                description,
                code: status.as_u16(),
                correlation_id: &correlation_id,
            });
            (status, json(status, body))
        };
        if parts.method != Method::POST {
            let description = format!(
                "The {} method is not supported for {}; use POST",
                parts.method,
                sumsub::SHARE_TOKEN_PATH
            );
            let (status, mut response) = error(StatusCode::METHOD_NOT_ALLOWED, &description);
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST"));
            break 'answer (status, response);
        }
        let Some(body) = body else {
            let description = format!(
                "The request body is larger than {} bytes",
                shared.config.body_limit
            );
            break 'answer error(StatusCode::PAYLOAD_TOO_LARGE, &description);
        };
        let headers = SignedHeaders {
            app_token: parts.headers.get("x-app-token").map(HeaderValue::as_bytes),
            ts: parts
                .headers
                .get("x-app-access-ts")
                .map(HeaderValue::as_bytes),
            sig: parts
                .headers
                .get("x-app-access-sig")
                .map(HeaderValue::as_bytes),
        };
        let path_with_query = parts
            .uri
            .path_and_query()
            .map_or(sumsub::SHARE_TOKEN_PATH, |p| p.as_str());
        let verified = match &shared.sumsub_verifier {
            None => Err(SumsubAuthFailure::NotConfigured),
            Some(verifier) => verifier.verify(
                headers,
                parts.method.as_str(),
                path_with_query,
                body,
                shared.now_micros(),
            ),
        };
        if let Err(failure) = verified {
            reason = Some(failure);
            break 'answer error(StatusCode::UNAUTHORIZED, failure.description());
        }
        let request = match sumsub::parse_request(body) {
            Ok(request) => request,
            Err(description) => break 'answer error(StatusCode::BAD_REQUEST, &description),
        };
        if !sumsub::applicant_exists(&request.applicant_id) {
            break 'answer error(StatusCode::NOT_FOUND, "Applicant not found");
        }
        if shared.config.sumsub_forbidden_client.as_deref() == Some(&request.for_client_id) {
            break 'answer error(
                StatusCode::FORBIDDEN,
                "Sharing applicant data with this client is not allowed",
            );
        }
        let fail_rate = shared.config.sumsub_fail_rate;
        if fail_rate > 0.0 && shared.lock().sumsub_rng.random::<f64>() < fail_rate {
            break 'answer error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
        }
        let token = sumsub::new_token();
        let answer = serde_json::json!({
            "token": token,
            "forClientId": request.for_client_id,
        })
        .to_string();
        let now = shared.now_micros();
        shared.lock().tokens.insert(token, request.ttl_secs, now);
        minted = true;
        (StatusCode::OK, json(StatusCode::OK, answer))
    };
    let mut state = shared.lock();
    let counters = &mut state.counters;
    counters.total += 1;
    *counters
        .sumsub_by_status
        .entry(status.as_u16())
        .or_insert(0) += 1;
    if minted {
        counters.tokens_minted += 1;
    }
    if let Some(reason) = reason {
        counters.sumsub_auth_failures[reason.index()] += 1;
    }
    response
}

fn authenticate(
    shared: &Shared,
    creds: Result<auth::Credentials<'_>, AuthFailure>,
    method: &str,
    body: &[u8],
) -> Result<(), AuthFailure> {
    let n = shared.authenticating.fetch_add(1, Ordering::Relaxed) + 1;
    if shared.config.unauth_after.is_some_and(|limit| n > limit) {
        return Err(AuthFailure::Revoked);
    }
    let creds = creds?;
    let nonce = shared.verifier.verify(&creds, method, SHARE_PATH, body)?;
    let now = shared.now_micros();
    shared.lock().nonces.admit(nonce, now)
}

/// The JSON error bodies, fields in Banxa's order.
#[derive(Serialize)]
struct Message<'a> {
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a FieldErrors>,
    status: u16,
    #[serde(rename = "traceId", skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain structs serialise")
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn method_not_allowed(method: &Method, path: &str, allowed: &'static str) -> Response<Body> {
    let mut response = json(
        StatusCode::METHOD_NOT_ALLOWED,
        to_json(&Message {
            message: &format!(
                "The {method} method is not supported for route {path}. Supported methods: {allowed}."
            ),
            errors: None,
            status: 405,
            trace_id: None,
        }),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allowed));
    response
}

fn unix_micros(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
