//! What a run is doing right now, as plain atomics: requests by HTTP
//! status, their latency in histogram buckets, requests in flight, the
//! breaker's pauses, tokens minted, and a one-second sampler of the
//! achieved rate. The dispatcher writes it (a few relaxed atomic adds per
//! request, no lock); `crate::output::metrics` reads it when the metrics
//! file is written or `/metrics` is scraped.
//!
//! Not for: outcomes (the journal's `Counts`), or anything that names a
//! record.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the latency histogram's buckets (`+Inf`
/// implied): from a loopback answer to a `--timeout` of a minute.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// Index 0: no HTTP answer (connection error, timeout); else the status.
const STATUSES: usize = 600;

/// How far back the achieved rate looks.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

pub struct Live {
    by_status: Box<[AtomicU64]>,
    /// Per bucket of [`LATENCY_BUCKETS`] (not cumulative), then `+Inf`.
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_micros: AtomicU64,
    pub in_flight: AtomicI64,
    /// Times the breaker opened.
    pub pauses: AtomicU64,
    pub paused: AtomicBool,
    pub tokens_minted: AtomicU64,
    /// (when, requests so far), one a second, the last [`RATE_WINDOW`].
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            by_status: (0..STATUSES).map(|_| AtomicU64::new(0)).collect(),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_micros: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            pauses: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            tokens_minted: AtomicU64::new(0),
            samples: Mutex::new(VecDeque::new()),
        }
    }
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("requests", &self.requests())
            .finish_non_exhaustive()
    }
}

impl Live {
    /// One request answered with `status` (`None`: no HTTP answer) after
    /// `latency`.
    pub fn observe(&self, status: Option<u16>, latency: Duration) {
        let i = status
            .map(|s| s as usize)
            .filter(|s| *s < STATUSES)
            .unwrap_or(0);
        self.by_status[i].fetch_add(1, Ordering::Relaxed);
        let secs = latency.as_secs_f64();
        let b = LATENCY_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[b].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
    }

    /// Requests by status, `None` first (no HTTP answer); zeros left out.
    pub fn by_status(&self) -> Vec<(Option<u16>, u64)> {
        self.by_status
            .iter()
            .enumerate()
            .map(|(i, n)| ((i > 0).then_some(i as u16), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    pub fn requests(&self) -> u64 {
        self.by_status
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

    /// (sum in seconds, count, buckets `(le, count in that bucket)`),
    /// `+Inf` last. Not cumulative: the encoder adds them up.
    pub fn latency(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut count = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        for (i, n) in self.latency.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            count += n;
            let le = LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((le, n));
        }
        let sum = self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, count, buckets)
    }

    /// Records a sample of the request count (call about once a second).
    pub fn sample(&self, now: Instant) {
        let n = self.requests();
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        s.push_back((now, n));
        while s
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            s.pop_front();
        }
    }

    /// Requests per second over the samples of the last [`RATE_WINDOW`]
    /// (0 with fewer than two).
    pub fn achieved_rate(&self) -> f64 {
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        match (s.front(), s.back()) {
            (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => {
                (n1 - n0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_buckets_and_rate() {
        let l = Live::default();
        l.observe(Some(202), Duration::from_millis(3));
        l.observe(Some(202), Duration::from_millis(300));
        l.observe(None, Duration::from_secs(120));
        assert_eq!(l.by_status(), vec![(None, 1), (Some(202), 2)]);
        let (sum, count, b) = l.latency();
        assert_eq!(count, 3);
        assert!((sum - 120.303).abs() < 1e-6, "{sum}");
        assert_eq!(b[0], (0.005, 1));
        assert_eq!(b[6], (0.5, 1));
        assert_eq!(b[5], (0.25, 0));
        assert_eq!(*b.last().unwrap(), (f64::INFINITY, 1));
        let t = Instant::now();
        l.sample(t);
        for _ in 0..30 {
            l.observe(Some(202), Duration::from_millis(1));
        }
        l.sample(t + Duration::from_secs(3));
        assert!((l.achieved_rate() - 10.0).abs() < 1e-9);
    }
}
