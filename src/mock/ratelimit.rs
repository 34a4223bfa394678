//! Banxa's rate limit: a sliding 60-second window over admitted requests.
//!
//! A request answered 429 is not admitted and does not count, so a client
//! that backs off as told by `Retry-After` gets through.

use std::collections::VecDeque;
use std::time::Duration;

/// A sliding-window log: the instants (micros on a monotonic scale) of the
/// requests admitted in the last window.
#[derive(Debug)]
pub struct SlidingWindow {
    limit: usize,
    window_micros: u64,
    admitted: VecDeque<u64>,
}

impl SlidingWindow {
    pub fn new(limit: u32, window: Duration) -> SlidingWindow {
        SlidingWindow {
            limit: limit as usize,
            window_micros: window.as_micros() as u64,
            admitted: VecDeque::new(),
        }
    }

    /// Admits a request at `now`, or says how long until a slot frees
    /// (whole seconds, rounded up, at least 1: the `Retry-After` value).
    pub fn admit(&mut self, now_micros: u64) -> Result<(), u64> {
        while let Some(&t) = self.admitted.front() {
            if now_micros.saturating_sub(t) < self.window_micros {
                break;
            }
            self.admitted.pop_front();
        }
        if self.admitted.len() < self.limit {
            self.admitted.push_back(now_micros);
            return Ok(());
        }
        let oldest = self.admitted.front().copied().unwrap_or(now_micros);
        let wait = (oldest + self.window_micros).saturating_sub(now_micros);
        Err(wait.div_ceil(1_000_000).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_limit_then_says_when() {
        let mut w = SlidingWindow::new(2, Duration::from_secs(60));
        assert_eq!(w.admit(0), Ok(()));
        assert_eq!(w.admit(10_000_000), Ok(()));
        assert_eq!(w.admit(20_000_000), Err(40));
        // Refused requests do not count: the first slot frees at 60 s.
        assert_eq!(w.admit(59_500_000), Err(1));
        assert_eq!(w.admit(60_000_000), Ok(()));
        assert_eq!(w.admit(60_000_001), Err(10));
    }
}
