//! The rate limiter: never more than the configured rate over any window,
//! from the very first request (no start-up burst), and no slower than the
//! rate either.
//!
//! Each caller *reserves* the next slot, then sleeps until it. Slots are
//! exactly `period` apart while callers queue, so a late timer wake-up
//! (tokio's timer has millisecond granularity) never pushes later slots
//! back; a rate of 50/s stays 50/s instead of drifting to ~49. On top of
//! the pacing, a sliding-window log of the last N slots guarantees at most
//! N in any window of the rate's unit. The log holds the moment each caller
//! actually went ahead (a late wake-up moves it later), and a new slot keeps
//! a margin beyond it for the jitter between going ahead and the request's
//! arrival at the server: at least min(5 ms, 1% of the window), more when
//! the answers' latencies vary more ([`RateLimiter::observe_jitter`]: four
//! times their mean deviation, at most 2% of the window). A steady link
//! keeps the 5 ms margin (0.5% of a 1-second window, 0.008% of a minute);
//! a jittery one trades a little rate for never exceeding it at the
//! server. And when a request's answer takes longer than the quickest one
//! ([`RateLimiter::answered`]), the request may have reached the server
//! that much later than it went ahead (a new connection at start-up, a busy
//! scheduler): the window counts that slot from there.
//!
//! `governor` was measured against this and not chosen
//! (`bench/pacer-compare`, figures in docs/performance.md): with a burst of
//! 1 it holds the rate, but it counts go-aheads, not arrivals, so a request
//! that reaches the server late (a new TLS connection) lets the next window
//! hold one too many and a server limited to exactly the rate answers 429;
//! a burst above 1 is a start-up burst and draws 429s at once. This is the
//! same GCRA idea with reservations and a log of the last N grants instead.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A configured rate: `N/s` or `N/min`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests per window.
    pub n: u32,
    /// The window: one second or one minute.
    pub per: Duration,
}

impl Rate {
    pub fn per_second(&self) -> f64 {
        f64::from(self.n) / self.per.as_secs_f64()
    }

    /// Time between two slots.
    pub fn period(&self) -> Duration {
        self.per / self.n
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.per == Duration::from_secs(60) {
            write!(f, "{}/min", self.n)
        } else {
            write!(f, "{}/s", self.n)
        }
    }
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "`{s}`: expected N/min or N/s with N a whole number above 0, e.g. 450/min or 20/s"
            )
        };
        let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(bad());
        }
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            _ => return Err(bad()),
        };
        Ok(Rate { n, per })
    }
}

/// Windows longer than this many slots skip the window log (its memory
/// would grow with the rate); pacing alone still holds the rate.
const MAX_LOG: u32 = 100_000;

pub struct RateLimiter {
    rate: Rate,
    period: Duration,
    /// Least margin beyond the window.
    margin_floor: Duration,
    /// Most margin beyond the window.
    margin_cap: Duration,
    /// The margin in use, microseconds.
    margin_us: std::sync::atomic::AtomicU64,
    /// Quickest go-ahead-to-answer time seen, microseconds.
    quickest_us: std::sync::atomic::AtomicU64,
    /// The answers' latency: exponentially weighted mean and mean absolute
    /// deviation, seconds (the margin follows the deviation).
    latency: Mutex<(Option<f64>, f64)>,
    state: Mutex<State>,
}

struct State {
    next: Option<Instant>,
    /// Per slot: when it went ahead, and how long from then to its answer.
    log: VecDeque<(Instant, Option<Duration>)>,
    /// Sequence number of `log.front()`.
    base: u64,
    /// Sequence number of the next slot.
    seq: u64,
}

impl RateLimiter {
    pub fn new(rate: Rate) -> RateLimiter {
        RateLimiter {
            rate,
            period: rate.period(),
            margin_floor: (rate.per / 100).min(Duration::from_millis(5)),
            margin_cap: rate.per / 50,
            margin_us: std::sync::atomic::AtomicU64::new(
                (rate.per / 100).min(Duration::from_millis(5)).as_micros() as u64,
            ),
            quickest_us: std::sync::atomic::AtomicU64::new(u64::MAX),
            latency: Mutex::new((None, 0.0)),
            state: Mutex::new(State {
                next: None,
                log: VecDeque::with_capacity(rate.n.min(MAX_LOG) as usize),
                base: 0,
                seq: 0,
            }),
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// The margin kept beyond each window.
    pub fn margin(&self) -> Duration {
        Duration::from_micros(self.margin_us.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Feeds the latency of one answer: the limiter tracks its own mean
    /// deviation (nothing else feeds it) and sets its margin from it.
    pub fn observe_latency(&self, latency: Duration) {
        let x = latency.as_secs_f64();
        let dev = {
            let mut j = self.latency.lock().unwrap_or_else(|e| e.into_inner());
            let (mean, dev) = *j;
            let m = mean.unwrap_or(x);
            let new_dev = dev * 0.9 + (x - m).abs() * 0.1;
            *j = (Some(m * 0.9 + x * 0.1), new_dev);
            new_dev
        };
        self.observe_jitter(Duration::from_secs_f64(dev));
    }

    /// Feeds the mean deviation of the answers' latency: the margin becomes
    /// four times it, between the floor and 2% of the window.
    pub fn observe_jitter(&self, mean_deviation: Duration) {
        let m =
            (mean_deviation * 4).clamp(self.margin_floor, self.margin_cap.max(self.margin_floor));
        self.margin_us
            .store(m.as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Reserves the next slot; returns its sequence number and time
    /// (possibly now).
    pub fn reserve(&self) -> (u64, Instant) {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut t = match st.next {
            Some(next) if next > now => next,
            _ => now,
        };
        if self.rate.n <= MAX_LOG && st.log.len() == self.rate.n as usize {
            if let Some(&(went, took)) = st.log.front() {
                // A slot whose answer took longer than the quickest one may
                // have reached the server that much later (a new connection,
                // a busy scheduler): count the window from there.
                let quickest = self.quickest_us.load(std::sync::atomic::Ordering::Relaxed);
                let late = match took {
                    Some(d) if quickest != u64::MAX => d
                        .saturating_sub(Duration::from_micros(quickest))
                        .min(self.rate.per / 10),
                    _ => Duration::ZERO,
                };
                t = t.max(went + late + self.rate.per + self.margin());
            }
            st.log.pop_front();
            st.base += 1;
        }
        if self.rate.n <= MAX_LOG {
            st.log.push_back((t, None));
        }
        st.next = Some(t + self.period);
        let seq = st.seq;
        st.seq += 1;
        (seq, t)
    }

    /// Records that slot `seq` actually went ahead at `at` (later than
    /// reserved when the wake-up was late).
    fn went_ahead(&self, seq: u64, at: Instant) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if seq >= st.base {
            let i = (seq - st.base) as usize;
            if let Some(slot) = st.log.get_mut(i) {
                if at > slot.0 {
                    slot.0 = at;
                }
            }
        }
    }

    /// Waits for a slot; returns its sequence number for [`RateLimiter::answered`].
    pub async fn until_ready(&self) -> u64 {
        let (seq, t) = self.reserve();
        if t > Instant::now() {
            tokio::time::sleep_until(t).await;
        }
        self.went_ahead(seq, Instant::now());
        seq
    }

    /// Tells the limiter that the request of slot `seq` was answered now.
    /// The time from its go-ahead to its answer, beyond the quickest such
    /// time seen, bounds how much later than its go-ahead the request may
    /// have reached the server (a new connection, a busy scheduler); the
    /// window then counts the slot from there (at most a tenth of a window
    /// later), so the requests that follow keep a whole window from its real
    /// arrival. A constant delay, such as minting before every send, does
    /// not count: only the excess over the quickest does.
    pub fn answered(&self, seq: u64) {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if seq >= st.base {
            let i = (seq - st.base) as usize;
            if let Some(slot) = st.log.get_mut(i) {
                let took = now.saturating_duration_since(slot.0);
                slot.1 = Some(took);
                self.quickest_us.fetch_min(
                    took.as_micros() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        let r: Rate = "450/min".parse().unwrap();
        assert_eq!(r.n, 450);
        assert_eq!(r.per, Duration::from_secs(60));
        assert_eq!(
            "20/s".parse::<Rate>().unwrap().period(),
            Duration::from_millis(50)
        );
        assert!("0/s".parse::<Rate>().is_err());
        assert!("20".parse::<Rate>().is_err());
        assert!("20/h".parse::<Rate>().is_err());
        assert_eq!("450/min".parse::<Rate>().unwrap().to_string(), "450/min");
    }

    fn max_in_window(times: &[Instant], w: Duration) -> usize {
        let mut best = 0;
        let mut j = 0;
        for i in 0..times.len() {
            while times[i] - times[j] >= w {
                j += 1;
            }
            best = best.max(i - j + 1);
        }
        best
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_n_per_window_and_no_start_burst() {
        let rate: Rate = "50/s".parse().unwrap();
        let lim = std::sync::Arc::new(RateLimiter::new(rate));
        let start = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..16 {
            let lim = lim.clone();
            handles.push(tokio::spawn(async move {
                let mut v = Vec::new();
                for _ in 0..25 {
                    lim.until_ready().await;
                    v.push(Instant::now());
                }
                v
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.unwrap());
        }
        all.sort();
        assert_eq!(all.len(), 400);
        assert!(max_in_window(&all, Duration::from_secs(1)) <= 50);
        let first_second = all
            .iter()
            .filter(|t| **t - start < Duration::from_secs(1))
            .count();
        assert_eq!(first_second, 50);
        // And not slower than the rate: 400 slots take 8 s, give or take
        // the window margins (5 ms a window).
        let took = *all.last().unwrap() - start;
        assert!(took < Duration::from_millis(8_050), "{took:?}");
        assert!(took > Duration::from_millis(7_950), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_arrival_pushes_the_next_window() {
        // 2 per second; the first request needs 300 ms more than the
        // others to reach the server (say, a new connection).
        let lim = RateLimiter::new("2/s".parse().unwrap());
        let s0 = lim.until_ready().await;
        tokio::time::sleep(Duration::from_millis(350)).await;
        lim.answered(s0);
        let s1 = lim.until_ready().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        lim.answered(s1);
        let start = Instant::now();
        lim.until_ready().await;
        // Slot 0 may have reached the server up to 300 ms late; the
        // correction is capped at a tenth of the window (100 ms): the third
        // slot waits for 100 ms + 1 s + margin, not 1 s.
        let waited = Instant::now() - start;
        assert!(waited >= Duration::from_millis(1_100 - 550), "{waited:?}");
        assert!(
            waited < Duration::from_millis(1_100 - 550 + 20),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_constant_delay_before_every_send_costs_no_rate() {
        // Every request takes 300 ms from go-ahead to answer (a mint and a
        // send): nothing is late, the rate holds.
        let lim = std::sync::Arc::new(RateLimiter::new("10/s".parse().unwrap()));
        let start = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..40 {
            let lim = lim.clone();
            handles.push(tokio::spawn(async move {
                let s = lim.until_ready().await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                lim.answered(s);
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let took = Instant::now() - start;
        // 40 slots at 10/s: the last at 3.9 s (+ margins), answered 300 ms later.
        assert!(took < Duration::from_millis(4_250), "{took:?}");
    }

    #[test]
    fn the_margin_follows_jitter_within_bounds() {
        let lim = RateLimiter::new("50/s".parse().unwrap());
        assert_eq!(lim.margin(), Duration::from_millis(5));
        lim.observe_jitter(Duration::from_millis(3));
        assert_eq!(lim.margin(), Duration::from_millis(12));
        lim.observe_jitter(Duration::from_millis(100));
        assert_eq!(lim.margin(), Duration::from_millis(20));
        lim.observe_jitter(Duration::ZERO);
        assert_eq!(lim.margin(), Duration::from_millis(5));
        let minute = RateLimiter::new("500/min".parse().unwrap());
        minute.observe_jitter(Duration::from_millis(50));
        assert_eq!(minute.margin(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_limiter_does_not_burst_to_catch_up() {
        let lim = RateLimiter::new("10/s".parse().unwrap());
        lim.until_ready().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let t0 = Instant::now();
        for _ in 0..3 {
            lim.until_ready().await;
        }
        assert!(Instant::now() - t0 >= Duration::from_millis(200));
    }
}
