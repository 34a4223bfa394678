//! A small log-linear latency histogram (HDR-style, 5 bits of precision):
//! exact below 32 ms, then 32 buckets per power of two, so a percentile
//! read from it is within 1/64 (about 1.6 %) of the true value. A minute
//! of a run needs a few hundred counters at most, whatever its rows.
//!
//! Not for: latencies beyond 2^40 ms (they count in the last bucket).

use super::Percentiles;

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
const MAX_EXP: u32 = 40;

/// Counts per bucket; grows to the largest bucket used.
#[derive(Debug, Clone, Default)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

/// The bucket of `v` (milliseconds).
pub fn bucket(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = (63 - v.leading_zeros()).min(MAX_EXP);
    if e == MAX_EXP && v >= (1u64 << MAX_EXP) {
        return bucket((1u64 << MAX_EXP) - 1);
    }
    let sub = (v >> (e - SUB_BITS)) & (SUB - 1);
    (SUB + u64::from(e - SUB_BITS) * SUB + sub) as usize
}

/// The smallest and largest value of bucket `i`.
pub fn bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB {
        return (i, i);
    }
    let e = (i - SUB) / SUB + u64::from(SUB_BITS);
    let sub = (i - SUB) % SUB;
    let width = 1u64 << (e - u64::from(SUB_BITS));
    let low = (SUB + sub) * width;
    (low, low + width - 1)
}

impl LatencyHistogram {
    pub fn record(&mut self, v: u64) {
        let b = bucket(v);
        if self.counts.len() <= b {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// Adds another histogram's counts to this one.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1): the middle of its bucket, never
    /// above the largest value recorded.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = bounds(i);
                return Some((lo + (hi - lo) / 2).min(self.max));
            }
        }
        Some(self.max)
    }

    pub fn percentiles(&self, with_max: bool) -> Percentiles {
        Percentiles {
            count: self.total,
            p50: self.quantile(0.50),
            p95: self.quantile(0.95),
            p99: self.quantile(0.99),
            max: (with_max && self.total > 0).then_some(self.max),
            mean: None,
        }
    }

    /// (low, high, count) of every non-empty bucket.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| {
                let (lo, hi) = bounds(i);
                (lo, hi, *c)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_once_and_hold_it() {
        let mut prev_hi = None;
        for i in 0..(SUB as usize * 20) {
            let (lo, hi) = bounds(i);
            if let Some(p) = prev_hi {
                assert_eq!(lo, p + 1, "bucket {i} follows the last");
            }
            assert_eq!(bucket(lo), i);
            assert_eq!(bucket(hi), i);
            prev_hi = Some(hi);
        }
    }

    #[test]
    fn quantiles_are_within_two_percent() {
        let mut h = LatencyHistogram::default();
        let values: Vec<u64> = (1..=10_000).map(|i| i * 7 % 5000 + 1).collect();
        for v in &values {
            h.record(*v);
        }
        let mut sorted = values.clone();
        sorted.sort();
        for q in [0.5, 0.95, 0.99] {
            let exact = sorted[(q * sorted.len() as f64).ceil() as usize - 1] as f64;
            let got = h.quantile(q).unwrap() as f64;
            assert!(
                (got - exact).abs() / exact <= 1.0 / 64.0 + 1e-9,
                "q{q}: {got} vs {exact}"
            );
        }
        assert_eq!(h.quantile(1.0), Some(5000));
        assert_eq!(LatencyHistogram::default().quantile(0.5), None);
        let mut small = LatencyHistogram::default();
        small.record(7);
        assert_eq!(small.quantile(0.99), Some(7), "exact below 32 ms");
    }
}
