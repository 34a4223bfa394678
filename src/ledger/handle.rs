//! The one store interface the pipeline uses: [`Ledger`] (write side, for a
//! run or a verification) and [`LedgerView`] (read side), each an enum of
//! the two implementations, chosen by [`LedgerLocation`]: SQLite
//! (`store.rs`, `report.rs`; the default) or PostgreSQL (`pg.rs`).
//!
//! Not for: storage itself. An enum rather than a trait object: two
//! implementations known here, no allocation, and the callers keep their
//! plain method calls.

use std::path::Path;
use std::time::SystemTime;

use super::accepted::{LedgerReader, Purpose};
use super::location::LedgerLocation;
use super::pg::{PgLedger, PgView};
use super::report::{LedgerReport, SqliteView};
use super::store::SqliteLedger;
use super::{Entry, LedgerError, RunCounts, RunId, Update};

/// A ledger open for a run: holds the run lock until dropped.
// One or two per process: their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Ledger {
    Sqlite(SqliteLedger),
    Postgres(PgLedger),
}

macro_rules! both {
    ($self:expr, $l:ident => $e:expr) => {
        match $self {
            Ledger::Sqlite($l) => $e,
            Ledger::Postgres($l) => $e,
        }
    };
}

impl Ledger {
    /// Opens (creating if missing, mode 0600) the SQLite ledger `path`.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        SqliteLedger::open(path).map(Ledger::Sqlite)
    }

    /// [`open`](Ledger::open) with `--reshare-unverified`'s cut-off.
    pub fn open_with(
        path: &Path,
        reshare_age: Option<std::time::Duration>,
    ) -> Result<Ledger, LedgerError> {
        SqliteLedger::open_with(path, reshare_age).map(Ledger::Sqlite)
    }

    /// Opens the ledger where `--ledger` says: takes the run lock at once
    /// or fails with [`LedgerError::Locked`], creates or migrates the
    /// schema, loads the accepted set (without those `--reshare-unverified`
    /// leaves out).
    pub fn open_at(
        at: &LedgerLocation,
        reshare_age: Option<std::time::Duration>,
    ) -> Result<Ledger, LedgerError> {
        match at {
            LedgerLocation::File(p) => Ledger::open_with(p, reshare_age),
            LedgerLocation::Postgres(t) => {
                PgLedger::open(t, Purpose::Run { reshare_age }).map(Ledger::Postgres)
            }
        }
    }

    /// Opens the ledger where `--ledger` says to record verification
    /// statuses (`verify`): the same lock and schema as
    /// [`open_at`](Ledger::open_at), without loading the accepted set.
    pub fn open_for_statuses(at: &LedgerLocation) -> Result<Ledger, LedgerError> {
        match at {
            LedgerLocation::File(p) => {
                SqliteLedger::open_for(p, Purpose::Statuses).map(Ledger::Sqlite)
            }
            LedgerLocation::Postgres(t) => {
                PgLedger::open(t, Purpose::Statuses).map(Ledger::Postgres)
            }
        }
    }

    /// A handle for `should_skip` from another thread.
    pub fn reader(&self) -> Result<LedgerReader, LedgerError> {
        match self {
            Ledger::Sqlite(l) => l.reader(),
            Ledger::Postgres(l) => Ok(l.reader()),
        }
    }

    pub fn begin_run(&mut self, input: &str, started: SystemTime) -> Result<RunId, LedgerError> {
        both!(self, l => l.begin_run(input, started))
    }

    pub fn lookup(&self, identity_reference: &str) -> Result<Option<Entry>, LedgerError> {
        both!(self, l => l.lookup(identity_reference))
    }

    pub fn should_skip(
        &self,
        identity_reference: &str,
        fp: &[u8; 32],
    ) -> Result<bool, LedgerError> {
        match self {
            Ledger::Sqlite(l) => l.should_skip(identity_reference, fp),
            Ledger::Postgres(l) => Ok(l.should_skip(identity_reference, fp)),
        }
    }

    /// Buffers one outcome (see the module doc of [`crate::ledger`]);
    /// outcomes of records not sent are ignored.
    pub fn record(&mut self, u: Update) -> Result<(), LedgerError> {
        both!(self, l => l.record(u))
    }

    pub fn flush_if_due(&mut self) -> Result<(), LedgerError> {
        both!(self, l => l.flush_if_due())
    }

    pub fn pending(&self) -> usize {
        both!(self, l => l.pending())
    }

    pub fn record_kyc(
        &mut self,
        identity_reference: &str,
        status: &str,
        at: SystemTime,
    ) -> Result<(), LedgerError> {
        both!(self, l => l.record_kyc(identity_reference, status, at))
    }

    pub fn flush(&mut self) -> Result<(), LedgerError> {
        both!(self, l => l.flush())
    }

    pub fn end_run(
        &mut self,
        run: RunId,
        ended: SystemTime,
        counts: &RunCounts,
        exit_code: i32,
    ) -> Result<(), LedgerError> {
        both!(self, l => l.end_run(run, ended, counts, exit_code))
    }

    pub fn last_success(&self) -> Result<Option<SystemTime>, LedgerError> {
        both!(self, l => l.last_success())
    }

    pub fn report(&self) -> Result<LedgerReport, LedgerError> {
        both!(self, l => l.report())
    }
}

/// A ledger opened for reading, without the run lock (`kycshare ledger`,
/// `verify --ledger`'s feed): works while a run holds it.
#[allow(clippy::large_enum_variant)]
pub enum LedgerView {
    Sqlite(SqliteView),
    Postgres(PgView),
}

macro_rules! view {
    ($self:expr, $l:ident => $e:expr) => {
        match $self {
            LedgerView::Sqlite($l) => $e,
            LedgerView::Postgres($l) => $e,
        }
    };
}

impl LedgerView {
    /// Opens an existing SQLite ledger read-only.
    pub fn open(path: &Path) -> Result<LedgerView, LedgerError> {
        SqliteView::open(path).map(LedgerView::Sqlite)
    }

    pub fn open_at(at: &LedgerLocation) -> Result<LedgerView, LedgerError> {
        match at {
            LedgerLocation::File(p) => LedgerView::open(p),
            LedgerLocation::Postgres(t) => PgView::open(t).map(LedgerView::Postgres),
        }
    }

    pub fn lookup(&self, identity_reference: &str) -> Result<Option<Entry>, LedgerError> {
        view!(self, l => l.lookup(identity_reference))
    }

    pub fn report(&self) -> Result<LedgerReport, LedgerError> {
        view!(self, l => l.report())
    }

    /// Every accepted identity not `VERIFIED`, streaming, in order; stops
    /// when `f` returns false. Call from a thread of its own.
    pub fn for_each_unverified(&self, f: impl FnMut(&str) -> bool) -> Result<(), LedgerError> {
        view!(self, l => l.for_each_unverified(f))
    }

    pub fn unverified(&self) -> Result<u64, LedgerError> {
        view!(self, l => l.unverified())
    }
}
