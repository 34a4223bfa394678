//! Nonces: unique, strictly increasing unix microseconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Unique, strictly increasing nonces: unix time in microseconds.
///
/// If the clock has not moved since the last nonce (or went backwards), the
/// next nonce is the last one plus one, so nonces never repeat and never
/// decrease, whatever the number of threads drawing them.
#[derive(Debug, Default)]
pub struct NonceSource {
    last: AtomicU64,
}

impl NonceSource {
    pub fn new() -> Self {
        NonceSource {
            last: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> u64 {
        let now = unix_micros();
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let candidate = if now > last { now } else { last + 1 };
            match self.last.compare_exchange_weak(
                last,
                candidate,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return candidate,
                Err(seen) => last = seen,
            }
        }
    }
}

/// Microseconds since the unix epoch, from the system clock.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
