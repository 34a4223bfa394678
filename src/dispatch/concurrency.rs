//! How many requests may be in flight: a fixed number, or `auto`, which
//! holds enough in flight to sustain the rate at the latency observed
//! (Little's law: in flight = rate × latency), with headroom, bounded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `--concurrency N|auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    Auto,
    Fixed(usize),
}

impl std::str::FromStr for Concurrency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Concurrency::Auto);
        }
        match s.parse::<usize>() {
            Ok(n) if (1..=MAX_CONCURRENCY).contains(&n) => Ok(Concurrency::Fixed(n)),
            _ => Err(format!(
                "`{s}`: expected auto or a number from 1 to {MAX_CONCURRENCY}"
            )),
        }
    }
}

pub const MAX_CONCURRENCY: usize = 1024;
/// Bounds of `auto`.
pub const AUTO_MIN: usize = 2;
pub const AUTO_MAX: usize = 256;

/// In-flight slots whose number `auto` adjusts.
pub struct Slots {
    sem: Arc<Semaphore>,
    mode: Concurrency,
    /// Requests per second the limiter allows (None: unlimited).
    rate_per_s: Option<f64>,
    limit: AtomicUsize,
    /// Exponentially weighted mean service time, seconds.
    ewma: Mutex<Option<f64>>,
    /// Permits still to be taken away after a decrease.
    debt: AtomicUsize,
}

impl Slots {
    pub fn new(mode: Concurrency, rate_per_s: Option<f64>) -> Arc<Slots> {
        let initial = match mode {
            Concurrency::Fixed(n) => n,
            Concurrency::Auto => match rate_per_s {
                // Until a latency is seen, assume 250 ms.
                Some(r) => auto_target(r, 0.25),
                None => AUTO_MAX,
            },
        };
        Arc::new(Slots {
            sem: Arc::new(Semaphore::new(initial)),
            mode,
            rate_per_s,
            limit: AtomicUsize::new(initial),
            ewma: Mutex::new(None),
            debt: AtomicUsize::new(0),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// The most slots there can ever be: the size of the worker pool.
    pub fn max(&self) -> usize {
        match self.mode {
            Concurrency::Fixed(n) => n,
            Concurrency::Auto => AUTO_MAX,
        }
    }

    pub async fn acquire(&self) -> OwnedSemaphorePermit {
        loop {
            let p = self
                .sem
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            // Pay off a decrease by forgetting permits as they come back.
            let debt = self.debt.load(Ordering::Relaxed);
            if debt > 0
                && self
                    .debt
                    .compare_exchange(debt, debt - 1, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                p.forget();
                continue;
            }
            return p;
        }
    }

    /// Feeds the service time of one request (slot granted to answer, not
    /// counting the wait for the rate limiter).
    pub fn observe(&self, service: Duration) {
        if self.mode != Concurrency::Auto {
            return;
        }
        let s = service.as_secs_f64();
        let mut e = self.ewma.lock().unwrap_or_else(|e| e.into_inner());
        *e = Some(match *e {
            None => s,
            Some(prev) => prev * 0.9 + s * 0.1,
        });
    }

    /// Recomputes the `auto` limit from the rate and the mean service time.
    pub fn adjust(&self) {
        if self.mode != Concurrency::Auto {
            return;
        }
        let Some(rate) = self.rate_per_s else { return };
        let Some(latency) = *self.ewma.lock().unwrap_or_else(|e| e.into_inner()) else {
            return;
        };
        let target = auto_target(rate, latency);
        let cur = self.limit.load(Ordering::Relaxed);
        if target > cur {
            // Cancel pending decreases first.
            let debt = self.debt.swap(0, Ordering::AcqRel);
            let add = (target - cur).saturating_sub(debt);
            self.sem.add_permits(add);
        } else if target < cur {
            self.debt.fetch_add(cur - target, Ordering::AcqRel);
        }
        self.limit.store(target, Ordering::Relaxed);
    }
}

/// In flight needed = rate × latency; 1.5× headroom plus 2, bounded.
pub fn auto_target(rate_per_s: f64, latency_s: f64) -> usize {
    let needed = rate_per_s * latency_s;
    ((needed * 1.5).ceil() as usize + 2).clamp(AUTO_MIN, AUTO_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn littles_law_with_headroom() {
        assert_eq!(auto_target(7.5, 0.15), 4);
        assert_eq!(auto_target(20.0, 0.35), 13);
        assert_eq!(auto_target(100_000.0, 1.0), AUTO_MAX);
        assert_eq!(auto_target(0.1, 0.01), AUTO_MIN + 1);
    }

    #[test]
    fn parses() {
        assert_eq!("auto".parse::<Concurrency>().unwrap(), Concurrency::Auto);
        assert_eq!("64".parse::<Concurrency>().unwrap(), Concurrency::Fixed(64));
        assert!("0".parse::<Concurrency>().is_err());
        assert!("lots".parse::<Concurrency>().is_err());
    }

    #[tokio::test]
    async fn auto_grows_and_shrinks_with_latency() {
        let s = Slots::new(Concurrency::Auto, Some(20.0));
        for _ in 0..50 {
            s.observe(Duration::from_millis(1000));
        }
        s.adjust();
        assert_eq!(s.limit(), 32);
        let held: Vec<_> = futures::future::join_all((0..32).map(|_| s.acquire())).await;
        assert_eq!(held.len(), 32);
        drop(held);
        for _ in 0..200 {
            s.observe(Duration::from_millis(150));
        }
        s.adjust();
        assert_eq!(s.limit(), 7);
        // Only 7 can be held now.
        let held: Vec<_> = futures::future::join_all((0..7).map(|_| s.acquire())).await;
        let extra = tokio::time::timeout(Duration::from_millis(50), s.acquire()).await;
        assert!(extra.is_err(), "an eighth slot was granted");
        drop(held);
    }
}
