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
//! And Banxa's `GET /eapi/v0/identities/{identityReference}`: the
//! maintenance window (`--outage-after/--outage-for`, 503 before anything
//! else but routing), the shared rate limit, Banxa's GET signature (no body
//! line), then 404 for an identity never accepted, else 200 with its
//! account and `kyc.status` (`PENDING` during `--kyc-delay`, then
//! `VERIFIED`, or `REJECTED` for a `--kyc-reject-rate` share, seeded).
//!
//! `--latency` is added to every Banxa answer (reset included). Each share
//! and identity request is written to the record file before its answer is
//! sent (identity lines carry `"route":"identity"`).
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

mod banxa;
mod server;
mod shared;
mod sumsub_handler;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::secret::Secret;
use auth::{NonceBook, Verifier};
use faults::{FaultRates, Faults};
use ratelimit::SlidingWindow;
use record::Recorder;
use server::accept_loop;
use shared::{Shared, State};
use stats::Counters;
pub use stats::Stats;
use sumsub::{SumsubVerifier, TokenBook};

/// Banxa's identity token sharing endpoint.
pub const SHARE_PATH: &str = "/eapi/v0/identities/token/share";
/// The emulator's counters.
pub const STATS_PATH: &str = "/stats";
/// Banxa's published limit.
pub const DEFAULT_RATE_LIMIT_PER_MIN: u32 = 500;
/// Largest request body accepted (413 above).
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

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
    /// These identityReferences always get 500 (a fault Banxa gives for
    /// certain records only; library use, for tests).
    pub fail_always: Vec<String>,
    /// A maintenance window: from this long after the start…
    pub outage_after: Option<Duration>,
    /// …for this long, every Banxa request answers 503.
    pub outage_for: Duration,
    /// `GET` of an identity answers `PENDING` until this long after its
    /// last accepted share, then `VERIFIED` (or `REJECTED`, see
    /// [`MockConfig::kyc_reject_rate`]).
    pub kyc_delay: Duration,
    /// The share (0 to 1) of identities whose KYC ends `REJECTED` instead
    /// of `VERIFIED`. Which ones is decided by a hash of the
    /// identityReference and the seed: the same with the same `--seed`,
    /// whatever the order or the number of requests.
    pub kyc_reject_rate: f64,
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
            fail_always: Vec::new(),
            outage_after: None,
            outage_for: Duration::ZERO,
            kyc_delay: Duration::ZERO,
            kyc_reject_rate: 0.0,
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
            ("KYC reject rate", self.kyc_reject_rate),
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

/// The endpoints. A new endpoint is a variant here and an arm in `banxa::handle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Share,
    /// `GET /eapi/v0/identities/{identityReference}`.
    Identity,
    Stats,
    SumsubShareToken,
    /// Sumsub's `GET /resources/applicants/{id}/one` (what `check` reads).
    SumsubApplicant,
    NotFound,
}

/// The path prefix of Banxa's identity retrieval.
pub const IDENTITY_PREFIX: &str = "/eapi/v0/identities/";

impl Route {
    fn of(path: &str) -> Route {
        match path {
            SHARE_PATH => Route::Share,
            STATS_PATH => Route::Stats,
            sumsub::SHARE_TOKEN_PATH => Route::SumsubShareToken,
            p if p
                .strip_prefix("/resources/applicants/")
                .and_then(|rest| rest.strip_suffix("/one"))
                .is_some_and(|id| !id.is_empty() && !id.contains('/')) =>
            {
                Route::SumsubApplicant
            }
            p if p
                .strip_prefix(IDENTITY_PREFIX)
                .is_some_and(|id| !id.is_empty() && !id.contains('/')) =>
            {
                Route::Identity
            }
            _ => Route::NotFound,
        }
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
            identities: std::collections::HashMap::new(),
        };
        let sumsub_verifier = match (&config.sumsub_app_token, &config.sumsub_secret) {
            (Some(token), Some(secret)) if !token.is_empty() && !secret.is_empty() => {
                Some(SumsubVerifier::new(token, secret))
            }
            _ => None,
        };
        let (tx, rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            seed,
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
