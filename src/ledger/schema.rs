//! The schema: its SQL, its creation and versioning (`PRAGMA user_version`),
//! and the check that a file is a kycshare ledger (`PRAGMA application_id`).

use rusqlite::Connection;

use super::{sql, LedgerError};

/// `PRAGMA application_id` of a kycshare ledger ("kycs").
pub const APPLICATION_ID: i32 = 0x6b79_6373;
/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i32 = 2;

/// Version 2 (`kycshare verify`): what Banxa last said of an accepted
/// identity's KYC (`kyc.status` as it came, or `not_found`) and when; both
/// NULL until a verification answered, and reset to NULL when the
/// identity is accepted again (a new share is not verified yet).
pub const SCHEMA_V2: &str = "
ALTER TABLE identities ADD COLUMN kyc_status TEXT;
ALTER TABLE identities ADD COLUMN kyc_checked_at TEXT;
";

/// The schema, version 1 (then [`SCHEMA_V2`]). Times are RFC 3339 UTC text with milliseconds
/// (`2026-11-26T02:00:00.123Z`), which sort as text and which SQLite's date
/// functions read.
pub const SCHEMA: &str = "
CREATE TABLE identities (
    identity_reference   TEXT PRIMARY KEY,   -- the partner's customer id
    fingerprint          BLOB NOT NULL,      -- SHA-256 of the details last sent
    last_outcome         TEXT NOT NULL,      -- accepted | rejected | failed
    http_status          INTEGER,            -- of the last answer, NULL if none
    trace_id             TEXT NOT NULL,      -- of the last answer, '' if none
    attempts             INTEGER NOT NULL,   -- requests of the last send
    accepted_fingerprint BLOB,               -- details last accepted, NULL if never
    accepted_at          TEXT,               -- when they were accepted
    failing_since        TEXT,               -- first failed/rejected send since the last acceptance
    first_sent_at        TEXT NOT NULL,
    updated_at           TEXT NOT NULL,      -- the last send
    run_id               INTEGER             -- runs.id of the last send
) WITHOUT ROWID;
CREATE INDEX identities_pending ON identities (failing_since) WHERE failing_since IS NOT NULL;
CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    started_at    TEXT NOT NULL,
    ended_at      TEXT,                      -- NULL: still running, or killed
    input         TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    total         INTEGER, accepted INTEGER, invalid INTEGER, duplicate INTEGER,
    rejected      INTEGER, failed INTEGER, skipped INTEGER, validated INTEGER,
    requests_sent INTEGER,
    exit_code     INTEGER
);
";

/// Checks the file is ours and brings its schema up to date.
pub(super) fn migrate(conn: &Connection, path: &str) -> Result<(), LedgerError> {
    let version: i32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| not_ledger(path, e))?;
    let app: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(|e| not_ledger(path, e))?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(|e| not_ledger(path, e))?;
    if tables > 0 && app != APPLICATION_ID {
        return Err(LedgerError::NotLedger {
            path: path.into(),
            reason: "an SQLite database of something else".into(),
        });
    }
    if version > SCHEMA_VERSION {
        return Err(LedgerError::TooNew {
            path: path.into(),
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {SCHEMA} PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 1; COMMIT;"
        ))
        .map_err(sql(path, "cannot create the tables"))?;
    }
    if version < 2 {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {SCHEMA_V2} PRAGMA user_version = 2; COMMIT;"
        ))
        .map_err(sql(path, "cannot add the verification columns"))?;
    }
    Ok(())
}

pub(super) fn not_ledger(path: &str, e: rusqlite::Error) -> LedgerError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => LedgerError::NotLedger {
            path: path.into(),
            reason: "not an SQLite database".into(),
        },
        _ => LedgerError::Sqlite {
            path: path.into(),
            what: "cannot read",
            source: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::test_support::fresh;
    use crate::ledger::{Ledger, LedgerView};

    #[test]
    fn a_version_1_ledger_is_read_as_it_is_and_upgraded_by_a_run() {
        let (_d, p) = fresh();
        {
            let c = Connection::open(&p).unwrap();
            c.execute_batch(&format!(
                "{SCHEMA} PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 1;"
            ))
            .unwrap();
            c.execute(
                "INSERT INTO identities (identity_reference, fingerprint, last_outcome, trace_id, attempts,
                    accepted_fingerprint, accepted_at, first_sent_at, updated_at)
                 VALUES ('c-1', x'00', 'accepted', '', 1, x'00', '2026-11-26T02:00:00.000Z',
                    '2026-11-26T02:00:00.000Z', '2026-11-26T02:00:00.000Z')",
                [],
            )
            .unwrap();
        }
        // Read-only, a version-1 ledger reports without the status columns.
        let r = LedgerView::open(&p).unwrap().report().unwrap();
        assert_eq!((r.schema_version, r.accepted), (1, 1));
        assert!(r.kyc.is_empty() && r.oldest_unverified.is_none());
        // A run (or verify) upgrades it in place; the identity is kept, not
        // checked yet.
        drop(Ledger::open(&p).unwrap());
        let r = LedgerView::open(&p).unwrap().report().unwrap();
        assert_eq!((r.schema_version, r.accepted), (2, 1));
        assert_eq!(r.kyc.get("not checked"), Some(&1));
        assert_eq!(r.oldest_unverified.unwrap().identity_reference, "c-1");
    }

    #[test]
    fn not_a_ledger_and_missing() {
        let (d, p) = fresh();
        assert!(matches!(
            LedgerView::open(&p),
            Err(LedgerError::Missing { .. })
        ));
        let text = d.path().join("notes.txt");
        std::fs::write(&text, "hello, this is not a database at all, not even close....................................................").unwrap();
        let e = Ledger::open(&text).unwrap_err();
        assert!(matches!(e, LedgerError::NotLedger { .. }), "{e}");
        assert!(e.to_string().contains("notes.txt"), "{e}");
        let other = d.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        assert!(matches!(
            Ledger::open(&other),
            Err(LedgerError::NotLedger { .. })
        ));
        assert!(matches!(
            LedgerView::open(&other),
            Err(LedgerError::NotLedger { .. })
        ));
        let newer = d.path().join("newer.db");
        drop(Ledger::open(&newer).unwrap());
        Connection::open(&newer)
            .unwrap()
            .pragma_update(None, "user_version", 9)
            .unwrap();
        assert!(matches!(
            Ledger::open(&newer),
            Err(LedgerError::TooNew { found: 9, .. })
        ));
    }
}
