//! The write side: [`Ledger`], open for a run, holding the run lock, its
//! outcomes buffered and committed in batches (see "Batching and crashes" in
//! the module doc of [`crate::ledger`]).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{params, Connection, OpenFlags};

use super::accepted::{AcceptedSet, LedgerReader, Purpose};
use super::lock::take_lock;
use super::report::{last_success, lookup, report, LedgerReport};
use super::schema::{migrate, not_ledger};
use super::{io_err, parse_stamp, sql, stamp, Entry, LedgerError, RunCounts, RunId, Update};

use super::batch::Batch;
use super::batch::BATCH_AGE;

/// A ledger open for a run: holds the run lock until dropped.
pub struct SqliteLedger {
    path: PathBuf,
    conn: Connection,
    _lock: File,
    set: Arc<AcceptedSet>,
    run: Option<RunId>,
    batch: Batch,
    committed_since_checkpoint: bool,
    last_checkpoint: Instant,
}

impl std::fmt::Debug for SqliteLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLedger")
            .field("path", &self.path)
            .field("run", &self.run)
            .field("pending", &self.batch.updates.len())
            .finish()
    }
}

const UPSERT: &str = "
INSERT INTO identities (identity_reference, fingerprint, last_outcome, http_status, trace_id, attempts,
                        accepted_fingerprint, accepted_at, failing_since, first_sent_at, updated_at, run_id)
VALUES (?1, ?2, ?3, ?4, ?5, ?6,
        CASE WHEN ?3 = 'accepted' THEN ?2 END,
        CASE WHEN ?3 = 'accepted' THEN ?7 END,
        CASE WHEN ?3 = 'accepted' THEN NULL ELSE ?7 END,
        ?7, ?7, ?8)
ON CONFLICT (identity_reference) DO UPDATE SET
    fingerprint = excluded.fingerprint,
    last_outcome = excluded.last_outcome,
    http_status = excluded.http_status,
    trace_id = excluded.trace_id,
    attempts = excluded.attempts,
    accepted_fingerprint = CASE WHEN excluded.last_outcome = 'accepted'
                                THEN excluded.fingerprint ELSE accepted_fingerprint END,
    accepted_at = CASE WHEN excluded.last_outcome = 'accepted'
                       THEN excluded.updated_at ELSE accepted_at END,
    failing_since = CASE WHEN excluded.last_outcome = 'accepted'
                         THEN NULL ELSE coalesce(failing_since, excluded.updated_at) END,
    updated_at = excluded.updated_at,
    run_id = excluded.run_id,
    kyc_status = CASE WHEN excluded.last_outcome = 'accepted' THEN NULL ELSE kyc_status END,
    kyc_checked_at = CASE WHEN excluded.last_outcome = 'accepted' THEN NULL ELSE kyc_checked_at END";

/// A verification's answer; only for an identity whose last send was
/// accepted (a check that raced a newer send changes nothing).
const KYC_UPDATE: &str = "
UPDATE identities SET kyc_status = ?2, kyc_checked_at = ?3
WHERE identity_reference = ?1 AND last_outcome = 'accepted'";

impl SqliteLedger {
    /// Opens (creating if missing, mode 0600) the ledger for a run: takes the
    /// run lock at once or fails with [`LedgerError::Locked`], migrates the
    /// schema and loads the accepted set into memory.
    pub fn open(path: &Path) -> Result<SqliteLedger, LedgerError> {
        SqliteLedger::open_with(path, None)
    }

    /// [`open`](Ledger::open), leaving out of the accepted set the
    /// identities accepted at or before `reshare_before` whose last
    /// verification found a status other than `VERIFIED` (`run
    /// --reshare-unverified AGE`): they are sent again.
    pub fn open_with(
        path: &Path,
        reshare_age: Option<Duration>,
    ) -> Result<SqliteLedger, LedgerError> {
        SqliteLedger::open_for(path, Purpose::Run { reshare_age })
    }

    /// Opens the ledger for `purpose`: a run's loads the accepted set,
    /// `verify`'s loads nothing.
    pub fn open_for(path: &Path, purpose: Purpose) -> Result<SqliteLedger, LedgerError> {
        let p = path.display().to_string();
        if path.is_dir() {
            return Err(LedgerError::NotLedger {
                path: p,
                reason: "it is a directory".into(),
            });
        }
        let lock = take_lock(path)?;
        // Create it ourselves for the mode: SQLite gives its -wal and -shm
        // files the database file's mode.
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io_err(path, "cannot create"))?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql(&p, "cannot open"))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(sql(&p, "cannot configure"))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
            .map_err(|e| not_ledger(&p, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(ledger = %p, mode, "the ledger could not be put in WAL mode");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql(&p, "cannot configure"))?;
        migrate(&conn, &p)?;
        let set = Arc::new(match purpose {
            Purpose::Run { reshare_age } => AcceptedSet::load(&conn, &p, reshare_age)?,
            Purpose::Statuses => AcceptedSet::default(),
        });
        Ok(SqliteLedger {
            path: path.to_path_buf(),
            conn,
            _lock: lock,
            set,
            run: None,
            batch: Batch::default(),
            committed_since_checkpoint: false,
            last_checkpoint: Instant::now(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn p(&self) -> String {
        self.path.display().to_string()
    }

    /// A handle for `should_skip` from another thread (see the module doc).
    pub fn reader(&self) -> Result<LedgerReader, LedgerError> {
        Ok(LedgerReader {
            set: self.set.clone(),
        })
    }

    /// Records the start of a run; later [`record`](Ledger::record)s are
    /// tied to it.
    pub fn begin_run(&mut self, input: &str, started: SystemTime) -> Result<RunId, LedgerError> {
        let p = self.p();
        self.conn
            .execute(
                "INSERT INTO runs (started_at, input, pid) VALUES (?1, ?2, ?3)",
                params![stamp(started), input, std::process::id()],
            )
            .map_err(sql(&p, "cannot record the run"))?;
        let id = RunId(self.conn.last_insert_rowid());
        self.run = Some(id);
        Ok(id)
    }

    /// What the ledger holds (committed) for one identity.
    pub fn lookup(&self, identity_reference: &str) -> Result<Option<Entry>, LedgerError> {
        lookup(&self.conn, &self.p(), identity_reference)
    }

    /// True iff the identity's last outcome (as of open) is `accepted`, sent
    /// with this fingerprint. Answers from memory; see [`Ledger::reader`].
    pub fn should_skip(
        &self,
        identity_reference: &str,
        fp: &[u8; 32],
    ) -> Result<bool, LedgerError> {
        Ok(self.set.contains(identity_reference, fp))
    }

    /// Buffers one outcome; commits the batch when it holds [`BATCH_ROWS`](super::BATCH_ROWS)
    /// updates or its oldest is [`BATCH_AGE`] old. Outcomes of records that
    /// were not sent (`invalid`, `duplicate`, `skipped`, `validated`) change
    /// nothing and are ignored, so the caller may pass every outcome.
    pub fn record(&mut self, u: Update) -> Result<(), LedgerError> {
        if self.batch.push(u) {
            self.flush()?;
        }
        Ok(())
    }

    /// Commits the batch if its oldest update is [`BATCH_AGE`] old: for a
    /// caller that is idle between outcomes.
    pub fn flush_if_due(&mut self) -> Result<(), LedgerError> {
        if self.batch.is_due() {
            self.flush()?;
        }
        self.checkpoint_if_due()
    }

    /// Makes committed batches durable on disk (a WAL checkpoint syncs the
    /// log) if the last checkpoint is [`BATCH_AGE`] old and something was
    /// committed since.
    fn checkpoint_if_due(&mut self) -> Result<(), LedgerError> {
        if self.committed_since_checkpoint && self.last_checkpoint.elapsed() >= BATCH_AGE {
            let p = self.p();
            self.conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                .map_err(sql(&p, "cannot checkpoint"))?;
            self.committed_since_checkpoint = false;
            self.last_checkpoint = Instant::now();
        }
        Ok(())
    }

    /// Updates buffered and not yet committed.
    pub fn pending(&self) -> usize {
        self.batch.updates.len()
    }

    /// Buffers what a verification found for an identity (`kyc.status`
    /// as it came, or `not_found`), committed like [`record`](Ledger::record).
    pub fn record_kyc(
        &mut self,
        identity_reference: &str,
        status: &str,
        at: SystemTime,
    ) -> Result<(), LedgerError> {
        if self.batch.push_kyc(identity_reference, status, at) {
            self.flush()?;
        }
        Ok(())
    }

    /// Commits the buffered updates now, in one transaction.
    pub fn flush(&mut self) -> Result<(), LedgerError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let p = self.p();
        let run = self.run.map(|r| r.0);
        let tx = self.conn.transaction().map_err(sql(&p, "cannot write"))?;
        {
            let mut stmt = tx.prepare_cached(UPSERT).map_err(sql(&p, "cannot write"))?;
            for u in &self.batch.updates {
                stmt.execute(params![
                    u.identity_reference,
                    &u.fingerprint[..],
                    u.outcome.as_str(),
                    u.http_status,
                    u.trace_id,
                    u.attempts,
                    stamp(u.at),
                    run,
                ])
                .map_err(sql(&p, "cannot write"))?;
            }
            let mut kyc = tx
                .prepare_cached(KYC_UPDATE)
                .map_err(sql(&p, "cannot write"))?;
            for (id, status, at) in &self.batch.kyc {
                kyc.execute(params![id, status, stamp(*at)])
                    .map_err(sql(&p, "cannot write"))?;
            }
        }
        tx.commit().map_err(sql(&p, "cannot commit"))?;
        self.batch.clear();
        self.committed_since_checkpoint = true;
        Ok(())
    }

    /// Flushes, and records the end of the run with its counts and exit code.
    pub fn end_run(
        &mut self,
        run: RunId,
        ended: SystemTime,
        counts: &RunCounts,
        exit_code: i32,
    ) -> Result<(), LedgerError> {
        self.flush()?;
        let p = self.p();
        let c = counts;
        self.conn
            .execute(
                "UPDATE runs SET ended_at = ?2, total = ?3, accepted = ?4, invalid = ?5, duplicate = ?6,
                    rejected = ?7, failed = ?8, skipped = ?9, validated = ?10, requests_sent = ?11,
                    exit_code = ?12 WHERE id = ?1",
                params![
                    run.0,
                    stamp(ended),
                    c.total as i64,
                    c.accepted as i64,
                    c.invalid as i64,
                    c.duplicate as i64,
                    c.rejected as i64,
                    c.failed as i64,
                    c.skipped as i64,
                    c.validated as i64,
                    c.requests_sent as i64,
                    exit_code
                ],
            )
            .map_err(sql(&p, "cannot record the end of the run"))?;
        Ok(())
    }

    /// The end of the last run that exited 0 (for the metrics file).
    pub fn last_success(&self) -> Result<Option<SystemTime>, LedgerError> {
        last_success(&self.conn, &self.p()).map(|o| o.map(|s| parse_stamp(&s)))
    }

    /// Counts, last runs, oldest pending failure (committed data).
    pub fn report(&self) -> Result<LedgerReport, LedgerError> {
        report(&self.conn, &self.path)
    }
}

impl Drop for SqliteLedger {
    /// Commits what is buffered (a panic or an early return still keeps the
    /// outcomes that happened). A SIGKILL skips this: that batch is lost.
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!("{e}");
        }
        // Not held by anyone now: say so for `kycshare ledger`.
        let _ = self._lock.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::test_support::{fresh, t, upd};
    use crate::ledger::LedgerView;
    use crate::ledger::BATCH_ROWS;
    use crate::model::fingerprint;
    use crate::model::Outcome;

    #[test]
    fn opened_for_statuses_it_loads_nothing_takes_the_lock_and_records() {
        let (_d, p) = fresh();
        let a = fingerprint("a@x.io", "61410001000", "sumsub");
        {
            let mut l = SqliteLedger::open(&p).unwrap();
            let run = l.begin_run("export.csv", t(0)).unwrap();
            l.record(upd("acc", a, Outcome::Accepted, 1)).unwrap();
            l.end_run(run, t(2), &RunCounts::default(), 1).unwrap();
        }
        {
            let mut l = SqliteLedger::open_for(&p, Purpose::Statuses).unwrap();
            assert_eq!(l.reader().unwrap().accepted(), 0, "no accepted set loaded");
            assert!(
                matches!(SqliteLedger::open(&p), Err(LedgerError::Locked { .. })),
                "the run lock is held as for a run"
            );
            l.record_kyc("acc", "VERIFIED", t(5)).unwrap();
            l.flush().unwrap();
        }
        let l = SqliteLedger::open(&p).unwrap();
        assert_eq!(l.reader().unwrap().accepted(), 1);
        assert!(l.should_skip("acc", &a).unwrap());
        drop(l);
        let report = LedgerView::open(&p).unwrap().report().unwrap();
        assert_eq!(report.kyc.get("VERIFIED"), Some(&1), "{:?}", report.kyc);
    }

    #[test]
    fn skip_rules_across_runs() {
        let (_d, p) = fresh();
        let a = fingerprint("a@x.io", "61410001000", "sumsub");
        let b = fingerprint("b@x.io", "61410001000", "sumsub");
        {
            let mut l = SqliteLedger::open(&p).unwrap();
            let run = l.begin_run("export.csv", t(0)).unwrap();
            l.record(upd("acc", a, Outcome::Accepted, 1)).unwrap();
            l.record(upd("fail", a, Outcome::Failed, 1)).unwrap();
            l.record(upd("rej", a, Outcome::Rejected, 1)).unwrap();
            l.record(upd("changed", a, Outcome::Accepted, 1)).unwrap();
            l.record(upd("flip", a, Outcome::Accepted, 1)).unwrap();
            // Not sent: ignored.
            l.record(upd("inv", a, Outcome::Invalid, 1)).unwrap();
            l.record(upd("skp", a, Outcome::Skipped, 1)).unwrap();
            assert_eq!(l.pending(), 5);
            l.end_run(run, t(2), &RunCounts::default(), 1).unwrap();
        }
        {
            let mut l = SqliteLedger::open(&p).unwrap();
            let r = l.reader().unwrap();
            assert!(r.should_skip("acc", &a));
            assert!(!r.should_skip("acc", &b), "changed details are sent");
            assert!(!r.should_skip("fail", &a), "failed is sent again");
            assert!(!r.should_skip("rej", &a), "rejected is sent again");
            assert!(!r.should_skip("new", &a), "new is sent");
            assert!(!r.should_skip("inv", &a));
            assert!(l.should_skip("acc", &a).unwrap());
            assert_eq!(r.accepted(), 3);
            assert!(l.lookup("inv").unwrap().is_none());
            l.begin_run("export.csv", t(10)).unwrap();
            // accepted A, then B sent and failed.
            l.record(upd("changed", b, Outcome::Failed, 11)).unwrap();
            // accepted A, then B sent and rejected, then A again accepted.
            l.record(upd("flip", b, Outcome::Rejected, 11)).unwrap();
            l.record(upd("fail", a, Outcome::Failed, 11)).unwrap();
            l.record(upd("rej", a, Outcome::Accepted, 11)).unwrap();
            // The set is the ledger as it was at open.
            assert!(!r.should_skip("rej", &a));
            l.flush().unwrap();
            let e = l.lookup("changed").unwrap().unwrap();
            assert_eq!(e.fingerprint, b);
            assert_eq!(e.last_outcome, Outcome::Failed);
            assert_eq!(e.accepted_fingerprint, Some(a));
            assert_eq!(e.accepted_at, Some(t(1)));
            assert_eq!(e.failing_since, Some(t(11)));
            assert_eq!(e.first_sent_at, t(1));
            assert_eq!(e.updated_at, t(11));
            assert_eq!(e.trace_id, "tr-changed-11");
            assert_eq!(e.http_status, Some(500));
            let e = l.lookup("fail").unwrap().unwrap();
            assert_eq!(
                e.failing_since,
                Some(t(1)),
                "failing since the first failure"
            );
            assert_eq!(e.accepted_fingerprint, None);
        }
        {
            let mut l = SqliteLedger::open(&p).unwrap();
            let r = l.reader().unwrap();
            // Neither the new details (failed) nor the old ones (what Banxa
            // holds after a failed send is unknown) are skipped.
            assert!(!r.should_skip("changed", &b));
            assert!(!r.should_skip("changed", &a));
            assert!(!r.should_skip("flip", &a));
            assert!(r.should_skip("rej", &a), "accepted after a rejection");
            assert!(r.should_skip("acc", &a), "untouched by the later run");
            l.begin_run("export.csv", t(20)).unwrap();
            l.record(upd("flip", a, Outcome::Accepted, 21)).unwrap();
            l.flush().unwrap();
            let e = l.lookup("flip").unwrap().unwrap();
            assert_eq!(e.last_outcome, Outcome::Accepted);
            assert_eq!(e.accepted_fingerprint, Some(a));
            assert_eq!(e.failing_since, None);
        }
    }

    #[test]
    fn batches_are_committed_at_500_and_on_flush() {
        let (_d, p) = fresh();
        let mut l = SqliteLedger::open(&p).unwrap();
        l.begin_run("x", t(0)).unwrap();
        let fp = fingerprint("a@x.io", "61410001000", "sumsub");
        let view = LedgerView::open(&p).unwrap();
        for i in 0..BATCH_ROWS - 1 {
            l.record(upd(&format!("c-{i}"), fp, Outcome::Accepted, 1))
                .unwrap();
        }
        assert_eq!(view.report().unwrap().identities, 0, "not committed yet");
        l.record(upd("c-last", fp, Outcome::Accepted, 1)).unwrap();
        assert_eq!(l.pending(), 0);
        assert_eq!(view.report().unwrap().identities, BATCH_ROWS as u64);
        l.record(upd("c-more", fp, Outcome::Failed, 2)).unwrap();
        assert!(view.lookup("c-more").unwrap().is_none());
        l.flush().unwrap();
        assert!(view.lookup("c-more").unwrap().is_some());
    }

    #[test]
    fn drop_flushes_and_reopen_keeps_everything() {
        let (_d, p) = fresh();
        let fp = fingerprint("a@x.io", "61410001000", "sumsub");
        {
            let mut l = SqliteLedger::open(&p).unwrap();
            l.begin_run("x", t(0)).unwrap();
            l.record(upd("c-1", fp, Outcome::Accepted, 1)).unwrap();
        }
        let l = SqliteLedger::open(&p).unwrap();
        assert!(l.should_skip("c-1", &fp).unwrap());
        let mode = std::fs::metadata(&p).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }

    /// Not a test: the child process of the two tests below (run as
    /// `--ignored --exact`), told what to do by the environment.
    #[test]
    #[ignore = "the child process of the lock and kill tests"]
    fn child_helper() {
        let Ok(what) = std::env::var("KYCSHARE_LEDGER_CHILD") else {
            return;
        };
        let p = PathBuf::from(std::env::var("KYCSHARE_LEDGER_PATH").unwrap());
        let fp = fingerprint("a@x.io", "61410001000", "sumsub");
        let mut l = SqliteLedger::open(&p).unwrap();
        match what.as_str() {
            "hold" => {
                println!("locked");
                let mut s = String::new();
                let _ = std::io::stdin().read_line(&mut s);
            }
            "kill-mid-batch" => {
                l.begin_run("x", t(0)).unwrap();
                for i in 0..(2 * BATCH_ROWS + BATCH_ROWS / 2) {
                    l.record(upd(&format!("c-{i}"), fp, Outcome::Accepted, 1))
                        .unwrap();
                }
                // SIGKILL: no destructor, no flush.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
            _ => unreachable!(),
        }
    }

    fn child(what: &str, p: &Path) -> std::process::Command {
        let mut c = std::process::Command::new(std::env::current_exe().unwrap());
        c.args([
            "--ignored",
            "--exact",
            "ledger::store::tests::child_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KYCSHARE_LEDGER_CHILD", what)
        .env("KYCSHARE_LEDGER_PATH", p);
        c
    }

    #[test]
    fn another_process_is_refused_at_once() {
        use std::io::BufRead;
        let (_d, p) = fresh();
        let mut c = child("hold", &p)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(c.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("locked") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
        }
        match SqliteLedger::open(&p) {
            Err(LedgerError::Locked { holder, .. }) => assert_eq!(holder.pid, Some(c.id())),
            other => panic!("{other:?}"),
        }
        drop(c.stdin.take());
        assert!(c.wait().unwrap().success());
        SqliteLedger::open(&p).unwrap();
    }

    #[test]
    fn killed_mid_batch_leaves_a_consistent_ledger() {
        let (_d, p) = fresh();
        let st = child("kill-mid-batch", &p).output().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.status.signal(), Some(libc::SIGKILL), "{st:?}");
        let l = SqliteLedger::open(&p).unwrap();
        let ok: String = l
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        let rep = l.report().unwrap();
        // Two whole batches committed; the third, unflushed, is lost.
        assert_eq!(rep.identities, 2 * BATCH_ROWS as u64);
        assert_eq!(rep.runs[0].ended_at, None);
        assert!(l
            .lookup(&format!("c-{}", 2 * BATCH_ROWS - 1))
            .unwrap()
            .is_some());
        assert!(l
            .lookup(&format!("c-{}", 2 * BATCH_ROWS))
            .unwrap()
            .is_none());
    }
}
