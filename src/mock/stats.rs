//! What `GET /stats` answers, and the counters behind it.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::auth::AuthFailure;
use super::sumsub::{SumsubAuthFailure, TokenRejection};

/// A snapshot of the emulator's counters: the body of `GET /stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Every request received except `GET /stats` itself.
    pub total: u64,
    /// Requests to the share endpoint (any method, any outcome).
    pub share_requests: u64,
    /// Requests to `/eapi/v0/identities/{identityReference}` (any method,
    /// any outcome); also in `total` and `byStatus`.
    #[serde(default)]
    pub identity_requests: u64,
    /// Answers by HTTP status, e.g. `{"202": 10, "500": 2}`. Resets and
    /// hangs have no status and are counted apart.
    pub by_status: BTreeMap<String, u64>,
    /// 401 answers by reason (every reason is listed, zeros included).
    pub auth_failures: BTreeMap<String, u64>,
    /// Connections dropped without an answer (`--reset-rate`).
    pub resets: u64,
    /// Requests never answered (`--hang-rate`).
    pub hangs: u64,
    /// Most share requests (all outcomes, 429 included) seen in any sliding
    /// 60-second window (to the millisecond).
    #[serde(rename = "maxIn60s")]
    pub max_in_60s: u64,
    /// Likewise for any 1-second window.
    #[serde(rename = "maxIn1s")]
    pub max_in_1s: u64,
    /// Most requests being handled at once.
    pub peak_in_flight: u64,
    /// Requests being handled now (hung ones included).
    pub in_flight: u64,
    /// Sumsub share-token requests, by HTTP status (not in `byStatus`).
    #[serde(default)]
    pub sumsub_requests: BTreeMap<String, u64>,
    /// Sumsub 401 answers by reason (every reason is listed, zeros included).
    #[serde(default)]
    pub sumsub_auth_failures: BTreeMap<String, u64>,
    /// Share tokens minted by the Sumsub endpoint.
    #[serde(default)]
    pub tokens_minted: u64,
    /// `--check-tokens`: 422s for `provider.token`, by reason (`unknown`,
    /// `used`, `expired`; every reason listed).
    #[serde(default)]
    pub token_rejections: BTreeMap<String, u64>,
}

/// Counts the most events seen in any sliding window of a given length, to
/// the millisecond: events are counted per millisecond, so memory is at most
/// one entry per millisecond of the window whatever the request rate.
#[derive(Debug)]
pub struct WindowMax {
    window_millis: u64,
    /// (millisecond, events in it), oldest first.
    buckets: VecDeque<(u64, u64)>,
    in_window: u64,
    max: u64,
}

impl WindowMax {
    pub fn new(window_micros: u64) -> WindowMax {
        WindowMax {
            window_millis: (window_micros / 1000).max(1),
            buckets: VecDeque::new(),
            in_window: 0,
            max: 0,
        }
    }

    /// Records an event at `now` (micros, monotonic).
    pub fn record(&mut self, now_micros: u64) {
        let now = now_micros / 1000;
        while let Some(&(millis, count)) = self.buckets.front() {
            if now.saturating_sub(millis) < self.window_millis {
                break;
            }
            self.buckets.pop_front();
            self.in_window -= count;
        }
        match self.buckets.back_mut() {
            Some((millis, count)) if *millis >= now => *count += 1,
            _ => self.buckets.push_back((now, 1)),
        }
        self.in_window += 1;
        self.max = self.max.max(self.in_window);
    }

    pub fn max(&self) -> u64 {
        self.max
    }
}

/// The counters kept under the server's lock.
#[derive(Debug)]
pub struct Counters {
    pub total: u64,
    pub share_requests: u64,
    pub identity_requests: u64,
    pub by_status: BTreeMap<u16, u64>,
    pub auth_failures: [u64; AuthFailure::ALL.len()],
    pub resets: u64,
    pub hangs: u64,
    pub in_60s: WindowMax,
    pub in_1s: WindowMax,
    pub sumsub_by_status: BTreeMap<u16, u64>,
    pub sumsub_auth_failures: [u64; SumsubAuthFailure::ALL.len()],
    pub tokens_minted: u64,
    pub token_rejections: [u64; TokenRejection::ALL.len()],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            total: 0,
            share_requests: 0,
            identity_requests: 0,
            by_status: BTreeMap::new(),
            auth_failures: [0; AuthFailure::ALL.len()],
            resets: 0,
            hangs: 0,
            in_60s: WindowMax::new(60_000_000),
            in_1s: WindowMax::new(1_000_000),
            sumsub_by_status: BTreeMap::new(),
            sumsub_auth_failures: [0; SumsubAuthFailure::ALL.len()],
            tokens_minted: 0,
            token_rejections: [0; TokenRejection::ALL.len()],
        }
    }
}

impl Counters {
    pub fn snapshot(&self, in_flight: u64, peak_in_flight: u64) -> Stats {
        Stats {
            total: self.total,
            share_requests: self.share_requests,
            identity_requests: self.identity_requests,
            by_status: self
                .by_status
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            auth_failures: AuthFailure::ALL
                .iter()
                .map(|r| (r.as_str().to_string(), self.auth_failures[r.index()]))
                .collect(),
            resets: self.resets,
            hangs: self.hangs,
            max_in_60s: self.in_60s.max(),
            max_in_1s: self.in_1s.max(),
            peak_in_flight,
            in_flight,
            sumsub_requests: self
                .sumsub_by_status
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            sumsub_auth_failures: SumsubAuthFailure::ALL
                .iter()
                .map(|r| (r.as_str().to_string(), self.sumsub_auth_failures[r.index()]))
                .collect(),
            tokens_minted: self.tokens_minted,
            token_rejections: TokenRejection::ALL
                .iter()
                .map(|r| (r.as_str().to_string(), self.token_rejections[r.index()]))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_max_slides() {
        let mut w = WindowMax::new(1_000_000);
        for t in [0, 100, 999_999, 1_000_000, 1_500_000, 1_600_000] {
            w.record(t);
        }
        // [0,100,999_999] are within 1 s; then 999_999..1_600_000 hold 4.
        assert_eq!(w.max(), 4);
        let mut w = WindowMax::new(60_000_000);
        for t in (0..200).map(|i| i * 1_000_000) {
            w.record(t);
        }
        assert_eq!(w.max(), 60);
        assert!(w.buckets.len() <= 60);
    }
}
