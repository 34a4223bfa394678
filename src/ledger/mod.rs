//! The ledger: a durable record, across runs, of what Banxa has accepted, so
//! that a nightly run over the full export sends only new customers, changed
//! details and earlier failures (SPEC "Nightly reconciliation: the ledger").
//!
//! Not for: deciding outcomes (`dispatch`/`input` do) or the per-run journal
//! that `--resume` reads (the results file is that). The ledger only
//! remembers, per identityReference, what was last sent and what Banxa said.
//!
//! # Storage
//!
//! Two stores behind one interface ([`Ledger`], [`LedgerView`]: enums over
//! the two, `handle.rs`), chosen by `--ledger` ([`LedgerLocation`]): a file
//! is SQLite (the default, below), a `postgres://` URL is PostgreSQL
//! (`pg.rs`: the same semantics, tables in the schema `kycshare`, the lock
//! an advisory lock on the run's session). Everything below holds for both
//! except where `pg.rs` says otherwise.
//!
//! An SQLite database (bundled, no system library) in WAL mode, created with
//! mode 0600, its schema versioned with `PRAGMA user_version` and marked as
//! ours with `PRAGMA application_id`. One row per identityReference in
//! `identities`, one row per run in `runs` (see [`SCHEMA`]; docs/nightly.md
//! shows how to query it with the `sqlite3` shell). It never holds a token,
//! an email or a mobile number: only a [`fingerprint`] of the details.
//!
//! # What is skipped
//!
//! A record is skipped iff the identity's **last** sent outcome is `accepted`
//! **and** it was sent with the same fingerprint. So new identities, changed
//! details and anything whose last send was `failed` or `rejected` is sent
//! again. After "accepted with details A, then details B failed", neither A
//! nor B is skipped: a failed send (timeout, 5xx) may or may not have reached
//! Banxa, so what Banxa holds is unknown and the export's current details are
//! sent again. The fingerprint last accepted (A) is kept as
//! `accepted_fingerprint` for the record and the report.
//!
//! # Batching and crashes
//!
//! [`Ledger::record`] buffers updates and writes them in one transaction
//! every [`BATCH_ROWS`] updates or [`BATCH_AGE`], whichever comes first, and
//! on [`Ledger::flush`], which the run's journal calls whenever it has no
//! outcome waiting (so at a nightly run's pace every outcome is committed
//! as it happens, and under full load batches grow to [`BATCH_ROWS`]), on
//! [`Ledger::end_run`] and on drop. Each batch is one SQLite transaction in
//! WAL mode with `synchronous=NORMAL`: a commit reaches the operating system
//! at once (a killed process loses no committed batch) and is made durable
//! on disk by a checkpoint at least once a second ([`Ledger::flush_if_due`]),
//! not by one fsync per row. A process killed between batches (SIGKILL)
//! leaves the database consistent: only the batch not yet committed is lost
//! (at most [`BATCH_ROWS`] outcomes, in practice the last few milliseconds),
//! and those identities are sent again by the next run (Banxa accepts a
//! second share of the same identity; it costs one request each).
//!
//! # One run at a time
//!
//! [`Ledger::open`] takes an exclusive `flock` on `FILE.lock` (holding the
//! pid and start time of the run) for the life of the [`Ledger`]; a second
//! open, from another process or the same one, fails at once with
//! [`LedgerError::Locked`]. The lock file is never deleted (deleting it would
//! let two runs lock two different files); a stale one left by a killed run
//! is free and is simply locked again. [`LedgerView`] (for `kycshare ledger`)
//! reads without taking the lock, so a ledger can be inspected mid-run.
//!
//! # Threads: `should_skip`
//!
//! The accepted set (identityReference -> fingerprint of every identity whose
//! last outcome is `accepted`) is loaded into memory once, at open, as a
//! sorted array of `(xxh3-128 of identityReference, fingerprint)` with a
//! directory on the keys' top bits: about 52 bytes per identity (52 MB for
//! 1,000,000, loaded in ~0.35 s), a lookup is one or two cache misses (~0.1
//! µs), with no lock and no SQL (an indexed SQL lookup is ~5.7 µs: over the
//! budget of a 1,000,000-row nightly run that is all skipped). [`Ledger::reader`] hands out a [`LedgerReader`] (`Send +
//! Sync + Clone`, an `Arc` of that array) for the thread that reads the
//! input, while the `Ledger` itself stays with the one thread that records
//! outcomes. The set is the ledger **as it was at open**: outcomes recorded
//! during the run do not change it, which is what a run needs (each
//! identityReference is looked up once, before it is sent; duplicates in the
//! input are never sent).

mod accepted;
mod batch;
mod handle;
mod location;
mod lock;
mod pg;
mod report;
mod schema;
mod store;

use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;

use crate::model::Outcome;

pub use accepted::{LedgerReader, Purpose};
pub use batch::{BATCH_AGE, BATCH_ROWS};
pub use handle::{Ledger, LedgerView};
pub use location::{LedgerLocation, PgTarget};
pub use lock::{in_use_by, lock_path, LockHolder};
pub use pg::{PgLedger, PgView, PG_LOCK_KEY, PG_MIGRATIONS, PG_SCHEMA_VERSION};
pub use report::{
    LedgerReport, OldestUnverified, PendingFailure, RunReport, SqliteView, REPORT_RUNS,
};
pub use schema::{APPLICATION_ID, SCHEMA, SCHEMA_VERSION};
pub use store::SqliteLedger;

/// What can go wrong with a ledger. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path} is in use by another kycshare run ({holder}); wait for it to finish, or give this run another --ledger file")]
    Locked { path: String, holder: LockHolder },
    #[error("ledger {path} does not exist: give the path a run created with `kycshare run --ledger FILE`")]
    Missing { path: String },
    #[error("{path} is not a kycshare ledger ({reason}): give the file a run created with --ledger, or a new path to start an empty ledger")]
    NotLedger { path: String, reason: String },
    #[error("ledger {path} has schema version {found}, newer than this kycshare knows ({known}): use the kycshare that wrote it, or a newer one")]
    TooNew {
        path: String,
        found: i32,
        known: i32,
    },
    #[error("ledger {path}: {what}: {source}; check the disk space and the file's permissions")]
    Sqlite {
        path: String,
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("ledger {url}: {what}: {detail}; {hint}")]
    Postgres {
        url: String,
        what: &'static str,
        detail: String,
        hint: &'static str,
        #[source]
        source: postgres::Error,
    },
    #[error("ledger {url}: {reason}; see docs/nightly.md (\"PostgreSQL\") for the URL's forms")]
    BadUrl { url: String, reason: String },
    #[error("ledger {url} holds no kycshare tables: the first `kycshare run --ledger {url}` creates them")]
    NoTables { url: String },
    #[error("ledger {path}: {what}: {reason}")]
    Io {
        path: String,
        what: &'static str,
        reason: String,
    },
}

/// A run's row in the `runs` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RunId(pub i64);

/// One send's outcome, for [`Ledger::record`].
#[derive(Debug, Clone)]
pub struct Update {
    pub identity_reference: String,
    pub fingerprint: [u8; 32],
    pub outcome: Outcome,
    pub http_status: Option<u16>,
    pub trace_id: String,
    pub attempts: u32,
    pub at: SystemTime,
}

/// What the ledger holds for one identityReference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub identity_reference: String,
    /// The details last sent.
    pub fingerprint: [u8; 32],
    /// `Accepted`, `Rejected` or `Failed`.
    pub last_outcome: Outcome,
    pub http_status: Option<u16>,
    /// The details last accepted (may differ from `fingerprint` when a later
    /// send of changed details failed), `None` if never accepted.
    pub accepted_fingerprint: Option<[u8; 32]>,
    pub accepted_at: Option<SystemTime>,
    /// The first failed or rejected send since the last acceptance.
    pub failing_since: Option<SystemTime>,
    pub trace_id: String,
    pub attempts: u32,
    pub first_sent_at: SystemTime,
    pub updated_at: SystemTime,
    pub run: Option<RunId>,
}

/// A run's counts, for [`Ledger::end_run`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunCounts {
    pub total: u64,
    pub accepted: u64,
    pub invalid: u64,
    pub duplicate: u64,
    pub rejected: u64,
    pub failed: u64,
    pub skipped: u64,
    pub validated: u64,
    pub requests_sent: u64,
}

fn sql<'a>(path: &'a str, what: &'static str) -> impl Fn(rusqlite::Error) -> LedgerError + 'a {
    move |source| LedgerError::Sqlite {
        path: path.to_string(),
        what,
        source,
    }
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl Fn(std::io::Error) -> LedgerError + 'a {
    move |e| LedgerError::Io {
        path: path.display().to_string(),
        what,
        reason: crate::model::describe_io(&e),
    }
}

fn stamp(t: SystemTime) -> String {
    crate::model::rfc3339_millis(t)
}

fn parse_stamp(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Helpers shared by the submodules' tests.
#[cfg(test)]
mod test_support {
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime};

    use super::Update;
    use crate::model::Outcome;

    pub(super) fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000 + secs)
    }

    pub(super) fn upd(id: &str, fp: [u8; 32], outcome: Outcome, at: u64) -> Update {
        Update {
            identity_reference: id.into(),
            fingerprint: fp,
            outcome,
            http_status: match outcome {
                Outcome::Accepted => Some(202),
                Outcome::Rejected => Some(422),
                _ => Some(500),
            },
            trace_id: format!("tr-{id}-{at}"),
            attempts: 1,
            at: t(at),
        }
    }

    pub(super) fn fresh() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ledger.db");
        (d, p)
    }
}

#[cfg(test)]
mod tests {
    use crate::model::fingerprint;

    #[test]
    fn fingerprint_normalises_email_and_vendor_only() {
        let a = fingerprint("Ann@Example.com", "61410001000", "sumsub");
        assert_eq!(
            a,
            fingerprint("  ann@example.COM ", "61410001000", "SumSub")
        );
        assert_ne!(a, fingerprint("ann2@example.com", "61410001000", "sumsub"));
        assert_ne!(a, fingerprint("ann@example.com", "61410001001", "sumsub"));
        assert_ne!(a, fingerprint("ann@example.com", "61410001000", "other"));
        // Field boundaries are unambiguous.
        assert_ne!(fingerprint("a", "bc", "x"), fingerprint("ab", "c", "x"));
        // Stable across builds (a changed definition would re-send every
        // identity once). The vector, computed independently:
        // sha256(b"kycshare.fingerprint.v1" + for each field: u64 BE length + bytes)
        assert_eq!(
            hex::encode(a),
            "1ba3befe8c63e81e0a44435e22729b944aa2436dd3c3b27b66d29f5f393f94cb"
        );
    }
}
