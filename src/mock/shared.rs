//! What the endpoints share: the state behind one lock, the count of answers
//! in progress, and the plumbing of an answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use rand::rngs::StdRng;
use serde::Serialize;
use tokio::sync::watch;

use super::auth::{NonceBook, Verifier};
use super::faults::Faults;
use super::ratelimit::SlidingWindow;
use super::record::Recorder;
use super::stats::{Counters, Stats};
use super::sumsub::{SumsubVerifier, TokenBook};
use super::MockConfig;

/// State behind one lock: cheap operations only.
#[derive(Debug)]
pub(super) struct State {
    pub(super) counters: Counters,
    pub(super) limiter: Option<SlidingWindow>,
    pub(super) nonces: NonceBook,
    pub(super) faults: Faults,
    /// Tokens minted by the Sumsub endpoint.
    pub(super) tokens: TokenBook,
    /// `--sumsub-fail-rate`'s own RNG, so Sumsub faults do not shift the
    /// sequence of Banxa's.
    pub(super) sumsub_rng: StdRng,
    /// The latency jitter's own RNG, likewise.
    pub(super) jitter_rng: StdRng,
    /// Identities accepted: (first, last) accept in unix micros.
    pub(super) identities: std::collections::HashMap<String, (u64, u64)>,
}

#[derive(Debug)]
pub(super) struct Shared {
    /// The seed (given or picked): faults, and which identities' KYC is
    /// `REJECTED`.
    pub(super) seed: u64,
    pub(super) config: MockConfig,
    pub(super) verifier: Verifier,
    pub(super) sumsub_verifier: Option<SumsubVerifier>,
    /// The fixed clock in unix micros; 0: the system clock.
    pub(super) clock: AtomicU64,
    pub(super) state: Mutex<State>,
    pub(super) recorder: Option<Recorder>,
    pub(super) started: Instant,
    /// Share requests that reached authentication (for `--unauth-after`).
    pub(super) authenticating: AtomicU64,
    pub(super) traces: AtomicU64,
    pub(super) in_flight: AtomicU64,
    pub(super) peak_in_flight: AtomicU64,
    pub(super) shutdown: watch::Receiver<bool>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn now_micros(&self) -> u64 {
        match self.clock.load(Ordering::Relaxed) {
            0 => unix_micros(SystemTime::now()),
            fixed => fixed,
        }
    }

    pub(super) fn trace_id(&self) -> String {
        format!(
            "mock-{:08x}",
            self.traces.fetch_add(1, Ordering::Relaxed) + 1
        )
    }

    pub(super) fn stats(&self) -> Stats {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let peak = self.peak_in_flight.load(Ordering::Relaxed);
        self.lock().counters.snapshot(in_flight, peak)
    }

    /// Resolves when shutdown starts (or the server was dropped).
    pub(super) async fn shutting_down(&self) {
        let mut rx = self.shutdown.clone();
        let _ = rx.wait_for(|down| *down).await;
    }
}

pub(super) struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    pub(super) fn enter(shared: &'a Shared) -> InFlight<'a> {
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

/// Returned by the service to drop the connection without an answer.
#[derive(Debug)]
pub(super) struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the emulator")
    }
}

impl std::error::Error for Dropped {}

pub(super) type Body = Full<Bytes>;

pub(super) fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain structs serialise")
}

pub(super) fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn unix_micros(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
