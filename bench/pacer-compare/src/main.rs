//! Governor against kycshare's own rate limiter, side by side, on the
//! emulator's sliding-window limit (issue 11, item 3). For each pacer and
//! each server limit it sends signed requests at concurrency 16 through
//! the pacer and reports the achieved rate (as a share of the asked rate)
//! and the 429s the server answered.
//!
//! The window is shortened to 6 s (50 requests a window at the asked
//! rate, the same 120 ms spacing as 500/min) so that a run takes 24 s,
//! not four minutes; what decides a 429 is the spacing at a window's edge,
//! which is the same.
//!
//! The second set of trials delays every 25th request by 150 ms between
//! its go-ahead and its send, as a new TLS connection to Banxa does: the
//! server counts arrivals, and a late arrival at the start of a window
//! lets a pacer that counts go-aheads put one request too many in it.
//!
//! ```text
//! cargo run --release --manifest-path bench/pacer-compare/Cargo.toml
//! ```

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{Quota, RateLimiter as Governor};
use kycshare::dispatch::limiter::{Rate, RateLimiter};
use kycshare::mock::{MockConfig, MockServer};
use kycshare::request::{NonceSource, Signer, SHARE_PATH};
use kycshare::secret::Secret;

const WINDOW: Duration = Duration::from_secs(6);
const PER_WINDOW: u32 = 50;
const REQUESTS: usize = 200;
const CONCURRENCY: usize = 16;

#[derive(Clone, Copy, Debug)]
enum Pacer {
    Kycshare,
    Governor { burst: u32 },
}

#[tokio::main]
async fn main() {
    println!("asked rate: {PER_WINDOW} per {WINDOW:?} (500/min spacing), {REQUESTS} requests, concurrency {CONCURRENCY}, answer latency 20 ms + up to 30 ms jitter");
    println!(
        "{:<22} {:>14} {:>12} {:>10} {:>6}",
        "pacer", "server limit", "late sends", "achieved", "429s"
    );
    for (server_limit, late) in [
        (PER_WINDOW, false),
        (PER_WINDOW * 11 / 10, false),
        (PER_WINDOW, true),
        (PER_WINDOW * 11 / 10, true),
    ] {
        for pacer in [
            Pacer::Kycshare,
            Pacer::Governor { burst: 1 },
            Pacer::Governor { burst: 5 },
        ] {
            let (achieved, throttled) = trial(pacer, server_limit, late).await;
            println!(
                "{:<22} {:>10}/{}s {:>12} {:>9.1}% {:>6}",
                format!("{pacer:?}"),
                server_limit,
                WINDOW.as_secs(),
                if late { "1 in 25" } else { "none" },
                achieved * 100.0,
                throttled
            );
        }
    }
}

async fn trial(pacer: Pacer, server_limit: u32, late: bool) -> (f64, u64) {
    let secret = Secret::new("pacer-secret".to_string());
    let mut cfg = MockConfig::new("pacer-key", secret.clone());
    cfg.rate_limit_per_min = Some(server_limit);
    cfg.rate_window = WINDOW;
    cfg.latency = Duration::from_millis(20);
    cfg.latency_jitter = Duration::from_millis(30);
    cfg.seed = Some(1);
    let server = MockServer::start(([127, 0, 0, 1], 0).into(), cfg)
        .await
        .expect("start the emulator");
    let url = format!("{}{SHARE_PATH}", server.base_url());
    let http = reqwest::Client::new();
    let signer = Arc::new(Signer::new("pacer-key", &secret));
    let nonces = Arc::new(NonceSource::new());
    let ours = Arc::new(RateLimiter::new(Rate {
        n: PER_WINDOW,
        per: WINDOW,
    }));
    let period = WINDOW / PER_WINDOW;
    let gov = match pacer {
        Pacer::Governor { burst } => Some(Arc::new(Governor::direct(
            Quota::with_period(period)
                .expect("a non-zero period")
                .allow_burst(NonZeroU32::new(burst).expect("burst above 0")),
        ))),
        Pacer::Kycshare => None,
    };
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (http, url, signer, nonces, ours, gov, next) = (
            http.clone(),
            url.clone(),
            signer.clone(),
            nonces.clone(),
            ours.clone(),
            gov.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= REQUESTS {
                    break;
                }
                let seq = match &gov {
                    Some(g) => {
                        g.until_ready().await;
                        None
                    }
                    None => Some(ours.until_ready().await),
                };
                let body = format!(
                    r#"{{"identityReference":"p-{i}","email":"p{i}@example.com","mobileNumber":"61400000000","provider":{{"vendor":"sumsub","token":"pacer-token-{i}"}}}}"#
                );
                let auth = signer.authorization(SHARE_PATH, nonces.next(), body.as_bytes());
                let t = Instant::now();
                if late && i % 25 == 0 {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
                let resp = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("authorization", auth)
                    .body(body)
                    .send()
                    .await;
                if let Some(seq) = seq {
                    ours.observe_latency(t.elapsed());
                    ours.answered(seq);
                }
                if let Ok(r) = resp {
                    let _ = r.bytes().await;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = server.stats();
    server.shutdown().await;
    let throttled = stats.by_status.get("429").copied().unwrap_or(0);
    let asked = f64::from(PER_WINDOW) / WINDOW.as_secs_f64();
    // REQUESTS requests take (REQUESTS - 1) spacings at the asked rate.
    let achieved = (REQUESTS as f64 - 1.0) / elapsed / asked;
    (achieved, throttled)
}
