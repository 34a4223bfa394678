//! The ledger in PostgreSQL (`--ledger postgres://USER@HOST:PORT/DB`): the
//! same semantics as the SQLite ledger (see the module doc of
//! [`crate::ledger`]), for hosts that keep no disk between runs.
//!
//! Not for: anything the SQLite ledger does not do. The differences are in
//! storage only:
//!
//! - Tables in the schema `kycshare` (created on first use, versioned in
//!   `kycshare.schema_version`, migrated forward under the run lock; a
//!   version newer than this build's is refused). See [`PG_MIGRATIONS`].
//! - The run lock is `pg_try_advisory_lock(PG_LOCK_KEY)` on the run's own
//!   session: it is released when that session ends, so a holder that died
//!   (killed, host gone) frees it with its connection. The holder writes
//!   itself (host, pid, start) into `kycshare.lock_holder`, which is what a
//!   second run names when it is turned away.
//! - A batch is one `INSERT … SELECT FROM unnest(…) ON CONFLICT DO UPDATE`
//!   (one round trip), with `synchronous_commit = off` for the session: a
//!   commit is visible and crash-safe at once and durable on the server's
//!   disk within a few hundred milliseconds, as the SQLite ledger's WAL
//!   with `synchronous=NORMAL` is; a server crash loses at most that tail,
//!   whose identities the next run sends again.
//! - Times are `timestamptz`, fingerprints `bytea`.
//!
//! The sync `postgres` client runs its own small tokio runtime, which may
//! not be started from a thread that drives another runtime: calls that
//! come from the pipeline's async code ([`off_runtime`]) run on a scoped
//! thread of their own.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Client, Statement};

use super::accepted::{AcceptedSet, LedgerReader, Purpose};
use super::batch::Batch;
use super::location::PgTarget;
use super::lock::LockHolder;
use super::report::{LedgerReport, OldestUnverified, PendingFailure, RunReport, REPORT_RUNS};
use super::{stamp, Entry, LedgerError, RunCounts, RunId, Update};
use crate::model::Outcome;

/// The schema version this build writes (`kycshare.schema_version`).
pub const PG_SCHEMA_VERSION: i32 = 1;

/// The advisory lock's two keys: "kycs", 1.
pub const PG_LOCK_KEY: (i32, i32) = (0x6b79_6373, 1);

/// Migration `i` brings the schema from version `i` to `i + 1`; each runs
/// in one transaction with its version row.
pub const PG_MIGRATIONS: [&str; 1] = ["
CREATE TABLE kycshare.schema_version (
    version    integer     NOT NULL,             -- the schema version reached
    written_by text        NOT NULL,             -- the kycshare version that migrated
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE kycshare.identities (
    identity_reference   text PRIMARY KEY,       -- the partner's customer id
    fingerprint          bytea NOT NULL,         -- SHA-256 of the details last sent
    last_outcome         text NOT NULL,          -- accepted | rejected | failed
    http_status          integer,                -- of the last answer, NULL if none
    trace_id             text NOT NULL,          -- of the last answer, '' if none
    attempts             integer NOT NULL,       -- requests of the last send
    accepted_fingerprint bytea,                  -- details last accepted, NULL if never
    accepted_at          timestamptz,            -- when they were accepted
    failing_since        timestamptz,            -- first failed/rejected send since the last acceptance
    first_sent_at        timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,   -- the last send
    run_id               bigint,                 -- runs.id of the last send
    kyc_status           text,                   -- last `kycshare verify`: kyc.status, not_found; NULL: not checked
    kyc_checked_at       timestamptz
);
CREATE INDEX identities_pending ON kycshare.identities (failing_since) WHERE failing_since IS NOT NULL;
CREATE TABLE kycshare.runs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at    timestamptz NOT NULL,
    ended_at      timestamptz,                   -- NULL: still running, or killed
    input         text NOT NULL,
    host          text NOT NULL,
    pid           integer NOT NULL,
    total bigint, accepted bigint, invalid bigint, duplicate bigint,
    rejected bigint, failed bigint, skipped bigint, validated bigint,
    requests_sent bigint,
    exit_code     integer
);
CREATE TABLE kycshare.lock_holder (
    id         integer PRIMARY KEY CHECK (id = 1),
    host       text NOT NULL,
    pid        integer NOT NULL,
    started_at timestamptz NOT NULL
);
"];

const UPSERT: &str = "
INSERT INTO kycshare.identities AS i (identity_reference, fingerprint, last_outcome, http_status, trace_id,
    attempts, accepted_fingerprint, accepted_at, failing_since, first_sent_at, updated_at, run_id)
SELECT u.id, u.fp, u.o, u.st, u.tr, u.att,
       CASE WHEN u.o = 'accepted' THEN u.fp END,
       CASE WHEN u.o = 'accepted' THEN u.at END,
       CASE WHEN u.o = 'accepted' THEN NULL ELSE u.at END,
       u.at, u.at, $8
FROM unnest($1::text[], $2::bytea[], $3::text[], $4::integer[], $5::text[], $6::integer[], $7::timestamptz[])
     AS u(id, fp, o, st, tr, att, at)
ON CONFLICT (identity_reference) DO UPDATE SET
    fingerprint = excluded.fingerprint,
    last_outcome = excluded.last_outcome,
    http_status = excluded.http_status,
    trace_id = excluded.trace_id,
    attempts = excluded.attempts,
    accepted_fingerprint = CASE WHEN excluded.last_outcome = 'accepted'
                                THEN excluded.fingerprint ELSE i.accepted_fingerprint END,
    accepted_at = CASE WHEN excluded.last_outcome = 'accepted'
                       THEN excluded.updated_at ELSE i.accepted_at END,
    failing_since = CASE WHEN excluded.last_outcome = 'accepted'
                         THEN NULL ELSE coalesce(i.failing_since, excluded.updated_at) END,
    updated_at = excluded.updated_at,
    run_id = excluded.run_id,
    kyc_status = CASE WHEN excluded.last_outcome = 'accepted' THEN NULL ELSE i.kyc_status END,
    kyc_checked_at = CASE WHEN excluded.last_outcome = 'accepted' THEN NULL ELSE i.kyc_checked_at END";

const KYC_UPDATE: &str = "
UPDATE kycshare.identities i SET kyc_status = u.s, kyc_checked_at = u.at
FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS u(id, s, at)
WHERE i.identity_reference = u.id AND i.last_outcome = 'accepted'";

const UNVERIFIED: &str =
    "last_outcome = 'accepted' AND (kyc_status IS NULL OR kyc_status <> 'VERIFIED')";

/// Runs `f` where the sync client may block: on a scoped thread when the
/// caller is inside a tokio runtime, else right here.
pub(super) fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

fn pg_err<'a>(t: &'a PgTarget, what: &'static str) -> impl Fn(postgres::Error) -> LedgerError + 'a {
    move |source| LedgerError::Postgres {
        url: t.shown().to_string(),
        what,
        detail: detail(&source),
        hint: hint(&source),
        source,
    }
}

/// The server's own words when it sent some (`FATAL: password
/// authentication failed …`), else the client's.
fn detail(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.severity(), d.message()),
        None => e.to_string(),
    }
}

/// What the operator can do about a PostgreSQL error.
fn hint(e: &postgres::Error) -> &'static str {
    use postgres::error::SqlState;
    match e.code() {
        Some(c)
            if *c == SqlState::INVALID_PASSWORD
                || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            "check the role and its password (in the URL, or PGPASSWORD)"
        }
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => {
            "create the database first (docs/nightly.md, \"PostgreSQL\")"
        }
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => {
            "grant the role the rights docs/nightly.md lists (\"PostgreSQL\")"
        }
        // Operator intervention (a restart, a terminated session) or a
        // broken connection.
        Some(c) if c.code().starts_with("57") || c.code().starts_with("08") => {
            "the server closed the session: check that it is up, then continue (the run resumes)"
        }
        Some(_) => "see docs/nightly.md (\"PostgreSQL\")",
        None if e.is_closed() => {
            "the server closed the session: check that it is up, then continue (the run resumes)"
        }
        None => "check the host, the port, sslmode, and that the server is up",
    }
}

/// `sslmode`: libpq's names; `verify-ca` and `verify-full` check the
/// server's certificate against `sslrootcert=FILE` (PEM) or the built-in
/// Mozilla roots, `verify-full` its name too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ssl {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Connects, with the password from the URL or `PGPASSWORD` and TLS as
/// `sslmode` says (rustls; `prefer` when not given, as libpq).
pub(super) fn connect(t: &PgTarget) -> Result<Client, LedgerError> {
    let bad = |reason: String| LedgerError::BadUrl {
        url: t.shown().to_string(),
        reason,
    };
    let ssl = match t.param("sslmode").as_deref() {
        None | Some("prefer") | Some("allow") => Ssl::Prefer,
        Some("disable") => Ssl::Disable,
        Some("require") => Ssl::Require,
        Some("verify-ca") => Ssl::VerifyCa,
        Some("verify-full") => Ssl::VerifyFull,
        Some(other) => {
            return Err(bad(format!(
                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
            )))
        }
    };
    let mut config: postgres::Config = t
        .without_params(&["sslmode", "sslrootcert"])
        .parse()
        .map_err(|e: postgres::Error| bad(e.to_string()))?;
    if let Some(pw) = t.password() {
        config.password(pw.expose());
    }
    config
        .ssl_mode(match ssl {
            Ssl::Disable => postgres::config::SslMode::Disable,
            Ssl::Prefer => postgres::config::SslMode::Prefer,
            _ => postgres::config::SslMode::Require,
        })
        .application_name("kycshare")
        .connect_timeout(Duration::from_secs(10))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .tcp_user_timeout(Duration::from_secs(60));
    let client = if ssl == Ssl::Disable {
        config.connect(postgres::NoTls)
    } else {
        let roots = match t.param("sslrootcert") {
            Some(file) => Some(std::fs::read(&file).map_err(|e| {
                bad(format!(
                    "sslrootcert={file}: {}",
                    crate::model::describe_io(&e)
                ))
            })?),
            None => None,
        };
        let tls = tls::config(ssl, roots.as_deref()).map_err(bad)?;
        config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
    };
    client.map_err(pg_err(t, "cannot connect"))
}

mod tls {
    //! rustls client configurations for each `sslmode`.
    use std::sync::Arc;

    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::client::danger::{
        HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
    };
    use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};

    use super::Ssl;

    pub(super) fn config(
        ssl: Ssl,
        roots_pem: Option<&[u8]>,
    ) -> Result<rustls::ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let mut roots = rustls::RootCertStore::empty();
        match roots_pem {
            Some(pem) => {
                use rustls_pki_types::pem::PemObject;
                for c in CertificateDer::pem_slice_iter(pem) {
                    let c = c.map_err(|e| format!("sslrootcert: {e}"))?;
                    roots.add(c).map_err(|e| format!("sslrootcert: {e}"))?;
                }
                if roots.is_empty() {
                    return Err("sslrootcert: no certificate in the file".into());
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| e.to_string())?;
        let verifier: Arc<dyn ServerCertVerifier> = match ssl {
            Ssl::VerifyFull => webpki,
            Ssl::VerifyCa => Arc::new(Lenient {
                inner: webpki,
                check_chain: true,
            }),
            _ => Arc::new(Lenient {
                inner: webpki,
                check_chain: false,
            }),
        };
        Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth())
    }

    /// `require`/`prefer` (encryption, no check of who the server is, as
    /// libpq) and `verify-ca` (the chain, not the name).
    #[derive(Debug)]
    struct Lenient {
        inner: Arc<rustls::client::WebPkiServerVerifier>,
        check_chain: bool,
    }

    impl ServerCertVerifier for Lenient {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            if !self.check_chain {
                return Ok(ServerCertVerified::assertion());
            }
            match self
                .inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Ok(v) => Ok(v),
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName,
                ))
                | Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                Err(e) => Err(e),
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    }
}

/// The schema's version: 0 when there are no kycshare tables.
fn schema_version(c: &mut Client, t: &PgTarget) -> Result<i32, LedgerError> {
    let exists: bool = c
        .query_one(
            "SELECT to_regclass('kycshare.schema_version') IS NOT NULL",
            &[],
        )
        .map_err(pg_err(t, "cannot read the schema"))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let v: Option<i32> = c
        .query_one("SELECT max(version) FROM kycshare.schema_version", &[])
        .map_err(pg_err(t, "cannot read the schema version"))?
        .get(0);
    Ok(v.unwrap_or(0))
}

/// Creates or brings the schema up to date (the caller holds the lock).
fn migrate(c: &mut Client, t: &PgTarget) -> Result<i32, LedgerError> {
    let version = schema_version(c, t)?;
    if version > PG_SCHEMA_VERSION {
        return Err(LedgerError::TooNew {
            path: t.shown().to_string(),
            found: version,
            known: PG_SCHEMA_VERSION,
        });
    }
    if version == 0 {
        // Created only if missing: a role that may not create schemas
        // works in one made for it (docs/nightly.md).
        let has: bool = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'kycshare')",
                &[],
            )
            .map_err(pg_err(t, "cannot read the schema"))?
            .get(0);
        if !has {
            c.batch_execute("CREATE SCHEMA kycshare")
                .map_err(pg_err(t, "cannot create the schema kycshare"))?;
        }
    }
    for (v, sql) in PG_MIGRATIONS.iter().enumerate().skip(version as usize) {
        let mut tx = c
            .transaction()
            .map_err(pg_err(t, "cannot create the tables"))?;
        tx.batch_execute(sql)
            .map_err(pg_err(t, "cannot create the tables"))?;
        tx.execute(
            "INSERT INTO kycshare.schema_version (version, written_by) VALUES ($1, $2)",
            &[&(v as i32 + 1), &env!("CARGO_PKG_VERSION")],
        )
        .map_err(pg_err(t, "cannot create the tables"))?;
        tx.commit().map_err(pg_err(t, "cannot create the tables"))?;
    }
    Ok(PG_SCHEMA_VERSION)
}

/// The run holding the lock, if any (read, never taken).
fn holder(c: &mut Client) -> Option<LockHolder> {
    let row = c
        .query_opt(
            "SELECT h.host, h.pid, h.started_at FROM kycshare.lock_holder h
             WHERE EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory'
                           AND l.classid = 1803117427 AND l.objid = 1 AND l.objsubid = 2
                           AND l.granted AND l.database = (SELECT oid FROM pg_database
                                                           WHERE datname = current_database()))",
            &[],
        )
        .ok()??;
    Some(LockHolder {
        pid: row.get::<_, Option<i32>>(1).map(|p| p as u32),
        started: row.get::<_, Option<SystemTime>>(2).map(stamp),
        host: row.get(0),
    })
}

/// A PostgreSQL ledger open for a run: its session holds the run lock.
pub struct PgLedger {
    target: PgTarget,
    client: Mutex<Option<Client>>,
    upsert: Statement,
    kyc: Statement,
    set: Arc<AcceptedSet>,
    run: Option<RunId>,
    batch: Batch,
}

impl std::fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLedger")
            .field("url", &self.target.shown())
            .field("run", &self.run)
            .field("pending", &self.batch.updates.len())
            .finish()
    }
}

impl PgLedger {
    /// Connects, takes the run lock at once or fails with
    /// [`LedgerError::Locked`], migrates, records itself as the holder
    /// and loads the accepted set.
    pub fn open(target: &PgTarget, purpose: Purpose) -> Result<PgLedger, LedgerError> {
        off_runtime(|| PgLedger::open_here(target, purpose))
    }

    fn open_here(t: &PgTarget, purpose: Purpose) -> Result<PgLedger, LedgerError> {
        let mut c = connect(t)?;
        let got: bool = c
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&PG_LOCK_KEY.0, &PG_LOCK_KEY.1],
            )
            .map_err(pg_err(t, "cannot take the run lock"))?
            .get(0);
        if !got {
            let h = holder(&mut c).unwrap_or_default();
            // A holder on this host that is no longer alive: its session
            // is going (the server has yet to read the closed socket).
            // Wait for it a moment rather than turn the run away.
            let dead_here = h.host.as_deref() == Some(crate::model::host_name().as_str())
                && h.pid.is_some_and(|p| !crate::model::process_alive(p));
            let got = dead_here
                && c.batch_execute(&format!(
                    "SET lock_timeout = '5s'; SELECT pg_advisory_lock({}, {}); RESET lock_timeout",
                    PG_LOCK_KEY.0, PG_LOCK_KEY.1
                ))
                .is_ok();
            if !got {
                return Err(LedgerError::Locked {
                    path: t.shown().to_string(),
                    holder: h,
                });
            }
        }
        migrate(&mut c, t)?;
        let host = crate::model::host_name();
        c.execute(
            "INSERT INTO kycshare.lock_holder (id, host, pid, started_at) VALUES (1, $1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid,
                                            started_at = excluded.started_at",
            &[&host, &(std::process::id() as i32), &SystemTime::now()],
        )
        .map_err(pg_err(t, "cannot record the lock's holder"))?;
        c.batch_execute("SET synchronous_commit = off")
            .map_err(pg_err(t, "cannot configure the session"))?;
        let set = Arc::new(match purpose {
            Purpose::Run { reshare_age } => load_accepted(&mut c, t, reshare_age)?,
            Purpose::Statuses => AcceptedSet::default(),
        });
        let upsert = c.prepare(UPSERT).map_err(pg_err(t, "cannot prepare"))?;
        let kyc = c.prepare(KYC_UPDATE).map_err(pg_err(t, "cannot prepare"))?;
        Ok(PgLedger {
            target: t.clone(),
            client: Mutex::new(Some(c)),
            upsert,
            kyc,
            set,
            run: None,
            batch: Batch::default(),
        })
    }

    pub fn target(&self) -> &PgTarget {
        &self.target
    }

    fn client(&self) -> MutexGuard<'_, Option<Client>> {
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with the client, off any runtime.
    fn with<R: Send>(
        &self,
        f: impl FnOnce(&mut Client, &PgTarget) -> Result<R, LedgerError> + Send,
    ) -> Result<R, LedgerError> {
        let mut guard = self.client();
        let t = &self.target;
        match guard.as_mut() {
            Some(c) => off_runtime(move || f(c, t)),
            None => Err(LedgerError::Io {
                path: t.shown().to_string(),
                what: "closed",
                reason: "the connection is closed".into(),
            }),
        }
    }

    pub fn reader(&self) -> LedgerReader {
        LedgerReader {
            set: self.set.clone(),
        }
    }

    pub fn should_skip(&self, identity_reference: &str, fp: &[u8; 32]) -> bool {
        self.set.contains(identity_reference, fp)
    }

    pub fn begin_run(&mut self, input: &str, started: SystemTime) -> Result<RunId, LedgerError> {
        let input = input.to_string();
        let id = self.with(move |c, t| {
            let row = c
                .query_one(
                    "INSERT INTO kycshare.runs (started_at, input, host, pid) VALUES ($1, $2, $3, $4) RETURNING id",
                    &[&started, &input, &crate::model::host_name(), &(std::process::id() as i32)],
                )
                .map_err(pg_err(t, "cannot record the run"))?;
            Ok(RunId(row.get(0)))
        })?;
        self.run = Some(id);
        Ok(id)
    }

    pub fn lookup(&self, identity_reference: &str) -> Result<Option<Entry>, LedgerError> {
        self.with(|c, t| lookup(c, t, identity_reference))
    }

    pub fn record(&mut self, u: Update) -> Result<(), LedgerError> {
        if self.batch.push(u) {
            self.flush()?;
        }
        Ok(())
    }

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

    pub fn flush_if_due(&mut self) -> Result<(), LedgerError> {
        if self.batch.is_due() {
            self.flush()?;
        }
        Ok(())
    }

    pub fn pending(&self) -> usize {
        self.batch.updates.len()
    }

    /// Commits the buffered updates now: one statement per kind, in one
    /// transaction when there are both.
    pub fn flush(&mut self) -> Result<(), LedgerError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let run = self.run.map(|r| r.0);
        let (pending, pending_kyc) = (&self.batch.updates, &self.batch.kyc);
        let (upsert, kyc) = (&self.upsert, &self.kyc);
        self.with(move |c, t| {
            let mut tx = c.transaction().map_err(pg_err(t, "cannot write"))?;
            if !pending.is_empty() {
                // A statement may not update a row twice: an identity
                // sent twice in one batch (not in one run, but possible)
                // goes one row at a time, in order.
                let mut seen = HashSet::with_capacity(pending.len());
                let unique = pending
                    .iter()
                    .all(|u| seen.insert(u.identity_reference.as_str()));
                let chunks: Vec<&[Update]> = if unique {
                    vec![&pending[..]]
                } else {
                    pending.chunks(1).collect()
                };
                for chunk in chunks {
                    let ids: Vec<&str> = chunk
                        .iter()
                        .map(|u| u.identity_reference.as_str())
                        .collect();
                    let fps: Vec<&[u8]> = chunk.iter().map(|u| &u.fingerprint[..]).collect();
                    let outcomes: Vec<&str> = chunk.iter().map(|u| u.outcome.as_str()).collect();
                    let statuses: Vec<Option<i32>> =
                        chunk.iter().map(|u| u.http_status.map(i32::from)).collect();
                    let traces: Vec<&str> = chunk.iter().map(|u| u.trace_id.as_str()).collect();
                    let attempts: Vec<i32> = chunk.iter().map(|u| u.attempts as i32).collect();
                    let ats: Vec<SystemTime> = chunk.iter().map(|u| u.at).collect();
                    let params: [&(dyn ToSql + Sync); 8] = [
                        &ids, &fps, &outcomes, &statuses, &traces, &attempts, &ats, &run,
                    ];
                    tx.execute(upsert, &params)
                        .map_err(pg_err(t, "cannot write"))?;
                }
            }
            if !pending_kyc.is_empty() {
                let ids: Vec<&str> = pending_kyc.iter().map(|k| k.0.as_str()).collect();
                let st: Vec<&str> = pending_kyc.iter().map(|k| k.1.as_str()).collect();
                let ats: Vec<SystemTime> = pending_kyc.iter().map(|k| k.2).collect();
                tx.execute(kyc, &[&ids, &st, &ats])
                    .map_err(pg_err(t, "cannot write"))?;
            }
            tx.commit().map_err(pg_err(t, "cannot commit"))
        })?;
        self.batch.clear();
        Ok(())
    }

    pub fn end_run(
        &mut self,
        run: RunId,
        ended: SystemTime,
        counts: &RunCounts,
        exit_code: i32,
    ) -> Result<(), LedgerError> {
        self.flush()?;
        let c = counts.clone();
        self.with(move |cl, t| {
            let n = |v: u64| v as i64;
            cl.execute(
                "UPDATE kycshare.runs SET ended_at = $2, total = $3, accepted = $4, invalid = $5,
                    duplicate = $6, rejected = $7, failed = $8, skipped = $9, validated = $10,
                    requests_sent = $11, exit_code = $12 WHERE id = $1",
                &[
                    &run.0,
                    &ended,
                    &n(c.total),
                    &n(c.accepted),
                    &n(c.invalid),
                    &n(c.duplicate),
                    &n(c.rejected),
                    &n(c.failed),
                    &n(c.skipped),
                    &n(c.validated),
                    &n(c.requests_sent),
                    &exit_code,
                ],
            )
            .map_err(pg_err(t, "cannot record the end of the run"))?;
            Ok(())
        })
    }

    pub fn last_success(&self) -> Result<Option<SystemTime>, LedgerError> {
        self.with(last_success)
    }

    pub fn report(&self) -> Result<LedgerReport, LedgerError> {
        self.with(report)
    }
}

impl Drop for PgLedger {
    /// Commits what is buffered, then closes the session (which frees the
    /// lock), off any runtime.
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!("{e}");
        }
        let client = self.client().take();
        if let Some(c) = client {
            off_runtime(move || drop(c));
        }
    }
}

fn load_accepted(
    c: &mut Client,
    t: &PgTarget,
    reshare_age: Option<Duration>,
) -> Result<AcceptedSet, LedgerError> {
    let what = "reading accepted identities";
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM kycshare.identities WHERE last_outcome = 'accepted'",
            &[],
        )
        .map_err(pg_err(t, what))?
        .get(0);
    let mut slots = Vec::with_capacity(n.max(0) as usize);
    let mut push = |row: postgres::Row| {
        let id: &str = row.get(0);
        let fp: &[u8] = row.get(1);
        if let Ok(fp) = <[u8; 32]>::try_from(fp) {
            slots.push((AcceptedSet::key(id), fp));
        }
    };
    const SELECT: &str =
        "SELECT identity_reference, fingerprint FROM kycshare.identities WHERE last_outcome = 'accepted'";
    match reshare_age {
        None => {
            let mut rows = c
                .query_raw(SELECT, std::iter::empty::<&(dyn ToSql + Sync)>())
                .map_err(pg_err(t, what))?;
            while let Some(row) = rows.next().map_err(pg_err(t, what))? {
                push(row);
            }
        }
        Some(age) => {
            // See `AcceptedSet::load`: a status seen at least AGE after the
            // identity was accepted, other than VERIFIED.
            let q = format!(
                "{SELECT} AND NOT (kyc_status IS NOT NULL AND kyc_status <> 'VERIFIED' AND kyc_checked_at >= accepted_at + make_interval(secs => $1))"
            );
            let secs = age.as_secs_f64();
            let mut rows = c
                .query_raw(&q, [&secs as &(dyn ToSql + Sync)])
                .map_err(pg_err(t, what))?;
            while let Some(row) = rows.next().map_err(pg_err(t, what))? {
                push(row);
            }
        }
    }
    Ok(AcceptedSet::new(slots))
}

fn fp_of(v: Option<&[u8]>) -> Option<[u8; 32]> {
    v.and_then(|b| <[u8; 32]>::try_from(b).ok())
}

fn lookup(
    c: &mut Client,
    t: &PgTarget,
    identity_reference: &str,
) -> Result<Option<Entry>, LedgerError> {
    let row = c
        .query_opt(
            "SELECT fingerprint, last_outcome, http_status, accepted_fingerprint, accepted_at,
                    failing_since, trace_id, attempts, first_sent_at, updated_at, run_id
             FROM kycshare.identities WHERE identity_reference = $1",
            &[&identity_reference],
        )
        .map_err(pg_err(t, "cannot read"))?;
    Ok(row.map(|r| Entry {
        identity_reference: identity_reference.to_string(),
        fingerprint: fp_of(r.get(0)).unwrap_or_default(),
        last_outcome: Outcome::parse(r.get(1)).unwrap_or(Outcome::Failed),
        http_status: r.get::<_, Option<i32>>(2).map(|s| s as u16),
        accepted_fingerprint: fp_of(r.get(3)),
        accepted_at: r.get(4),
        failing_since: r.get(5),
        trace_id: r.get(6),
        attempts: r.get::<_, i32>(7) as u32,
        first_sent_at: r.get(8),
        updated_at: r.get(9),
        run: r.get::<_, Option<i64>>(10).map(RunId),
    }))
}

fn last_success(c: &mut Client, t: &PgTarget) -> Result<Option<SystemTime>, LedgerError> {
    Ok(c.query_one(
        "SELECT max(ended_at) FROM kycshare.runs WHERE exit_code = 0",
        &[],
    )
    .map_err(pg_err(t, "cannot read the runs"))?
    .get(0))
}

/// The same report as the SQLite ledger's, from one snapshot.
fn report(c: &mut Client, t: &PgTarget) -> Result<LedgerReport, LedgerError> {
    let e = |what| pg_err(t, what);
    let schema_version = schema_version(c, t)?;
    let in_use_by = holder(c);
    let mut tx = c
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(e("cannot read"))?;
    let r = tx
        .query_one(
            "SELECT count(*),
                    count(*) FILTER (WHERE last_outcome = 'accepted'),
                    count(*) FILTER (WHERE last_outcome = 'rejected'),
                    count(*) FILTER (WHERE last_outcome = 'failed'),
                    count(*) FILTER (WHERE last_outcome <> 'accepted' AND accepted_fingerprint IS NOT NULL)
             FROM kycshare.identities",
            &[],
        )
        .map_err(e("cannot read the identities"))?;
    let n = |i: usize| r.get::<_, i64>(i) as u64;
    let (identities, accepted, rejected, failed, changed) = (n(0), n(1), n(2), n(3), n(4));
    let oldest_pending_failure = tx
        .query_opt(
            "SELECT identity_reference, last_outcome, failing_since, updated_at, http_status, trace_id
             FROM kycshare.identities WHERE failing_since IS NOT NULL
             ORDER BY failing_since, identity_reference LIMIT 1",
            &[],
        )
        .map_err(e("cannot read the identities"))?
        .map(|r| PendingFailure {
            identity_reference: r.get(0),
            last_outcome: Outcome::parse(r.get(1)).unwrap_or(Outcome::Failed),
            since: stamp(r.get(2)),
            last_attempt: stamp(r.get(3)),
            http_status: r.get::<_, Option<i32>>(4).map(|s| s as u16),
            trace_id: r.get(5),
        });
    let kyc = tx
        .query(
            "SELECT coalesce(kyc_status, 'not checked'), count(*) FROM kycshare.identities
             WHERE last_outcome = 'accepted' GROUP BY 1 ORDER BY 2 DESC LIMIT 33",
            &[],
        )
        .map_err(e("cannot read the verifications"))?
        .into_iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
        .collect();
    let oldest_unverified = tx
        .query_opt(
            &format!(
                "SELECT identity_reference, accepted_at, kyc_status, kyc_checked_at FROM kycshare.identities
                 WHERE {UNVERIFIED} ORDER BY accepted_at, identity_reference LIMIT 1"
            ),
            &[],
        )
        .map_err(e("cannot read the verifications"))?
        .map(|r| OldestUnverified {
            identity_reference: r.get(0),
            accepted_at: r
                .get::<_, Option<SystemTime>>(1)
                .map(stamp)
                .unwrap_or_default(),
            kyc_status: r.get(2),
            kyc_checked_at: r.get::<_, Option<SystemTime>>(3).map(stamp),
        });
    let runs = tx
        .query(
            "SELECT id, started_at, ended_at, input, pid, total, accepted, invalid, duplicate,
                    rejected, failed, skipped, validated, requests_sent, exit_code
             FROM kycshare.runs ORDER BY id DESC LIMIT $1",
            &[&(REPORT_RUNS as i64)],
        )
        .map_err(e("cannot read the runs"))?
        .into_iter()
        .map(|r| {
            let ended_at: Option<SystemTime> = r.get(2);
            let n = |i: usize| r.get::<_, Option<i64>>(i).unwrap_or(0) as u64;
            RunReport {
                id: r.get(0),
                started_at: stamp(r.get(1)),
                ended_at: ended_at.map(stamp),
                input: r.get(3),
                pid: r.get::<_, i32>(4) as u32,
                counts: ended_at.map(|_| RunCounts {
                    total: n(5),
                    accepted: n(6),
                    invalid: n(7),
                    duplicate: n(8),
                    rejected: n(9),
                    failed: n(10),
                    skipped: n(11),
                    validated: n(12),
                    requests_sent: n(13),
                }),
                exit_code: r.get(14),
            }
        })
        .collect();
    let last_success: Option<SystemTime> = tx
        .query_one(
            "SELECT max(ended_at) FROM kycshare.runs WHERE exit_code = 0",
            &[],
        )
        .map_err(e("cannot read the runs"))?
        .get(0);
    tx.commit().map_err(e("cannot read"))?;
    Ok(LedgerReport {
        path: t.shown().to_string(),
        schema_version,
        identities,
        accepted,
        rejected,
        failed,
        changed_not_yet_accepted: changed,
        oldest_pending_failure,
        kyc,
        oldest_unverified,
        last_success: last_success.map(stamp),
        runs,
        in_use_by,
    })
}

/// A PostgreSQL ledger opened for reading, without the run lock.
pub struct PgView {
    target: PgTarget,
    client: Mutex<Option<Client>>,
}

impl Drop for PgView {
    fn drop(&mut self) {
        let client = self
            .client
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(c) = client {
            off_runtime(move || drop(c));
        }
    }
}

impl PgView {
    /// Connects; a database without kycshare tables is
    /// [`LedgerError::NoTables`], a newer schema [`LedgerError::TooNew`].
    pub fn open(target: &PgTarget) -> Result<PgView, LedgerError> {
        off_runtime(|| {
            let mut c = connect(target)?;
            let v = schema_version(&mut c, target)?;
            if v == 0 {
                return Err(LedgerError::NoTables {
                    url: target.shown().to_string(),
                });
            }
            if v > PG_SCHEMA_VERSION {
                return Err(LedgerError::TooNew {
                    path: target.shown().to_string(),
                    found: v,
                    known: PG_SCHEMA_VERSION,
                });
            }
            Ok(PgView {
                target: target.clone(),
                client: Mutex::new(Some(c)),
            })
        })
    }

    fn with<R: Send>(
        &self,
        f: impl FnOnce(&mut Client, &PgTarget) -> Result<R, LedgerError> + Send,
    ) -> Result<R, LedgerError> {
        let mut c = self.client.lock().unwrap_or_else(|p| p.into_inner());
        let t = &self.target;
        let c = c.as_mut().expect("open until dropped");
        off_runtime(move || f(c, t))
    }

    pub fn lookup(&self, identity_reference: &str) -> Result<Option<Entry>, LedgerError> {
        self.with(|c, t| lookup(c, t, identity_reference))
    }

    pub fn report(&self) -> Result<LedgerReport, LedgerError> {
        self.with(report)
    }

    /// Streams the accepted identities not `VERIFIED`, in order. Blocks:
    /// call it from a thread of its own (verify's feed thread), not from
    /// async code.
    pub fn for_each_unverified(&self, mut f: impl FnMut(&str) -> bool) -> Result<(), LedgerError> {
        let mut c = self.client.lock().unwrap_or_else(|p| p.into_inner());
        let c = c.as_mut().expect("open until dropped");
        let t = &self.target;
        let what = "cannot read the unverified identities";
        let q = format!(
            "SELECT identity_reference FROM kycshare.identities WHERE {UNVERIFIED} ORDER BY identity_reference"
        );
        let mut rows = c
            .query_raw(&q, std::iter::empty::<&(dyn ToSql + Sync)>())
            .map_err(pg_err(t, what))?;
        while let Some(row) = rows.next().map_err(pg_err(t, what))? {
            if !f(row.get(0)) {
                break;
            }
        }
        Ok(())
    }

    pub fn unverified(&self) -> Result<u64, LedgerError> {
        self.with(|c, t| {
            let n: i64 = c
                .query_one(
                    &format!("SELECT count(*) FROM kycshare.identities WHERE {UNVERIFIED}"),
                    &[],
                )
                .map_err(pg_err(t, "cannot count the unverified identities"))?
                .get(0);
            Ok(n as u64)
        })
    }
}
