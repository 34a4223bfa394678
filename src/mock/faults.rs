//! Injected faults: which request gets one, decided reproducibly.
//!
//! Faults are decided only for requests that passed authentication and
//! validation, so a fault never hides a 401/400/422 and never consumes
//! anything the client relies on (only a 202 accepts a share).
//! Order: `--fail-first` (deterministic), then `--reset-rate`,
//! `--hang-rate`, `--fail-rate` (random, from the seeded RNG).

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A fault chosen for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 500: one of the first N requests for this identityReference.
    FailFirst,
    /// Connection dropped without an answer.
    Reset,
    /// Never answered.
    Hang,
    /// 500 at random.
    FailRate,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::FailFirst => "fail-first",
            Fault::Reset => "reset",
            Fault::Hang => "hang",
            Fault::FailRate => "fail-rate",
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct FaultRates {
    pub fail_rate: f64,
    pub reset_rate: f64,
    pub hang_rate: f64,
    pub fail_first: u32,
}

/// The fault state: the RNG and requests seen per identityReference.
#[derive(Debug)]
pub struct Faults {
    rates: FaultRates,
    rng: StdRng,
    seen: HashMap<String, u32>,
}

impl Faults {
    pub fn new(rates: FaultRates, seed: u64) -> Faults {
        Faults {
            rates,
            rng: StdRng::seed_from_u64(seed),
            seen: HashMap::new(),
        }
    }

    /// Decides the fault, if any, for a valid request for `id`.
    pub fn decide(&mut self, id: &str) -> Option<Fault> {
        if self.rates.fail_first > 0 {
            let n = match self.seen.get_mut(id) {
                Some(n) => n,
                None => self.seen.entry(id.to_string()).or_insert(0),
            };
            *n = n.saturating_add(1);
            if *n <= self.rates.fail_first {
                return Some(Fault::FailFirst);
            }
        }
        if self.draw(self.rates.reset_rate) {
            return Some(Fault::Reset);
        }
        if self.draw(self.rates.hang_rate) {
            return Some(Fault::Hang);
        }
        if self.draw(self.rates.fail_rate) {
            return Some(Fault::FailRate);
        }
        None
    }

    /// Draws only when the rate is on, so turning one fault on does not
    /// shift the sequence of another that is off.
    fn draw(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.rng.random::<f64>() < rate
    }
}

/// Whether `id`'s KYC ends `REJECTED` under `--kyc-reject-rate rate`: a
/// SHA-256 of the seed and the identityReference, read as a number in
/// `[0, 1)`, below `rate`. Stateless, so the answer does not depend on the
/// order of requests, and 1.0 rejects every identity, 0.0 none.
pub fn kyc_rejected(seed: u64, id: &str, rate: f64) -> bool {
    use sha2::{Digest, Sha256};
    if rate <= 0.0 {
        return false;
    }
    let mut hash = Sha256::new();
    hash.update(seed.to_le_bytes());
    hash.update(id.as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let unit = (u64::from_le_bytes(first) >> 11) as f64 / (1u64 << 53) as f64;
    unit < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kyc_rejection_is_seeded_and_proportional() {
        let ids: Vec<String> = (0..2000).map(|i| format!("c-{i}")).collect();
        let rejected = |seed, rate| {
            ids.iter()
                .filter(|id| kyc_rejected(seed, id, rate))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(rejected(1, 0.2), rejected(1, 0.2));
        assert_ne!(rejected(1, 0.2), rejected(2, 0.2));
        let n = rejected(1, 0.2).len();
        assert!((300..500).contains(&n), "{n}");
        assert_eq!(rejected(1, 1.0).len(), ids.len());
        assert!(rejected(1, 0.0).is_empty());
    }

    #[test]
    fn fail_first_is_per_id() {
        let mut f = Faults::new(
            FaultRates {
                fail_first: 2,
                ..Default::default()
            },
            1,
        );
        assert_eq!(f.decide("a"), Some(Fault::FailFirst));
        assert_eq!(f.decide("b"), Some(Fault::FailFirst));
        assert_eq!(f.decide("a"), Some(Fault::FailFirst));
        assert_eq!(f.decide("a"), None);
        assert_eq!(f.decide("b"), Some(Fault::FailFirst));
        assert_eq!(f.decide("b"), None);
    }

    #[test]
    fn same_seed_same_faults() {
        let rates = FaultRates {
            fail_rate: 0.3,
            reset_rate: 0.1,
            ..Default::default()
        };
        let run = |seed| {
            let mut f = Faults::new(rates, seed);
            (0..200).map(|_| f.decide("x")).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let fails = run(7).iter().filter(|f| f.is_some()).count();
        assert!((40..120).contains(&fails), "{fails}");
    }
}
