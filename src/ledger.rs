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

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::Serialize;

use crate::model::Outcome;

/// `PRAGMA application_id` of a kycshare ledger ("kycs").
pub const APPLICATION_ID: i32 = 0x6b79_6373;
/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i32 = 1;
/// Updates buffered before [`Ledger::record`] commits them.
pub const BATCH_ROWS: usize = 64;
/// The oldest a buffered update gets before [`Ledger::record`] commits.
pub const BATCH_AGE: Duration = Duration::from_secs(1);
/// Runs listed by [`Ledger::report`].
pub const REPORT_RUNS: usize = 10;

/// The schema, version 1. Times are RFC 3339 UTC text with milliseconds
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
    #[error("ledger {path}: {what}: {reason}")]
    Io {
        path: String,
        what: &'static str,
        reason: String,
    },
}

/// Who holds a ledger's lock, as written in `FILE.lock`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LockHolder {
    pub pid: Option<u32>,
    /// RFC 3339 UTC.
    pub started: Option<String>,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.pid, &self.started) {
            (Some(p), Some(s)) => write!(f, "pid {p}, started {s}"),
            (Some(p), None) => write!(f, "pid {p}"),
            _ => f.write_str("holder unknown"),
        }
    }
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

/// One run, as [`Ledger::report`] lists it.
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
    /// End of the last run that exited 0.
    pub last_success: Option<String>,
    /// The last runs, newest first.
    pub runs: Vec<RunReport>,
    /// A run holding the ledger now, if the lock file says so and that
    /// process is alive.
    pub in_use_by: Option<LockHolder>,
}

/// The accepted set loaded at open: sorted `(xxh3-128 of identityReference,
/// fingerprint)`. A 128-bit key makes a collision between two of even a
/// billion identities negligible (and a false skip would also need equal
/// fingerprints).
#[derive(Debug, Default)]
struct AcceptedSet {
    slots: Vec<(u128, [u8; 32])>,
    /// `dir[b]..dir[b + 1]`: the slots whose key's top `bits` bits are `b`
    /// (about one per bucket: a lookup is one or two cache misses, not the
    /// twenty steps of a binary search).
    dir: Vec<u32>,
    bits: u32,
}

impl AcceptedSet {
    fn key(identity_reference: &str) -> u128 {
        xxhash_rust::xxh3::xxh3_128(identity_reference.as_bytes())
    }

    fn contains(&self, identity_reference: &str, fp: &[u8; 32]) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let k = Self::key(identity_reference);
        let b = (k >> (128 - self.bits)) as usize;
        let (lo, hi) = (self.dir[b] as usize, self.dir[b + 1] as usize);
        self.slots[lo..hi]
            .iter()
            .find(|s| s.0 == k)
            .is_some_and(|s| &s.1 == fp)
    }

    fn new(mut slots: Vec<(u128, [u8; 32])>) -> AcceptedSet {
        slots.sort_unstable_by_key(|s| s.0);
        // About one slot per bucket, at most 2^24 buckets (64 MB).
        let bits = (usize::BITS - slots.len().leading_zeros()).clamp(1, 24);
        let mut dir = Vec::with_capacity((1 << bits) + 1);
        let mut i = 0;
        for b in 0..(1u128 << bits) {
            while i < slots.len() && (slots[i].0 >> (128 - bits)) < b {
                i += 1;
            }
            dir.push(i as u32);
        }
        dir.push(slots.len() as u32);
        AcceptedSet { slots, dir, bits }
    }

    fn load(conn: &Connection, path: &str) -> Result<AcceptedSet, LedgerError> {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM identities WHERE last_outcome = 'accepted'",
                [],
                |r| r.get(0),
            )
            .map_err(sql(path, "counting accepted identities"))?;
        let mut slots = Vec::with_capacity(n as usize);
        let mut stmt = conn
            .prepare("SELECT identity_reference, fingerprint FROM identities WHERE last_outcome = 'accepted'")
            .map_err(sql(path, "reading accepted identities"))?;
        let mut rows = stmt
            .query([])
            .map_err(sql(path, "reading accepted identities"))?;
        while let Some(row) = rows
            .next()
            .map_err(sql(path, "reading accepted identities"))?
        {
            let id = row
                .get_ref(0)
                .and_then(|v| v.as_str().map_err(Into::into))
                .map_err(sql(path, "reading accepted identities"))?;
            let fp = row
                .get_ref(1)
                .and_then(|v| v.as_blob().map_err(Into::into))
                .map_err(sql(path, "reading accepted identities"))?;
            if let Ok(fp) = <[u8; 32]>::try_from(fp) {
                slots.push((Self::key(id), fp));
            }
        }
        Ok(AcceptedSet::new(slots))
    }
}

/// The read side of a ledger for the thread that reads the input: answers
/// [`should_skip`](LedgerReader::should_skip) from the accepted set loaded
/// at open. Cheap to clone, `Send + Sync`.
#[derive(Debug, Clone)]
pub struct LedgerReader {
    set: Arc<AcceptedSet>,
}

impl LedgerReader {
    /// True iff the identity's last outcome (as of open) is `accepted`, sent
    /// with this fingerprint.
    pub fn should_skip(&self, identity_reference: &str, fp: &[u8; 32]) -> bool {
        self.set.contains(identity_reference, fp)
    }

    /// Identities whose last outcome is `accepted`, as of open.
    pub fn accepted(&self) -> usize {
        self.set.slots.len()
    }
}

/// A ledger open for a run: holds the run lock until dropped.
pub struct Ledger {
    path: PathBuf,
    conn: Connection,
    _lock: File,
    set: Arc<AcceptedSet>,
    run: Option<RunId>,
    pending: Vec<Update>,
    oldest_pending: Option<Instant>,
    committed_since_checkpoint: bool,
    last_checkpoint: Instant,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.path)
            .field("run", &self.run)
            .field("pending", &self.pending.len())
            .finish()
    }
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

/// `FILE.lock` beside the ledger.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

fn stamp(t: SystemTime) -> String {
    crate::model::rfc3339_millis(t)
}

fn parse_stamp(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap_or(SystemTime::UNIX_EPOCH)
}

fn read_holder(lock: &mut File) -> LockHolder {
    let mut s = String::new();
    let _ = lock.seek(SeekFrom::Start(0));
    let _ = lock.take(256).read_to_string(&mut s);
    parse_holder(&s)
}

fn parse_holder(s: &str) -> LockHolder {
    let mut h = LockHolder::default();
    for line in s.lines() {
        if let Some(p) = line.strip_prefix("pid ") {
            h.pid = p.trim().parse().ok();
        } else if let Some(t) = line.strip_prefix("started ") {
            h.started = Some(t.trim().to_string());
        }
    }
    h
}

/// Takes the run lock on `FILE.lock`, at once or not at all.
fn take_lock(path: &Path) -> Result<File, LedgerError> {
    let lp = lock_path(path);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lp)
        .map_err(io_err(&lp, "cannot open the lock file"))?;
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(LedgerError::Locked {
                path: path.display().to_string(),
                holder: read_holder(&mut f),
            });
        }
        return Err(io_err(&lp, "cannot lock the lock file")(e));
    }
    let me = format!(
        "pid {}\nstarted {}\n",
        std::process::id(),
        stamp(SystemTime::now())
    );
    f.set_len(0)
        .and_then(|_| f.seek(SeekFrom::Start(0)))
        .and_then(|_| f.write_all(me.as_bytes()))
        .map_err(io_err(&lp, "cannot write the lock file"))?;
    Ok(f)
}

/// Checks the file is ours and brings its schema up to date.
fn migrate(conn: &Connection, path: &str) -> Result<(), LedgerError> {
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
    // Later versions: `if version < 2 { ALTER TABLE … ; PRAGMA user_version = 2 }`.
    Ok(())
}

fn not_ledger(path: &str, e: rusqlite::Error) -> LedgerError {
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
    run_id = excluded.run_id";

impl Ledger {
    /// Opens (creating if missing, mode 0600) the ledger for a run: takes the
    /// run lock at once or fails with [`LedgerError::Locked`], migrates the
    /// schema and loads the accepted set into memory.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
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
        let set = Arc::new(AcceptedSet::load(&conn, &p)?);
        Ok(Ledger {
            path: path.to_path_buf(),
            conn,
            _lock: lock,
            set,
            run: None,
            pending: Vec::with_capacity(BATCH_ROWS),
            oldest_pending: None,
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

    /// Buffers one outcome; commits the batch when it holds [`BATCH_ROWS`]
    /// updates or its oldest is [`BATCH_AGE`] old. Outcomes of records that
    /// were not sent (`invalid`, `duplicate`, `skipped`, `validated`) change
    /// nothing and are ignored, so the caller may pass every outcome.
    pub fn record(&mut self, u: Update) -> Result<(), LedgerError> {
        if !matches!(
            u.outcome,
            Outcome::Accepted | Outcome::Rejected | Outcome::Failed
        ) {
            return Ok(());
        }
        self.pending.push(u);
        let now = Instant::now();
        let oldest = *self.oldest_pending.get_or_insert(now);
        if self.pending.len() >= BATCH_ROWS || now.duration_since(oldest) >= BATCH_AGE {
            self.flush()?;
        }
        Ok(())
    }

    /// Commits the batch if its oldest update is [`BATCH_AGE`] old: for a
    /// caller that is idle between outcomes.
    pub fn flush_if_due(&mut self) -> Result<(), LedgerError> {
        match self.oldest_pending {
            Some(t) if t.elapsed() >= BATCH_AGE => self.flush()?,
            _ => {}
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
        self.pending.len()
    }

    /// Commits the buffered updates now, in one transaction.
    pub fn flush(&mut self) -> Result<(), LedgerError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let p = self.p();
        let run = self.run.map(|r| r.0);
        let tx = self.conn.transaction().map_err(sql(&p, "cannot write"))?;
        {
            let mut stmt = tx.prepare_cached(UPSERT).map_err(sql(&p, "cannot write"))?;
            for u in &self.pending {
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
        }
        tx.commit().map_err(sql(&p, "cannot commit"))?;
        self.pending.clear();
        self.oldest_pending = None;
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

impl Drop for Ledger {
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

/// A ledger opened read-only, without the run lock: for `kycshare ledger`,
/// also while a run holds it.
pub struct LedgerView {
    path: PathBuf,
    conn: Connection,
}

impl LedgerView {
    /// Opens an existing ledger read-only; a missing file is
    /// [`LedgerError::Missing`].
    pub fn open(path: &Path) -> Result<LedgerView, LedgerError> {
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
        Ok(LedgerView {
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
}

fn fp_of(v: Option<Vec<u8>>) -> Option<[u8; 32]> {
    v.and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
}

fn lookup(
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

fn last_success(conn: &Connection, p: &str) -> Result<Option<String>, LedgerError> {
    conn.query_row(
        "SELECT max(ended_at) FROM runs WHERE exit_code = 0",
        [],
        |r| r.get(0),
    )
    .map_err(sql(p, "cannot read the runs"))
}

fn report(conn: &Connection, path: &Path) -> Result<LedgerReport, LedgerError> {
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
            last_success: last_success(conn, p)?,
            runs,
            in_use_by: in_use_by(path),
        })
    })();
    let _ = conn.execute_batch("COMMIT");
    out
}

/// The run holding the ledger, going by the lock file (written by the
/// holder, emptied when it closes) and whether that process is alive. Reads
/// only: taking the lock, even for a moment, could turn a run away.
pub fn in_use_by(path: &Path) -> Option<LockHolder> {
    let s = std::fs::read_to_string(lock_path(path)).ok()?;
    let h = parse_holder(&s);
    let pid = h.pid?;
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    alive.then_some(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fingerprint;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000 + secs)
    }

    fn upd(id: &str, fp: [u8; 32], outcome: Outcome, at: u64) -> Update {
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

    fn fresh() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ledger.db");
        (d, p)
    }

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

    #[test]
    fn skip_rules_across_runs() {
        let (_d, p) = fresh();
        let a = fingerprint("a@x.io", "61410001000", "sumsub");
        let b = fingerprint("b@x.io", "61410001000", "sumsub");
        {
            let mut l = Ledger::open(&p).unwrap();
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
            let mut l = Ledger::open(&p).unwrap();
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
            let mut l = Ledger::open(&p).unwrap();
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
        let mut l = Ledger::open(&p).unwrap();
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
            let mut l = Ledger::open(&p).unwrap();
            l.begin_run("x", t(0)).unwrap();
            l.record(upd("c-1", fp, Outcome::Accepted, 1)).unwrap();
        }
        let l = Ledger::open(&p).unwrap();
        assert!(l.should_skip("c-1", &fp).unwrap());
        let mode = std::fs::metadata(&p).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }

    #[test]
    fn second_open_fails_at_once_with_the_holder() {
        let (_d, p) = fresh();
        let l = Ledger::open(&p).unwrap();
        let started = Instant::now();
        let e = Ledger::open(&p).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        match &e {
            LedgerError::Locked { holder, .. } => {
                assert_eq!(holder.pid, Some(std::process::id()));
                assert!(holder.started.is_some());
            }
            other => panic!("{other}"),
        }
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "ledger {} is in use by another kycshare run (pid {}, started 20",
                p.display(),
                std::process::id()
            )),
            "{msg}"
        );
        assert!(msg.contains("wait for it to finish"), "{msg}");
        // Readable while locked.
        assert_eq!(
            LedgerView::open(&p).unwrap().report().unwrap().in_use_by,
            Some(parse_holder(
                &std::fs::read_to_string(lock_path(&p)).unwrap()
            ))
        );
        drop(l);
        // The lock file stays, emptied; the next open takes it.
        assert_eq!(std::fs::read_to_string(lock_path(&p)).unwrap(), "");
        assert_eq!(
            LedgerView::open(&p).unwrap().report().unwrap().in_use_by,
            None
        );
        let _l = Ledger::open(&p).unwrap();
    }

    #[test]
    fn stale_lock_file_is_taken() {
        let (_d, p) = fresh();
        std::fs::write(
            lock_path(&p),
            "pid 999999999\nstarted 2020-01-01T00:00:00.000Z\n",
        )
        .unwrap();
        let _l = Ledger::open(&p).unwrap();
        let h = parse_holder(&std::fs::read_to_string(lock_path(&p)).unwrap());
        assert_eq!(h.pid, Some(std::process::id()));
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
        let mut rep2 = LedgerView::open(&p).unwrap().report().unwrap();
        assert_eq!(rep2.in_use_by.take(), None);
        assert_eq!(rep2.identities, 4);
        assert_eq!(rep2.runs.len(), 3);
    }

    #[test]
    fn accepted_set_finds_every_key_and_only_those() {
        assert!(!AcceptedSet::new(vec![]).contains("x", &[0; 32]));
        for n in [1usize, 2, 3, 1000, 20_000] {
            let fp = |i: usize| fingerprint(&format!("u{i}@x.io"), "61410001000", "sumsub");
            let set = AcceptedSet::new(
                (0..n)
                    .map(|i| (AcceptedSet::key(&format!("c-{i}")), fp(i)))
                    .collect(),
            );
            for i in 0..n {
                assert!(set.contains(&format!("c-{i}"), &fp(i)), "{n} {i}");
                assert!(!set.contains(&format!("c-{i}"), &fp(i + 1)));
                assert!(!set.contains(&format!("d-{i}"), &fp(i)));
            }
        }
    }

    #[test]
    fn reader_is_send_sync() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<LedgerReader>();
        fn send<T: Send>() {}
        send::<Ledger>();
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
        let mut l = Ledger::open(&p).unwrap();
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
            "ledger::tests::child_helper",
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
        match Ledger::open(&p) {
            Err(LedgerError::Locked { holder, .. }) => assert_eq!(holder.pid, Some(c.id())),
            other => panic!("{other:?}"),
        }
        drop(c.stdin.take());
        assert!(c.wait().unwrap().success());
        Ledger::open(&p).unwrap();
    }

    #[test]
    fn killed_mid_batch_leaves_a_consistent_ledger() {
        let (_d, p) = fresh();
        let st = child("kill-mid-batch", &p).output().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.status.signal(), Some(libc::SIGKILL), "{st:?}");
        let l = Ledger::open(&p).unwrap();
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
