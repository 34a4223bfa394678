//! What a store has buffered and not committed yet, and when to commit it
//! (see "Batching and crashes" in the module doc of [`crate::ledger`]):
//! the policy both stores follow, written once.

use std::time::{Duration, Instant, SystemTime};

use super::Update;
use crate::model::Outcome;

/// Updates buffered before a store commits them.
pub const BATCH_ROWS: usize = 64;
/// The oldest a buffered update gets before a store commits.
pub const BATCH_AGE: Duration = Duration::from_secs(1);

/// A verification's answer for the ledger: (identityReference, status, when).
pub(super) type KycUpdate = (String, String, SystemTime);

/// The buffered updates of one store.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub updates: Vec<Update>,
    pub kyc: Vec<KycUpdate>,
    oldest: Option<Instant>,
}

impl Batch {
    /// Buffers an outcome; outcomes of records that were not sent
    /// (`invalid`, `duplicate`, `skipped`, `validated`) change nothing and
    /// are dropped. True when the batch is to be committed now.
    pub fn push(&mut self, u: Update) -> bool {
        if !matches!(
            u.outcome,
            Outcome::Accepted | Outcome::Rejected | Outcome::Failed
        ) {
            return false;
        }
        self.updates.push(u);
        self.full_after_push(self.updates.len())
    }

    /// Buffers a verification's answer; true when the batch is to be
    /// committed now.
    pub fn push_kyc(&mut self, identity_reference: &str, status: &str, at: SystemTime) -> bool {
        self.kyc
            .push((identity_reference.to_string(), status.to_string(), at));
        self.full_after_push(self.kyc.len())
    }

    fn full_after_push(&mut self, len: usize) -> bool {
        let now = Instant::now();
        let oldest = *self.oldest.get_or_insert(now);
        len >= BATCH_ROWS || now.duration_since(oldest) >= BATCH_AGE
    }

    /// True when the oldest buffered update is [`BATCH_AGE`] old.
    pub fn is_due(&self) -> bool {
        self.oldest.is_some_and(|t| t.elapsed() >= BATCH_AGE)
    }

    pub fn is_empty(&self) -> bool {
        self.updates.is_empty() && self.kyc.is_empty()
    }

    /// After a commit.
    pub fn clear(&mut self) {
        self.updates.clear();
        self.kyc.clear();
        self.oldest = None;
    }
}
