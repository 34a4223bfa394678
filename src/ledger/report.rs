//! Reading a ledger: [`LedgerView`] (read-only, without the run lock), the
//! lookup of one identity, and the [`LedgerReport`] that `kycshare ledger`
//! prints.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::Serialize;

use super::lock::{in_use_by, LockHolder};
use super::schema::{not_ledger, APPLICATION_ID, SCHEMA_VERSION};
use super::{parse_stamp, sql, Entry, LedgerError, RunCounts, RunId};
use crate::model::Outcome;

/// Runs listed by [`Ledger::report`](super::Ledger::report).
pub const REPORT_RUNS: usize = 10;

/// One run, as [`Ledger::report`](super::Ledger::report) lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    pub id: i64,
    pub started_at: String,
    /// `None`: the run is still going, or was killed.
    pub ended_at: Option<String>,
    pub input: String,
    pub pid: u32,
    /// `None` until the run ends.
    pub counts: Option<RunCounts>,
    pub exit_code: Option<i32>,
}

/// The identity that has been failing the longest.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingFailure {
    pub identity_reference: String,
    pub last_outcome: Outcome,
    /// The first failed or rejected send since it was last accepted.
    pub since: String,
    pub last_attempt: String,
    pub http_status: Option<u16>,
    pub trace_id: String,
}

/// The accepted identity that has waited the longest for `VERIFIED`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OldestUnverified {
    pub identity_reference: String,
    pub accepted_at: String,
    /// `None`: never verified since it was accepted.
    pub kyc_status: Option<String>,
    pub kyc_checked_at: Option<String>,
}

/// What `kycshare ledger` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerReport {
    pub path: String,
    pub schema_version: i32,
    pub identities: u64,
    /// Identities by their last outcome.
    pub accepted: u64,
    pub rejected: u64,
    pub failed: u64,
    /// Of the rejected and failed, those accepted earlier with other details.
    pub changed_not_yet_accepted: u64,
    pub oldest_pending_failure: Option<PendingFailure>,
    /// Accepted identities by what their last verification found
    /// (`kyc.status` as it came, `not_found`), `not checked` for those
    /// never verified since they were accepted.
    pub kyc: std::collections::BTreeMap<String, u64>,
    pub oldest_unverified: Option<OldestUnverified>,
    /// End of the last run that exited 0.
    pub last_success: Option<String>,
    /// The last runs, newest first.
    pub runs: Vec<RunReport>,
    /// A run holding the ledger now, if the lock file says so and that
    /// process is alive.
    pub in_use_by: Option<LockHolder>,
}

/// A ledger opened read-only, without the run lock: for `kycshare ledger`,
/// also while a run holds it.
pub struct SqliteView {
    path: PathBuf,
    conn: Connection,
}

impl SqliteView {
    /// Opens an existing ledger read-only; a missing file is
    /// [`LedgerError::Missing`].
    pub fn open(path: &Path) -> Result<SqliteView, LedgerError> {
        let p = path.display().to_string();
        if !path.exists() {
            return Err(LedgerError::Missing { path: p });
        }
        if path.is_dir() {
            return Err(LedgerError::NotLedger {
                path: p,
                reason: "it is a directory".into(),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql(&p, "cannot open"))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(sql(&p, "cannot configure"))?;
        let version: i32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| not_ledger(&p, e))?;
        let app: i32 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(|e| not_ledger(&p, e))?;
        if app != APPLICATION_ID || version < 1 {
            return Err(LedgerError::NotLedger {
                path: p,
                reason: if version < 1 && app == 0 {
                    "no kycshare tables in it".into()
                } else {
                    "an SQLite database of something else".into()
                },
            });
        }
        if version > SCHEMA_VERSION {
            return Err(LedgerError::TooNew {
                path: p,
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        Ok(SqliteView {
            path: path.to_path_buf(),
            conn,
        })
    }

    pub fn lookup(&self, identity_reference: &str) -> Result<Option<Entry>, LedgerError> {
        lookup(
            &self.conn,
            &self.path.display().to_string(),
            identity_reference,
        )
    }

    pub fn report(&self) -> Result<LedgerReport, LedgerError> {
        report(&self.conn, &self.path)
    }

    /// Calls `f` with every accepted identity whose last known status is
    /// not `VERIFIED` (never checked included), in identityReference order,
    /// streaming (one row in memory at a time); stops early when `f`
    /// returns false. What `verify --ledger` checks.
    pub fn for_each_unverified(&self, mut f: impl FnMut(&str) -> bool) -> Result<(), LedgerError> {
        let p = self.path.display().to_string();
        let mut stmt = self
            .conn
            .prepare(
                "SELECT identity_reference FROM identities
                 WHERE last_outcome = 'accepted' AND (kyc_status IS NULL OR kyc_status <> 'VERIFIED')
                 ORDER BY identity_reference",
            )
            .map_err(sql(&p, "cannot read the unverified identities"))?;
        let mut rows = stmt
            .query([])
            .map_err(sql(&p, "cannot read the unverified identities"))?;
        while let Some(row) = rows
            .next()
            .map_err(sql(&p, "cannot read the unverified identities"))?
        {
            let id = row
                .get_ref(0)
                .and_then(|v| v.as_str().map_err(Into::into))
                .map_err(sql(&p, "cannot read the unverified identities"))?;
            if !f(id) {
                break;
            }
        }
        Ok(())
    }

    /// Accepted identities not `VERIFIED` (never checked included).
    pub fn unverified(&self) -> Result<u64, LedgerError> {
        let p = self.path.display().to_string();
        self.conn
            .query_row(
                "SELECT count(*) FROM identities
                 WHERE last_outcome = 'accepted' AND (kyc_status IS NULL OR kyc_status <> 'VERIFIED')",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(sql(&p, "cannot count the unverified identities"))
    }
}

fn fp_of(v: Option<Vec<u8>>) -> Option<[u8; 32]> {
    v.and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
}

pub(super) fn lookup(
    conn: &Connection,
    p: &str,
    identity_reference: &str,
) -> Result<Option<Entry>, LedgerError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT fingerprint, last_outcome, http_status, accepted_fingerprint, accepted_at,
                    failing_since, trace_id, attempts, first_sent_at, updated_at, run_id
             FROM identities WHERE identity_reference = ?1",
        )
        .map_err(sql(p, "cannot read"))?;
    stmt.query_row([identity_reference], |r| {
        let outcome: String = r.get(1)?;
        Ok(Entry {
            identity_reference: identity_reference.to_string(),
            fingerprint: fp_of(r.get(0)?).unwrap_or_default(),
            last_outcome: Outcome::parse(&outcome).unwrap_or(Outcome::Failed),
            http_status: r.get(2)?,
            accepted_fingerprint: fp_of(r.get(3)?),
            accepted_at: r.get::<_, Option<String>>(4)?.map(|s| parse_stamp(&s)),
            failing_since: r.get::<_, Option<String>>(5)?.map(|s| parse_stamp(&s)),
            trace_id: r.get(6)?,
            attempts: r.get(7)?,
            first_sent_at: parse_stamp(&r.get::<_, String>(8)?),
            updated_at: parse_stamp(&r.get::<_, String>(9)?),
            run: r.get::<_, Option<i64>>(10)?.map(RunId),
        })
    })
    .optional()
    .map_err(sql(p, "cannot read"))
}

pub(super) fn last_success(conn: &Connection, p: &str) -> Result<Option<String>, LedgerError> {
    conn.query_row(
        "SELECT max(ended_at) FROM runs WHERE exit_code = 0",
        [],
        |r| r.get(0),
    )
    .map_err(sql(p, "cannot read the runs"))
}

pub(super) fn report(conn: &Connection, path: &Path) -> Result<LedgerReport, LedgerError> {
    let p = path.display().to_string();
    let p = p.as_str();
    let schema_version: i32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql(p, "cannot read"))?;
    // One consistent snapshot of the counts, the failure and the runs.
    conn.execute_batch("BEGIN").map_err(sql(p, "cannot read"))?;
    let out = (|| {
        let (identities, accepted, rejected, failed, changed): (i64, i64, i64, i64, i64) = conn
            .query_row(
                "SELECT count(*),
                        coalesce(sum(last_outcome = 'accepted'), 0),
                        coalesce(sum(last_outcome = 'rejected'), 0),
                        coalesce(sum(last_outcome = 'failed'), 0),
                        coalesce(sum(last_outcome <> 'accepted' AND accepted_fingerprint IS NOT NULL), 0)
                 FROM identities",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .map_err(sql(p, "cannot read the identities"))?;
        let oldest_pending_failure = conn
            .query_row(
                "SELECT identity_reference, last_outcome, failing_since, updated_at, http_status, trace_id
                 FROM identities WHERE failing_since IS NOT NULL
                 ORDER BY failing_since, identity_reference LIMIT 1",
                [],
                |r| {
                    let o: String = r.get(1)?;
                    Ok(PendingFailure {
                        identity_reference: r.get(0)?,
                        last_outcome: Outcome::parse(&o).unwrap_or(Outcome::Failed),
                        since: r.get(2)?,
                        last_attempt: r.get(3)?,
                        http_status: r.get(4)?,
                        trace_id: r.get(5)?,
                    })
                },
            )
            .optional()
            .map_err(sql(p, "cannot read the identities"))?;
        let mut kyc = std::collections::BTreeMap::new();
        let mut oldest_unverified = None;
        if schema_version >= 2 {
            let mut stmt = conn
                .prepare(
                    "SELECT coalesce(kyc_status, 'not checked'), count(*) FROM identities
                     WHERE last_outcome = 'accepted' GROUP BY 1 ORDER BY 2 DESC LIMIT 33",
                )
                .map_err(sql(p, "cannot read the verifications"))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(sql(p, "cannot read the verifications"))?;
            kyc = rows.into_iter().map(|(k, n)| (k, n as u64)).collect();
            oldest_unverified = conn
                .query_row(
                    "SELECT identity_reference, accepted_at, kyc_status, kyc_checked_at FROM identities
                     WHERE last_outcome = 'accepted' AND (kyc_status IS NULL OR kyc_status <> 'VERIFIED')
                     ORDER BY accepted_at, identity_reference LIMIT 1",
                    [],
                    |r| {
                        Ok(OldestUnverified {
                            identity_reference: r.get(0)?,
                            accepted_at: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                            kyc_status: r.get(2)?,
                            kyc_checked_at: r.get(3)?,
                        })
                    },
                )
                .optional()
                .map_err(sql(p, "cannot read the verifications"))?;
        }
        let mut stmt = conn
            .prepare(
                "SELECT id, started_at, ended_at, input, pid, total, accepted, invalid, duplicate,
                        rejected, failed, skipped, validated, requests_sent, exit_code
                 FROM runs ORDER BY id DESC LIMIT ?1",
            )
            .map_err(sql(p, "cannot read the runs"))?;
        let runs = stmt
            .query_map([REPORT_RUNS as i64], |r| {
                let ended_at: Option<String> = r.get(2)?;
                let n = |i: usize| -> rusqlite::Result<u64> {
                    Ok(r.get::<_, Option<i64>>(i)?.unwrap_or(0) as u64)
                };
                let counts = match ended_at {
                    Some(_) => Some(RunCounts {
                        total: n(5)?,
                        accepted: n(6)?,
                        invalid: n(7)?,
                        duplicate: n(8)?,
                        rejected: n(9)?,
                        failed: n(10)?,
                        skipped: n(11)?,
                        validated: n(12)?,
                        requests_sent: n(13)?,
                    }),
                    None => None,
                };
                Ok(RunReport {
                    id: r.get(0)?,
                    started_at: r.get(1)?,
                    ended_at,
                    input: r.get(3)?,
                    pid: r.get(4)?,
                    counts,
                    exit_code: r.get(14)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(sql(p, "cannot read the runs"))?;
        Ok(LedgerReport {
            path: p.to_string(),
            schema_version,
            identities: identities as u64,
            accepted: accepted as u64,
            rejected: rejected as u64,
            failed: failed as u64,
            changed_not_yet_accepted: changed as u64,
            oldest_pending_failure,
            kyc,
            oldest_unverified,
            last_success: last_success(conn, p)?,
            runs,
            in_use_by: in_use_by(path),
        })
    })();
    let _ = conn.execute_batch("COMMIT");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::test_support::{fresh, t, upd};
    use crate::ledger::{stamp, Ledger};
    use crate::model::fingerprint;

    #[test]
    fn report_counts_runs_and_oldest_failure() {
        let (_d, p) = fresh();
        let a = fingerprint("a@x.io", "61410001000", "sumsub");
        let b = fingerprint("b@x.io", "61410001000", "sumsub");
        let mut l = Ledger::open(&p).unwrap();
        let r1 = l.begin_run("night1.csv", t(0)).unwrap();
        l.record(upd("c-1", a, Outcome::Accepted, 1)).unwrap();
        l.record(upd("c-2", a, Outcome::Accepted, 1)).unwrap();
        l.record(upd("c-3", a, Outcome::Failed, 2)).unwrap();
        let counts = RunCounts {
            total: 4,
            accepted: 2,
            failed: 1,
            invalid: 1,
            requests_sent: 7,
            ..RunCounts::default()
        };
        l.end_run(r1, t(5), &counts, 1).unwrap();
        let r2 = l.begin_run("night2.csv", t(100)).unwrap();
        l.record(upd("c-2", b, Outcome::Rejected, 101)).unwrap();
        l.record(upd("c-3", a, Outcome::Failed, 102)).unwrap();
        l.record(upd("c-4", a, Outcome::Accepted, 103)).unwrap();
        l.end_run(r2, t(110), &RunCounts::default(), 0).unwrap();
        let r3 = l.begin_run("night3.csv", t(200)).unwrap();
        let rep = l.report().unwrap();
        assert_eq!(rep.identities, 4);
        assert_eq!((rep.accepted, rep.rejected, rep.failed), (2, 1, 1));
        assert_eq!(rep.changed_not_yet_accepted, 1);
        let f = rep.oldest_pending_failure.clone().unwrap();
        assert_eq!(f.identity_reference, "c-3");
        assert_eq!(f.last_outcome, Outcome::Failed);
        assert_eq!(f.since, stamp(t(2)));
        assert_eq!(f.last_attempt, stamp(t(102)));
        assert_eq!(rep.last_success, Some(stamp(t(110))));
        assert_eq!(l.last_success().unwrap(), Some(t(110)));
        assert_eq!(rep.runs.len(), 3);
        assert_eq!(rep.runs[0].id, r3.0);
        assert_eq!(rep.runs[0].ended_at, None);
        assert_eq!(rep.runs[0].counts, None);
        assert_eq!(rep.runs[2].input, "night1.csv");
        assert_eq!(rep.runs[2].counts, Some(counts));
        assert_eq!(rep.runs[2].exit_code, Some(1));
        assert_eq!(rep.runs[2].started_at, stamp(t(0)));
        assert_eq!(rep.runs[2].ended_at, Some(stamp(t(5))));
        assert_eq!(rep.in_use_by.unwrap().pid, Some(std::process::id()));
        // The view sees the same.
        drop(l);
        let mut rep2 = SqliteView::open(&p).unwrap().report().unwrap();
        assert_eq!(rep2.in_use_by.take(), None);
        assert_eq!(rep2.identities, 4);
        assert_eq!(rep2.runs.len(), 3);
    }
}
