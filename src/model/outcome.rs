//! A record's outcome and what the output stage receives for it.

use std::time::SystemTime;

use serde::Serialize;

/// The final outcome of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Accepted,
    Invalid,
    Duplicate,
    Rejected,
    Failed,
    Skipped,
    Validated,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Accepted,
        Outcome::Invalid,
        Outcome::Duplicate,
        Outcome::Rejected,
        Outcome::Failed,
        Outcome::Skipped,
        Outcome::Validated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Invalid => "invalid",
            Outcome::Duplicate => "duplicate",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Validated => "validated",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Outcomes that make the exit code 0.
    pub fn is_success(self) -> bool {
        matches!(
            self,
            Outcome::Accepted | Outcome::Skipped | Outcome::Validated
        )
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record's final outcome, for the output stage.
#[derive(Debug, Clone)]
pub struct Final {
    pub record: u64,
    pub line: u64,
    pub identity_reference: String,
    pub outcome: Outcome,
    pub http_status: Option<u16>,
    pub attempts: u32,
    pub trace_id: String,
    pub message: String,
    pub errors: String,
    pub latency_ms: Option<u64>,
    pub completed_at: SystemTime,
    /// The input record, kept only for `failed` (the retry file).
    pub raw: Option<csv::ByteRecord>,
    /// The row's ledger fingerprint (sent rows, with `--ledger`).
    pub fingerprint: Option<[u8; 32]>,
    /// Why an `invalid` record is invalid, typed (the summary counts these).
    pub problems: Vec<super::Problem>,
    /// A verification's answer: the identity's `kyc.status` as Banxa sent
    /// it (`kycshare verify`; `None` for shares, and when the answer had none).
    pub kyc_status: Option<String>,
}

/// Messages the output stage's channel holds. Nearly every message is a
/// block of outcomes (at most `dispatch::outbox::LIMIT`, 1,024, from the
/// dispatcher; a batch of the feed's skipped rows), so the bound is in
/// blocks: at most about 5,000 answered outcomes wait for the journal
/// (with the outbox's own), which bounds memory and what a kill can lose
/// of answers not yet written (their rows are sent again by `--resume`).
pub const OUT_DEPTH: usize = 4;

/// Messages to the output stage.
#[derive(Debug)]
// `Final` is nearly every message: boxing it would cost an allocation a row.
#[allow(clippy::large_enum_variant)]
pub enum OutMsg {
    Final(Final),
    /// Outcomes of records that needed no request, in a batch.
    Finals(Vec<Final>),
    /// A record that failed in an earlier run (`--resume`): retry file only.
    EarlierFailed(csv::ByteRecord),
    /// Once a second: sync the results file if rows were written.
    Tick,
}
